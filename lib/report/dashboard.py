"""Render a `ReportModel` as one self-contained, offline HTML dashboard (docs/visualizer.md), and the batch index.

The chart library (Chart.js, vendored under `lib/report/static/`) is inlined once per report, or, in batch
mode, written once beside the reports and referenced relatively, so `all` does not repeat 200 KB per
file. The page embeds its data as JSON and `static/dashboard.js` draws every `[data-chart]` container.
"""
from __future__ import annotations

import bisect
import functools
import math
import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import orjson

from lib.atomic import write_atomic
from lib.cache.eviction_time import EvictionRow, EvictionTime, TtlFit
from lib.cache.miss_causes import CAUSE_LABELS, CAUSES, ordered_totals
from lib.cache.percentiles import percentile_of_sorted
from lib.report.model import IndexEntry, ReportModel, TimingDistribution

if TYPE_CHECKING:
    import jinja2

CHART_JS_VERSION = "4.6.1"
CHART_JS_FILENAME = "chart.umd.min.js"
STATIC_DIR = Path(__file__).resolve().parent / "static"
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
INDEX_FILENAME = "index.html"
# Why the capacity model's infinite-cache hit rate and the TTL sweep's ∞ row differ (both shown).
INFINITE_GAP_REASON = (
    "the capacity model applies each request at once, so requests in flight together share their blocks (the "
    "setting in which Belady/OPT is optimal), and counts cl100k_base tokens over every request; the TTL sweep makes "
    "a request's blocks readable only when its response starts (the 'in flight' misses of Why each miss) and "
    "weighs requests by their API prompt size, as the cards do.")
REQUESTS_COLUMN = "Requests"  # the index page's own column; a card of that label is not repeated
# (section id, heading) in page order; the nav, the template and the tests share this list.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("requests", "Prompt tokens per request"),
    ("hit-rate", "Hit rate over time"),
    ("misses", "Why each miss"),
    ("context", "Context length and growth"),
    ("ttl", "TTL sweep"),
    ("working-set", "Working set over time"),
    ("capacity", "Cache capacity"),
    ("capacity-bytes", "Capacity in bytes"),
    ("eviction", "Effective eviction time"),
    ("timing", "Timing"),
    ("subagents", "Sub-agent lanes"),
    ("models", "Model usage"),
    ("quality", "Data quality"),
)
# Latency-style bucket edges in seconds: equal-width bins would put every tool call into the
# first bin next to one 5-minute user pause.
_TIMING_EDGES_S = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
# A capacity sweep spanning more than this ratio is drawn on a log axis.
_LOG_SCALE_MIN_RATIO = 20.0
# Rows of the eviction table on the page and in the stats text: the standard sweep's TTLs and the
# fitted ones (the --json has every row of the grid).
_SHOWN_EVICTION_TTLS_S = (60, 120, 180, 240, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400, None)


def render_report(model: ReportModel, output_html: Path, *, shared_assets_dir: Optional[Path] = None) -> None:
    """Write `model` as one dashboard; with `shared_assets_dir`, reference the chart library there."""
    output_html = Path(output_html)
    chart_js_href = None
    if shared_assets_dir is not None:
        asset = write_chart_library(Path(shared_assets_dir))
        chart_js_href = _relative_href(asset, output_html.parent)
    html = _environment().get_template("dashboard.html.j2").render(
        model=model,
        sections=SECTIONS,
        timings=_drawable_timings(model),
        timing_rows=[_timing_row(item) for item in _drawable_timings(model)],
        cache_ttl_label=format_ttl(model.cache_ttl_s),
        miss_rows=miss_totals(model),
        infinite_ttl_row=next((row for row in model.ttl_sweep if row.ttl_s is None), None),
        infinite_gap_reason=INFINITE_GAP_REASON,
        data_json=_script_json(_page_data(model)),
        css=_static_text("dashboard.css"),
        app_js=_static_text("dashboard.js"),
        chart_js=None if chart_js_href else _static_text(CHART_JS_FILENAME),
        chart_js_href=chart_js_href,
        chart_js_version=CHART_JS_VERSION,
    )
    write_atomic(output_html, html)


def render_index(entries: Sequence[IndexEntry], output_dir: Path, *, title: str = "KV-cache reports") -> Path:
    """Write `index.html` in `output_dir` listing every report with its key figures; return its path."""
    target = Path(output_dir) / INDEX_FILENAME
    html = _environment().get_template("index.html.j2").render(
        title=title, entries=entries, css=_static_text("dashboard.css"),
        figure_labels=_figure_labels(entries),
    )
    write_atomic(target, html)
    return target


def write_chart_library(assets_dir: Path) -> Path:
    """Write the chart library into `assets_dir` once (skipped when an identical copy exists)."""
    target = Path(assets_dir) / CHART_JS_FILENAME
    content = _static_text(CHART_JS_FILENAME)
    if not target.is_file() or target.read_text(encoding="utf-8") != content:
        write_atomic(target, content)
    return target


def format_ttl(ttl_s: Optional[float]) -> str:
    """A TTL as the sweep labels it: 30s, 5m, 1h, 1h30m, ∞."""
    if ttl_s is None or math.isinf(ttl_s):
        return "∞"
    seconds = int(round(ttl_s))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"


def format_tokens(value: Optional[float]) -> str:
    """Token counts with thousands separators; n/a for missing values."""
    return "n/a" if value is None else f"{round(value):,}"


def format_pct(value: Optional[float]) -> str:
    """A fraction in [0, 1] as a percentage with one decimal."""
    return "n/a" if value is None else f"{value * 100:.1f}%"


def format_seconds(value: Optional[float]) -> str:
    """Seconds as s / min / h depending on magnitude."""
    if value is None:
        return "n/a"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def format_gib(gib: Optional[float]) -> str:
    """GiB with 3 significant decimals for small sizes; 'not reached' for None."""
    if gib is None:
        return "not reached"
    return f"{gib:,.3f} GiB" if gib < 10 else f"{gib:,.1f} GiB"


def format_points(error: float) -> str:
    """A difference of two rates in percentage points: -0.004 → '-0.4 pp'."""
    return f"{error * 100:+.1f} pp"


def fit_range(fit: TtlFit) -> str:
    """`2m–5m`, or the single TTL when the range is one grid point."""
    low, high = format_ttl(fit.range_low_s), format_ttl(fit.range_high_s)
    return low if low == high else f"{low}–{high}"


def shown_eviction_rows(eviction: EvictionTime) -> list[EvictionRow]:
    """The eviction grid rows worth a table line: the standard sweep's TTLs and every fitted TTL."""
    fitted = {fit.ttl_s for family in eviction.fits for fit in (family.refresh, family.no_refresh) if fit}
    return [row for row in eviction.rows if row.ttl_s in _SHOWN_EVICTION_TTLS_S or row.ttl_s in fitted]


@functools.lru_cache(maxsize=1)
def _environment() -> "jinja2.Environment":
    """The jinja2 environment over `lib/report/templates` (imported lazily so `--help` stays fast)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(tokens=format_tokens, pct=format_pct, seconds=format_seconds, ttl=format_ttl)
    # The 'Capacity in bytes' and 'Effective eviction time' sections.
    env.filters.update(gib=format_gib, points=format_points)
    env.globals.update(zip=zip, fit_range=fit_range, shown_eviction_rows=shown_eviction_rows)
    return env


@functools.lru_cache(maxsize=None)
def _static_text(name: str) -> str:
    """A vendored static file's text."""
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def _relative_href(asset: Path, from_dir: Path) -> str:
    """A URL path from `from_dir` to `asset`, so a moved output folder keeps working."""
    relative = os.path.relpath(asset.resolve(), from_dir.resolve())
    return urllib.parse.quote(Path(relative).as_posix())


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element: `<`, `>` and `&` escaped so no data can close the tag."""
    text = orjson.dumps(data).decode()
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _page_data(model: ReportModel) -> dict[str, Any]:
    """The columnar data the page script draws from (compact: one array per field)."""
    return {
        "lanes": list(model.lanes),
        "cache_ttl_label": format_ttl(model.cache_ttl_s),
        "requests": _request_columns(model),
        "ttl": [
            {"label": row.ttl_label, "hit_rate": row.hit_rate, "peak": row.peak_working_set_tokens,
             "prefills": row.prefills_per_block, "stable": row.stable_share,
             "is_selected": row.ttl_s is not None and math.isclose(row.ttl_s, model.cache_ttl_s)}
            for row in model.ttl_sweep
        ],
        "working_set": _columns(model.working_set, ("t_s", "tokens")),
        "capacity": _capacity_data(model),
        "timings": [
            {"name": item.name, "label": item.label, **_histogram(item.values_s)}
            for item in _drawable_timings(model)
        ],
        "subagents": [
            {"id": lane.agent_id, "type": lane.subagent_type, "spawn": lane.spawn_s,
             "finish": lane.finish_s, "requests": lane.requests}
            for lane in model.subagents
        ],
        "concurrency": _columns(model.concurrency, ("t_s", "active")),
        "misses": _miss_data(model),
    }


def miss_totals(model: ReportModel) -> list[dict[str, Any]]:
    """One row per cause with misses: label, simulated and billed tokens, their shares, requests affected."""
    simulated = ordered_totals([causes.simulated for causes in model.miss_causes])
    billed = ordered_totals([causes.billed for causes in model.miss_causes if causes.billed is not None])
    all_simulated, all_billed = sum(simulated.values()), sum(billed.values())
    return [
        {"cause": cause, "label": CAUSE_LABELS[cause], "simulated": simulated.get(cause, 0),
         "simulated_share": simulated.get(cause, 0) / all_simulated if all_simulated else None,
         "billed": billed.get(cause, 0) if model.miss_causes and any(c.billed is not None for c in model.miss_causes) else None,
         "billed_share": billed.get(cause, 0) / all_billed if all_billed else None,
         "requests": sum(1 for c in model.miss_causes if c.simulated.get(cause) or (c.billed or {}).get(cause))}
        for cause in CAUSES if cause in simulated or cause in billed
    ]


def _miss_data(model: ReportModel) -> Optional[dict[str, Any]]:
    """Per-request missed tokens by cause, one list per cause (billed null where the API gave no usage)."""
    if not model.miss_causes:
        return None
    rows = miss_totals(model)
    return {
        "causes": [row["cause"] for row in rows],
        "labels": {row["cause"]: row["label"] for row in rows},
        "simulated": {row["cause"]: [c.simulated.get(row["cause"], 0) for c in model.miss_causes] for row in rows},
        "billed": {row["cause"]: [None if c.billed is None else c.billed.get(row["cause"], 0) for c in model.miss_causes]
                   for row in rows},
    }


def _request_columns(model: ReportModel) -> dict[str, list[Any]]:
    """Per-request series, one list per field; API values are null where the API gave no usage."""
    points = model.requests
    return {
        "index": [p.index for p in points],
        "t_s": [p.t_s for p in points],
        "lane": [p.lane for p in points],
        "model": [p.model for p in points],
        "sim_read": [p.simulated.cache_read_tokens for p in points],
        "sim_create": [p.simulated.cache_creation_tokens for p in points],
        "sim_new": [p.simulated.new_tokens for p in points],
        "sim_hit": [p.simulated.hit_rate for p in points],
        "api_read": [p.api.cache_read_tokens if p.api else None for p in points],
        "api_create": [p.api.cache_creation_tokens if p.api else None for p in points],
        "api_new": [p.api.new_tokens if p.api else None for p in points],
        "api_hit": [p.api.hit_rate if p.api else None for p in points],
        "context": [p.context_tokens for p in points],
        "growth": [p.growth_tokens for p in points],
    }


def _columns(rows: Sequence[Any], names: tuple[str, ...]) -> dict[str, list[Any]]:
    """One list per attribute name of the records `rows` (orjson writes non-finite floats as null)."""
    return {name: [getattr(row, name) for row in rows] for name in names}


def _capacity_data(model: ReportModel) -> Optional[dict[str, Any]]:
    """The capacity curve, its targets and whether the x axis should be logarithmic."""
    curve = model.capacity
    if curve is None or not curve.points:
        return None
    capacities = [point.capacity_tokens for point in curve.points]
    smallest = min(capacities)
    return {
        "capacity": capacities,
        "lru": [point.lru_hit_rate for point in curve.points],
        "opt": [point.opt_hit_rate for point in curve.points],
        "infinite": curve.infinite_hit_rate,
        "log_scale": smallest > 0 and max(capacities) / smallest >= _LOG_SCALE_MIN_RATIO,
        "targets": [
            {"share": target.share, "lru": target.lru_capacity_tokens, "opt": target.opt_capacity_tokens}
            for target in curve.targets
        ],
    }


def _histogram(values_s: Sequence[float]) -> dict[str, list[Any]]:
    """Counts per latency bucket, trimmed to the buckets between the first and last non-empty one."""
    edges = _TIMING_EDGES_S
    counts = [0] * len(edges)
    for value in values_s:
        if math.isfinite(value):
            counts[max(bisect.bisect_right(edges, value) - 1, 0)] += 1
    labels = [_bucket_label(i) for i in range(len(edges))]
    used = [i for i, count in enumerate(counts) if count]
    first, last = (used[0], used[-1]) if used else (0, 0)
    return {"bins": labels[first:last + 1], "counts": counts[first:last + 1]}


def _bucket_label(slot: int) -> str:
    """Label of bucket `slot` of `_TIMING_EDGES_S`, e.g. "1–2" or "≥3600"."""
    edges = _TIMING_EDGES_S
    if slot == len(edges) - 1:
        return f"≥{edges[slot]:g}"
    return f"{edges[slot]:g}–{edges[slot + 1]:g}"


def _drawable_timings(model: ReportModel) -> list[TimingDistribution]:
    """Timing metrics with at least one finite sample; the others get no chart and no table row."""
    return [item for item in model.timings if any(math.isfinite(value) for value in item.values_s)]


def _timing_row(item: TimingDistribution) -> dict[str, Any]:
    """Count, percentiles (linear interpolation), mean and max of one timing metric's finite samples."""
    values = sorted(value for value in item.values_s if math.isfinite(value))
    return {
        "label": item.label,
        "count": len(values),
        "p10": percentile_of_sorted(values, 10),
        "p50": percentile_of_sorted(values, 50),
        "p90": percentile_of_sorted(values, 90),
        "mean": sum(values) / len(values),
        "max": values[-1],
    }


def _figure_labels(entries: Sequence[IndexEntry]) -> list[str]:
    """Column headings of the index table: every figure label, in first-seen order.

    The request count has its own column (every entry has one), so a "Requests" card is not repeated.
    """
    return list(dict.fromkeys(card.label for entry in entries for card in entry.figures
                              if card.label != REQUESTS_COLUMN))
