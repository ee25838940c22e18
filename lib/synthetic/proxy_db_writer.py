"""Write `requests` rows exactly as claude-code-proxy stores them (docs/inputs.md#proxy-database).

Used by the example generator and meant for benchmark-size captures: rows are streamed in and
inserted in batches, so memory stays bounded by one batch.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

# Copied verbatim from the real proxy's DB (tabs and all), so `sqlite_master.sql` matches byte for byte.
REQUESTS_SCHEMA = """CREATE TABLE requests (
\t\tid TEXT PRIMARY KEY,
\t\ttimestamp DATETIME DEFAULT CURRENT_TIMESTAMP,
\t\tmethod TEXT NOT NULL,
\t\tendpoint TEXT NOT NULL,
\t\theaders TEXT NOT NULL,
\t\tbody TEXT NOT NULL,
\t\tuser_agent TEXT,
\t\tcontent_type TEXT,
\t\tprompt_grade TEXT,
\t\tresponse TEXT,
\t\tmodel TEXT,
\t\toriginal_model TEXT,
\t\trouted_model TEXT,
\t\tcreated_at DATETIME DEFAULT CURRENT_TIMESTAMP
\t)"""
REQUESTS_INDEXES = (
    "CREATE INDEX idx_timestamp ON requests(timestamp DESC)",
    "CREATE INDEX idx_endpoint ON requests(endpoint)",
    "CREATE INDEX idx_model ON requests(model)",
)
INSERT_SQL = (
    "INSERT INTO requests (id, timestamp, method, endpoint, headers, body, user_agent, content_type,"
    " prompt_grade, response, model, original_model, routed_model, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
DEFAULT_BATCH_ROWS = 200
CLAUDE_CODE_VERSION = "2.1.83"
# A version that sends X-Claude-Code-Session-Id (and, from a sub-agent, X-Claude-Code-Agent-Id): 2.1.86 and later.
SESSION_HEADERS_VERSION = "2.1.90"


def user_agent(version: str) -> str:
    """Claude Code's `User-Agent` for a CLI session of `version`."""
    return f"claude-cli/{version} (external, cli)"


USER_AGENT = user_agent(CLAUDE_CODE_VERSION)
BETA_MAIN = ("claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,"
             "prompt-caching-scope-2026-01-05,effort-2025-11-24")
BETA_SUBAGENT = "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,prompt-caching-scope-2026-01-05"
BETA_UTILITY = "claude-code-20250219,prompt-caching-scope-2026-01-05"
TOP_LEVEL_KEYS = ("model", "messages", "max_tokens", "temperature", "system", "stream", "tools", "tool_choice")
_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def go_json(value: Any) -> str:
    """Serialize like Go's json.Marshal: compact, raw UTF-8, `<`/`>`/`&` (and U+2028/9) as \\u escapes.

    Key order is the caller's (dict insertion order); Go structs fix it, Go maps sort it.
    The replacement is safe on the whole text because those characters only occur inside strings.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for raw, escaped in _HTML_ESCAPES.items():
        if raw in text:
            text = text.replace(raw, escaped)
    return text


def sorted_keys(value: Any) -> Any:
    """Sort dict keys at every depth, as Go does when marshalling a map[string]interface{}."""
    if isinstance(value, dict):
        return {key: sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [sorted_keys(item) for item in value]
    return value


def proxy_body(body: Mapping[str, Any]) -> dict:
    """The request as the proxy re-serializes it (its `model.AnthropicRequest` struct), docs/inputs.md#stored-request-body.

    Drops metadata/thinking/context_management and other unknown keys, `stream: false`, tool-level
    cache_control, `cache_control.ttl` and schema extras; sorts keys inside message content.
    """
    stored: dict = {}
    for key in TOP_LEVEL_KEYS:
        if key not in body or body[key] is None:
            continue
        value = body[key]
        if key == "messages":
            value = [{"role": message["role"], "content": sorted_keys(message["content"])} for message in value]
        elif key == "system":
            value = [_system_block(block) for block in value]
        elif key == "tools":
            value = [_tool(tool) for tool in value]
        elif key == "stream" and not value:
            continue
        elif key == "tool_choice":
            value = sorted_keys(value)
        stored[key] = value
    return stored


def _system_block(block: Mapping[str, Any]) -> dict:
    kept = {"text": block.get("text", ""), "type": block.get("type", "")}
    if block.get("cache_control"):
        kept["cache_control"] = {"type": block["cache_control"].get("type", "")}
    return kept


def _tool(tool: Mapping[str, Any]) -> dict:
    schema = tool.get("input_schema") or {}
    kept_schema = {"type": schema.get("type", ""), "properties": sorted_keys(schema.get("properties"))}
    if schema.get("required"):
        kept_schema["required"] = list(schema["required"])
    return {"name": tool.get("name", ""), "description": tool.get("description", ""), "input_schema": kept_schema}


def hashed_api_key(api_key: str) -> str:
    """The proxy's redaction of secret headers: `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(api_key.encode()).hexdigest()


def request_headers(*, content_length: int, api_key_hash: str, beta: str = BETA_MAIN, retry_count: int = 0,
                    client_user_agent: str = USER_AGENT, session_id: Optional[str] = None, agent_id: Optional[str] = None) -> dict:
    """Claude Code's request headers, Go-canonical names in sorted order (as stored).

    2.1.83's set by default; `session_id` / `agent_id` add the session and sub-agent headers newer
    versions send (`client_user_agent` should then name such a version).
    """
    headers = {
        "Accept": ["application/json"],
        "Accept-Encoding": ["gzip, deflate, br, zstd"],
        "Anthropic-Beta": [beta],
        "Anthropic-Dangerous-Direct-Browser-Access": ["true"],
        "Anthropic-Version": ["2023-06-01"],
        "Connection": ["keep-alive"],
        "Content-Length": [str(content_length)],
        "Content-Type": ["application/json"],
        "User-Agent": [client_user_agent],
        "X-Api-Key": [api_key_hash],
        "X-App": ["cli"],
        "X-Stainless-Arch": ["x64"],
        "X-Stainless-Lang": ["js"],
        "X-Stainless-Os": ["Linux"],
        "X-Stainless-Package-Version": ["0.80.0"],
        "X-Stainless-Retry-Count": [str(retry_count)],
        "X-Stainless-Runtime": ["node"],
        "X-Stainless-Runtime-Version": ["v24.3.0"],
        "X-Stainless-Timeout": ["600"],
    }
    if session_id is not None:
        headers["X-Claude-Code-Session-Id"] = [session_id]
    if agent_id is not None:
        headers["X-Claude-Code-Agent-Id"] = [agent_id]
    # Go marshals a header map with its keys sorted.
    return dict(sorted(headers.items()))


def client_content_length(stored_body: str, client_only_json: str = "") -> int:
    """Byte length of what the client sent: the stored body un-escaped plus the fields the proxy dropped."""
    raw = stored_body.replace("\\u003c", "<").replace("\\u003e", ">").replace("\\u0026", "&")
    return len(raw.encode()) + len(client_only_json.encode())


def local_rfc3339(moment: datetime, utc_offset: timedelta) -> str:
    """Go's time.Format(RFC3339) in the proxy's zone: whole seconds, `Z` only for a zero offset."""
    local = moment.astimezone(timezone(utc_offset)).replace(microsecond=0)
    if utc_offset == timedelta(0):
        return local.strftime("%Y-%m-%dT%H:%M:%SZ")
    return local.isoformat()


def sqlite_utc(moment: datetime) -> str:
    """SQLite CURRENT_TIMESTAMP: UTC `YYYY-MM-DD HH:MM:SS`."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True, slots=True)
class ProxyRow:
    """One `requests` row; `body`, `headers` and `response` already hold the proxy's JSON text."""

    id: str
    arrived_at: datetime
    utc_offset: timedelta
    headers: str
    body: str
    model: str
    response: Optional[str]
    user_agent: str = USER_AGENT

    def values(self) -> tuple:
        """The INSERT parameters in column order."""
        return (
            self.id, local_rfc3339(self.arrived_at, self.utc_offset), "POST", "/v1/messages", self.headers,
            self.body, self.user_agent, "application/json", None, self.response, self.model, self.model,
            self.model, sqlite_utc(self.arrived_at),
        )


class CaptureWriter:
    """Append rows to a new proxy DB in arrival order, `batch_rows` per transaction."""

    def __init__(self, path: str | Path, *, batch_rows: int = DEFAULT_BATCH_ROWS) -> None:
        self.path = Path(path)
        self.batch_rows = batch_rows
        self.rows_written = 0
        self._pending: list[tuple] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(str(self.path), isolation_level=None)
        # The real proxy uses the default rollback journal; keep the file a plain single-file DB.
        self._connection.execute("PRAGMA journal_mode = DELETE")
        if not self._connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'requests'").fetchone():
            self._connection.execute(REQUESTS_SCHEMA)
            for statement in REQUESTS_INDEXES:
                self._connection.execute(statement)

    def add(self, row: ProxyRow) -> None:
        """Queue one row; flushes a full batch."""
        self._pending.append(row.values())
        if len(self._pending) >= self.batch_rows:
            self.flush()

    def add_all(self, rows: Iterable[ProxyRow]) -> None:
        """Queue rows from any iterable (a generator keeps memory bounded)."""
        for row in rows:
            self.add(row)

    def flush(self) -> None:
        """Insert the queued rows in one transaction."""
        if not self._pending:
            return
        self._connection.execute("BEGIN")
        self._connection.executemany(INSERT_SQL, self._pending)
        self._connection.execute("COMMIT")
        self.rows_written += len(self._pending)
        self._pending.clear()

    def close(self) -> None:
        """Flush and close the DB."""
        self.flush()
        self._connection.close()

    def __enter__(self) -> "CaptureWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            self.close()
        else:
            self._connection.close()
