"""Finding and reading trace files one at a time, and checking a whole directory (docs/validate.md#schema-check).

A directory may hold 700 traces / 450 MB: files are parsed one by one and only small digests
(trace id, a hash of the request list, and each lane's `in` values when Mooncake files are there
to check session rows against) are kept across files, so memory stays bounded.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeGuard

import orjson
import xxhash

from lib.errors import InputError
from lib.traces.writer import SIDECAR_DIR
from lib.validate.schema import (
    ERROR,
    MOONCAKE_CONSUMERS,
    NATIVE_CONSUMERS,
    RULES,
    WARNING,
    SchemaProblem,
    check_mooncake_rows,
    check_native_trace,
)

NOT_TRACES = {"manifest.json"}
# A session row replaying within this share of the trace's prompt matches it (docs/validate.md).
SESSION_TOLERANCE = 0.01
SKIPPED_DIRS = {SIDECAR_DIR}


def find_trace_files(path: str | Path) -> tuple[list[Path], list[Path]]:
    """Native (`*.json`) and Mooncake (`*.jsonl`) files under `path` (a directory or one file)."""
    root = Path(path)
    if root.is_file():
        return ([root], []) if root.suffix == ".json" else ([], [root])
    if not root.is_dir():
        raise InputError(f"{path}: no such file or directory")
    native, mooncake = [], []
    for file in sorted(root.rglob("*")):
        if not file.is_file() or SKIPPED_DIRS.intersection(file.relative_to(root).parts[:-1]):
            continue
        if file.suffix == ".json" and file.name not in NOT_TRACES and not file.name.startswith("."):
            native.append(file)
        elif file.suffix == ".jsonl" and not file.name.startswith("."):
            mooncake.append(file)
    return native, mooncake


def load_json(path: Path) -> tuple[Optional[Any], Optional[str]]:
    """Parse one JSON file: (document, None) or (None, reason)."""
    try:
        return orjson.loads(path.read_bytes()), None
    except orjson.JSONDecodeError as error:
        return None, f"not valid JSON ({error})"
    except OSError as error:
        return None, f"cannot read ({error.strerror})"


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed row or None when broken) for each non-blank line."""
    with path.open("rb") as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                yield number, orjson.loads(line)
            except orjson.JSONDecodeError:
                yield number, None


@dataclass
class DirectoryCheck:
    """Result of the schema check of a trace directory: errors and warnings, which consumers load what."""

    native_files: int = 0
    mooncake_files: int = 0
    requests: int = 0  # in native traces; Mooncake files repeat them, so their lines are counted apart
    mooncake_lines: int = 0
    problems: list[SchemaProblem] = field(default_factory=list)
    # Consumer -> files it loads; a file breaking a rule that names the consumer is not counted.
    loads_in: dict[str, int] = field(default_factory=dict)
    session_rows_checked: int = 0
    session_rows_unchecked: int = 0

    @property
    def errors(self) -> list[SchemaProblem]:
        return [problem for problem in self.problems if problem.severity == ERROR]

    @property
    def warnings(self) -> list[SchemaProblem]:
        return [problem for problem in self.problems if problem.severity == WARNING]

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors

    def by_rule(self) -> dict[str, dict[str, Any]]:
        """Per rule: severity, count and the first problem, errors first, then by count."""
        counts = Counter(problem.code for problem in self.problems)
        first: dict[str, SchemaProblem] = {}
        for problem in self.problems:
            first.setdefault(problem.code, problem)
        order = sorted(counts, key=lambda code: (RULES[code].severity != ERROR, -counts[code], code))
        return {code: {"severity": RULES[code].severity, "count": counts[code], "first": str(first[code]),
                       "effect": RULES[code].effect} for code in order}

    def as_dict(self) -> dict[str, Any]:
        return {
            "native_files": self.native_files,
            "mooncake_files": self.mooncake_files,
            "requests": self.requests,
            "mooncake_lines": self.mooncake_lines,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "rules": self.by_rule(),
            "loads_in": self.loads_in,
            "session_rows_checked": self.session_rows_checked,
            "session_rows_unchecked": self.session_rows_unchecked,
            "problems": [{"severity": problem.severity, "rule": problem.code, "problem": str(problem)}
                         for problem in self.problems],
        }


def check_directory(path: str | Path, *, mooncake_block_size: int = 512,
                    visit: Optional[Callable[[Path, dict], None]] = None) -> DirectoryCheck:
    """Schema-check every trace file, then look for duplicate ids and duplicate traces across files.

    `visit(path, document)` sees each parsed native trace object once, so statistics can be
    gathered in the same single pass instead of parsing a large directory twice.
    """
    native, mooncake = find_trace_files(path)
    result = DirectoryCheck(native_files=len(native), mooncake_files=len(mooncake))
    result.loads_in = {consumer: 0 for consumer in (*NATIVE_CONSUMERS, *MOONCAKE_CONSUMERS)} if mooncake else \
        {consumer: 0 for consumer in NATIVE_CONSUMERS}
    ids_seen: dict[str, str] = {}
    digests_seen: dict[bytes, str] = {}
    # Per trace id, per lane: the requests' `in`, to check session files against (only when there are any).
    lanes: dict[str, dict[str, list[Any]]] = {}
    for file in native:
        name = file.name
        document, error = load_json(file)
        problems = [SchemaProblem(name, "file", error, "invalid_json", NATIVE_CONSUMERS)] if error else \
            check_native_trace(document, name)
        if isinstance(document, dict):
            if visit is not None:
                visit(file, document)
            requests = document.get("requests")
            result.requests += _count_requests(requests)
            trace_id = document.get("id")
            if isinstance(trace_id, str):
                if trace_id in ids_seen:
                    problems.append(SchemaProblem(name, "top level", f"duplicate trace id `{trace_id}` (also in {ids_seen[trace_id]})",
                                                  "duplicate_trace_id"))
                ids_seen.setdefault(trace_id, name)
                if mooncake:
                    lanes[trace_id] = _lane_prompts(requests)
            try:
                digest = xxhash.xxh3_128_digest(orjson.dumps(requests))
            except TypeError:  # orjson's "Recursion limit reached": it reads 1024 levels but writes 254
                problems.append(SchemaProblem(name, "requests", "nested deeper than 254 levels", "nested_too_deep"))
            else:
                if digest in digests_seen:
                    problems.append(SchemaProblem(name, "requests",
                                                  f"duplicate trace: identical request list to {digests_seen[digest]}",
                                                  "duplicate_request_list"))
                digests_seen.setdefault(digest, name)
        _count_loads(result, problems, NATIVE_CONSUMERS)
        result.problems.extend(problems)
    for file in mooncake:
        session_rows: list[tuple[int, dict]] = []
        problems = check_mooncake_rows(_counting(iter_jsonl(file), result, session_rows), file.name,
                                       block_size=mooncake_block_size)
        problems += check_session_arithmetic(session_rows, file.name, lanes, result)
        _count_loads(result, problems, MOONCAKE_CONSUMERS)
        result.problems.extend(problems)
    return result


def _count_loads(result: DirectoryCheck, problems: list[SchemaProblem], consumers: tuple[str, ...]) -> None:
    broken = {consumer for problem in problems for consumer in problem.breaks}
    for consumer in consumers:
        result.loads_in[consumer] += consumer not in broken


def _lane_prompts(entries: Any) -> dict[str, list[Any]]:
    """`in` of each request per lane: `parent`, and each sub-agent marker's `agent_id`."""
    lanes: dict[str, list[Any]] = {"parent": []}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        if entry.get("type") == "subagent":
            inner = entry.get("requests")
            lanes[str(entry.get("agent_id"))] = [r.get("in") for r in inner if isinstance(r, dict)] if isinstance(inner, list) else []
        else:
            lanes["parent"].append(entry.get("in"))
    return lanes


def check_session_arithmetic(rows: list[tuple[int, dict]], file: str, lanes: dict[str, dict[str, list[Any]]],
                             result: DirectoryCheck) -> list[SchemaProblem]:
    """Session rows against the native traces beside them (docs/traces.md, "Session rows").

    AIPerf sends a session's row k as rows 1..k's prompts plus the answers (`output_length`) to
    rows 1..k-1, so that sum must be the trace's `in` of the request; a row of one token may
    run ahead (the replay cannot shrink). Each row is measured as AIPerf replays it, so an error
    carries into the rows after it. A session `<id>#n` continues lane `<id>` after a restart;
    `<trace id>/<agent id>` is that sub-agent's lane. Sessions without a native trace are counted
    as unchecked.
    """
    problems: list[SchemaProblem] = []
    sessions: dict[str, list[tuple[int, dict]]] = {}
    for line_number, row in rows:
        sessions.setdefault(row["session_id"].split("#", 1)[0], []).append((line_number, row))
    for lane_session, lane_rows in sessions.items():
        trace_id, _, lane = lane_session.partition("/")
        native = lanes.get(trace_id, {}).get(lane or "parent")
        if native is None:
            result.session_rows_unchecked += len(lane_rows)
            continue
        if len(native) != len(lane_rows):
            problems.append(SchemaProblem(file, f"line {lane_rows[0][0]}", f"session `{lane_session}` has {len(lane_rows)} "
                                          f"rows but its trace lane has {len(native)} requests", "session_arithmetic",
                                          MOONCAKE_CONSUMERS))
            continue
        replayed = answer = 0
        session = None
        for (line_number, row), recorded in zip(lane_rows, native):
            length, out = row.get("input_length"), row.get("output_length")
            if not (_is_count(length) and _is_count(out) and _is_count(recorded) and recorded):
                continue
            result.session_rows_checked += 1
            if row["session_id"] != session:
                session, replayed = row["session_id"], length
            else:
                replayed += answer + length
            answer = out
            excess = replayed - recorded
            if abs(excess) <= SESSION_TOLERANCE * recorded:
                continue
            if length == 1 and excess > 0:
                code = "session_turn_carried"
            else:
                code = "session_arithmetic"
            problems.append(SchemaProblem(file, f"line {line_number}", f"session `{row['session_id']}` replays "
                                          f"{replayed:,} prompt tokens, the trace's request has {recorded:,} "
                                          f"({excess / recorded:+.1%})", code,
                                          MOONCAKE_CONSUMERS if code == "session_arithmetic" else ()))
    return problems


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _count_requests(entries: Any) -> int:
    """Requests in a native request list: sub-agent markers count their own requests, not themselves."""
    if not isinstance(entries, list):
        return 0
    return sum(_count_requests(entry.get("requests")) if isinstance(entry, dict) and entry.get("type") == "subagent"
               else 1 for entry in entries)


def _counting(rows: Iterator[tuple[int, Any]], result: DirectoryCheck,
              session_rows: list[tuple[int, dict]]) -> Iterator[tuple[int, Any]]:
    """Count the rows, and keep what the session arithmetic needs of session rows (not their ids)."""
    for line_number, row in rows:
        result.mooncake_lines += 1
        if isinstance(row, dict) and isinstance(row.get("session_id"), str):
            session_rows.append((line_number, {key: row.get(key) for key in ("session_id", "input_length", "output_length")}))
        yield line_number, row
