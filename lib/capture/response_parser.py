"""Parsing the proxy's `response` column into facts about one API call (docs/inputs.md#response-column).

Pure functions: a response string in, a `ResponseFacts` out. Nothing here raises on bad data;
every degradation is named in `ResponseFacts.problems` so the caller can count it (docs/reliability.md#bad-input).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional

import orjson

from lib.records import Usage
from lib.timestamps import parse_timestamp

KIND_OK = "ok"
KIND_ERROR = "error"
KIND_PENDING = "pending"
KIND_UNPARSABLE = "unparsable"

USAGE_FIELDS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
    "output_tokens",
)

# HTTP status codes have three digits: a larger one is corrupt (and could overflow SQLite's INTEGER).
MAX_STATUS_CODE = 999

_DATA_OBJECT = "data: {"
_SERVER_TIMING_DUR = re.compile(r"dur=([0-9]+(?:\.[0-9]+)?)")
# API usage key for each of our prompt-side fields (the output count is handled apart, docs/inputs.md#response-column).
_PROMPT_USAGE_KEYS = {
    "input_tokens": "input_tokens",
    "cache_read_tokens": "cache_read_input_tokens",
    "cache_creation_tokens": "cache_creation_input_tokens",
}
_BREAKDOWN_KEYS = {
    "cache_creation_5m_tokens": "ephemeral_5m_input_tokens",
    "cache_creation_1h_tokens": "ephemeral_1h_input_tokens",
}


@dataclass(frozen=True)
class ResponseFacts:
    """What one `response` value says; usage fields are None when the response did not say."""

    kind: str
    status: Optional[int] = None
    is_streaming: Optional[bool] = None
    message_id: Optional[str] = None
    model: Optional[str] = None
    stop_reason: str = ""
    output_types: tuple[str, ...] = ()
    input_tokens: Optional[int] = None
    cache_read_tokens: Optional[int] = None
    cache_creation_tokens: Optional[int] = None
    cache_creation_5m_tokens: Optional[int] = None
    cache_creation_1h_tokens: Optional[int] = None
    output_tokens: Optional[int] = None
    api_time_s: Optional[float] = None
    ttft_s: Optional[float] = None
    anthropic_request_id: Optional[str] = None
    completed_at: Optional[datetime] = None
    problems: tuple[str, ...] = ()

    @property
    def usage(self) -> Optional[Usage]:
        """The usage as a `Usage` record (unknown fields as 0), or None when nothing was reported."""
        return usage_from_values(*(getattr(self, name) for name in USAGE_FIELDS))


def usage_from_values(*values: Optional[int]) -> Optional[Usage]:
    """Build a `Usage` from the six USAGE_FIELDS values in order; None when all are unknown."""
    if all(value is None for value in values):
        return None
    inp, read, create, create_5m, create_1h, out = (value or 0 for value in values)
    return Usage(
        input_tokens=inp,
        cache_read_input_tokens=read,
        cache_creation_input_tokens=create,
        output_tokens=out,
        cache_creation_5m_tokens=create_5m,
        cache_creation_1h_tokens=create_1h,
    )


def parse_response(raw: Optional[str | bytes]) -> ResponseFacts:
    """Parse one `response` column value: NULL → pending, broken JSON → unparsable (docs/inputs.md#response-column).

    A `statusCode` above 999 makes the response unparsable (`status_code_out_of_range`); usage and
    times are range-checked by the caller (`lib.capture.proxy_reader.checked_facts`).
    """
    if raw is None:
        return ResponseFacts(kind=KIND_PENDING)
    try:
        response = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ResponseFacts(kind=KIND_UNPARSABLE, problems=("broken_response_json",))
    if not isinstance(response, dict):
        return ResponseFacts(kind=KIND_UNPARSABLE, problems=("response_not_an_object",))

    headers = found if isinstance(found := response.get("headers"), dict) else {}
    status = _as_int(response.get("statusCode"))
    if status is not None and not 0 <= status <= MAX_STATUS_CODE:
        return ResponseFacts(kind=KIND_UNPARSABLE, problems=("status_code_out_of_range",))
    chunks = response.get("streamingChunks")
    is_streaming = response.get("isStreaming") if isinstance(response.get("isStreaming"), bool) else None
    common: dict[str, Any] = {
        "status": status,
        "is_streaming": is_streaming,
        "api_time_s": _milliseconds_to_s(response.get("responseTime")),
        "ttft_s": _ttft_s(headers),
        "anthropic_request_id": header_value(headers, "Request-Id"),
        "completed_at": parse_timestamp(response.get("completedAt")),
    }
    if status is None:
        return ResponseFacts(kind=KIND_UNPARSABLE, problems=("missing_status_code",), **common)
    if status >= 400:
        # Error rows carry only `bodyText`; they are not conversation turns (docs/inputs.md#errors-and-missing-responses).
        return ResponseFacts(kind=KIND_ERROR, **common)
    body = response.get("body")
    if isinstance(chunks, list) and chunks:
        return _streaming_facts(chunks, body if isinstance(body, dict) else {}, common)
    if is_streaming:
        # A stream without chunks leaves only the synthesized body, which lacks stop_reason and types.
        facts = _message_facts(body, trust_content=False) if isinstance(body, dict) else {}
        return ResponseFacts(kind=KIND_OK if facts else KIND_UNPARSABLE, problems=("no_stream_chunks",), **facts, **common)
    if not isinstance(body, dict):
        return ResponseFacts(kind=KIND_UNPARSABLE, problems=("no_message_body",), **common)
    facts = _message_facts(body, trust_content=True)
    return ResponseFacts(kind=KIND_OK, problems=_usage_problems(facts), **facts, **common)


def header_value(headers: Any, name: str) -> Optional[str]:
    """First value of a `{Canonical-Name: [values]}` header map, matched case-insensitively."""
    if not isinstance(headers, dict):
        return None
    values = headers.get(name)
    if values is None:
        lowered = name.lower()
        values = next((value for key, value in headers.items() if str(key).lower() == lowered), None)
    if isinstance(values, list):
        values = values[0] if values else None
    return values if isinstance(values, str) else None


def parse_stream_chunks(chunks: list[Any]) -> dict[str, Any]:
    """Summarise stored SSE `data:` lines; one broken chunk is counted, the others still count.

    Returns `message_start` (its `message` object or None), `deltas` (message_delta events in
    order), `output_types` (content_block_start types, ordered and unique), `broken` (number of
    unparsable chunks) and `stream_error` (an `error` event appeared mid-stream).
    """
    message_start: Optional[dict] = None
    deltas: list[dict] = []
    output_types: list[str] = []
    broken = 0
    stream_error = False
    for chunk in chunks:
        event = _parse_chunk(chunk)
        if event is None:
            broken += 1
            continue
        kind = event.get("type")
        if kind == "message_start" and isinstance(event.get("message"), dict):
            message_start = event["message"]
        elif kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            block_type = event["content_block"].get("type")
            if isinstance(block_type, str) and block_type not in output_types:
                output_types.append(block_type)
        elif kind == "message_delta":
            deltas.append(event)
        elif kind == "error":
            stream_error = True
    return {
        "message_start": message_start,
        "deltas": deltas,
        "output_types": tuple(output_types),
        "broken": broken,
        "stream_error": stream_error,
    }


def answer_tool_calls(raw: Optional[str | bytes]) -> list[dict[str, Any]]:
    """The `tool_use` blocks (`id`, `name`, `input`) of an answered response, in answer order.

    Streams are rebuilt from the chunks (`content_block_start` and its `input_json_delta` parts),
    never from the synthesized body, which holds text only; a call whose input does not parse keeps
    an empty input. Empty for anything but an answered response.
    """
    try:
        response = orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        return []
    if not isinstance(response, dict):
        return []
    chunks, body = response.get("streamingChunks"), response.get("body")
    if not (isinstance(chunks, list) and chunks):
        content = body.get("content") if isinstance(body, dict) else None
        return [{"id": block.get("id"), "name": block.get("name"), "input": block.get("input")}
                for block in content or [] if isinstance(block, dict) and block.get("type") == "tool_use"]
    calls: dict[int, dict[str, Any]] = {}
    parts: dict[int, list[str]] = {}
    for event in map(_parse_chunk, chunks):
        index = event.get("index") if event else None
        if not isinstance(index, int):
            continue
        block, delta = event.get("content_block"), event.get("delta")  # type: ignore[union-attr]
        if isinstance(block, dict) and block.get("type") == "tool_use":
            calls[index] = {"id": block.get("id"), "name": block.get("name"), "input": block.get("input") or {}}
            parts[index] = []
        elif isinstance(delta, dict) and delta.get("type") == "input_json_delta" and index in parts:
            parts[index].append(str(delta.get("partial_json", "")))
    for index, call in calls.items():
        if parts[index]:
            try:
                call["input"] = orjson.loads("".join(parts[index]))
            except orjson.JSONDecodeError:
                call["input"] = {}
    return [calls[index] for index in sorted(calls)]


def _parse_chunk(chunk: Any) -> Optional[dict]:
    """One stored SSE line → event dict; None when it is not a JSON object (counted by the caller)."""
    if not isinstance(chunk, str):
        return None
    if chunk.startswith(_DATA_OBJECT):
        # Fast path for the usual `data: {...}` line; on any failure the general path below
        # decides (it also strips Unicode whitespace, which JSON does not allow).
        try:
            return orjson.loads(chunk[len(_DATA_OBJECT) - 1:])  # a text starting with `{` is an object
        except orjson.JSONDecodeError:
            pass
    text = chunk.strip()
    if text.startswith("event:"):
        # A proxy that keeps `event:` lines (PR #33-style) adds no facts beyond the data line.
        return {"type": "event_line"}
    if text.startswith("data:"):
        text = text[len("data:"):].strip()
    try:
        event = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def _streaming_facts(chunks: list[Any], synthesized: dict, common: dict[str, Any]) -> ResponseFacts:
    """Facts of a streaming 200, read from the chunks; the synthesized body only backs up id/model."""
    stream = parse_stream_chunks(chunks)
    problems: list[str] = []
    if stream["broken"]:
        problems.append("broken_stream_chunk")
    start = stream["message_start"]
    if start is None:
        problems.append("missing_message_start")
        start = {}
    deltas = stream["deltas"]
    if not deltas:
        problems.append("missing_message_delta")
    start_usage = start.get("usage") if isinstance(start.get("usage"), dict) else {}
    delta_usages = [event["usage"] for event in deltas if isinstance(event.get("usage"), dict)]
    last_delta_usage = delta_usages[-1] if delta_usages else {}

    values: dict[str, Any] = {}
    for field_name, key in _PROMPT_USAGE_KEYS.items():
        # message_start has the prompt-side usage; newer APIs repeat it in message_delta (docs/inputs.md#streaming-answers).
        values[field_name] = _first_int(start_usage.get(key), last_delta_usage.get(key))
    for field_name, key in _BREAKDOWN_KEYS.items():
        values[field_name] = _first_int(_breakdown(start_usage, key), _breakdown(last_delta_usage, key))
    # message_start's output_tokens is a placeholder; the final count is in the last message_delta.
    values["output_tokens"] = _first_int(last_delta_usage.get("output_tokens"))
    # A missing event is already counted by its own reason; count only events without their usage.
    problems.extend(_usage_problems({"input_tokens": values["input_tokens"] if stream["message_start"] else 0,
                                     "output_tokens": values["output_tokens"] if deltas else 0}))

    stop_reason = ""
    for event in deltas:
        delta = event.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
            stop_reason = delta["stop_reason"]
    message_id = _first_str(start.get("id"), synthesized.get("id"))
    model = _first_str(start.get("model"), synthesized.get("model"))
    kind = KIND_OK
    if stream["stream_error"]:
        problems.append("stream_error_event")
        if not deltas:
            kind = KIND_ERROR
    if message_id is None and kind == KIND_OK:
        problems.append("no_message_id")
    return ResponseFacts(
        kind=kind,
        message_id=message_id,
        model=model,
        stop_reason=stop_reason,
        output_types=stream["output_types"],
        problems=tuple(problems),
        **values,
        **common,
    )


def _message_facts(body: dict, *, trust_content: bool) -> dict[str, Any]:
    """Facts from a message object: the verbatim API body, or (untrusted) the proxy's synthesis."""
    usage = found if isinstance(found := body.get("usage"), dict) else {}
    facts: dict[str, Any] = {
        "message_id": _first_str(body.get("id")),
        "model": _first_str(body.get("model")),
        "input_tokens": _first_int(usage.get("input_tokens")),
        "cache_read_tokens": _first_int(usage.get("cache_read_input_tokens")),
        "cache_creation_tokens": _first_int(usage.get("cache_creation_input_tokens")),
        "cache_creation_5m_tokens": _first_int(_breakdown(usage, "ephemeral_5m_input_tokens")),
        "cache_creation_1h_tokens": _first_int(_breakdown(usage, "ephemeral_1h_input_tokens")),
        "output_tokens": _first_int(usage.get("output_tokens")),
    }
    if trust_content:
        # The synthesized streaming body has stop_reason "" and text-only content (docs/inputs.md#streaming-answers).
        content = found if isinstance(found := body.get("content"), list) else []
        types: list[str] = []
        for block in content:
            block_type = block.get("type") if isinstance(block, dict) else None
            if isinstance(block_type, str) and block_type not in types:
                types.append(block_type)
        facts["output_types"] = tuple(types)
        facts["stop_reason"] = body.get("stop_reason") if isinstance(body.get("stop_reason"), str) else ""
    return facts


def _usage_problems(values: dict[str, Any]) -> tuple[str, ...]:
    """`missing_usage` when the input or output count is absent or null: the row stays, its usage is degraded."""
    return ("missing_usage",) if values.get("input_tokens") is None or values.get("output_tokens") is None else ()


def _breakdown(usage: dict, key: str) -> Any:
    """`usage.cache_creation.<key>` or None."""
    detail = usage.get("cache_creation")
    return detail.get(key) if isinstance(detail, dict) else None


def _ttft_s(headers: dict) -> Optional[float]:
    """Time to first byte: Server-Timing's first `dur=`, else X-Envoy-Upstream-Service-Time (docs/inputs.md#timing-and-request-ids)."""
    server_timing = header_value(headers, "Server-Timing")
    if server_timing:
        match = _SERVER_TIMING_DUR.search(server_timing)
        if match:
            return float(match.group(1)) / 1000
    envoy = header_value(headers, "X-Envoy-Upstream-Service-Time")
    if envoy:
        try:
            return float(envoy) / 1000
        except ValueError:
            return None
    return None


def _milliseconds_to_s(value: Any) -> Optional[float]:
    """`responseTime` is integer milliseconds (docs/inputs.md#timing-and-request-ids)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value / 1000


def _as_int(value: Any) -> Optional[int]:
    """An int that is really an int (JSON `true` is not a count)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _first_int(*values: Any) -> Optional[int]:
    """The first value that is an int, or None."""
    return next((value for value in values if _as_int(value) is not None), None)


def _first_str(*values: Any) -> Optional[str]:
    """The first non-empty string, or None."""
    return next((value for value in values if isinstance(value, str) and value), None)
