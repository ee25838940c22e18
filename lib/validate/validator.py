"""validate_trace_cache: schema check, statistics table and the versus-API report of a trace directory (docs/validate.md).

One pass over the trace files, one file in memory at a time: each parsed document is schema-checked,
added to the statistics and, with a DB, reduced to its lanes (model, `in`, prefix-model hits per
request); only those small digests outlive the file, so 700 traces / 450 MB stay in bounded memory.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from lib.cache.miss_causes import CAUSE_LABELS
from lib.errors import CheckFailed, InputError
from lib.hashing.block_hashes import DEFAULT_BLOCK_SIZE
from lib.validate.trace_files import DirectoryCheck, check_directory
from lib.validate.matching import TraceLanes, match_traces, match_traces_to_logs, trace_lanes
from lib.validate.schema import NATIVE_CONSUMERS
from lib.validate.stats_table import StatsCollector, StatsTable
from lib.validate.versus_api import API_TRUTH_CLEANED, CLEANED_NOTE, ApiComparison, Comparison, compare_with_api


@dataclass
class ValidationReport:
    """The three sections of a run, and how long it took."""

    path: str
    schema: DirectoryCheck
    stats: StatsTable
    api: Optional[ApiComparison]
    elapsed_s: float

    def as_dict(self) -> dict[str, Any]:
        """The machine-readable report printed by --json."""
        return {
            "path": self.path,
            "schema": self.schema.as_dict(),
            "stats": self.stats.as_dict(),
            "versus_api": self.api.as_dict() if self.api else None,
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def text(self) -> str:
        """The human report: schema, statistics, versus API, closing line."""
        parts = [_schema_text(self.schema)]
        if self.stats.traces:
            parts.append(self.stats.text())
        if self.api is not None:
            parts.append(_api_text(self.api))
        parts.append(self.closing())
        return "\n\n".join(parts)

    def closing(self) -> str:
        """One paragraph: what was checked, the verdict, the time."""
        schema = self.schema
        verdict = "no schema problems" if not schema.problems else \
            f"{len(schema.errors)} schema error(s), {len(schema.warnings)} warning(s)"
        text = (f"Checked {schema.native_files} native and {schema.mooncake_files} Mooncake file(s) in {self.path} "
                f"({_request_count(schema)}): {verdict}; statistics over {len(self.stats.traces)} trace(s)")
        if self.api is not None:
            text += f"; {self.api.matched}/{self.api.requests} requests matched to the {self.api.source}"
        return text + f". {self.elapsed_s:.2f} s."


def _percent(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def _request_count(schema: DirectoryCheck) -> str:
    """Native requests, and Mooncake lines apart: `--format both` writes every request twice."""
    text = f"{schema.requests:,} requests"
    return text + (f" and {schema.mooncake_lines:,} Mooncake lines" if schema.mooncake_files else "")


# Errors are listed one per line up to this many (all of them are in --json); warnings per rule.
LISTED_ERRORS = 50


def _schema_text(schema: DirectoryCheck) -> str:
    head = (f"Schema check: {schema.native_files} native file(s), {schema.mooncake_files} Mooncake file(s), "
            f"{_request_count(schema)}")
    lines = [head + ": no problems." if not schema.problems else
             head + f": {len(schema.errors)} error(s), {len(schema.warnings)} warning(s)"]
    for code, rule in schema.by_rule().items():
        lines.append(f"  {rule['severity']:<8}{code:<24}{rule['count']:>7,}  {rule['effect']}")
        lines.append(f"{'':<12}first: {rule['first']}")
    errors = schema.errors
    if errors:
        lines.append("Errors:")
        lines.extend(f"  {problem}" for problem in errors[:LISTED_ERRORS])
        if len(errors) > LISTED_ERRORS:
            lines.append(f"  ... and {len(errors) - LISTED_ERRORS:,} more (all in --json)")
    totals = {consumer: schema.native_files if consumer in NATIVE_CONSUMERS else schema.mooncake_files
              for consumer in schema.loads_in}
    lines.append("Loads in: " + ", ".join(f"{consumer} {count}/{totals[consumer]}"
                                          for consumer, count in schema.loads_in.items()) + " file(s)")
    if schema.session_rows_checked or schema.session_rows_unchecked:
        lines.append(f"Session rows: {schema.session_rows_checked:,} checked against the native traces"
                     + (f", {schema.session_rows_unchecked:,} without a native trace to check against"
                        if schema.session_rows_unchecked else ""))
    return "\n".join(lines)


def _comparison_lines(comparison: Comparison) -> list[str]:
    return [
        f"  Simulated (prefix model, parent and sub-agent requests, blocks): {_percent(comparison.sim_pct)} "
        f"({comparison.sim_hit_blocks:,}/{comparison.sim_blocks:,} blocks)",
        f"  API (billed cache_read / prompt tokens): {_percent(comparison.api_pct)} "
        f"({comparison.api_read_tokens:,}/{comparison.api_prompt_tokens:,} tokens)",
        f"  Accuracy (1 − |simulated − API| / API): {_percent(comparison.accuracy_pct)}",
    ]


def _api_text(api: ApiComparison) -> str:
    lines = ["Simulated (trace prefix model, every lane: unlike the statistics above, sub-agent requests too) vs API "
             "(cache_read / prompt), over the same matched requests"]
    for trace in api.traces:
        lines.append(f"{trace.trace_id} ({trace.requests} reqs, {trace.matched} matched)")
        lines.extend(_comparison_lines(trace.comparison))
    lines.append("")
    if api.source != "DB":
        lines.append(f"API cache model: not run (usage from the {api.source}: no request bodies to rebuild "
                     "breakpoints from; needs --db)")
        # Without the proxy's rows an old-proxy replay (which read its twin's write) cannot be told apart.
        lines.append(f"API figures are the usage the {api.source} recorded: logs of an old-proxy capture record "
                     "each replay's usage, which read its deleted twin's write, so the API rate reads too high "
                     "there (docs/jsonl.md).")
    else:
        lines.append(f"API cache model vs actual usage, per request ({api.model_requests} requests; "
                     "absolute error, in API tokens and in % of the request's prompt)")
        if api.field_errors:
            lines.append(f"{'Field':<16}{'Median':>10}{'P90':>10}{'Median %':>10}{'P90 %':>10}{'Predicted':>14}{'Actual':>14}")
        else:
            lines.append("  (no matched requests with API usage)")
    for error in api.field_errors:
        lines.append(f"{error.field:<16}{error.median_tokens:>10,.0f}{error.p90_tokens:>10,.0f}{error.median_pct:>9.1f}%"
                     f"{error.p90_pct:>9.1f}%{error.predicted_tokens:>14,}{error.actual_tokens:>14,}")
    read, prompt = api.error("cache_read"), sum(error.actual_tokens for error in api.field_errors)
    if read is not None and prompt:
        lines.append(f"API cache model hit rate (predicted cache_read / prompt, API tokens): "
                     f"{100 * read.predicted_tokens / prompt:.1f}% (billed {100 * read.actual_tokens / prompt:.1f}%)")
    lines.extend(f"Why {reason}" for reason in api.totals_reasons)
    if api.billed_miss_causes:
        causes = " · ".join(f"{CAUSE_LABELS.get(cause, cause)} {tokens:,}" for cause, tokens in api.billed_miss_causes.items())
        lines.append(f"Billed misses by cause (API tokens, docs/cache-models.md#why-each-miss): {causes} "
                     f"(of {sum(api.billed_miss_causes.values()):,})")
    overall = api.overall
    lines.append("")
    lines.append(f"Overall ({len(api.traces)} trace(s), {api.requests} reqs, {api.matched} matched): "
                 f"simulated (prefix model) {_percent(overall.sim_pct)}, API billed {_percent(overall.api_pct)}, "
                 f"accuracy {_percent(overall.accuracy_pct)}")
    if api.api_truth == API_TRUTH_CLEANED:
        lines.append(CLEANED_NOTE)
    if api.problems:
        lines.append(f"Unmatched or degraded: {api.problems.describe()}")
    if api.billing_header.with_header:
        lines.append(api.billing_header.describe())
    return "\n".join(lines)


def validate_traces(path: str, *, db_path: Optional[str] = None, jsonl_dir: Optional[str] = None,
                    index_db: Optional[str] = None, mooncake_block_size: int = 512, needs_api: bool = False,
                    say: Callable[[str], None] = lambda _: None, workers: int = 1,
                    progress: Optional[Callable[[Iterable, int], Iterable]] = None) -> ValidationReport:
    """Schema-check and summarize every trace under `path`; with a DB, compare with the API.

    `needs_api`: a threshold on the comparison was asked for, so a missing DB is a usage error.
    `workers`: processes hashing the matched prompts (the report is the same for any count);
    `progress` wraps the hashing results (a progress bar).
    """
    started = time.perf_counter()
    if needs_api and not (db_path or jsonl_dir):
        raise InputError("--min-accuracy needs --db or --jsonl-dir, --max-error needs --db")
    root = Path(path)
    stats = StatsCollector()
    lanes: list[TraceLanes] = []

    def visit(file: Path, document: dict) -> None:
        name = file.relative_to(root).as_posix() if root.is_dir() else file.name
        stats.add(name, document)
        if db_path or jsonl_dir:
            lanes.append(trace_lanes(name, file.parent, document))

    schema = check_directory(path, mooncake_block_size=mooncake_block_size, visit=visit)
    if not schema.native_files and not schema.mooncake_files:
        raise InputError(f"{path}: no trace files (*.json, *.jsonl)")
    api = None
    if db_path:
        block_size = next((trace.block_size for trace in lanes if trace.block_size), DEFAULT_BLOCK_SIZE)
        matches = match_traces(lanes, db_path=db_path, jsonl_dir=jsonl_dir, index_db=index_db,
                               block_size=block_size, say=say, workers=workers, progress=progress)
        api = compare_with_api(lanes, matches)
    elif jsonl_dir:
        # No DB: the logs' usage is the API's, so the hit rates compare; the API model needs bodies.
        api = compare_with_api(lanes, match_traces_to_logs(lanes, jsonl_dir=jsonl_dir))
    return ValidationReport(str(path), schema, stats.table(), api, time.perf_counter() - started)


def check_gates(report: ValidationReport, *, min_accuracy: Optional[float], max_error: Optional[float],
                strict: bool = False) -> None:
    """Raise CheckFailed (exit 1) with a one-line reason for schema errors (warnings too when
    `strict`) or a missed threshold."""
    reasons = []
    schema = report.schema
    if schema.errors:
        reasons.append(f"{len(schema.errors)} schema error(s), first: {schema.errors[0]}")
    if strict and schema.warnings:
        reasons.append(f"{len(schema.warnings)} schema warning(s) under --strict, first: {schema.warnings[0]}")
    if min_accuracy is not None and report.api is not None:
        accuracy = report.api.overall.accuracy_pct
        if accuracy is None or accuracy < min_accuracy:
            reasons.append(f"overall accuracy {_percent(accuracy)} < --min-accuracy {min_accuracy:g}%")
    if max_error is not None and report.api is not None:
        worst = max(report.api.field_errors, key=lambda error: error.median_pct, default=None)
        if worst is None:
            reasons.append("no API model errors to check against --max-error (no matched requests)")
        elif worst.median_pct > max_error:
            reasons.append(f"API model median {worst.field} error {worst.median_pct:.1f}% > --max-error {max_error:g}%")
    if reasons:
        raise CheckFailed("; ".join(reasons))
