"""Typed records passed between the readers, the indexes and the analyses.

One record type per concept; every field carries its unit in its name where one applies
(`api_time_s`, `duration_ms`). Records are frozen: readers build them, nobody mutates them.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Optional


@dataclass(frozen=True)
class Usage:
    """The API's usage numbers for one request (docs/inputs.md#response-column)."""

    input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_5m_tokens: int = 0
    cache_creation_1h_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        """The API's real prompt size: uncached input + cache read + cache creation."""
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens

    @property
    def hit_rate(self) -> float:
        """Share of the prompt served from the cache (0 when the prompt is empty)."""
        total = self.prompt_tokens
        return self.cache_read_input_tokens / total if total else 0.0


@dataclass(frozen=True)
class ProxyRequest:
    """One row of the proxy's `requests` table, parsed (docs/inputs.md#proxy-database).

    `kind` says what the row is: "ok" (a 200 with a parsed message), "error" (4xx/5xx),
    "pending" (response NULL), or "unparsable" (response JSON broken). The body is not kept:
    the hashing code reads it from the DB by `row_id` when it needs it.
    """

    row_id: int
    request_id: str
    timestamp: datetime
    completed_at: Optional[datetime]
    is_streaming: bool
    status: Optional[int]
    kind: str
    model: str
    message_id: Optional[str]
    usage: Optional[Usage]
    stop_reason: str
    output_types: tuple[str, ...]
    api_time_s: Optional[float]
    ttft_s: Optional[float]
    anthropic_request_id: Optional[str]
    session_header: Optional[str]
    max_tokens: Optional[int]
    retry_count: Optional[int]
    prompt_key: Optional[str]
    message_count: int
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class AssistantTurn:
    """One API call as Claude Code logged it: all JSONL lines sharing one `message.id` (docs/inputs.md#assistant-lines)."""

    message_id: str
    conversation_id: str
    agent_id: str
    timestamp: datetime
    model: str
    stop_reason: str
    content_types: tuple[str, ...]
    output_tokens: int
    usage: Optional[Usage]
    jsonl_request_id: Optional[str]
    source_file: str
    line_number: int


@dataclass(frozen=True)
class SubagentLink:
    """A parent's Agent/Task tool call and the sub-agent it started (docs/inputs.md#sub-agents)."""

    conversation_id: str
    agent_id: str
    tool_use_id: str
    subagent_type: str
    description: str
    spawn_time: datetime
    completion_time: Optional[datetime]
    duration_ms: Optional[int]
    total_tokens: Optional[int]
    tool_use_count: Optional[int]
    status: str
    has_log: bool
