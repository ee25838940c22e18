"""The proxy's `response` column: upstream headers, SSE chunks, its synthesized streaming body (docs/inputs.md#streaming-answers).

Shapes and key orders follow docs/inputs.md#response-column. All randomness (ids, cookie values,
delta split points) comes from the `random.Random` passed in, so output is reproducible.
"""
from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, Optional

from lib.synthetic.proxy_db_writer import go_json, local_rfc3339

ORGANIZATION_ID = "3f1c9a2e-6b7d-4e85-9c10-2a4b6d8e0f13"
_BASE62 = string.digits + string.ascii_letters
RATE_LIMITS = {"Input-Tokens": 2_000_000, "Output-Tokens": 400_000, "Requests": 4_000, "Tokens": 2_400_000}
PING_CHUNK = 'data: {"type": "ping"}'


@dataclass(frozen=True, slots=True)
class ApiUsage:
    """Token usage as the API reports it; cache creation split by TTL."""

    input_tokens: int
    cache_read_input_tokens: int
    cache_creation_5m: int
    cache_creation_1h: int
    output_tokens: int

    @property
    def cache_creation_input_tokens(self) -> int:
        """Total cache creation (5 m + 1 h)."""
        return self.cache_creation_5m + self.cache_creation_1h

    @property
    def prompt_tokens(self) -> int:
        """The API's full prompt size: input + cache read + cache creation."""
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens

    def upstream(self, *, output_tokens: Optional[int] = None) -> dict:
        """The `usage` object of a message (key order of the API)."""
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_creation_5m,
                "ephemeral_1h_input_tokens": self.cache_creation_1h,
            },
            "output_tokens": self.output_tokens if output_tokens is None else output_tokens,
            "service_tier": "standard",
            "inference_geo": "not_available",
        }


@dataclass(frozen=True, slots=True)
class ApiReply:
    """One upstream answer: the message plus the timing the headers and `responseTime` report."""

    model: str
    message_id: str
    request_id: str
    content: list[dict]
    stop_reason: str
    usage: ApiUsage
    started_at: datetime
    ttft_ms: int
    response_time_ms: int
    context_management: bool = True  # only requests with the context-management beta get the field back

    @property
    def completed_at(self) -> datetime:
        """When the body (or stream) ended."""
        return self.started_at + timedelta(milliseconds=self.response_time_ms)


def random_token(rng: random.Random, length: int, alphabet: str = _BASE62) -> str:
    """`length` characters drawn from `alphabet`."""
    return "".join(rng.choice(alphabet) for _ in range(length))


def upstream_message(reply: ApiReply) -> dict:
    """The API's non-streaming body, in the API's key order (stored verbatim by the proxy)."""
    message = {
        "model": reply.model, "id": reply.message_id, "type": "message", "role": "assistant",
        "content": reply.content, "stop_reason": reply.stop_reason, "stop_sequence": None,
        "usage": reply.usage.upstream(),
    }
    if reply.context_management:
        message["context_management"] = {"applied_edits": []}
    return message


def sse_chunks(reply: ApiReply, rng: random.Random, *, min_piece: int = 8, max_piece: int = 48) -> Iterator[str]:
    """The `data:` lines of the stream, as the proxy stores them (no `event:` lines, ping included)."""
    start = {key: value for key, value in upstream_message(reply).items() if key != "context_management"}
    start.update(content=[], stop_reason=None, usage=reply.usage.upstream(output_tokens=min(2, reply.usage.output_tokens)))
    yield _data({"type": "message_start", "message": start})
    for index, block in enumerate(reply.content):
        yield _data({"type": "content_block_start", "index": index, "content_block": _empty_block(block)})
        if index == 0:
            yield PING_CHUNK
        for delta in _deltas(block, rng, min_piece, max_piece):
            yield _data({"type": "content_block_delta", "index": index, "delta": delta})
        yield _data({"type": "content_block_stop", "index": index})
    usage = reply.usage
    delta = {
        "type": "message_delta", "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
        "usage": {
            "input_tokens": usage.input_tokens, "cache_creation_input_tokens": usage.cache_creation_input_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens, "output_tokens": usage.output_tokens,
        },
    }
    if reply.context_management:
        delta["context_management"] = {"applied_edits": []}
    yield _data(delta)
    yield _data({"type": "message_stop"})


def _data(event: dict) -> str:
    # The upstream writes compact JSON with raw UTF-8; the proxy keeps the line verbatim.
    return "data: " + json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def _empty_block(block: dict) -> dict:
    kind = block["type"]
    if kind == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    if kind == "tool_use":
        return {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}, "caller": {"type": "direct"}}
    return {"type": kind, "text": ""}


def _pieces(text: str, rng: random.Random, min_piece: int, max_piece: int) -> Iterator[str]:
    position = 0
    while position < len(text):
        size = rng.randint(min_piece, max_piece)
        yield text[position:position + size]
        position += size


def _deltas(block: dict, rng: random.Random, min_piece: int, max_piece: int) -> Iterator[dict]:
    kind = block["type"]
    if kind == "thinking":
        for piece in _pieces(block["thinking"], rng, min_piece, max_piece):
            yield {"type": "thinking_delta", "thinking": piece}
        yield {"type": "signature_delta", "signature": block["signature"]}
    elif kind == "tool_use":
        yield {"type": "input_json_delta", "partial_json": ""}
        encoded = json.dumps(block["input"], separators=(",", ":"), ensure_ascii=False)
        for piece in _pieces(encoded, rng, min_piece, max_piece):
            yield {"type": "input_json_delta", "partial_json": piece}
    else:
        for piece in _pieces(block.get("text", ""), rng, min_piece, max_piece):
            yield {"type": "text_delta", "text": piece}


def synthesized_body(reply: ApiReply) -> dict:
    """The proxy's own, partly wrong, streaming body: joined text or null, stop_reason "", delta usage.

    It is a Go map (keys sorted); usage keeps only message_delta's numbers, zero cache fields omitted.
    """
    text = "".join(block.get("text", "") for block in reply.content if block["type"] == "text")
    usage: dict[str, int] = {"input_tokens": reply.usage.input_tokens, "output_tokens": reply.usage.output_tokens}
    if reply.usage.cache_creation_input_tokens:
        usage["cache_creation_input_tokens"] = reply.usage.cache_creation_input_tokens
    if reply.usage.cache_read_input_tokens:
        usage["cache_read_input_tokens"] = reply.usage.cache_read_input_tokens
    return {
        "content": [{"type": "text", "text": text}] if text else None, "id": reply.message_id,
        "model": reply.model, "role": "assistant", "stop_reason": "", "type": "message", "usage": usage,
    }


def _http_date(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")


def _utc_z(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _edge_headers(rng: random.Random, moment: datetime, request_id: str, content_type: str) -> dict:
    epoch = moment.timestamp()
    cookie = (f"_cfuvid={random_token(rng, 43)}-{int(epoch)}.{rng.randrange(10**7):07d}-1.0.1.1-"
              f"{random_token(rng, 55)}; HttpOnly; SameSite=None; Secure; Path=/; Domain=api.anthropic.com")
    return {
        "Anthropic-Organization-Id": [ORGANIZATION_ID],
        "Cf-Cache-Status": ["DYNAMIC"],
        "Cf-Ray": [f"{rng.getrandbits(64):016x}-IAD"],
        "Content-Security-Policy": ["default-src 'none'; frame-ancestors 'none'"],
        "Content-Type": [content_type],
        "Date": [_http_date(moment)],
        "Request-Id": [request_id],
        "Server": ["cloudflare"],
        "Set-Cookie": [cookie],
        "Strict-Transport-Security": ["max-age=31536000; includeSubDomains; preload"],
        "X-Robots-Tag": ["none"],
    }


def response_headers(reply: ApiReply, rng: random.Random, *, is_streaming: bool) -> dict:
    """Upstream response headers as stored (sorted Go-canonical names; `Vary` vs `Cache-Control`)."""
    first_byte = reply.started_at + timedelta(milliseconds=reply.ttft_ms)
    content_type = "text/event-stream; charset=utf-8" if is_streaming else "application/json"
    headers = _edge_headers(rng, first_byte, reply.request_id, content_type)
    reset = _utc_z(first_byte + timedelta(seconds=1))
    used = {"Input-Tokens": reply.usage.prompt_tokens, "Output-Tokens": reply.usage.output_tokens, "Requests": 1,
            "Tokens": reply.usage.prompt_tokens + reply.usage.output_tokens}
    for name, limit in RATE_LIMITS.items():
        headers[f"Anthropic-Ratelimit-{name}-Limit"] = [str(limit)]
        headers[f"Anthropic-Ratelimit-{name}-Remaining"] = [str(max(0, limit - used[name] - rng.randrange(4)))]
        headers[f"Anthropic-Ratelimit-{name}-Reset"] = [reset]
    if is_streaming:
        headers["Cache-Control"] = ["no-cache"]
    else:
        headers["Vary"] = ["Accept-Encoding"]
    # Server-Timing is the edge's view of the same wait, a few ms longer than Envoy's (docs/inputs.md#timing-and-request-ids).
    headers["Server-Timing"] = [f"x-originResponse;dur={reply.ttft_ms}"]
    headers["X-Envoy-Upstream-Service-Time"] = [str(max(1, reply.ttft_ms - rng.randint(1, 5)))]
    return dict(sorted(headers.items()))


def proxy_response(reply: ApiReply, rng: random.Random, *, is_streaming: bool, utc_offset: timedelta) -> str:
    """The full `response` column text for a 200 answer, streaming or not."""
    record: dict[str, Any] = {"statusCode": 200, "headers": response_headers(reply, rng, is_streaming=is_streaming)}
    if is_streaming:
        record["body"] = synthesized_body(reply)
        record["responseTime"] = reply.response_time_ms
        record["streamingChunks"] = list(sse_chunks(reply, rng))
    else:
        record["body"] = upstream_message(reply)
        record["responseTime"] = reply.response_time_ms
    record["isStreaming"] = is_streaming
    record["completedAt"] = local_rfc3339(reply.completed_at, utc_offset)
    return go_json(record)


def error_response(*, status: int, request_id: str, started_at: datetime, response_time_ms: int,
                   rng: random.Random, is_streaming: bool, utc_offset: timedelta,
                   error_type: str = "overloaded_error", message: str = "Overloaded") -> str:
    """An upstream error row: `bodyText` only, no body and no chunks (e.g. 529 overloaded)."""
    body_text = json.dumps({"type": "error", "error": {"type": error_type, "message": message},
                            "request_id": request_id}, separators=(",", ":"))
    headers = _edge_headers(rng, started_at, request_id, "application/json")
    headers["Content-Length"] = [str(len(body_text))]
    headers["X-Should-Retry"] = ["true"]
    completed = started_at + timedelta(milliseconds=response_time_ms)
    return go_json({
        "statusCode": status, "headers": dict(sorted(headers.items())), "bodyText": body_text,
        "responseTime": response_time_ms, "isStreaming": is_streaming,
        "completedAt": local_rfc3339(completed, utc_offset),
    })
