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
              request_id: Optional[str] = None, prompt: str = "go", sidechain: Optional[bool] = None,
              uuid: Optional[str] = None, parent_uuid: Optional[str] = None,
              extra_blocks: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """An assistant line; `agent_calls` are (tool_use id, tool name, subagent_type, description), each
    with `prompt`; `sidechain` marks a 1.0.x sub-agent line inside the parent (no agent id)."""
    content: list[dict[str, Any]] = [{"type": kind} for kind in types]
    content += [{"type": "tool_use", "id": tool_id, "name": name,
                 "input": {"subagent_type": kind, "description": text, "prompt": prompt}}
                for tool_id, name, kind, text in agent_calls]
    content += list(extra_blocks)
    entry = {
        "type": "assistant", "uuid": uuid or f"u-{message_id}-{timestamp}", "sessionId": session,
        "timestamp": timestamp, "isSidechain": agent_id is not None if sidechain is None else sidechain,
        "message": {"id": message_id, "model": model, "role": "assistant", "content": content,
                    "stop_reason": stop_reason,
                    "usage": {"input_tokens": 3, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20,
                              "output_tokens": output_tokens}},
    }
    if agent_id is not None:
        entry["agentId"] = agent_id
    if request_id is not None:
        entry["requestId"] = request_id
    if parent_uuid is not None:
        entry["parentUuid"] = parent_uuid
    return entry


def user_prompt(timestamp: str, *, session: str = SESSION, agent_id: Optional[str] = None) -> dict[str, Any]:
    """A plain user prompt line."""
    entry = {"type": "user", "sessionId": session, "timestamp": timestamp,
             "message": {"role": "user", "content": "please look"}}
    if agent_id is not None:
        entry["agentId"] = agent_id
    return entry


def tool_result(tool_use_id: str, timestamp: str, result: Optional[dict[str, Any]] = None, *,
                session: str = SESSION, is_error: bool = False) -> dict[str, Any]:
    """The parent's user line answering a tool_use, with Claude Code's `toolUseResult`."""
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id, "content": "ok"}
    if is_error:
        block["is_error"] = True
    entry: dict[str, Any] = {
        "type": "user", "sessionId": session, "timestamp": timestamp,
        "message": {"role": "user", "content": [block]},
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


def sidechain_prompt(uuid: str, timestamp: str, prompt: str, *, session: str = SESSION) -> dict[str, Any]:
    """The root of a 1.0.x inline sub-agent: its task prompt as an `isSidechain` user line in the parent."""
    return {"parentUuid": None, "isSidechain": True, "userType": "external", "sessionId": session,
            "version": "1.0.24", "type": "user", "message": {"role": "user", "content": prompt},
            "uuid": uuid, "timestamp": timestamp}


def async_launch(agent_id: str) -> dict[str, Any]:
    """The `toolUseResult` of a background agent's launch acknowledgement (2.1.x)."""
    return {"isAsync": True, "status": "async_launched", "agentId": agent_id, "description": "bg",
            "prompt": "go", "outputFile": f"/tmp/tasks/{agent_id}.output", "canReadOutputFile": True}


def notification_text(agent_id: str, tool_use_id: str, status: str = "completed") -> str:
    """Claude Code's `<task-notification>` for a finished background agent."""
    return (f"<task-notification>\n<task-id>{agent_id}</task-id>\n<tool-use-id>{tool_use_id}</tool-use-id>\n"
            f"<status>{status}</status>\n<summary>Agent \"bg\" {status}</summary>\n</task-notification>")


def task_notification(agent_id: str, tool_use_id: str, timestamp: str, *, via: str = "user",
                      status: str = "completed", session: str = SESSION) -> dict[str, Any]:
    """The notification as the parent logs it: a user line, a `queued_command` attachment, or only queued."""
    text = notification_text(agent_id, tool_use_id, status)
    envelope = {"sessionId": session, "timestamp": timestamp, "uuid": f"n-{agent_id}-{via}", "isSidechain": False}
    if via == "user":
        return {**envelope, "type": "user", "message": {"role": "user", "content": text}}
    if via == "attachment":
        return {**envelope, "type": "attachment", "attachment": {"type": "queued_command", "prompt": text}}
    return {"type": "queue-operation", "operation": "enqueue", "sessionId": session, "timestamp": timestamp,
            "content": text}


def task_output_call(tool_use_id: str, task_id: str) -> dict[str, Any]:
    """A `TaskOutput` tool_use block waiting for a background task."""
    return {"type": "tool_use", "id": tool_use_id, "name": "TaskOutput",
            "input": {"task_id": task_id, "block": True, "timeout": 300000}}


def task_output_result(task_id: str, status: str = "completed", retrieval: str = "success") -> dict[str, Any]:
    """The `toolUseResult` of a TaskOutput call."""
    return {"retrieval_status": retrieval,
            "task": {"task_id": task_id, "task_type": "local_agent", "status": status, "output": "done"}}


def write_meta(jsonl_path: Path, *, agent_type: str, tool_use_id: str = "", description: str = "") -> Path:
    """The `agent-<id>.meta.json` Claude Code writes beside a sub-agent log."""
    path = jsonl_path.with_name(jsonl_path.name.removesuffix(".jsonl") + ".meta.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"agentType": agent_type, "description": description, "toolUseId": tool_use_id,
                                "spawnDepth": 1}), encoding="utf-8")
    return path
