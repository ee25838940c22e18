"""Streaming the proxy's `requests` table into `ProxyRequest` records (docs/inputs.md#proxy-database).

Rows are read in rowid order (the proxy's arrival order) in small keyset-paginated batches:
each batch is one short SELECT, so no read lock is held between batches and the proxy (default
rollback journal, docs/inputs.md#reading-a-live-database) can keep writing, and memory never holds more than one batch of
responses. Rows that share a second, or carry mixed offsets, are put in true arrival order by
the message index: (timestamp as epoch seconds, rowid).
"""
from __future__ import annotations

import dataclasses
import math
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator, Optional

import orjson
import xxhash

from lib.db import repair_text
from lib.problems import ProblemCounter
from lib.records import ProxyRequest
from lib.capture.response_parser import USAGE_FIELDS, ResponseFacts, header_value, parse_response
from lib.timestamps import parse_timestamp

BATCH_ROWS = 64
MAX_INT64 = 2**63 - 1
# The time of a row none of its own times date (reason `timestamp_unknown`): consumers that know the
# JSONL time of its turn use that instead (lib/traces/plan.py, lib/report/selection.py).
UNKNOWN_TIME = datetime.fromtimestamp(0, tz=timezone.utc)
# Capture times outside this window are corrupt (year 1, 9999, the epoch), never a real request.
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=timezone.utc)
LATEST_TIME = datetime(2100, 1, 1, tzinfo=timezone.utc)
# A usage count above ten times the largest context window (1M tokens) is corrupt, not a real one;
# kept, it would overflow SQLite or the trace writer, and `--token-count api` would make a block key
# per 64 of its tokens. A response time or TTFT above 2^32 ms (~50 days) is corrupt too.
MAX_PLAUSIBLE_TOKENS = 10_000_000
MAX_PLAUSIBLE_SECONDS = 2**32 / 1000
# Keys that differ between the two halves of an old-proxy pair (docs/inputs.md#old-proxy-twins).
TWIN_VARYING_KEYS = ("stream", "max_tokens")
_COLUMNS = "rowid, id, timestamp, headers, body, response, model"


@dataclass(frozen=True)
class RequestBodyFacts:
    """What the request body says, without keeping the body."""

    is_streaming: Optional[bool]
    max_tokens: Optional[int]
    message_count: int
    model: Optional[str]
    prompt_key: Optional[str]
    problems: tuple[str, ...] = ()


def iter_proxy_rows(
    proxy: sqlite3.Connection, *, after_rowid: int = 0, batch_rows: int = BATCH_ROWS
) -> Iterator[tuple]:
    """Yield raw rows `(rowid, id, timestamp, headers, body, response, model)` with rowid > after_rowid."""
    last = after_rowid
    while True:
        # One bounded SELECT per batch, fully consumed before yielding: no lock outlives a batch.
        batch = proxy.execute(
            f"SELECT {_COLUMNS} FROM requests WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, batch_rows)
        ).fetchall()
        if not batch:
            return
        yield from batch
        last = batch[-1][0]


def fetch_proxy_rows(proxy: sqlite3.Connection, row_ids: Iterable[int], *, batch_rows: int = BATCH_ROWS) -> Iterator[tuple]:
    """Yield raw rows for the given rowids (in the order of `row_ids`, batched); missing rowids are skipped."""
    wanted = list(row_ids)
    for start in range(0, len(wanted), batch_rows):
        chunk = wanted[start : start + batch_rows]
        marks = ",".join("?" * len(chunk))
        found = {row[0]: row for row in proxy.execute(f"SELECT {_COLUMNS} FROM requests WHERE rowid IN ({marks})", chunk)}
        yield from (found[row_id] for row_id in chunk if row_id in found)


def parse_proxy_row_with_facts(row: tuple) -> tuple[ProxyRequest, ResponseFacts]:
    """Turn one raw row into a `ProxyRequest` and its response facts (usage fields stay None when unknown).

    Every degradation is recorded in `request.problems`; `count_request_problems` counts them (docs/reliability.md#bad-input).
    """
    row_id, request_id, raw_timestamp, raw_headers, raw_body, raw_response, column_model = row
    request_id = str(request_id)
    row_problems: list[str] = []
    raw_headers = _repaired(raw_headers, "headers", row_problems)
    raw_body = _repaired(raw_body, "body", row_problems)
    raw_response = _repaired(raw_response, "response", row_problems)

    headers = _parse_headers(raw_headers)
    if headers is None:
        row_problems.append("broken_request_headers")
        headers = {}
    body = parse_request_body(raw_body)
    row_problems.extend(body.problems)
    facts = checked_facts(parse_response(raw_response))
    row_problems.extend(facts.problems)
    timestamp = request_time(raw_timestamp, facts, row_problems)
    if facts.completed_at is not None and facts.completed_at < timestamp:
        row_problems.append("completed_before_request")
        facts = dataclasses.replace(facts, completed_at=None)

    is_streaming = body.is_streaming if body.is_streaming is not None else bool(facts.is_streaming)
    model = facts.model or (column_model if isinstance(column_model, str) else None) or body.model or ""
    retry = header_value(headers, "X-Stainless-Retry-Count")
    request = ProxyRequest(
        row_id=row_id,
        request_id=request_id,
        timestamp=timestamp,
        completed_at=facts.completed_at,
        is_streaming=is_streaming,
        status=facts.status,
        kind=facts.kind,
        model=model,
        message_id=facts.message_id,
        usage=facts.usage,
        stop_reason=facts.stop_reason,
        output_types=facts.output_types,
        api_time_s=facts.api_time_s,
        ttft_s=facts.ttft_s,
        anthropic_request_id=facts.anthropic_request_id,
        session_header=header_value(headers, "X-Claude-Code-Session-Id"),
        max_tokens=body.max_tokens,
        # isdecimal, not isdigit: "²" is a digit that int() rejects; at most 18 digits fit SQLite's INTEGER.
        retry_count=int(retry) if retry is not None and retry.isdecimal() and len(retry) <= 18 else None,
        prompt_key=body.prompt_key,
        message_count=body.message_count,
        problems=tuple(row_problems),
    )
    return request, facts


def in_time_window(moment: Optional[datetime]) -> bool:
    """Whether a capture time is plausible (see EARLIEST_TIME / LATEST_TIME)."""
    return moment is not None and EARLIEST_TIME <= moment < LATEST_TIME


def request_time(raw: Any, facts: ResponseFacts, row_problems: list[str]) -> datetime:
    """The row's arrival time: its `timestamp` when plausible, else `completedAt − responseTime`, else UNKNOWN_TIME.

    A corrupt time must not move the row to 1970 (first, with every other `t` ~1.8e9 s) or to 9999.
    """
    parsed = parse_timestamp(raw)
    if parsed is not None and in_time_window(parsed):
        return parsed
    row_problems.append("bad_timestamp" if parsed is None else "timestamp_out_of_range")
    if facts.completed_at is not None and facts.api_time_s is not None:
        row_problems.append("timestamp_from_completion")
        return facts.completed_at - timedelta(seconds=facts.api_time_s)
    row_problems.append("timestamp_unknown")
    return UNKNOWN_TIME


def checked_facts(facts: ResponseFacts) -> ResponseFacts:
    """The response facts with implausible numbers dropped (unknown) and counted by reason.

    One rule for every number: below 0 is `negative_<what>`; not finite or above its bound
    (MAX_PLAUSIBLE_TOKENS, MAX_PLAUSIBLE_SECONDS) is `implausible_<what>`, for usage,
    response_time and ttft. A `completedAt` outside the time window is `completed_at_out_of_range`.
    Kept, such values would reach the traces unflagged (and the validator would reject them) or
    overflow SQLite and the trace writer.
    """
    problems: list[str] = []
    changes: dict[str, Any] = {}
    checks: list[tuple[str, str, float]] = [(name, "usage", MAX_PLAUSIBLE_TOKENS) for name in USAGE_FIELDS]
    checks += [("api_time_s", "response_time", MAX_PLAUSIBLE_SECONDS), ("ttft_s", "ttft", MAX_PLAUSIBLE_SECONDS)]
    for name, what, bound in checks:
        value = getattr(facts, name)
        if value is None or (math.isfinite(value) and 0 <= value <= bound):
            continue
        problems.append(f"negative_{what}" if value < 0 else f"implausible_{what}")
        changes[name] = None
    if facts.completed_at is not None and not in_time_window(facts.completed_at):
        problems.append("completed_at_out_of_range")
        changes["completed_at"] = None
    if not changes:
        return facts
    # One reason per row, however many fields it hit.
    unique = tuple(dict.fromkeys(problems))
    return dataclasses.replace(facts, **changes, problems=facts.problems + unique)


def _repaired(value: Any, column: str, row_problems: list[str]) -> Any:
    """The column with invalid UTF-8 replaced; counted, so one corrupt byte degrades the row instead of losing it."""
    value, was_invalid = repair_text(value)
    if was_invalid:
        row_problems.append(f"invalid_utf8_{column}")
    return value


def count_request_problems(problems: ProblemCounter, request_id: str, kind: str, row_problems: Iterable[str]) -> None:
    """Count a row's degradations and its non-turn kind (error / pending / unparsable) by reason."""
    for reason in row_problems:
        problems.add(reason, request_id)
    if kind != "ok":
        problems.add(f"{kind}_response", request_id)


def parse_request_body(raw: Any) -> RequestBodyFacts:
    """Stream flag, max_tokens, message count, model and twin key of a stored request body (docs/inputs.md#stored-request-body)."""
    try:
        body = orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        return RequestBodyFacts(None, None, 0, None, None, ("broken_request_body",))
    if not isinstance(body, dict):
        return RequestBodyFacts(None, None, 0, None, None, ("request_body_not_an_object",))
    messages = body.get("messages")
    problems: tuple[str, ...] = () if isinstance(messages, list) and messages else ("body_without_messages",)
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and not 0 <= max_tokens <= MAX_INT64:
        problems += ("max_tokens_out_of_range",)
        max_tokens = None
    model = body.get("model")
    key = prompt_key(body)
    if key is None:
        problems += ("request_body_too_deep",)
    return RequestBodyFacts(
        # The proxy drops `stream: false`, so an absent key means non-streaming (docs/inputs.md#stored-request-body).
        is_streaming=body.get("stream") is True,
        max_tokens=max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) else None,
        message_count=len(messages) if isinstance(messages, list) else 0,
        model=model if isinstance(model, str) and model else None,
        prompt_key=key,
        problems=problems,
    )


def prompt_key(body: dict) -> Optional[str]:
    """Hex xxh3_64 of the body without `stream`/`max_tokens`: equal for old-proxy twins (docs/inputs.md#old-proxy-twins).

    None for a body nested deeper than orjson writes (254 levels; it reads 1024).
    """
    trimmed = {key: value for key, value in body.items() if key not in TWIN_VARYING_KEYS}
    try:
        return xxhash.xxh3_64_hexdigest(orjson.dumps(trimmed))
    except TypeError:  # orjson's "Recursion limit reached" (a bare TypeError, JSONEncodeError's base)
        return None


def _parse_headers(raw: Any) -> Optional[dict]:
    """Request headers JSON `{Name: [values]}`; None when broken."""
    if raw is None:
        return {}
    try:
        headers = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return headers if isinstance(headers, dict) else None
