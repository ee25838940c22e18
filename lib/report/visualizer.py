"""complete_cache_visualizer.py's work: select, hash, analyse, write dashboards and stats (docs/visualizer.md).

One run opens the DBs once, brings the indexes up to date, and shares one memoized hasher across
every report, so `all` tokenizes each distinct segment once. Every file goes through write_atomic.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from lib.cache.miss_causes import ordered_totals
from lib.report.analysis import Analysis, AnalysisOptions, analyze
from lib.atomic import write_atomic
from lib.capture.billing_header import BillingHeaderTally
from lib.db import open_databases
from lib.errors import InputError
from lib.problems import ProblemCounter
from lib.hashing.hash_pool import HashPool, HashSettings, run_salt
from lib.hashing.request_hashing import HashedRequest
from lib.report.jsonl_capture import ROUTE_JSONL_ONLY, ROUTE_SUMMARY, load_log_capture, mark_jsonl_only
from lib.report.selection import (
    ALL, COMBINED, ROUTE_DB, Capture, Selection, load_capture, newest_conversation_id, select_all, select_combined,
    select_conversation,
)

DEFAULT_OUTPUT_DIR = Path("visualizations")
Progress = Callable[[Iterable, int], Iterable]


@dataclass(frozen=True)
class VisualizerOptions:
    """What to report on and where to write it."""

    conversation_id: Optional[str] = COMBINED
    newest: bool = False
    output_html: Optional[Path] = None
    output_dir: Optional[Path] = None
    text_only: bool = False
    min_requests: int = 1
    since: Optional[datetime] = None
    until: Optional[datetime] = None
    projects_path: Optional[str] = None
    index_db: Optional[str] = None
    jsonl_dir: Optional[str] = None  # without a DB: the logs every request is rebuilt from (docs/jsonl.md#the-dashboard)
    analysis: AnalysisOptions = field(default_factory=AnalysisOptions)
    workers: int = 1  # processes hashing prompts; the reports are the same for any count


@dataclass(frozen=True)
class ReportResult:
    """One written report and its key figures."""

    name: str
    html: Optional[Path]
    stats: Path
    requests: int
    api_hit_rate: float
    api_model_hit_rate: Optional[float]  # None on the JSONL-only route (no cache_control breakpoints)
    ttl_model_hit_rate: float
    api_model_accuracy: Optional[float]
    ttl_model_accuracy: Optional[float]
    # The data-quality counts by reason, in --json too (docs/reliability.md#bad-input), not only in the stats text.
    problems: dict[str, dict[str, Any]] = field(default_factory=dict)
    # A cleaned old-proxy capture: the API figures are estimated (lib/capture/turn_timing.py).
    api_estimated: bool = False
    # Missed tokens by cause (lib/cache/miss_causes.py): {"simulated": {...}, "billed": {...}}.
    miss_causes: dict[str, dict[str, int]] = field(default_factory=dict)
    # Capacities in tokens and GiB, tiers (docs/cache-models.md); None without requests.
    capacity_bytes: Optional[dict[str, Any]] = None
    # The TTL sweep fitted to the billed cache reads, per model family; None without billed usage.
    eviction_time: Optional[dict[str, Any]] = None


@dataclass
class VisualizerSummary:
    """What the run wrote, for the closing paragraph and --json."""

    mode: str
    route: str = ROUTE_DB
    reports: list[ReportResult] = field(default_factory=list)
    index_html: Optional[Path] = None
    dropped: int = 0
    billing_header: BillingHeaderTally = field(default_factory=BillingHeaderTally)  # over every report's requests
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The summary for --json."""
        return {
            "mode": self.mode,
            "route": self.route,
            "reports": [{key: str(value) if isinstance(value, Path) else value
                         for key, value in dataclasses.asdict(report).items()} for report in self.reports],
            "index_html": str(self.index_html) if self.index_html else None,
            "dropped_min_requests": self.dropped,
            "billing_header": self.billing_header.as_dict(),
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def describe(self) -> str:
        """The closing paragraph."""
        if not self.reports:
            return f"No report written ({self.dropped} conversation(s) under --min-requests). {self.elapsed_s:.2f} s."
        parts = []
        for report in self.reports[:5]:
            written = ", ".join(str(path) for path in (report.html, report.stats) if path)
            if not report.requests:
                # Hit rates of nothing are not 0 %: name the empty selection instead.
                parts.append(f"{report.name}: 0 requests selected (see the data-quality notes: time window, "
                             f"links, rows outside the capture); wrote {written}.")
                continue
            api_model = ("API model n/a" if report.api_model_hit_rate is None else
                         f"API model {report.api_model_hit_rate:.1%} (accuracy {_pct(report.api_model_accuracy)})")
            parts.append(
                f"{report.name}: {report.requests} request{'' if report.requests == 1 else 's'}, "
                f"API hit rate {report.api_hit_rate:.1%}"
                f"{' (estimated: cleaned old-proxy capture)' if report.api_estimated else ''}, {api_model}, TTL model "
                f"{report.ttl_model_hit_rate:.1%} (accuracy {_pct(report.ttl_model_accuracy)}); wrote {written}.")
        if len(self.reports) > 5:
            parts.append(f"… and {len(self.reports) - 5} more reports.")
        if self.index_html:
            parts.append(f"Index: {self.index_html}.")
        if self.dropped:
            parts.append(f"Dropped {self.dropped} conversation(s) under --min-requests.")
        if self.billing_header.with_header:
            parts.append(self.billing_header.describe())
        if self.route == ROUTE_JSONL_ONLY:
            parts.append(ROUTE_SUMMARY)
        return " ".join(parts) + f" {self.elapsed_s:.2f} s."


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def run_visualizer(db_path: Optional[str], options: VisualizerOptions, *, say: Callable[[str], None] = lambda _: None,
                   progress: Optional[Progress] = None) -> VisualizerSummary:
    """Write the requested dashboards and stats files; without `db_path` from the logs alone; InputError for unusable input."""
    started = time.perf_counter()
    if options.newest or options.conversation_id not in (ALL, COMBINED):
        mode = "conversation"
    else:
        mode = options.conversation_id
    if mode == ALL and options.output_html:
        raise InputError("--output names one file; with --conversation-id all use --output-dir")
    if db_path is None:
        logs = load_log_capture(options.jsonl_dir, block_size=options.analysis.block_size, since=options.since,
                                until=options.until)
        selections, dropped = _selections(logs.capture, options)
        for selection in selections:
            mark_jsonl_only(selection, logs)
        summary = VisualizerSummary(mode=mode, route=ROUTE_JSONL_ONLY, dropped=dropped)
        entries = _report(selections, lambda _: logs.hashed, summary, options)
    else:
        # One salt for every process (ids depend only on the order keys appear, so a random one keeps the
        # reports identical); the pool starts first, so workers load the tokenizer while the capture loads.
        settings = HashSettings(salt=run_salt(None), block_size=options.analysis.block_size, keep_boundaries=True)
        with HashPool(db_path, settings, workers=options.workers) as pool:
            with open_databases(db_path, options.index_db) as (proxy, index):
                capture = load_capture(proxy, index, source=db_path, projects_path=options.projects_path,
                                       since=options.since, until=options.until, say=say)
                selections, dropped = _selections(capture, options)
                summary = VisualizerSummary(mode=mode, dropped=dropped)
                entries = _report(selections, lambda selection: _hash(pool, selection, progress), summary, options)
    if mode == ALL and not options.text_only:
        from lib.report.dashboard import render_index

        summary.index_html = render_index([e for e in entries if e is not None], _output_dir(options))
    summary.elapsed_s = time.perf_counter() - started
    return summary


def _report(selections: list[Selection], hash_prompts: Callable[[Selection], Mapping[str, HashedRequest]],
            summary: VisualizerSummary, options: VisualizerOptions) -> list[Any]:
    """Analyse and write every selection; return the index entries."""
    entries = []
    stems = _unique_stems([selection.name for selection in selections])
    for selection, stem in zip(selections, stems):
        hashed = hash_prompts(selection)
        for item in selection.requests:
            prompt = hashed.get(item.request.request_id)
            if prompt is not None:
                lane = (selection.name, item.conversation_id, item.lane) if item.conversation_id else None
                summary.billing_header.add(prompt.billing_header, lane)
        analysis = analyze(selection, hashed, options.analysis, parallel=options.workers > 1)
        result, entry = _write(analysis, options, batch=summary.mode == ALL, stem=stem)
        summary.reports.append(result)
        entries.append(entry)
    return entries


def _selections(capture: Capture, options: VisualizerOptions) -> tuple[list[Selection], int]:
    """The reports of this run: one conversation, combined, or every conversation."""
    if options.newest:
        return [select_conversation(capture, newest_conversation_id(capture))], 0
    if options.conversation_id == COMBINED:
        return [select_combined(capture)], 0
    if options.conversation_id == ALL:
        if not capture.conversations:
            raise InputError(f"{capture.source}: --conversation-id all needs conversations, and neither the logs nor "
                             "the DB's turn rows hold one (give --projects-path with the JSONL logs)")
        return select_all(capture, min_parent_requests=options.min_requests)
    if not options.conversation_id:
        raise InputError("give --conversation-id ID|combined|all, or --newest")
    return [select_conversation(capture, options.conversation_id)], 0


def _hash(pool: HashPool, selection: Selection, progress: Optional[Progress]) -> dict[str, HashedRequest]:
    """Hashed prompts of the selection's turns; unusable bodies counted in its data-quality notes."""
    lanes = {item.request.request_id: (item.conversation_id, item.lane) for item in selection.requests}
    problems = ProblemCounter()
    # Hashed lane by lane (a combined report interleaves conversations in time), so a worker's
    # chunk continues one conversation instead of re-tokenizing the histories of many.
    hashed = pool.hash_all([item.request for item in selection.requests], problems,
                           group=lambda request: lanes[request.request_id], progress=progress)
    selection.problems.merge(problems)
    return hashed


def _output_dir(options: VisualizerOptions) -> Path:
    return options.output_dir or DEFAULT_OUTPUT_DIR


def _paths(options: VisualizerOptions, *, batch: bool, stem: str) -> tuple[Path, Path]:
    """(dashboard, stats): `combined.html` → `combined_stats.txt` beside it."""
    if options.output_html and not batch:
        html = Path(options.output_html)
    else:
        html = _output_dir(options) / f"{stem}.html"
    return html, html.with_name(f"{html.stem}_stats.txt")


def _unique_stems(names: list[str]) -> list[str]:
    """One file stem per report: ids that sanitize alike (`a/b`, `a_b`), differ only in case (one file on
    macOS), or are `index` (the index page) get `-2`, `-3`… instead of overwriting each other."""
    taken = {"index"}
    stems = []
    for name in names:
        stem = base = _file_stem(name)
        number = 1
        while stem.casefold() in taken:
            number += 1
            stem = f"{base}-{number}"
        taken.add(stem.casefold())
        stems.append(stem)
    return stems


def _file_stem(name: str) -> str:
    """A file-name-safe stem (conversation ids are UUIDs, but the index may hold anything)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).lstrip(".") or "report"


def _write(analysis: Analysis, options: VisualizerOptions, *, batch: bool, stem: str) -> tuple[ReportResult, Any]:
    """Write the stats file and (unless --text-only) the dashboard; return the result and its index entry."""
    from lib.report.figures import compare, to_report_model
    from lib.report.stats_text import format_stats

    html, stats = _paths(options, batch=batch, stem=stem)
    model = to_report_model(analysis)
    write_atomic(stats, format_stats(analysis, generated_at=model.generated_at))
    entry = None
    if not options.text_only:
        from lib.report.dashboard import render_report
        from lib.report.model import IndexEntry

        html.parent.mkdir(parents=True, exist_ok=True)
        render_report(model, html, shared_assets_dir=_output_dir(options) if batch else None)
        entry = IndexEntry.from_report(model, html.name)
    comparison = compare(analysis)
    result = ReportResult(
        name=analysis.selection.name, html=None if options.text_only else html, stats=stats,
        requests=len(analysis.points), api_hit_rate=comparison.api.hit_rate,
        api_model_hit_rate=comparison.api_model.hit_rate if comparison.api_model else None,
        ttl_model_hit_rate=comparison.ttl_model.hit_rate,
        api_model_accuracy=comparison.api_model_accuracy, ttl_model_accuracy=comparison.ttl_model_accuracy,
        problems=analysis.selection.problems.as_dict(), api_estimated=analysis.selection.cleaned_old_proxy,
        miss_causes={"simulated": ordered_totals([c.simulated for c in analysis.miss_causes]),
                     "billed": ordered_totals([c.billed for c in analysis.miss_causes if c.billed is not None])},
        capacity_bytes=dataclasses.asdict(model.kv_capacity) if model.kv_capacity else None,
        eviction_time=dataclasses.asdict(model.eviction) if model.eviction else None,
    )
    return result, entry

