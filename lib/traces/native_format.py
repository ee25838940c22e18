"""The native trace format (kv-cache-tester / AIPerf `weka_trace`), exactly per docs/traces.md#the-native-trace-file.

AIPerf's loader rejects unknown fields at every level, so the builders below emit exactly the
allowed keys and nothing else; `NATIVE_*_FIELDS` are the same sets the schema check uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

NATIVE_TRACE_FIELDS = frozenset({"id", "models", "block_size", "hash_id_scope", "tool_tokens", "system_tokens", "requests"})
NATIVE_TRACE_OPTIONAL_FIELDS = frozenset({"totals"})
NATIVE_REQUEST_FIELDS = frozenset({"t", "type", "model", "in", "out", "hash_ids", "input_types", "output_types", "stop",
                                   "api_time", "think_time"})
NATIVE_STREAMING_ONLY_FIELDS = frozenset({"ttft"})
NATIVE_MARKER_FIELDS = frozenset({
    "t", "type", "agent_id", "subagent_type", "duration_ms", "total_tokens", "tool_use_count", "status",
    "models", "tool_tokens", "system_tokens", "requests",
})
TOTALS_FIELDS = frozenset({"parent_tokens", "subagent_tokens", "combined_tokens", "subagent_count"})

# A request keeping fewer than this share of the previous request's ids is a "major reset"
# (compaction, /clear): its input types are those of the whole prompt, docs/traces.md#the-native-trace-file.
MAJOR_RESET_KEPT_SHARE = 0.5


@dataclass(frozen=True)
class RequestFacts:
    """Everything needed to write one native request entry, already resolved from DB and hashing."""

    start_s: float
    end_s: Optional[float]
    is_streaming: bool
    model: str
    token_count: int
    hash_ids: Sequence[int]
    output_tokens: int
    stop_reason: str
    output_types: Sequence[str]
    api_time_s: Optional[float]
    ttft_s: Optional[float]
    last_message_types: Sequence[str]
    all_message_types: Sequence[str]
    timing_recorded: bool = True  # False: the source has no request timing (JSONL-only), api_time/ttft left out


@dataclass
class SubagentFacts:
    """A sub-agent marker's facts: its link and its own requests."""

    spawn_s: float
    agent_label: str
    subagent_type: str
    duration_ms: Optional[int]
    total_tokens: Optional[int]
    tool_use_count: Optional[int]
    status: str
    tool_tokens: int
    system_tokens: int
    requests: list[RequestFacts] = field(default_factory=list)


def whole_or_float(value: float, ndigits: int = 3) -> int | float:
    """An int when the value is whole (source timestamps are whole seconds), else rounded."""
    rounded = round(value, ndigits)
    return int(rounded) if float(rounded).is_integer() else rounded


class InputTypes:
    """The input-type rule of docs/traces.md#the-native-trace-file over one (sub)conversation's requests, taken in order.

    The rule compares a request's ids with the previous request's distinct ids. Those are kept as a
    set that grows by each request's new ids (a request usually extends the previous one), so a
    request costs its new blocks, not its whole history.
    """

    def __init__(self) -> None:
        self._previous: Optional[RequestFacts] = None
        self._distinct: set[int] = set()  # the previous request's distinct ids

    def next(self, facts: RequestFacts) -> list[str]:
        """The input types of `facts`, the request after the one given before."""
        previous, self._previous = self._previous, facts
        before, now = (previous.hash_ids if previous is not None else []), facts.hash_ids
        extends = len(now) >= len(before) and now[: len(before)] == before
        kept = len(self._distinct) if extends else len(self._distinct.intersection(now))
        if extends:
            self._distinct.update(now[len(before):])
        else:
            self._distinct = set(now)
        if previous is None:
            return ["text"]
        if before and kept < MAJOR_RESET_KEPT_SHARE * len(before):
            return sorted(set(facts.all_message_types)) or ["text"]
        if previous.stop_reason == "end_turn":
            return ["text"]
        if previous.stop_reason == "tool_use":
            return ["tool_result"]
        return sorted(set(facts.last_message_types)) or ["text"]


def native_requests(requests: Sequence[RequestFacts]) -> list[dict[str, Any]]:
    """Native request entries for one (sub)conversation, `t` relative to its first request."""
    if not requests:
        return []
    origin = requests[0].start_s
    entries = []
    previous: Optional[RequestFacts] = None
    input_types = InputTypes()
    for facts in requests:
        think_time = 0.0
        if previous is not None and previous.end_s is not None:
            think_time = max(0.0, facts.start_s - previous.end_s)
        entry: dict[str, Any] = {
            "t": whole_or_float(facts.start_s - origin),
            "type": "s" if facts.is_streaming else "n",
            "model": facts.model,
            "in": facts.token_count,
            "out": facts.output_tokens,
            "hash_ids": list(facts.hash_ids),
            "input_types": input_types.next(facts),
            "output_types": list(facts.output_types),
            "stop": facts.stop_reason or "",
            "api_time": whole_or_float(facts.api_time_s or 0.0),
            "think_time": whole_or_float(think_time),
        }
        if not facts.timing_recorded:
            del entry["api_time"]
        elif facts.is_streaming:
            entry["ttft"] = whole_or_float(facts.ttft_s or 0.0)
        entries.append(entry)
        previous = facts
    return entries


def native_marker(sub: SubagentFacts, trace_origin_s: float) -> dict[str, Any]:
    """A sub-agent marker entry; its requests' `t` restart at the sub-agent's first request."""
    return {
        "t": whole_or_float(max(0.0, sub.spawn_s - trace_origin_s)),
        "type": "subagent",
        "agent_id": sub.agent_label,
        "subagent_type": sub.subagent_type,
        "duration_ms": int(sub.duration_ms or 0),
        "total_tokens": int(sub.total_tokens or 0),
        "tool_use_count": int(sub.tool_use_count or 0),
        "status": sub.status or "",
        "models": sorted({request.model for request in sub.requests}),
        "tool_tokens": sub.tool_tokens,
        "system_tokens": sub.system_tokens,
        "requests": native_requests(sub.requests),
    }


def aiperf_clock_offset(subagent_requests: Sequence[Sequence[dict[str, Any]]]) -> int:
    """Whole seconds to add to the parent's timeline so every sub-agent `t` is below its marker's `t`.

    AIPerf 0.13's weka loader reads a sub-agent request's `t` as relative to the marker only while
    it is smaller than the marker's `t`, else as absolute; kv-cache-tester and Dynamo always read it
    as relative. With every marker at `t >= offset > any sub-agent t`, all three read it relative.
    """
    latest = max((request["t"] for requests in subagent_requests for request in requests), default=None)
    return 0 if latest is None else int(latest) + 1


def _token_totals(requests: Sequence[RequestFacts]) -> dict[str, int]:
    return {"input": sum(r.token_count for r in requests), "output": sum(r.output_tokens for r in requests)}


def native_trace(
    *,
    trace_id: str,
    block_size: int,
    hash_id_scope: str,
    tool_tokens: int,
    system_tokens: int,
    parent: Sequence[RequestFacts],
    subagents: Sequence[SubagentFacts],
    include_subagents: bool,
    aiperf_clock: bool = False,
) -> dict[str, Any]:
    """One native trace document: parent requests with sub-agent markers placed by spawn time.

    `aiperf_clock` shifts every top-level `t` (parent requests and markers) by `aiperf_clock_offset`.
    """
    origin = parent[0].start_s
    parent_entries = native_requests(parent)
    entries: list[tuple[float, int, dict[str, Any]]] = [
        (facts.start_s, 0, entry) for facts, entry in zip(parent, parent_entries)
    ]
    markers = [sub for sub in subagents if sub.requests] if include_subagents else []
    for sub in markers:
        # Sort key (spawn, 1): a marker spawned in the same second as a request follows it, and
        # never precedes the first parent request (docs/traces.md#the-native-trace-file: markers never first).
        entries.append((max(sub.spawn_s, origin), 1, native_marker(sub, origin)))
    entries.sort(key=lambda item: (item[0], item[1]))
    if aiperf_clock:
        offset = aiperf_clock_offset([marker["requests"] for _, kind, marker in entries if kind == 1])
        for _, _, entry in entries:
            entry["t"] = whole_or_float(entry["t"] + offset)
    models = {facts.model for facts in parent}
    for sub in markers:
        models.update(request.model for request in sub.requests)
    document: dict[str, Any] = {
        "id": trace_id,
        "models": sorted(models),
        "block_size": block_size,
        "hash_id_scope": hash_id_scope,
        "tool_tokens": tool_tokens,
        "system_tokens": system_tokens,
        "requests": [entry for _, _, entry in entries],
    }
    if markers:
        parent_totals = _token_totals(parent)
        sub_requests = [request for sub in markers for request in sub.requests]
        sub_totals = _token_totals(sub_requests)
        document["totals"] = {
            "parent_tokens": parent_totals,
            "subagent_tokens": sub_totals,
            "combined_tokens": {key: parent_totals[key] + sub_totals[key] for key in parent_totals},
            "subagent_count": len(markers),
        }
    return document
