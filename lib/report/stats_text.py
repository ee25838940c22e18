"""`<name>_stats.txt`: the plain-text statistics of one report, with the original tool's sections (docs/visualizer.md).

Sections: request counts (streaming / non-streaming), input tokens simulated vs API (cache read /
creation / new, accuracy), output tokens, model usage, context length percentiles, incremental
growth, time between requests, TTL analysis; then why each miss, cache capacity, capacity in bytes,
effective eviction time (docs/cache-models.md), sub-agents and data quality.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

from lib.report.analysis import Analysis
from lib.cache.miss_causes import CAUSE_LABELS, ordered_totals
from lib.report.capacity_bytes import capacity_bytes_lines, eviction_lines, kv_capacity, share_label
from lib.report.dashboard import INFINITE_GAP_REASON, format_pct, format_seconds, format_tokens, format_ttl
from lib.records import ProxyRequest
from lib.report.figures import Comparison, compare, lane_counts, notes
from lib.report.jsonl_capture import API_MODEL, CALIBRATION, PROXY_ROWS, REQUEST_TIMING, unavailable_line
from lib.report.model import LANE_PARENT, CacheSplit
from lib.report.selection import ROUTE_DB
from lib.capture.response_parser import KIND_ERROR, KIND_OK, KIND_PENDING
from lib.cache.percentiles import percentiles

PERCENTILES = (10, 25, 50, 75, 90, 99)


def format_stats(analysis: Analysis, *, generated_at: str = "") -> str:
    """The whole stats file as text."""
    options = analysis.options
    tokens = "tokenizer cl100k_base" if CALIBRATION not in analysis.selection.unavailable else "API token positions"
    head = [f"KV-cache statistics: {analysis.selection.title}",
            f"Source: {analysis.selection.source} · block size {options.block_size} · cache TTL "
            f"{format_ttl(options.cache_ttl_s)} · {tokens}" + (f" · generated {generated_at}" if generated_at else "")]
    if analysis.selection.route != ROUTE_DB:
        head.append(f"Route: {analysis.selection.route} (docs/jsonl.md#the-dashboard)")
    sections = [
        ("Request counts", _request_counts(analysis)),
        ("Input tokens: simulated vs API", _input_tokens(compare(analysis), analysis)),
        ("Output tokens", _distribution([p.output_tokens for p in analysis.points], "output tokens per request", total=True)),
        ("Model usage", _model_usage(analysis)),
        ("Context length (API prompt tokens per request)", _context(analysis)),
        ("Incremental growth per turn (tokens added since the lane's previous request)", _growth(analysis)),
        ("Time between requests", _times(analysis)),
        ("TTL analysis", _ttl(analysis)),
        ("Why each miss (missed tokens by cause)", _misses(analysis)),
        ("Cache capacity (LRU / OPT over all requests interleaved)", _capacity(analysis)),
        ("Capacity in bytes (KV model, tiers)", capacity_bytes_lines(kv_capacity(analysis), _table)),
        ("Effective eviction time (TTL fitted to the billed cache reads"
         f"{', estimated: cleaned old-proxy capture' if analysis.selection.cleaned_old_proxy else ''})",
         eviction_lines(analysis.eviction, _table)),
        ("Sub-agents", _subagents(analysis)),
        ("Data quality", _quality(analysis)),
    ]
    lines = head
    for title, body in sections:
        lines += ["", f"== {title} ==", *body]
    return "\n".join(lines) + "\n"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned first column, right-aligned others, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)).rstrip()
            for row in rows]


def _request_counts(analysis: Analysis) -> list[str]:
    if PROXY_ROWS in analysis.selection.unavailable:
        return _call_counts(analysis)
    rows: list[ProxyRequest] = analysis.selection.rows
    kinds = {kind: sum(1 for r in rows if r.kind == kind) for kind in (KIND_OK, KIND_ERROR, KIND_PENDING)}
    lanes = lane_counts(analysis)
    entries = [
        ("Rows considered", len(rows), ""),
        ("  streaming", sum(1 for r in rows if r.is_streaming), ""),
        ("  non-streaming", sum(1 for r in rows if not r.is_streaming), ""),
        ("  answered (200)", kinds[KIND_OK], ""),
        ("  errors", kinds[KIND_ERROR], "labelled, not simulated"),
        ("  pending", kinds[KIND_PENDING], "no response yet, not simulated"),
        ("  old-proxy streaming artifacts", analysis.selection.problems.count("duplicate_pair"), "pair shown once"),
        ("Requests simulated", len(analysis.points), ""),
        ("  parent", lanes["parent"], ""),
        ("  sub-agent", lanes["sub-agent"], ""),
        ("  unlinked", lanes["unlinked"], "no JSONL log names them"),
    ]
    return [f"{label:<32}{count:>7}" + (f"  ({note})" if note else "") for label, count, note in entries]


def _call_counts(analysis: Analysis) -> list[str]:
    """Request counts from the logs: the calls they name, without the proxy's rows."""
    lanes = lane_counts(analysis)
    entries = [("Calls in the logs", len(analysis.selection.rows), ""),
               ("  without usage", analysis.selection.problems.count("turn_without_usage"), "not simulated"),
               ("Requests simulated", len(analysis.points), ""),
               ("  parent", lanes["parent"], ""),
               ("  sub-agent", lanes["sub-agent"], "")]
    return ([f"{label:<32}{count:>7}" + (f"  ({note})" if note else "") for label, count, note in entries]
            + [unavailable_line(PROXY_ROWS)])


def _share(tokens: int, split: CacheSplit) -> float:
    """`tokens` as a fraction of the split's prompt tokens (0 for an empty prompt)."""
    return tokens / split.prompt_tokens if split.prompt_tokens else 0.0


def _input_tokens(comparison: Comparison, analysis: Analysis) -> list[str]:
    ttl = format_ttl(analysis.options.cache_ttl_s)
    api_label = "API (estimated)" if analysis.selection.cleaned_old_proxy else "API"
    sides: list[tuple[str, CacheSplit]] = [(api_label, comparison.api), ("API model", comparison.api_model),
                                             (f"TTL model {ttl}", comparison.ttl_model)] if comparison.api_model else [
        (api_label, comparison.api), (f"TTL model {ttl}", comparison.ttl_model)]
    header = ("", *[name for name, _ in sides])
    rows = [header]
    for label, attribute in (("cache read", "cache_read_tokens"), ("cache creation", "cache_creation_tokens"),
                             ("new (uncached)", "new_tokens")):
        rows.append((label, *[f"{format_tokens(getattr(t, attribute))} ({format_pct(_share(getattr(t, attribute), t))})"
                              for _, t in sides]))
    rows.append(("total prompt", *[format_tokens(t.prompt_tokens) for _, t in sides]))
    rows.append(("hit rate", *[format_pct(t.hit_rate) for _, t in sides]))
    rows.append(("accuracy", "", *([format_pct(comparison.api_model_accuracy)] if comparison.api_model else []),
                 format_pct(comparison.ttl_model_accuracy)))
    lines = _table(rows)
    lines.append(f"Over the {comparison.requests} requests with API usage; accuracy = 1 − |sim − api| / api on hit rates.")
    if comparison.api_model is None:
        lines.append(unavailable_line(API_MODEL))
    if analysis.selection.cleaned_old_proxy:
        lines.append("API estimated: a cleaned old-proxy capture, see Data quality.")
    if analysis.token_ratio is not None:
        lines.append(f"Simulated splits scaled per request to the API's prompt size (cl100k_base/API ratio "
                     f"{analysis.token_ratio:.3f}).")
    return lines


def _distribution(values: Iterable[float], label: str, *, total: bool = False, unit: str = "tokens") -> list[str]:
    """One line of P10…P99, mean and max (plus the total) for a list of values."""
    values = list(values)
    if not values:
        return [f"{label}: none"]
    fmt = format_tokens if unit == "tokens" else format_seconds
    marks = percentiles(values, PERCENTILES)
    cells = [f"n={len(values)}", *[f"{name.upper()} {fmt(value)}" for name, value in marks.items()],
             f"mean {fmt(sum(values) / len(values))}", f"max {fmt(max(values))}"]
    if total:
        cells.insert(1, f"total {fmt(sum(values))}")
    return [f"{label}: " + " · ".join(cells)]


def _model_usage(analysis: Analysis) -> list[str]:
    if not analysis.models:
        return ["none"]
    rows = [("model", "requests", "input", "cache read", "cache creation", "output")]
    rows += [(m.model, str(m.requests), format_tokens(m.input_tokens), format_tokens(m.cache_read_tokens),
              format_tokens(m.cache_creation_tokens), format_tokens(m.output_tokens)) for m in analysis.models]
    return _table(rows)


def _by_lane_kind(analysis: Analysis, attribute: str, *, skip_first: bool = False) -> list[str]:
    """The distribution overall and for parent and sub-agent lanes separately."""
    seen: set[str] = set()
    groups: dict[str, list[float]] = {"all": [], "parent": [], "sub-agent": []}
    for point in analysis.points:
        first = point.lane not in seen
        seen.add(point.lane)
        if skip_first and first:
            continue
        value = getattr(point, attribute)
        groups["all"].append(value)
        if point.lane.startswith(LANE_PARENT):
            groups["parent"].append(value)
        elif point.lane != "unlinked":
            groups["sub-agent"].append(value)
    return [line for name, values in groups.items() if values or name == "all" for line in _distribution(values, name)]


def _context(analysis: Analysis) -> list[str]:
    return _by_lane_kind(analysis, "context_tokens")


def _growth(analysis: Analysis) -> list[str]:
    lines = _by_lane_kind(analysis, "growth_tokens", skip_first=True)
    resets = sum(1 for p in analysis.points if p.growth_tokens < 0)
    lines.append(f"Requests whose context shrank (compaction, reset): {resets}.")
    return lines


def _times(analysis: Analysis) -> list[str]:
    lines = _distribution(analysis.gaps_s, "start to start (all requests, time order)", unit="s")
    if REQUEST_TIMING in analysis.selection.unavailable:
        lines.append(unavailable_line(REQUEST_TIMING))
    for timing in analysis.timings:
        if timing.name != "think_time" and REQUEST_TIMING in analysis.selection.unavailable:
            continue
        lines += _distribution(timing.values_s, timing.label + (" (per lane, gap after the previous response)"
                                                                 if timing.name == "think_time" else ""), unit="s")
    return lines


def _ttl(analysis: Analysis) -> list[str]:
    if not analysis.ttl_rows:
        return ["no requests"]
    rows = [("TTL", "hit rate", "peak working set", "prefills/block", "stable")]
    for row in analysis.ttl_rows:
        marker = " *" if row.ttl_s == analysis.options.cache_ttl_s else ""
        rows.append((row.ttl_label + marker, format_pct(row.hit_rate), format_tokens(row.peak_working_set_tokens),
                     f"{row.prefills_per_block:.2f}", format_pct(row.stable_share)))
    return _table(rows) + ["* the TTL of the main simulation. Hit rate measured as the TTL model's in 'Input tokens' (splits "
                           "scaled to the API's prompt size, requests with API usage); stable = blocks prefilled once."]


def _misses(analysis: Analysis) -> list[str]:
    """Billed and simulated misses by cause; each column adds up to that side's misses."""
    causes = analysis.miss_causes
    if not causes:
        return ["no requests"]
    simulated = ordered_totals([c.simulated for c in causes])
    billed = ordered_totals([c.billed for c in causes if c.billed is not None])
    with_usage = sum(1 for c in causes if c.billed is not None)
    ttl = format_ttl(analysis.options.cache_ttl_s)
    rows = [("cause", "billed (API)", f"TTL model {ttl}", "requests")]
    for cause, label in CAUSE_LABELS.items():
        if cause in simulated or cause in billed:
            requests = sum(1 for c in causes if c.simulated.get(cause) or (c.billed or {}).get(cause))
            rows.append((label, _count_share(billed.get(cause, 0), billed) if with_usage else "n/a",
                         _count_share(simulated.get(cause, 0), simulated), str(requests)))
    rows.append(("total", format_tokens(sum(billed.values())) if with_usage else "n/a",
                 format_tokens(sum(simulated.values())), str(len(causes))))
    return _table(rows) + [
        f"Billed = the API's cache creation + input over the {with_usage} requests with usage, placed against a replay "
        "at the API's TTLs (1 h for lanes with 1-hour writes, else 5 min); TTL model = its creation + new. "
        "Causes: docs/cache-models.md#why-each-miss."]


def _count_share(tokens: int, totals: dict[str, int]) -> str:
    whole = sum(totals.values())
    return f"{format_tokens(tokens)} ({format_pct(tokens / whole if whole else 0.0)})"


def _capacity(analysis: Analysis) -> list[str]:
    curve = analysis.capacity
    if curve is None:
        return ["no requests"]
    lines = [f"Infinite-cache hit rate: {format_pct(curve.infinite_hit_rate)}"]
    infinite_row = next((row for row in analysis.ttl_rows if row.ttl_s is None), None)
    if infinite_row is not None:
        lines.append(f"It differs from the TTL analysis' ∞ row ({format_pct(infinite_row.hit_rate)}): {INFINITE_GAP_REASON}")
    lines += _table([("target", "LRU tokens", "OPT tokens")] + [
        (f"{share_label(t.share)} of infinite", _capacity_cell(t.lru_capacity_tokens), _capacity_cell(t.opt_capacity_tokens))
        for t in curve.targets])
    lines.append("")
    lines += _table([("capacity (tokens)", "LRU hit rate", "OPT hit rate")] + [
        (format_tokens(p.capacity_tokens), format_pct(p.lru_hit_rate), _rate_cell(p.opt_hit_rate)) for p in curve.points])
    return lines


def _capacity_cell(tokens: Optional[int]) -> str:
    return "not reached" if tokens is None else format_tokens(tokens)


def _rate_cell(rate: float) -> str:
    return "n/a" if rate != rate else format_pct(rate)  # NaN: OPT skipped on a large stream


def _subagents(analysis: Analysis) -> list[str]:
    if not analysis.subagents:
        return ["none"]
    rows = [("agent", "type", "spawned", "finished", "requests")]
    rows += [(lane.agent_id, lane.subagent_type or "?", format_seconds(lane.spawn_s), format_seconds(lane.finish_s),
              str(lane.requests)) for lane in analysis.subagents]
    peak = max((point.active for point in analysis.concurrency), default=0)
    return _table(rows) + [f"Peak requests in flight: {peak}. Times are from the report's first request."]


def _quality(analysis: Analysis) -> list[str]:
    lines = [f"{item.count:>6}  {item.label}" + (f" (e.g. {', '.join(item.examples)})" if item.examples else "")
             for item in analysis.quality]
    lines += [f"- {note}" for note in notes(analysis)]
    return lines or ["No data-quality problems found."]
