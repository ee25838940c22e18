"""The statistics table of a trace directory (docs/validate.md#statistics-table), one native trace at a time.

Only docs/traces.md#the-native-trace-file fields are read (`requests[].t/type/in/out/hash_ids/api_time/think_time`,
`tool_tokens`, `system_tokens`, `block_size`), so traces written by other tools work too. Parent
requests only: sub-agent markers and their requests are left out, as in trace publishers' tables.

Per trace: requests; starting / ending input tokens (first / last parent request's `in`); input
and output tokens per request as P10 / P50 / P90 / mean; duration in minutes (first request's `t`
to the last request's `t + api_time`); think time (mean over the requests after the first, whose
think time is 0 by definition; none for a one-request trace); API time (mean); hit rate of the
trace prefix model (docs/cache-models.md#trace-prefix-model) conversation-only and with a 75 % warm prefix. The table's rows
summarize these per-trace values over the traces (Min / P25 / Median / P75 / Max / Mean, linear
interpolation); the pooled rows summarize every parent request of every trace together.
Entries the schema check rejects (non-objects, a non-numeric `in`) are skipped here, not fatal.
"""
from __future__ import annotations

import csv
import io
from array import array
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from lib.cache.ttl_model import HitRate, conversation_hit_rate, warm_prefix_blocks
from lib.cache.percentiles import SUMMARY_KEYS, percentile_of_sorted, summarize

DEFAULT_WARM_SHARE = 0.75

# (key in TraceFigures, label, unit) — the order of the README table.
TRACE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("requests", "Requests per trace", "count"),
    ("start_in", "Starting input tokens", "tokens"),
    ("end_in", "Ending input tokens", "tokens"),
    ("in_p10", "Input tokens/request P10", "tokens"),
    ("in_p50", "Input tokens/request P50", "tokens"),
    ("in_p90", "Input tokens/request P90", "tokens"),
    ("in_mean", "Input tokens/request mean", "tokens"),
    ("out_p10", "Output tokens/request P10", "tokens"),
    ("out_p50", "Output tokens/request P50", "tokens"),
    ("out_p90", "Output tokens/request P90", "tokens"),
    ("out_mean", "Output tokens/request mean", "tokens"),
    ("duration_min", "Duration (min)", "minutes"),
    ("think_time_s", "Think time mean (s)", "seconds"),
    ("api_time_s", "API time mean (s)", "seconds"),
    ("hit_rate_pct", "Hit rate, conversation only (%)", "percent"),
    ("hit_rate_warm_pct", "Hit rate, 75% warm prefix (%)", "percent"),
)
# What the table's hit rates measure (the validator prints other hit rates below it).
HIT_RATE_NOTE = ("Hit rates here: the trace prefix model (a request's leading blocks found in its previous request), "
                 "in blocks, parent requests only; 'conversation only' starts cold, '75% warm prefix' credits 75% of "
                 "tools + system to each trace's first request.")
POOLED_ROWS: tuple[tuple[str, str, str], ...] = (
    ("in", "Input tokens/request (all requests)", "tokens"),
    ("out", "Output tokens/request (all requests)", "tokens"),
    ("think_time", "Think time (s, all requests)", "seconds"),
    ("api_time", "API time (s, all requests)", "seconds"),
)


@dataclass(frozen=True)
class TraceFigures:
    """One trace's figures over its parent requests."""

    trace_id: str
    file: str
    requests: int
    start_in: int
    end_in: int
    in_p10: float
    in_p50: float
    in_p90: float
    in_mean: float
    out_p10: float
    out_p50: float
    out_p90: float
    out_mean: float
    duration_min: float
    think_time_s: Optional[float]
    api_time_s: Optional[float]
    hit_rate_pct: float
    hit_rate_warm_pct: float
    hit_blocks: int
    warm_hit_blocks: int
    blocks: int


@dataclass(frozen=True)
class StatsRow:
    """One table row: Min / P25 / Median / P75 / Max / Mean of a metric (None when no values)."""

    scope: str
    key: str
    label: str
    unit: str
    values: dict[str, Optional[float]]


@dataclass
class StatsTable:
    """The whole table: per-trace figures, summary rows and pooled rows."""

    traces: list[TraceFigures]
    rows: list[StatsRow]
    pooled_hit_rate: HitRate
    pooled_warm_hit_rate: HitRate
    skipped_files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: per-trace figures, rows, pooled hit rates (percent)."""
        return {
            "traces": [asdict(figures) for figures in self.traces],
            "rows": [asdict(row) for row in self.rows],
            "pooled_hit_rate_pct": _pct(self.pooled_hit_rate),
            "pooled_hit_rate_warm_pct": _pct(self.pooled_warm_hit_rate),
            "skipped_files": self.skipped_files,
        }

    def csv_text(self) -> str:
        """The rows as CSV: scope, metric, unit, min, p25, median, p75, max, mean."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["scope", "metric", "unit", *SUMMARY_KEYS])
        for row in self.rows:
            writer.writerow([row.scope, row.label, row.unit, *(_csv_number(row.values[key]) for key in SUMMARY_KEYS)])
        return buffer.getvalue()

    def text(self) -> str:
        """The table as aligned text, then the pooled hit rates and what they measure.

        With one trace every summary column would repeat the trace's own value, so the per-trace
        rows become one Value column; the pooled rows (over requests) keep their distribution.
        """
        width = max(len(row.label) for row in self.rows)
        names = ("Min", "P25", "Median", "P75", "Max", "Mean")
        single = len(self.traces) == 1
        lines = [f"Statistics ({len(self.traces)} trace(s), parent requests only)"]
        lines.append(f"{'Metric':<{width}}" + (f"{'Value':>11}" if single else "".join(f"{name:>11}" for name in names)))
        scope = "traces"
        for row in self.rows:
            if row.scope != scope:
                scope = row.scope
                lines.append("Pooled over all parent requests:")
                if single:
                    lines.append(f"{'':<{width}}" + "".join(f"{name:>11}" for name in names))
            if single and row.scope == "traces":
                lines.append(f"{row.label:<{width}}{_format(row.values['mean'], row.unit):>11}")
                continue
            cells = "".join(f"{_format(row.values[key], row.unit):>11}" for key in SUMMARY_KEYS)
            lines.append(f"{row.label:<{width}}{cells}")
        lines.append(
            f"Pooled hit rate: {_pct_text(self.pooled_hit_rate)} conversation only, "
            f"{_pct_text(self.pooled_warm_hit_rate)} with a 75% warm prefix "
            f"({self.pooled_hit_rate.total:,} blocks)."
        )
        lines.append(HIT_RATE_NOTE)
        return "\n".join(lines)


def _pct(rate: HitRate) -> Optional[float]:
    return 100 * rate.rate if rate.total else None


def _pct_text(rate: HitRate) -> str:
    return f"{100 * rate.rate:.1f}%" if rate.total else "n/a"


def _csv_number(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.6g}" if abs(value) < 1e6 else f"{value:.0f}"


def _format(value: Optional[float], unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("count", "tokens"):
        return f"{value:,.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:,.1f}"
    return f"{value:,.1f}" if unit == "percent" else f"{value:,.2f}"


def _number(entry: dict, key: str) -> Optional[float]:
    value = entry.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _hash_ids(entry: dict) -> list[int]:
    value = entry.get("hash_ids")
    return value if isinstance(value, list) else []


def _int_field(document: dict, key: str) -> int:
    value = document.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class StatsCollector:
    """Accumulates per-trace figures one document at a time; `table()` builds the result."""

    def __init__(self, *, warm_share: float = DEFAULT_WARM_SHARE) -> None:
        self.warm_share = warm_share
        self.figures: list[TraceFigures] = []
        self.skipped_files: list[str] = []
        # Pooled per-request values as compact arrays: 700 traces of long sessions stay small.
        self.pooled = {key: array("d") for key, _, _ in POOLED_ROWS}

    def add(self, file: str, document: dict) -> None:
        """Add one parsed native trace (files without usable parent requests are listed as skipped)."""
        requests = document.get("requests")
        parent = [
            entry for entry in (requests if isinstance(requests, list) else [])
            if isinstance(entry, dict) and entry.get("type") != "subagent" and _number(entry, "in") is not None
        ]
        if not parent:
            self.skipped_files.append(file)
            return
        figures = self._figures(file, document, parent)
        self.figures.append(figures)

    def _figures(self, file: str, document: dict, parent: list[dict]) -> TraceFigures:
        inputs = [_number(entry, "in") or 0.0 for entry in parent]
        outputs = [_number(entry, "out") or 0.0 for entry in parent]
        think = [_number(entry, "think_time") or 0.0 for entry in parent[1:]]
        # Traces built from the logs alone have no api_time: no samples, not zeros.
        api = [value for entry in parent if (value := _number(entry, "api_time")) is not None]
        self.pooled["in"].extend(inputs)
        self.pooled["out"].extend(outputs)
        self.pooled["think_time"].extend(think)
        self.pooled["api_time"].extend(api)
        ids = [_hash_ids(entry) for entry in parent]
        cold = conversation_hit_rate(ids)
        block_size = _int_field(document, "block_size")
        warm_blocks = warm_prefix_blocks(_int_field(document, "tool_tokens"), _int_field(document, "system_tokens"),
                                         self.warm_share, block_size) if block_size > 0 else 0
        # Only the first request differs with a warm prefix: add its credit to the cold hits.
        warm_hits = cold.hits + conversation_hit_rate(ids[:1], warm_prefix_blocks=warm_blocks).hits
        start_t = _number(parent[0], "t") or 0.0
        end_t = (_number(parent[-1], "t") or 0.0) + (_number(parent[-1], "api_time") or 0.0)
        in_sorted, out_sorted = sorted(inputs), sorted(outputs)
        trace_id = document.get("id")
        return TraceFigures(
            trace_id=trace_id if isinstance(trace_id, str) else file,
            file=file,
            requests=len(parent),
            start_in=int(inputs[0]),
            end_in=int(inputs[-1]),
            in_p10=percentile_of_sorted(in_sorted, 10), in_p50=percentile_of_sorted(in_sorted, 50),
            in_p90=percentile_of_sorted(in_sorted, 90), in_mean=sum(inputs) / len(inputs),
            out_p10=percentile_of_sorted(out_sorted, 10), out_p50=percentile_of_sorted(out_sorted, 50),
            out_p90=percentile_of_sorted(out_sorted, 90), out_mean=sum(outputs) / len(outputs),
            duration_min=max(0.0, end_t - start_t) / 60,
            think_time_s=sum(think) / len(think) if think else None,
            api_time_s=sum(api) / len(api) if api else None,
            hit_rate_pct=100 * cold.rate,
            hit_rate_warm_pct=100 * warm_hits / cold.total if cold.total else 0.0,
            hit_blocks=cold.hits,
            warm_hit_blocks=warm_hits,
            blocks=cold.total,
        )

    def table(self) -> StatsTable:
        """Summary rows over the traces, pooled rows over all parent requests."""
        rows = []
        for key, label, unit in TRACE_ROWS:
            values = [getattr(figures, key) for figures in self.figures]
            rows.append(StatsRow("traces", key, label, unit, summarize(v for v in values if v is not None)))
        for key, label, unit in POOLED_ROWS:
            rows.append(StatsRow("pooled", key, label, unit, summarize(self.pooled[key])))
        blocks = sum(figures.blocks for figures in self.figures)
        return StatsTable(
            traces=self.figures,
            rows=rows,
            pooled_hit_rate=HitRate(sum(figures.hit_blocks for figures in self.figures), blocks),
            pooled_warm_hit_rate=HitRate(sum(figures.warm_hit_blocks for figures in self.figures), blocks),
            skipped_files=self.skipped_files,
        )
