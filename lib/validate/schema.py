"""Schema check of trace files against SPEC §5.1 (native) and §5.2 (Mooncake), per SPEC §7.1.

Every problem names the file, the request index (a path like `requests[3].requests[0]` for
sub-agent requests) and the rule broken. The checker is strict in the same way AIPerf's loader is:
an unknown field is an error at every level.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional, TypeGuard

from lib.traces.native_format import (
    NATIVE_MARKER_FIELDS,
    NATIVE_REQUEST_FIELDS,
    NATIVE_STREAMING_ONLY_FIELDS,
    NATIVE_TIMING_FIELDS,
    NATIVE_TRACE_FIELDS,
    NATIVE_TRACE_OPTIONAL_FIELDS,
    TOTALS_FIELDS,
)

MOONCAKE_FIELDS = frozenset({"timestamp", "input_length", "output_length", "hash_ids"})
MOONCAKE_SESSION_FIELDS = frozenset({"session_id", "timestamp", "delay", "input_length", "output_length", "hash_ids"})
NUMBER = (int, float)


@dataclass(frozen=True)
class SchemaProblem:
    """One broken rule: where (file, request path) and which rule."""

    file: str
    where: str
    rule: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.rule}"


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, NUMBER) and not isinstance(value, bool)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _all_ints(values: list) -> bool:
    """True when every value is an int, not a bool: map and set run in C (a big directory has ~90M ids)."""
    return set(map(type, values)) <= {int}


def _check_fields(obj: dict, required: frozenset, optional: frozenset, where: str) -> Iterator[str]:
    keys = set(obj)
    for name in sorted(keys - required - optional):
        yield f"{where}: unknown field `{name}`"
    for name in sorted(required - keys):
        yield f"{where}: missing field `{name}`"
    for name in sorted(keys & (required | optional)):
        if obj[name] is None:
            yield f"{where}: `{name}` is null"


def _check_request(entry: dict, where: str, block_size: Any) -> Iterator[str]:
    is_streaming = entry.get("type") == "s"
    allowed = NATIVE_REQUEST_FIELDS | (NATIVE_STREAMING_ONLY_FIELDS if is_streaming else frozenset())
    optional = allowed & NATIVE_TIMING_FIELDS  # absent in traces whose source records no timing (JSONL-only)
    required = allowed - optional
    yield from _check_fields(entry, required, optional, where)
    if entry.get("type") not in ("s", "n"):
        yield f"{where}: `type` must be \"s\", \"n\" or \"subagent\""
    for name in ("t", "api_time", "think_time", "ttft"):
        if name in entry and entry[name] is not None and (not _is_number(entry[name]) or entry[name] < 0):
            yield f"{where}: `{name}` must be a number >= 0"
    for name in ("in", "out"):
        if name in entry and entry[name] is not None and (not _is_int(entry[name]) or entry[name] < 0):
            yield f"{where}: `{name}` must be an integer >= 0"
    if "stop" in entry and entry["stop"] is not None and not isinstance(entry["stop"], str):
        yield f"{where}: `stop` must be a string"
    for name in ("input_types", "output_types"):
        value = entry.get(name)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            yield f"{where}: `{name}` must be a list of strings"
    hash_ids = entry.get("hash_ids")
    if hash_ids is not None:
        if not isinstance(hash_ids, list) or not _all_ints(hash_ids):
            yield f"{where}: `hash_ids` must be a list of integers"
        elif _is_int(entry.get("in")) and _is_int(block_size) and block_size > 0 and len(hash_ids) != entry["in"] // block_size:
            yield f"{where}: len(hash_ids) = {len(hash_ids)} but in // block_size = {entry['in'] // block_size}"


def _check_request_list(requests: Any, where: str, block_size: Any, *, allow_markers: bool) -> Iterator[str]:
    if not isinstance(requests, list):
        yield f"{where}: `requests` must be a list"
        return
    if not requests:
        yield f"{where}: `requests` is empty"
    previous_t: Optional[float] = None
    for index, entry in enumerate(requests):
        path = f"{where}[{index}]"
        if not isinstance(entry, dict):
            yield f"{path}: not an object"
            continue
        if entry.get("type") == "subagent":
            if not allow_markers:
                yield f"{path}: sub-agent marker inside a sub-agent"
            elif index == 0:
                yield f"{path}: first entry is a sub-agent marker"
            yield from _check_marker(entry, path, block_size)
        else:
            yield from _check_request(entry, path, block_size)
        t = entry.get("t")
        if _is_number(t):
            if previous_t is not None and t < previous_t:
                yield f"{path}: `t` decreases ({t} < {previous_t})"
            previous_t = t


def _check_marker(entry: dict, where: str, block_size: Any) -> Iterator[str]:
    yield from _check_fields(entry, NATIVE_MARKER_FIELDS, frozenset(), where)
    for name in ("duration_ms", "total_tokens", "tool_use_count", "tool_tokens", "system_tokens"):
        if name in entry and entry[name] is not None and not _is_int(entry[name]):
            yield f"{where}: `{name}` must be an integer"
    if "requests" in entry and entry["requests"] is not None:
        yield from _check_request_list(entry["requests"], f"{where}.requests", block_size, allow_markers=False)


def check_native_trace(document: Any, file: str) -> list[SchemaProblem]:
    """All schema problems of one parsed native trace document."""
    if not isinstance(document, dict):
        return [SchemaProblem(file, "top level", "not a JSON object")]
    messages = list(_check_fields(document, NATIVE_TRACE_FIELDS, NATIVE_TRACE_OPTIONAL_FIELDS, "top level"))
    block_size = document.get("block_size")
    if not _is_int(block_size) or block_size <= 0:
        messages.append("top level: `block_size` must be a positive integer")
    if document.get("hash_id_scope") not in ("local", "global", None):
        messages.append("top level: `hash_id_scope` must be \"local\" or \"global\"")
    if not isinstance(document.get("id"), (str, type(None))):
        messages.append("top level: `id` must be a string")
    totals = document.get("totals")
    if isinstance(totals, dict):
        messages.extend(_check_fields(totals, TOTALS_FIELDS, frozenset(), "totals"))
    if "requests" in document and document["requests"] is not None:
        messages.extend(_check_request_list(document["requests"], "requests", block_size, allow_markers=True))
    return [_problem(file, message) for message in messages]


def _problem(file: str, message: str) -> SchemaProblem:
    where, _, rule = message.partition(": ")
    return SchemaProblem(file, where, rule)


def check_mooncake_rows(rows: Iterable[tuple[int, Any]], file: str, *, block_size: int) -> list[SchemaProblem]:
    """Schema problems of Mooncake rows (flat or session flavour) given as (line number, parsed row or None when the line is broken)."""
    problems = []
    for line_number, row in rows:
        where = f"line {line_number}"
        if row is None:
            problems.append(SchemaProblem(file, where, "not valid JSON"))
            continue
        if not isinstance(row, dict):
            problems.append(SchemaProblem(file, where, "not a JSON object"))
            continue
        is_session = "session_id" in row
        allowed = MOONCAKE_SESSION_FIELDS if is_session else MOONCAKE_FIELDS
        required = frozenset({"input_length", "output_length", "hash_ids"}) | ({"session_id"} if is_session else {"timestamp"})
        messages = list(_check_fields(row, required, allowed - required, where))
        hash_ids = row.get("hash_ids")
        length = row.get("input_length")
        if not isinstance(hash_ids, list) or not _all_ints(hash_ids):
            messages.append(f"{where}: `hash_ids` must be a list of integers")
        # AIPerf enforces the ceil convention on session rows (per-turn deltas) as well.
        elif _is_int(length) and len(hash_ids) != math.ceil(length / block_size):
            messages.append(f"{where}: len(hash_ids) = {len(hash_ids)} "
                            f"but ceil(input_length / {block_size}) = {math.ceil(length / block_size)}")
        problems.extend(_problem(file, message) for message in messages)
    return problems
