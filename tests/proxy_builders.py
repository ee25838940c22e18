"""Hand-made claude-code-proxy rows for tests: the real schema, real column formats (docs/inputs.md)."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Optional, Sequence

# Copied from ../shared/fixtures/real-proxy-fixed/requests.db (`.schema`).
PROXY_SCHEMA = """
CREATE TABLE requests (
		id TEXT PRIMARY KEY,
		timestamp DATETIME DEFAULT CURRENT_TIMESTAMP,
		method TEXT NOT NULL,
		endpoint TEXT NOT NULL,
		headers TEXT NOT NULL,
		body TEXT NOT NULL,
		user_agent TEXT,
		content_type TEXT,
		prompt_grade TEXT,
		response TEXT,
		model TEXT,
		original_model TEXT,
		routed_model TEXT,
		created_at DATETIME DEFAULT CURRENT_TIMESTAMP
	);
CREATE INDEX idx_timestamp ON requests(timestamp DESC);
CREATE INDEX idx_endpoint ON requests(endpoint);
CREATE INDEX idx_model ON requests(model);
"""

MODEL = "claude-opus-4-6"
MESSAGES = [{"role": "user", "content": [{"text": "hello", "type": "text"}]}]


def request_body(*, stream: bool = True, max_tokens: int = 32000, messages: Optional[list] = None, model: str = MODEL) -> str:
    """A stored request body: the proxy's key order, `stream` omitted when false (docs/inputs.md#stored-request-body)."""
    body: dict[str, Any] = {"model": model, "messages": messages if messages is not None else MESSAGES, "max_tokens": max_tokens}
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":"))


def request_headers(*, retry: int = 0, session: Optional[str] = None) -> str:
    """Go-canonical request headers with the hashed API key."""
    headers = {"Content-Type": ["application/json"], "X-Api-Key": ["sha256:abc"], "X-Stainless-Retry-Count": [str(retry)]}
    if session:
        headers["X-Claude-Code-Session-Id"] = [session]
    return json.dumps(headers, separators=(",", ":"))


def _response_headers(request_id: str, server_timing_ms: Optional[int], envoy_ms: Optional[int]) -> dict:
    headers = {"Content-Type": ["text/event-stream; charset=utf-8"], "Request-Id": [request_id]}
    if server_timing_ms is not None:
        headers["Server-Timing"] = [f"x-originResponse;dur={server_timing_ms}"]
    if envoy_ms is not None:
        headers["X-Envoy-Upstream-Service-Time"] = [str(envoy_ms)]
    return headers


def sse_chunks(
    message_id: str,
    *,
    block_types: Sequence[str] = ("text",),
    stop_reason: str = "end_turn",
    start_usage: Optional[dict] = None,
    delta_usage: Optional[dict] = None,
    with_start: bool = True,
    with_delta: bool = True,
) -> list[str]:
    """Stored `data:` lines of one streamed message (no `event:` lines, like the real proxy)."""
    usage = start_usage if start_usage is not None else {
        "input_tokens": 3, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 5000,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 0}, "output_tokens": 1,
    }
    events: list[dict] = []
    if with_start:
        events.append({"type": "message_start", "message": {"model": MODEL, "id": message_id, "type": "message",
                       "role": "assistant", "content": [], "stop_reason": None, "usage": usage}})
    for index, block_type in enumerate(block_types):
        events.append({"type": "content_block_start", "index": index, "content_block": {"type": block_type}})
        if index == 0:
            events.append({"type": "ping"})
        events.append({"type": "content_block_stop", "index": index})
    if with_delta:
        final = delta_usage if delta_usage is not None else {
            "input_tokens": 3, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 5000, "output_tokens": 42}
        events.append({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": final})
    events.append({"type": "message_stop"})
    return ["data: " + json.dumps(event, separators=(",", ":")) for event in events]


def streaming_response(
    message_id: str,
    *,
    chunks: Optional[list[str]] = None,
    request_id: str = "req_stream",
    server_timing_ms: Optional[int] = 1105,
    envoy_ms: Optional[int] = 1100,
    response_ms: int = 4187,
    completed_at: str = "2026-11-29T19:20:54-08:00",
    **chunk_options: Any,
) -> str:
    """A streaming 200 `response` value, with the proxy's wrong synthesized body (docs/inputs.md#streaming-answers)."""
    synthesized = {"content": None, "id": message_id, "model": MODEL, "role": "assistant", "stop_reason": "",
                   "type": "message", "usage": {"input_tokens": 0, "output_tokens": 42}}
    return json.dumps({
        "statusCode": 200, "headers": _response_headers(request_id, server_timing_ms, envoy_ms), "body": synthesized,
        "responseTime": response_ms,
        "streamingChunks": chunks if chunks is not None else sse_chunks(message_id, **chunk_options),
        "isStreaming": True, "completedAt": completed_at,
    })


def message_response(
    message_id: str,
    *,
    content_types: Sequence[str] = ("thinking", "text", "tool_use"),
    stop_reason: str = "tool_use",
    request_id: str = "req_plain",
    response_ms: int = 3548,
    completed_at: str = "2026-11-30T03:24:12Z",
) -> str:
    """A non-streaming 200 `response` value: the API's message verbatim."""
    body = {
        "model": MODEL, "id": message_id, "type": "message", "role": "assistant",
        "content": [{"type": kind} for kind in content_types], "stop_reason": stop_reason, "stop_sequence": None,
        "usage": {"input_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 6182,
                  "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                  "output_tokens": 227, "service_tier": "standard"},
    }
    return json.dumps({"statusCode": 200, "headers": _response_headers(request_id, 650, 646), "body": body,
                       "responseTime": response_ms, "isStreaming": False, "completedAt": completed_at})


def error_response(status: int = 529, *, request_id: str = "req_error", streaming: bool = True) -> str:
    """An error `response` value: `bodyText` only."""
    text = json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    return json.dumps({"statusCode": status, "headers": {"Request-Id": [request_id], "X-Should-Retry": ["true"]},
                       "bodyText": text, "responseTime": 603, "isStreaming": streaming,
                       "completedAt": "2026-11-29T19:20:57-08:00"})


def proxy_row(
    request_id: str,
    timestamp: str,
    *,
    response: Optional[str],
    body: Optional[str] = None,
    headers: Optional[str] = None,
    model: str = MODEL,
) -> dict[str, Any]:
    """One `requests` row as a dict of column values."""
    return {"id": request_id, "timestamp": timestamp, "method": "POST", "endpoint": "/v1/messages",
            "headers": headers if headers is not None else request_headers(), "body": body if body is not None else request_body(),
            "user_agent": "claude-cli/2.1.83 (external, cli)", "content_type": "application/json", "response": response,
            "model": model, "original_model": model, "routed_model": model, "created_at": "2026-11-30 03:20:50"}


def make_proxy_db(path: Path, rows: Sequence[dict[str, Any]] = ()) -> Path:
    """Create a proxy DB with the real schema and insert `rows` in order (rowid = arrival order)."""
    connection = sqlite3.connect(path)
    connection.executescript(PROXY_SCHEMA)
    insert_rows(connection, rows)
    connection.close()
    return path


def insert_rows(connection: sqlite3.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows the way the proxy does on arrival."""
    for row in rows:
        names = ", ".join(row)
        connection.execute(f"INSERT INTO requests ({names}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
    connection.commit()


def manifest_turns(fixture_dir: Path) -> dict[str, dict]:
    """Ground truth per message id from manifest.json: {msg_id: {request_id, stop_reason}} (all turns)."""
    manifest = json.loads((fixture_dir / "manifest.json").read_text())
    turns = list(manifest["parent_turns"])
    for agent in manifest["agents"]:
        turns.extend(agent["turns"])
    return {turn["msg_id"]: turn for turn in turns}


def jsonl_output_types(fixture_dir: Path) -> dict[str, tuple[str, ...]]:
    """Content types per assistant message id, in order and unique, as Claude Code logged them."""
    types: dict[str, list[str]] = {}
    for path in sorted((fixture_dir / "jsonl").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("type") != "assistant":
                continue
            seen = types.setdefault(entry["message"]["id"], [])
            for block in entry["message"]["content"]:
                if block["type"] not in seen:
                    seen.append(block["type"])
    return {message_id: tuple(kinds) for message_id, kinds in types.items()}


def client_exchanges(fixture_dir: Path) -> list[dict]:
    """Every HTTP exchange the client saw (stream flag, status, msg_id, retry)."""
    return [json.loads(line) for line in (fixture_dir / "client_exchanges.jsonl").read_text().splitlines() if line]
