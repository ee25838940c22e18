"""Claude Code 2.1.x JSONL session lines (docs/inputs.md#session-logs), envelope field order as in the real-format fixture.

A `JsonlSession` is one file's writer state: it chains `parentUuid`, stamps the envelope and
returns plain dicts; `write_jsonl` streams them to disk atomically.
"""
from __future__ import annotations

import json
import os
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Optional

from lib.atomic import atomic_writer
from lib.synthetic.proxy_db_writer import CLAUDE_CODE_VERSION


def new_uuid(rng: random.Random) -> str:
    """A version-4 UUID string drawn from `rng` (reproducible)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def jsonl_timestamp(moment: datetime) -> str:
    """Claude Code's timestamp: UTC ISO 8601 with milliseconds and `Z`."""
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


@dataclass
class JsonlSession:
    """Envelope context of one JSONL file (a parent session, or a sub-agent when `agent_id` is set)."""

    rng: random.Random
    session_id: str
    cwd: str
    prompt_id: str
    agent_id: Optional[str] = None
    slug: Optional[str] = None
    git_branch: str = "main"
    last_uuid: Optional[str] = field(default=None)
    version: str = CLAUDE_CODE_VERSION

    def _tail(self) -> dict:
        tail = {"userType": "external", "entrypoint": "cli", "cwd": self.cwd, "sessionId": self.session_id,
                "version": self.version, "gitBranch": self.git_branch}
        if self.slug:
            tail["slug"] = self.slug
        return tail

    def _head(self, *, with_prompt_id: bool) -> dict:
        head: dict[str, Any] = {"parentUuid": self.last_uuid, "isSidechain": self.agent_id is not None}
        if with_prompt_id:
            head["promptId"] = self.prompt_id
        if self.agent_id:
            head["agentId"] = self.agent_id
        return head

    def _advance(self) -> str:
        self.last_uuid = new_uuid(self.rng)
        return self.last_uuid

    def snapshot(self, message_uuid: str, at: datetime) -> dict:
        """A `file-history-snapshot` line (written before each typed prompt)."""
        return {"type": "file-history-snapshot", "messageId": message_uuid,
                "snapshot": {"messageId": message_uuid, "trackedFileBackups": {}, "timestamp": jsonl_timestamp(at)},
                "isSnapshotUpdate": False}

    def user_prompt(self, content: str | list, at: datetime) -> dict:
        """A typed prompt (or a sub-agent's task prompt)."""
        line = self._head(with_prompt_id=True)
        line.update(type="user", message={"role": "user", "content": content}, uuid=self._advance(),
                    timestamp=jsonl_timestamp(at))
        if self.agent_id is None:
            line["permissionMode"] = "default"
        line.update(self._tail())
        return line

    def assistant(self, message: dict, request_id: Optional[str], at: datetime) -> dict:
        """An assistant message line; `message` is the API message (id, model, content, usage...)."""
        line = self._head(with_prompt_id=False)
        line["message"] = message
        if request_id:
            line["requestId"] = request_id
        line.update(type="assistant", uuid=self._advance(), timestamp=jsonl_timestamp(at))
        line.update(self._tail())
        return line

    def tool_results(self, results: list[dict], tool_use_result: Any, at: datetime) -> dict:
        """The user line carrying tool_result blocks; `toolUseResult` is the client's structured copy."""
        source = self.last_uuid
        line = self._head(with_prompt_id=True)
        line.update(type="user", message={"role": "user", "content": results}, uuid=self._advance(),
                    timestamp=jsonl_timestamp(at), toolUseResult=tool_use_result, sourceToolAssistantUUID=source)
        line.update(self._tail())
        return line

    def queued_command(self, prompt: str, at: datetime) -> dict:
        """An `attachment` line: a queued task notification folded into the next request (mid-turn delivery)."""
        line: dict[str, Any] = {"parentUuid": self.last_uuid, "isSidechain": self.agent_id is not None,
                                "attachment": {"type": "queued_command", "prompt": prompt,
                                               "commandMode": "task-notification"},
                                "type": "attachment", "uuid": self._advance(), "timestamp": jsonl_timestamp(at)}
        line.update(self._tail())
        return line

    def queue_operation(self, operation: str, at: datetime, content: Optional[str] = None) -> dict:
        """A `queue-operation` line (no uuid: outside the message chain); `enqueue` carries the queued text."""
        line: dict[str, Any] = {"type": "queue-operation", "operation": operation, "timestamp": jsonl_timestamp(at),
                                "sessionId": self.session_id}
        if content is not None:
            line["content"] = content
        return line

    def agent_progress(self, *, agent_id: str, copied: dict, prompt: str, parent_tool_use_id: str,
                       tool_use_id: str, at: datetime) -> dict:
        """A parent-file `progress` line copying one sub-agent message (not a parent turn)."""
        line = {"parentUuid": self.last_uuid, "isSidechain": False, "type": "progress",
                "data": {"message": copied, "type": "agent_progress", "prompt": prompt, "agentId": agent_id},
                "toolUseID": tool_use_id, "parentToolUseID": parent_tool_use_id,
                "uuid": new_uuid(self.rng), "timestamp": jsonl_timestamp(at)}
        line.update(self._tail())
        return line


def progress_copy(line: dict) -> dict:
    """The `data.message` a progress line embeds for a sub-agent user/assistant line."""
    copied: dict[str, Any] = {"type": line["type"]}
    if line["type"] == "assistant":
        copied["timestamp"] = line["timestamp"]
    copied["message"] = line["message"]
    copied["uuid"] = line["uuid"]
    if line["type"] == "user":
        copied["timestamp"] = line["timestamp"]
    return copied


def agent_tool_result(*, tool_use_id: str, agent_id: str, report: str, total_tokens: int, tool_uses: int,
                      duration_ms: int) -> dict:
    """The parent's tool_result block for a finished `Agent` call, with Claude Code's usage trailer."""
    trailer = (f"agentId: {agent_id} (use SendMessage with to: '{agent_id}' to continue this agent)\n"
               f"<usage>total_tokens: {total_tokens}\ntool_uses: {tool_uses}\nduration_ms: {duration_ms}</usage>")
    return {"tool_use_id": tool_use_id, "type": "tool_result",
            "content": [{"type": "text", "text": report}, {"type": "text", "text": trailer}]}


def async_launch_result(*, tool_use: dict, agent_id: str, output_file: str) -> tuple[dict, dict]:
    """The parent's tool_result block and `toolUseResult` for a background agent's launch acknowledgement."""
    text = (f"Async agent launched successfully.\nagentId: {agent_id} (internal ID - do not mention to user. "
            f"Use SendMessage with to: '{agent_id}' to continue this agent.)\nThe agent is working in the "
            f"background. You will be notified automatically when it completes.\noutput_file: {output_file}")
    block = {"tool_use_id": tool_use["id"], "type": "tool_result", "content": [{"type": "text", "text": text}]}
    structured = {"isAsync": True, "status": "async_launched", "agentId": agent_id,
                  "description": tool_use["input"]["description"], "prompt": tool_use["input"]["prompt"],
                  "outputFile": output_file, "canReadOutputFile": True}
    return block, structured


def task_notification(*, agent_id: str, tool_use_id: str, description: str, report: str, total_tokens: int,
                      tool_uses: int, duration_ms: int, output_file: str) -> str:
    """The `<task-notification>` Claude Code delivers into the parent's next prompt when a background agent ends."""
    return (f"<task-notification>\n<task-id>{agent_id}</task-id>\n<tool-use-id>{tool_use_id}</tool-use-id>\n"
            f"<output-file>{output_file}</output-file>\n<status>completed</status>\n"
            f"<summary>Agent \"{description}\" completed</summary>\n<result>{report}</result>\n"
            f"<usage>total_tokens: {total_tokens}\ntool_uses: {tool_uses}\nduration_ms: {duration_ms}</usage>\n"
            f"</task-notification>\nFull transcript available at: {output_file}")


def write_jsonl(path: str | Path, lines: Iterable[dict]) -> int:
    """Write one compact JSON object per line, atomically; returns the line count."""
    count = 0
    with atomic_writer(path) as stream:
        for line in lines:
            stream.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")))
            stream.write("\n")
            count += 1
    # mkstemp creates 0600 files; logs are ordinary shareable files (Claude Code writes 0644).
    os.chmod(path, 0o644)
    return count
