"""When a turn started and what the API saw first: sub-second starts and old-proxy first sends.

Sub-second starts (docs/traces.md, "Times"). The proxy writes `timestamp` and `completedAt` in
whole seconds (truncated) but `responseTime` in milliseconds, and the JSONL in milliseconds. A
start therefore lies in the proxy's second, at or after `completedAt - responseTime`, and at or
after (first JSONL line of the answer) - responseTime, since that line is written once the
answer's first content block has arrived. The start taken is the latest of those lower bounds
inside the proxy's second. A lane sends one request at a time, so a lane's next request never
starts before the previous one ended: the trace writer holds `t_prev + api_time_prev <= t_next`.

Old-proxy first sends (docs/traces.md, "Old-proxy captures"). Each turn was sent twice: a
streaming twin, then the non-streaming replay the JSONL names. The replay reads the prompt cache
its twin wrote a moment earlier, so its usage says "almost all cached"; the API's truth for the
turn is the twin's usage, and the turn starts at the twin's send. `first_sends` gives the replay
the twin's start, usage and first token; its `api_time` runs from that send to the replay's
answer (what the client waited), so `think_time` is the client's own pause.

Cleaned old-proxy captures (docs/validate.md). With the twins deleted, every turn the JSONL
names is a non-streaming row without a twin, which Claude Code never sends on its own: such a
capture is recognised by `is_cleaned_old_proxy`, and the validator and visualizer estimate each
replay's first-send usage with `without_twin_write` and label the API figures as estimated.
"""
from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Iterable, Iterator, Optional

from lib.capture.proxy_reader import UNKNOWN_TIME
from lib.records import ProxyRequest, Usage

# Slightly under one second: a start never leaves the whole second the proxy wrote.
_LAST_INSTANT_OF_SECOND_S = 0.999


def _whole_second(moment: datetime) -> bool:
    return moment.microsecond == 0


def start_lower_bound(request: ProxyRequest, *, answer_logged_at: Optional[datetime] = None) -> datetime:
    """The request's start with sub-second precision from the sources that have it (module docstring).

    Only a whole-second proxy timestamp is refined; one with a fraction is taken as it is, and so is
    UNKNOWN_TIME, which consumers replace with the turn's JSONL time.
    """
    start = request.timestamp
    if start == UNKNOWN_TIME or not _whole_second(start) or request.api_time_s is None:
        return start
    duration = timedelta(seconds=request.api_time_s)
    bounds = [start]
    if request.completed_at is not None and _whole_second(request.completed_at):
        bounds.append(request.completed_at - duration)
    if answer_logged_at is not None:
        bounds.append(answer_logged_at - duration)
    latest = start + timedelta(seconds=_LAST_INSTANT_OF_SECOND_S)
    return min(max(bounds), latest)


def with_sub_second_start(request: ProxyRequest, *, answer_logged_at: Optional[datetime] = None) -> ProxyRequest:
    """The request with `start_lower_bound` as its timestamp (the same object when nothing changes)."""
    start = start_lower_bound(request, answer_logged_at=answer_logged_at)
    return request if start == request.timestamp else replace(request, timestamp=start)


def load_replay_twins(index: sqlite3.Connection) -> dict[str, str]:
    """{replay request id: streaming twin request id} of every old-proxy pair in the message index."""
    return {replay: twin for twin, replay in index.execute(
        "SELECT request_id, twin_of FROM message_index WHERE is_artifact = 1 AND twin_of IS NOT NULL")}


def first_send(replay: ProxyRequest, twin: ProxyRequest) -> ProxyRequest:
    """The replay as the API saw the turn first: the earlier send's start, usage and first token.

    The twin was sent first; when both fall in one proxy second, the refined starts may still order
    them the other way, and the turn then starts at the earlier of the two. A twin whose time is
    unknown, or whose second is after the replay, cannot be placed first: the replay stays as it is.
    """
    if twin.timestamp == UNKNOWN_TIME or twin.timestamp.replace(microsecond=0) > replay.timestamp:
        return replay
    start = min(twin.timestamp, replay.timestamp)
    waited = None
    if replay.api_time_s is not None:
        waited = round((replay.timestamp - start).total_seconds() + replay.api_time_s, 3)
    return replace(replay, timestamp=start, usage=twin.usage if twin.usage is not None else replay.usage,
                   ttft_s=twin.ttft_s, api_time_s=waited)


def first_sends(requests: dict[str, ProxyRequest], replay_twins: dict[str, str],
                answers_logged_at: Optional[dict[str, datetime]] = None) -> dict[str, ProxyRequest]:
    """Every request with a sub-second start; each old-proxy replay merged with its twin (`first_send`).

    `answers_logged_at` maps request ids to the first JSONL line of their answer. A twin outside
    the loaded rows (e.g. cut off by --since) leaves its replay as it is.
    """
    logged = answers_logged_at or {}
    refined = {request_id: with_sub_second_start(request, answer_logged_at=logged.get(request_id))
               for request_id, request in requests.items()}
    for replay_id, twin_id in replay_twins.items():
        replay, twin = refined.get(replay_id), refined.get(twin_id)
        if replay is not None and twin is not None:
            refined[replay_id] = first_send(replay, twin)
    return refined


def iter_turns(conversations: Iterable[Any]) -> Iterator[Any]:
    """Every assistant turn (parent and sub-agents) of JSONL or indexed conversations."""
    for conversation in conversations:
        yield from conversation.turns
        for turns in conversation.subagents.values():
            yield from turns


def answers_logged_at(turns: Iterable[tuple[Optional[str], datetime]]) -> dict[str, datetime]:
    """{request id: earliest JSONL time of its answer} from (request id, turn timestamp) pairs."""
    logged: dict[str, datetime] = {}
    for request_id, timestamp in turns:
        if request_id is not None and timestamp is not None:
            logged[request_id] = min(timestamp, logged.get(request_id, timestamp))
    return logged


def is_cleaned_old_proxy(turns: Iterable[ProxyRequest], replay_twins: dict[str, str]) -> bool:
    """True when every turn the JSONL names is a non-streaming row without a twin.

    Claude Code streams its turns; only the old proxy's replays are non-streaming. Such a capture
    is an old-proxy capture whose streaming twins were deleted: each replay's usage includes what
    its deleted twin wrote (docs/validate.md, "Old-proxy captures").
    """
    seen = False
    for request in turns:
        if request.is_streaming or request.request_id in replay_twins:
            return False
        seen = True
    return seen


def without_twin_write(usage: Usage, cached_before: int) -> Usage:
    """A cleaned replay's usage with its deleted twin's write taken back (docs/validate.md).

    The replay read what its twin had just written; the first send could read only what was
    cached before it (`cached_before`, the API cache model's read). The read is capped there and
    the rest becomes the twin's cache creation, in the TTL class the row already uses.
    """
    read = min(usage.cache_read_input_tokens, max(0, cached_before))
    moved = usage.cache_read_input_tokens - read
    long_lived = usage.cache_creation_1h_tokens > 0 and not usage.cache_creation_5m_tokens
    return replace(usage, cache_read_input_tokens=read, cache_creation_input_tokens=usage.cache_creation_input_tokens + moved,
                   cache_creation_1h_tokens=usage.cache_creation_1h_tokens + (moved if long_lived else 0),
                   cache_creation_5m_tokens=usage.cache_creation_5m_tokens + (0 if long_lived else moved))
