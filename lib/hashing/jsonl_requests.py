"""Each API call of a Claude Code log rebuilt as the request it answered, from the log alone (docs/jsonl.md).

A call's prompt is the `parentUuid` chain ending just before the call's first line: the messages
Claude Code sent, root first (a compaction boundary starts a new root, so the chain restarts there
as the prompt did). Only the chain's shape is kept per line (its id, content size and content types,
and its text for the few prompts that are tokenized), never the request the log does not hold.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Optional

import orjson

from lib.capture.jsonl_conversations import Conversation, merge_conversations, read_log_group
from lib.errors import InputError
from lib.capture.jsonl_files import LogFile, default_projects_dir, discover_logs, group_logs, iter_entries
from lib.problems import ProblemCounter
from lib.records import AssistantTurn, ProxyRequest
from lib.timestamps import parse_timestamp

# Lines whose content is part of the next request's messages; other lines (progress, system notes
# such as a compaction boundary) only link the chain.
MESSAGE_LINE_TYPES = frozenset({"user", "assistant", "attachment"})


@dataclass(frozen=True)
class PromptLine:
    """One line of a prompt chain: its uuid, its content's size in bytes and content types, and its text
    while no answer precedes it in its chain (what a lane's first call shows; later text is not kept)."""

    uuid: str
    role: str
    size: int
    types: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class RebuiltCall:
    """An API call with the prompt lines it was sent with and the log's times for it."""

    turn: AssistantTurn
    # The latest line since the previous answer (tool results, prompts, attachments): Claude Code sends
    # the request right after it. Parallel tool results may be chained in call order, not time order.
    sent_at: datetime
    completed_at: datetime  # the call's last line: the end of its streamed answer
    prompt: tuple[PromptLine, ...]

    @property
    def last_message_types(self) -> tuple[str, ...]:
        """Content types of the prompt's last message (its trailing lines of one role)."""
        if not self.prompt:
            return ()
        role = self.prompt[-1].role
        types: list[str] = []
        for line in reversed(self.prompt):
            if line.role != role:
                break
            types.extend(t for t in line.types if t not in types)
        return tuple(types)

    @property
    def all_message_types(self) -> tuple[str, ...]:
        """Content types of every prompt message."""
        return tuple(sorted({t for line in self.prompt for t in line.types}))


@dataclass
class _FileLines:
    """One file's chain: parent links and times of every line, prompt lines, and each call's lines."""

    parents: dict[str, str]
    times: dict[str, datetime]
    lines: dict[str, PromptLine]
    answers: set[str]  # uuids of assistant lines
    answered: set[str]  # uuids of lines with an assistant line at or above them in their chain
    first_line: dict[str, str]  # message id → uuid of its first line
    last_time: dict[str, datetime]  # message id → time of its last line


@dataclass
class LogRequests:
    """A logs folder read as requests: conversations, each call rebuilt, and each call as a request
    keyed by its message id (no proxy row: no request id, no timing but the log's)."""

    conversations: dict[str, Conversation]
    calls: dict[str, RebuiltCall]
    requests: dict[str, ProxyRequest]


def requests_from_logs(jsonl_dir: Optional[str], problems: ProblemCounter) -> LogRequests:
    """Read every conversation under `jsonl_dir` (default ~/.claude/projects) and rebuild its calls."""
    found = discover_logs(jsonl_dir, problems)
    if not found:
        # As on the DB route: an empty result with exit 0 would hide a wrong folder.
        raise InputError(f"{jsonl_dir or default_projects_dir()}: no Claude Code JSONL logs found")
    groups = group_logs(found)
    conversations = merge_conversations(map(read_log_group, groups.values()), problems)
    calls: dict[str, RebuiltCall] = {}
    for conversation_id, conversation in conversations.items():
        calls.update(rebuild_calls(conversation, groups[conversation_id]))
    requests = {message_id: _request(number, call) for number, (message_id, call) in enumerate(calls.items(), 1)}
    return LogRequests(conversations, calls, requests)


def _request(number: int, call: RebuiltCall) -> ProxyRequest:
    turn = call.turn
    return ProxyRequest(
        row_id=number, request_id=turn.message_id, timestamp=call.sent_at, completed_at=call.completed_at,
        is_streaming=True, status=200, kind="ok" if turn.usage is not None else "without_usage", model=turn.model,
        message_id=turn.message_id, usage=turn.usage, stop_reason=turn.stop_reason, output_types=turn.content_types,
        api_time_s=None, ttft_s=None, anthropic_request_id=turn.jsonl_request_id, session_header=None,
        max_tokens=None, retry_count=None, prompt_key=None, message_count=len(call.prompt),
    )


def rebuild_calls(conversation: Conversation, files: Iterable[LogFile]) -> dict[str, RebuiltCall]:
    """Every indexed turn of the conversation (parent and sub-agents) rebuilt, keyed by message id.

    Problems of the lines were counted when the conversation was read; a second read counts none.
    """
    by_path = {str(log.path): log for log in files}
    parsed: dict[str, _FileLines] = {}
    calls: dict[str, RebuiltCall] = {}
    for turns in (conversation.turns, *conversation.subagents.values()):
        for turn in turns:
            log = by_path.get(turn.source_file)
            if log is None:
                continue
            lines = parsed.get(turn.source_file)
            if lines is None:
                lines = parsed[turn.source_file] = _read_lines(log)
            call = _call(turn, lines)
            if call is not None:
                calls[turn.message_id] = call
    return calls


def _call(turn: AssistantTurn, lines: _FileLines) -> Optional[RebuiltCall]:
    first = lines.first_line.get(turn.message_id)
    if first is None:
        return None
    chain: list[PromptLine] = []
    seen: set[str] = {first}
    current = lines.parents.get(first, "")
    sent_at: Optional[datetime] = None
    since_answer = True
    while current and current not in seen:  # a cycle would be a corrupt log: stop at the repeat
        seen.add(current)
        if (line := lines.lines.get(current)) is not None:
            chain.append(line)
        since_answer = since_answer and current not in lines.answers
        if since_answer and (moment := lines.times.get(current)) is not None:
            sent_at = moment if sent_at is None else max(sent_at, moment)
        current = lines.parents.get(current, "")
    chain.reverse()
    completed = lines.last_time.get(turn.message_id, turn.timestamp)
    sent = turn.timestamp if sent_at is None else min(sent_at, turn.timestamp)
    return RebuiltCall(turn, sent, max(completed, turn.timestamp), tuple(chain))


def _read_lines(log: LogFile) -> _FileLines:
    result = _FileLines({}, {}, {}, set(), set(), {}, {})
    for _, entry in iter_entries(log.path, ProblemCounter(), log.label):
        uuid = entry.get("uuid")
        if not isinstance(uuid, str) or not uuid:
            continue
        parent = entry.get("parentUuid")
        result.parents[uuid] = parent if isinstance(parent, str) else ""
        timestamp = parse_timestamp(entry.get("timestamp"))
        if timestamp is not None:
            result.times[uuid] = timestamp
        kind = entry.get("type")
        if kind == "assistant" or result.parents[uuid] in result.answered:
            result.answered.add(uuid)
        if kind not in MESSAGE_LINE_TYPES:
            continue
        content = _content(entry, kind)
        text = content if isinstance(content, str) else orjson.dumps(content).decode()
        result.lines[uuid] = PromptLine(uuid, "assistant" if kind == "assistant" else "user", len(text.encode()),
                                        _types(content), "" if uuid in result.answered else text)
        if kind == "assistant":
            result.answers.add(uuid)
        message = entry.get("message")
        message_id = message.get("id") if kind == "assistant" and isinstance(message, dict) else None
        if isinstance(message_id, str) and message_id:
            result.first_line.setdefault(message_id, uuid)
            if timestamp is not None and (message_id not in result.last_time or timestamp > result.last_time[message_id]):
                result.last_time[message_id] = timestamp
    return result


def _content(entry: dict[str, Any], kind: str) -> Any:
    """What a line adds to the prompt: a message's content, or an attachment (sent as a reminder text)."""
    if kind == "attachment":
        return entry.get("attachment") or ""
    message = entry.get("message")
    return message.get("content", "") if isinstance(message, dict) else ""


def _types(content: Any) -> tuple[str, ...]:
    if isinstance(content, list):
        return tuple(dict.fromkeys(block["type"] for block in content
                                   if isinstance(block, dict) and isinstance(block.get("type"), str)))
    return ("text",)
