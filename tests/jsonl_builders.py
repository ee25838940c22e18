"""Builders for hand-made Claude Code JSONL lines (shape copied from the real-proxy fixture, docs/inputs.md#session-logs)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Optional

SESSION = "11111111-2222-3333-4444-555555555555"
OTHER_SESSION = "99999999-8888-7777-6666-555555555555"


def assistant(message_id: str, timestamp: str, *, types: Iterable[str] = ("text",), output_tokens: int = 10,
              stop_reason: Optional[str] = "end_turn", model: str = "claude-opus-4-6", session: str = SESSION,
              agent_id: Optional[str] = None, agent_calls: Iterable[tuple[str, str, str, str]] = (),
              request_id: Optional[str] = None) -> dict[str, Any]:
    """An assistant line; `agent_calls` are (tool_use id, tool name, subagent_type, description)."""
    content: list[dict[str, Any]] = [{"type": kind} for kind in types]
    content += [{"type": "tool_use", "id": tool_id, "name": name,
                 "input": {"subagent_type": kind, "description": text, "prompt": "go"}}
                for tool_id, name, kind, text in agent_calls]
    entry = {
        "type": "assistant", "uuid": f"u-{message_id}-{timestamp}", "sessionId": session, "timestamp": timestamp,
        "isSidechain": agent_id is not None,
        "message": {"id": message_id, "model": model, "role": "assistant", "content": content,
                    "stop_reason": stop_reason,
                    "usage": {"input_tokens": 3, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20,
                              "output_tokens": output_tokens}},
    }
    if agent_id is not None:
        entry["agentId"] = agent_id
    if request_id is not None:
        entry["requestId"] = request_id
    return entry


def user_prompt(timestamp: str, *, session: str = SESSION, agent_id: Optional[str] = None) -> dict[str, Any]:
    """A plain user prompt line."""
    entry = {"type": "user", "sessionId": session, "timestamp": timestamp,
             "message": {"role": "user", "content": "please look"}}
    if agent_id is not None:
        entry["agentId"] = agent_id
    return entry


def tool_result(tool_use_id: str, timestamp: str, result: Optional[dict[str, Any]] = None, *,
                session: str = SESSION) -> dict[str, Any]:
    """The parent's user line answering a tool_use, with Claude Code's `toolUseResult`."""
    entry: dict[str, Any] = {
        "type": "user", "sessionId": session, "timestamp": timestamp,
        "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use_id, "content": "ok"}]},
    }
    if result is not None:
        entry["toolUseResult"] = result
    return entry


def agent_progress(agent_id: str, tool_use_id: str, timestamp: str, *, session: str = SESSION) -> dict[str, Any]:
    """A `progress` copy of a sub-agent message inside the parent file."""
    return {"type": "progress", "sessionId": session, "timestamp": timestamp, "parentToolUseID": tool_use_id,
            "toolUseID": "agent_msg_x",
            "data": {"type": "agent_progress", "agentId": agent_id,
                     "message": {"type": "assistant", "message": {"id": "msg_copy_should_not_count"}}}}


def agent_result(agent_id: Optional[str], *, duration_ms: int = 5000, tokens: int = 4000,
                 tool_uses: int = 3, status: Optional[str] = "completed") -> dict[str, Any]:
    """A sub-agent `toolUseResult` as Claude Code writes it when the agent finished."""
    result: dict[str, Any] = {"totalDurationMs": duration_ms, "totalTokens": tokens, "totalToolUseCount": tool_uses,
                              "content": [{"type": "text", "text": "done"}]}
    if agent_id is not None:
        result["agentId"] = agent_id
    if status is not None:
        result["status"] = status
    return result


def write_jsonl(path: Path, entries: Iterable[dict[str, Any]], *, tail: str = "") -> Path:
    """Write one JSON object per line, then `tail` verbatim (e.g. a truncated line without newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries) + tail, encoding="utf-8")
    return path
