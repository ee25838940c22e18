"""Schema check of trace files against docs/traces.md#the-native-trace-file (native) and docs/traces.md#mooncake-jsonl (Mooncake), per
docs/validate.md#schema-check.

Every problem names the file, the request index (a path like `requests[3].requests[0]` for
sub-agent requests), the rule broken and the consumers it breaks. Rules are **errors** when a
consumer's loader rejects or misreads the file, or when our own format's contract is broken, and
**warnings** when every loader reads the file as meant but something optional is missing (the
published kv-cache-tester corpus has them by the thousand). docs/validate.md lists the rules.

What the consumers need (read from their loaders, behaviour only): AIPerf's `weka_trace` models
forbid unknown fields at every level, require `hash_id_scope: "local"`, and accept missing or null
`api_time`, `think_time`, `ttft` and marker counters; kv-cache-tester's trace reader takes every
field with a default, so it reads anything that parses, but crashes on null `in`, `t` or `hash_ids`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional, TypeGuard

from lib.traces.native_format import (
    NATIVE_MARKER_FIELDS,
    NATIVE_REQUEST_FIELDS,
    NATIVE_STREAMING_ONLY_FIELDS,
    NATIVE_TRACE_FIELDS,
    NATIVE_TRACE_OPTIONAL_FIELDS,
    TOTALS_FIELDS,
)

MOONCAKE_FIELDS = frozenset({"timestamp", "input_length", "output_length", "hash_ids"})
MOONCAKE_SESSION_FIELDS = frozenset({"session_id", "timestamp", "delay", "input_length", "output_length", "hash_ids"})
NUMBER = (int, float)

ERROR, WARNING = "error", "warning"
KV_CACHE_TESTER = "kv-cache-tester"
AIPERF_WEKA = "AIPerf weka_trace"
AIPERF_MOONCAKE = "AIPerf mooncake_trace"
NATIVE_CONSUMERS = (KV_CACHE_TESTER, AIPERF_WEKA)
MOONCAKE_CONSUMERS = (AIPERF_MOONCAKE,)

# Optional timing: a trace without it replays, only with less timing fidelity.
OPTIONAL_TIMING = ("api_time", "think_time", "ttft")
MARKER_COUNTERS = frozenset({"duration_ms", "total_tokens", "tool_use_count"})
# Fields AIPerf's weka_trace models require (the others have defaults there).
AIPERF_REQUIRED = frozenset({"id", "models", "block_size", "hash_id_scope", "requests", "t", "type", "model", "in",
                             "out", "agent_id", "subagent_type", "status"})
# Fields kv-cache-tester computes with: null there is a crash, the file is skipped.
KV_CACHE_TESTER_ARITHMETIC = frozenset({"t", "in", "hash_ids", "requests"})


@dataclass(frozen=True)
class Rule:
    """One rule of the check: its severity and what a file breaking it does to a consumer."""

    code: str
    severity: str
    effect: str


RULES = {rule.code: rule for rule in (
    Rule("invalid_json", ERROR, "no consumer can read the file"),
    Rule("not_an_object", ERROR, "no consumer can read it"),
    Rule("unknown_field", ERROR, "AIPerf's loaders forbid fields they do not know"),
    Rule("missing_field", ERROR, "AIPerf's weka_trace requires it; kv-cache-tester reads a default in its place"),
    Rule("null_field", ERROR, "AIPerf rejects null there; kv-cache-tester crashes on null `t`, `in`, `hash_ids`"),
    Rule("wrong_type", ERROR, "the loaders reject or misread the value"),
    Rule("hash_ids_length", ERROR, "replays build the prompt from the ids: it would not have `in` tokens"),
    Rule("t_decreases", ERROR, "requests of a list must be in time order (our contract)"),
    Rule("misplaced_marker", ERROR, "a sub-agent marker first, or inside a sub-agent (our contract; AIPerf rejects the latter)"),
    Rule("empty_requests", ERROR, "a trace or sub-agent without requests (our contract)"),
    Rule("duplicate_trace_id", ERROR, "trace ids name the replayed sessions (our contract)"),
    Rule("session_arithmetic", ERROR, "AIPerf replays a session row as history + answer + row: the prompt would differ from the trace's"),
    Rule("prefix_exceeds_first_request", ERROR,
         "AIPerf's weka_trace refuses it: a lane's first request must hold the tools + system prefix in its hash ids"),
    Rule("nested_too_deep", ERROR, "a value nested deeper than 254 levels: no field of the format nests, and orjson cannot write it"),
    Rule("global_hash_id_scope", WARNING, "loads in kv-cache-tester only: AIPerf's weka_trace and Dynamo's replay require `local`"),
    Rule("missing_api_time", WARNING, "replays fall back to no server time for the request"),
    Rule("missing_think_time", WARNING, "replays take the gap from `t` alone"),
    Rule("missing_ttft", WARNING, "a streaming request without its recorded time to first token"),
    Rule("null_marker_counter", WARNING,
         "`duration_ms` / `total_tokens` / `tool_use_count` unknown (AIPerf takes the sub-agent's end from its requests)"),
    Rule("duplicate_request_list", WARNING, "the same conversation twice: replays weigh it double"),
    Rule("session_turn_carried", WARNING, "a one-token session row: the replayed prompt runs ahead of the recorded one by over 1 %"),
)}


@dataclass(frozen=True)
class SchemaProblem:
    """One broken rule: where (file, request path), which rule, and the consumers it breaks."""

    file: str
    where: str
    message: str
    code: str
    breaks: tuple[str, ...] = ()

    @property
    def severity(self) -> str:
        return RULES[self.code].severity

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.message}"


@dataclass(frozen=True)
class _Found:
    """A problem before its file is known."""

    where: str
    message: str
    code: str
    breaks: tuple[str, ...] = ()


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, NUMBER) and not isinstance(value, bool)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _all_ints(values: list) -> bool:
    """True when every value is an int, not a bool: map and set run in C (a big directory has ~90M ids)."""
    return set(map(type, values)) <= {int}


def _null_breaks(name: str) -> tuple[str, ...]:
    return NATIVE_CONSUMERS if name in KV_CACHE_TESTER_ARITHMETIC else (AIPERF_WEKA,)


def _check_fields(obj: dict, required: frozenset, optional: frozenset, where: str,
                  consumer: str = AIPERF_WEKA) -> Iterator[_Found]:
    keys = set(obj)
    for name in sorted(keys - required - optional):
        yield _Found(where, f"unknown field `{name}`", "unknown_field", (consumer,))
    for name in sorted(required - keys):
        if name in OPTIONAL_TIMING:
            yield _Found(where, f"missing optional `{name}`", f"missing_{name}")
        elif name in MARKER_COUNTERS:
            yield _Found(where, f"missing `{name}`", "null_marker_counter")
        else:
            needed = consumer != AIPERF_WEKA or name in AIPERF_REQUIRED
            yield _Found(where, f"missing field `{name}`", "missing_field", (consumer,) if needed else ())
    for name in sorted(keys & (required | optional)):
        if obj[name] is not None:
            continue
        if name in OPTIONAL_TIMING:
            yield _Found(where, f"`{name}` is null", f"missing_{name}")
        elif name in MARKER_COUNTERS:
            yield _Found(where, f"`{name}` is null", "null_marker_counter")
        else:
            yield _Found(where, f"`{name}` is null", "null_field", _null_breaks(name) if consumer == AIPERF_WEKA else (consumer,))


def _wrong(where: str, message: str, breaks: tuple[str, ...] = (AIPERF_WEKA,)) -> _Found:
    return _Found(where, message, "wrong_type", breaks)


def _check_request(entry: dict, where: str, block_size: Any) -> Iterator[_Found]:
    is_streaming = entry.get("type") == "s"
    required = NATIVE_REQUEST_FIELDS | (NATIVE_STREAMING_ONLY_FIELDS if is_streaming else frozenset())
    yield from _check_fields(entry, required, frozenset(), where)
    if entry.get("type") not in ("s", "n"):
        yield _wrong(where, "`type` must be \"s\", \"n\" or \"subagent\"")
    for name in ("t", "api_time", "think_time", "ttft"):
        if name in entry and entry[name] is not None and (not _is_number(entry[name]) or entry[name] < 0):
            yield _wrong(where, f"`{name}` must be a number >= 0", NATIVE_CONSUMERS if name == "t" else (AIPERF_WEKA,))
    for name in ("in", "out"):
        if name in entry and entry[name] is not None and (not _is_int(entry[name]) or entry[name] < 0):
            yield _wrong(where, f"`{name}` must be an integer >= 0")
    if "stop" in entry and entry["stop"] is not None and not isinstance(entry["stop"], str):
        yield _wrong(where, "`stop` must be a string")
    for name in ("input_types", "output_types"):
        value = entry.get(name)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            yield _wrong(where, f"`{name}` must be a list of strings")
    hash_ids = entry.get("hash_ids")
    if hash_ids is not None:
        if not isinstance(hash_ids, list) or not _all_ints(hash_ids):
            yield _wrong(where, "`hash_ids` must be a list of integers", NATIVE_CONSUMERS)
        elif _is_int(entry.get("in")) and _is_int(block_size) and block_size > 0 and len(hash_ids) != entry["in"] // block_size:
            yield _Found(where, f"len(hash_ids) = {len(hash_ids)} but in // block_size = {entry['in'] // block_size}",
                         "hash_ids_length")


def _check_request_list(requests: Any, where: str, block_size: Any, *, allow_markers: bool) -> Iterator[_Found]:
    if not isinstance(requests, list):
        yield _wrong(where, "`requests` must be a list", NATIVE_CONSUMERS)
        return
    if not requests:
        yield _Found(where, "`requests` is empty", "empty_requests")
    previous_t: Optional[float] = None
    for index, entry in enumerate(requests):
        path = f"{where}[{index}]"
        if not isinstance(entry, dict):
            yield _Found(path, "not an object", "not_an_object", NATIVE_CONSUMERS)
            continue
        if entry.get("type") == "subagent":
            if not allow_markers:
                yield _Found(path, "sub-agent marker inside a sub-agent", "misplaced_marker", (AIPERF_WEKA,))
            elif index == 0:
                yield _Found(path, "first entry is a sub-agent marker", "misplaced_marker")
            yield from _check_marker(entry, path, block_size)
        else:
            yield from _check_request(entry, path, block_size)
        t = entry.get("t")
        if _is_number(t):
            if previous_t is not None and t < previous_t:
                yield _Found(path, f"`t` decreases ({t} < {previous_t})", "t_decreases")
            previous_t = t


def _check_marker(entry: dict, where: str, block_size: Any) -> Iterator[_Found]:
    yield from _check_fields(entry, NATIVE_MARKER_FIELDS, frozenset(), where)
    for name in ("duration_ms", "total_tokens", "tool_use_count", "tool_tokens", "system_tokens"):
        if name in entry and entry[name] is not None and not _is_int(entry[name]):
            yield _wrong(where, f"`{name}` must be an integer")
    if "requests" in entry and entry["requests"] is not None:
        yield from _check_request_list(entry["requests"], f"{where}.requests", block_size, allow_markers=False)


def _first_request(requests: list, marker_t: Optional[float] = None) -> Optional[tuple[int, dict]]:
    """(index, request) AIPerf replays first: the earliest non-marker request by (`t`, index). In a
    sub-agent a `t` before the marker's (older traces count from the spawn) is read as marker `t` + `t`."""
    timed = []
    for index, entry in enumerate(requests):
        if isinstance(entry, dict) and entry.get("type") != "subagent" and _is_number(entry.get("t")):
            t = entry["t"]
            if marker_t is not None and t + 1e-6 < marker_t:
                t += marker_t
            timed.append((t, index, entry))
    if not timed:
        return None
    _, index, entry = min(timed, key=lambda item: item[:2])
    return index, entry


def _check_prefix_fits(scope: dict, requests: Any, where: str, block_size: int) -> Iterator[_Found]:
    """AIPerf's rule for a lane's first request (docs/validate.md): the declared tools + system prefix,
    in whole blocks rounded up, must not need more hash ids than the request has."""
    tool_tokens, system_tokens = scope.get("tool_tokens"), scope.get("system_tokens")
    if not (_is_int(tool_tokens) and _is_int(system_tokens) and isinstance(requests, list)):
        return
    marker_t = scope.get("t") if scope.get("type") == "subagent" and _is_number(scope.get("t")) else None
    first = _first_request(requests, marker_t)
    if first is None or (tool_tokens <= 0 and system_tokens <= 0):
        return
    index, request = first
    hash_ids = request.get("hash_ids")
    if not isinstance(hash_ids, list):
        return
    needed = math.ceil((tool_tokens + system_tokens) / block_size)
    if needed > len(hash_ids):
        yield _Found(f"{where}[{index}]",
                     f"tools + system prefix needs ceil(({tool_tokens} + {system_tokens}) / {block_size}) = {needed} "
                     f"hash blocks but the lane's first request has {len(hash_ids)}",
                     "prefix_exceeds_first_request", (AIPERF_WEKA,))


def _check_prefix_lanes(document: dict, block_size: int) -> Iterator[_Found]:
    """The prefix rule on the parent's first request and on each sub-agent marker's first request
    (with the marker's own counts); AIPerf gives the chains it splits off the declared prefix only when
    their first request starts with it, so they cannot break the rule."""
    requests = document.get("requests")
    yield from _check_prefix_fits(document, requests, "requests", block_size)
    if not isinstance(requests, list):
        return
    for index, entry in enumerate(requests):
        if isinstance(entry, dict) and entry.get("type") == "subagent":
            yield from _check_prefix_fits(entry, entry.get("requests"), f"requests[{index}].requests", block_size)


def check_native_trace(document: Any, file: str) -> list[SchemaProblem]:
    """All schema problems (errors and warnings) of one parsed native trace document."""
    if not isinstance(document, dict):
        return [SchemaProblem(file, "top level", "not a JSON object", "not_an_object", NATIVE_CONSUMERS)]
    found = list(_check_fields(document, NATIVE_TRACE_FIELDS, NATIVE_TRACE_OPTIONAL_FIELDS, "top level"))
    block_size = document.get("block_size")
    # Missing or null is already `missing_field` / `null_field`: one finding per broken field.
    if block_size is not None and (not _is_int(block_size) or block_size <= 0):
        found.append(_wrong("top level", "`block_size` must be a positive integer"))
    scope = document.get("hash_id_scope")
    if scope == "global":
        found.append(_Found("top level", "`hash_id_scope` is \"global\"", "global_hash_id_scope", (AIPERF_WEKA,)))
    elif scope not in ("local", None):
        found.append(_wrong("top level", "`hash_id_scope` must be \"local\" or \"global\""))
    if not isinstance(document.get("id"), (str, type(None))):
        found.append(_wrong("top level", "`id` must be a string"))
    totals = document.get("totals")
    if isinstance(totals, dict):
        found.extend(_check_fields(totals, TOTALS_FIELDS, frozenset(), "totals"))
    if "requests" in document and document["requests"] is not None:
        found.extend(_check_request_list(document["requests"], "requests", block_size, allow_markers=True))
    if _is_int(block_size) and block_size > 0:
        found.extend(_check_prefix_lanes(document, block_size))
    return [SchemaProblem(file, item.where, item.message, item.code, item.breaks) for item in found]


def check_mooncake_rows(rows: Iterable[tuple[int, Any]], file: str, *, block_size: int) -> list[SchemaProblem]:
    """Schema problems of Mooncake rows (flat or session flavour) given as (line number, parsed row or None when the line is broken)."""
    problems = []
    breaks = MOONCAKE_CONSUMERS
    for line_number, row in rows:
        where = f"line {line_number}"
        if row is None:
            problems.append(SchemaProblem(file, where, "not valid JSON", "invalid_json", breaks))
            continue
        if not isinstance(row, dict):
            problems.append(SchemaProblem(file, where, "not a JSON object", "not_an_object", breaks))
            continue
        is_session = "session_id" in row
        allowed = MOONCAKE_SESSION_FIELDS if is_session else MOONCAKE_FIELDS
        required = frozenset({"input_length", "output_length", "hash_ids"}) | ({"session_id"} if is_session else {"timestamp"})
        found = list(_check_fields(row, required, allowed - required, where, AIPERF_MOONCAKE))
        hash_ids = row.get("hash_ids")
        length = row.get("input_length")
        if length is not None and (not _is_int(length) or length < 1):
            # AIPerf builds a prompt of input_length tokens from the ids: it needs at least one.
            found.append(_wrong(where, "`input_length` must be an integer >= 1", breaks))
        if not isinstance(hash_ids, list) or not _all_ints(hash_ids):
            found.append(_wrong(where, "`hash_ids` must be a list of integers", breaks))
        # AIPerf enforces the ceil convention on session rows (per-turn deltas) as well.
        elif _is_int(length) and len(hash_ids) != math.ceil(length / block_size):
            found.append(_Found(where, f"len(hash_ids) = {len(hash_ids)} but ceil(input_length / {block_size}) = "
                                       f"{math.ceil(length / block_size)}", "hash_ids_length", breaks))
        problems.extend(SchemaProblem(file, item.where, item.message, item.code, item.breaks) for item in found)
    return problems
