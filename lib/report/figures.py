"""Headline figures of an `Analysis` (totals, accuracy, cards) and its `ReportModel` for the dashboard."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Optional

from lib.cli import counted
from lib.report.analysis import Analysis
from lib.cache.kv_bytes import tokens_to_gib
from lib.report.capacity_bytes import kv_capacity
from lib.report.jsonl_capture import API_MODEL, REQUEST_TIMING, ROUTE_JSONL_ONLY, ROUTE_NOTE, unavailable_line
from lib.report.dashboard import format_gib, format_pct, format_seconds, format_tokens, format_ttl
from lib.report.model import LANE_PARENT, LANE_UNLINKED, CacheSplit, ReportModel, SummaryCard

CARD_TARGET_SHARE = 0.95


@dataclass(frozen=True)
class Comparison:
    """API vs both simulations over the same requests (those with API usage), docs/validate.md#simulated-vs-api-per-trace."""

    requests: int
    api: CacheSplit
    api_model: Optional[CacheSplit]  # None without the bodies' breakpoints (the JSONL-only route)
    ttl_model: CacheSplit

    @staticmethod
    def accuracy(simulated: float, api: float) -> Optional[float]:
        """1 − |sim − api| / api; None when the API hit rate is 0."""
        return 1 - abs(simulated - api) / api if api else None

    @property
    def api_model_accuracy(self) -> Optional[float]:
        """Accuracy of the API model's hit rate."""
        return None if self.api_model is None else self.accuracy(self.api_model.hit_rate, self.api.hit_rate)

    @property
    def ttl_model_accuracy(self) -> Optional[float]:
        """Accuracy of the TTL model's hit rate."""
        return self.accuracy(self.ttl_model.hit_rate, self.api.hit_rate)


def _sum(splits: Iterable[CacheSplit]) -> CacheSplit:
    splits = list(splits)
    return CacheSplit(sum(s.cache_read_tokens for s in splits), sum(s.cache_creation_tokens for s in splits),
                       sum(s.new_tokens for s in splits))


def compare(analysis: Analysis) -> Comparison:
    """Totals of the API's usage and of both simulations over the requests the API reported."""
    matched = [(i, point.api) for i, point in enumerate(analysis.points) if point.api is not None]
    return Comparison(
        requests=len(matched),
        api=_sum(api for _, api in matched),
        api_model=None if API_MODEL in analysis.selection.unavailable
        else _sum(analysis.points[i].simulated for i, _ in matched),
        ttl_model=_sum(analysis.ttl_splits[i] for i, _ in matched),
    )


def lane_counts(analysis: Analysis) -> dict[str, int]:
    """Requests per lane kind: parent, sub-agent, unlinked."""
    counts = {"parent": 0, "sub-agent": 0, "unlinked": 0}
    for point in analysis.points:
        kind = "unlinked" if point.lane == LANE_UNLINKED else "parent" if point.lane.startswith(LANE_PARENT) else "sub-agent"
        counts[kind] += 1
    return counts


def subtitle(analysis: Analysis) -> str:
    """`92 requests · 1 conversation · 4 sub-agents · 16.1 min`."""
    parts = [f"{len(analysis.points)} requests", counted(analysis.selection.conversations, "conversation"),
             counted(len(analysis.subagents), "sub-agent"), format_seconds(analysis.duration_s)]
    return " · ".join(parts)


def cards(analysis: Analysis) -> tuple[SummaryCard, ...]:
    """The summary cards; the first four are the batch index's key figures."""
    comparison = compare(analysis)
    lanes = lane_counts(analysis)
    ttl_label = format_ttl(analysis.options.cache_ttl_s)
    main_row = next((row for row in analysis.ttl_rows if row.ttl_s == analysis.options.cache_ttl_s), None)
    target = next((t for t in analysis.capacity.targets if t.share == CARD_TARGET_SHARE), None) if analysis.capacity else None
    return (
        SummaryCard("Requests", str(len(analysis.points)),
                    f"{lanes['parent']} parent · {lanes['sub-agent']} sub-agent · {lanes['unlinked']} unlinked", is_key=True),
        SummaryCard("API hit rate", format_pct(comparison.api.hit_rate),
                    "estimated: cleaned old-proxy capture" if analysis.selection.cleaned_old_proxy
                    else "cache_read / prompt tokens", is_key=True),
        SummaryCard("API-model hit rate", "n/a", f"not available on the {ROUTE_JSONL_ONLY} route: no cache_control "
                    "breakpoints in the logs", is_key=True) if comparison.api_model is None else
        SummaryCard("API-model hit rate", format_pct(comparison.api_model.hit_rate),
                    f"accuracy {format_pct(comparison.api_model_accuracy)}", is_key=True),
        SummaryCard(f"TTL-model hit rate ({ttl_label})", format_pct(comparison.ttl_model.hit_rate),
                    f"accuracy {format_pct(comparison.ttl_model_accuracy)}", is_key=True),
        SummaryCard("Peak working set", format_tokens(main_row.peak_working_set_tokens) if main_row else "n/a",
                    f"tokens alive at TTL {ttl_label}" + _in_gib(main_row.peak_working_set_tokens if main_row else None,
                                                                   analysis)),
        SummaryCard("Capacity for 95 %", format_tokens(target.lru_capacity_tokens) if target else "n/a",
                    "LRU tokens for 95 % of the infinite-cache hit rate"
                    + _in_gib(target.lru_capacity_tokens if target else None, analysis)),
        SummaryCard("Largest context", format_tokens(max((p.context_tokens for p in analysis.points), default=None)),
                    "API prompt tokens"),
        SummaryCard("Duration", format_seconds(analysis.duration_s), "first request to last response"),
    )


def _in_gib(tokens: Optional[int], analysis: Analysis) -> str:
    """' · 39.3 GiB on llama-3.1-70b' (docs/cache-models.md); nothing when there is no figure."""
    model = analysis.options.kv_model
    gib = tokens_to_gib(tokens, model.bytes_per_token)
    return "" if gib is None else f" · {format_gib(gib)} on {model.name}"


def notes(analysis: Analysis) -> tuple[str, ...]:
    """Free-text notes: tokenizer calibration, how the rows were selected, anything skipped."""
    lines = list(analysis.selection.notes)
    lines += [unavailable_line(what) for what in analysis.selection.unavailable]
    if analysis.token_ratio is not None:
        lines.append(f"The models run on cl100k_base tokens (tokenizer/API prompt-size ratio {analysis.token_ratio:.2f}); "
                     "each simulated split is scaled to the request's API prompt size.")
    if analysis.capacity and any(t.opt_capacity_tokens is None for t in analysis.capacity.targets):
        lines.append("OPT (Belady) was skipped or never reached a target: the stream is too large for one pass per capacity.")
    return tuple(lines)


def to_report_model(analysis: Analysis) -> ReportModel:
    """The dashboard's model of an analysis."""
    return ReportModel(
        title=analysis.selection.title,
        subtitle=subtitle(analysis),
        source=analysis.selection.source,
        cards=cards(analysis),
        requests=analysis.points,
        ttl_sweep=analysis.ttl_rows,
        cache_ttl_s=analysis.options.cache_ttl_s,
        block_size=analysis.options.block_size,
        working_set=analysis.working_set,
        capacity=analysis.capacity,
        timings=analysis.timings,
        subagents=analysis.subagents,
        concurrency=analysis.concurrency,
        models=analysis.models,
        quality=analysis.quality,
        notes=notes(analysis),
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        miss_causes=analysis.miss_causes,
        kv_capacity=kv_capacity(analysis),
        eviction=analysis.eviction,
        route_note=ROUTE_NOTE if analysis.selection.route == ROUTE_JSONL_ONLY else "",
        simulation=f"TTL model {format_ttl(analysis.options.cache_ttl_s)}" if API_MODEL in analysis.selection.unavailable
        else "API model",
        timing_note=unavailable_line(REQUEST_TIMING) if REQUEST_TIMING in analysis.selection.unavailable else "",
    )
