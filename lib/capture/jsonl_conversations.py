"""Claude Code JSONL logs turned into per-conversation turns and sub-agent links (docs/inputs.md#session-logs).

Files are found and streamed by `log_files`. Broken lines, unknown entry types, `<synthetic>` lines
and duplicate message ids are skipped or degraded and counted in a ProblemCounter, never fatal (docs/reliability.md#bad-input).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Iterator, Optional

from lib.capture.jsonl_files import LogFile, group_logs, iter_entries
from lib.problems import ProblemCounter
from lib.records import AssistantTurn, SubagentLink, Usage
from lib.timestamps import parse_timestamp

KNOWN_ENTRY_TYPES = frozenset({"user", "assistant", "progress", "system", "file-history-snapshot", "summary"})
AGENT_TOOL_NAMES = frozenset({"Agent", "Task"})  # `Task` in Claude Code before the rename (docs/inputs.md#sub-agents)
SYNTHETIC_MODEL = "<synthetic>"


@dataclass(frozen=True)
class Conversation:
    """A parent session with its sub-agents: turns ordered by time, links in the parent's order."""

    conversation_id: str
    parent_file: Optional[str]
    turns: tuple[AssistantTurn, ...]
    subagents: dict[str, tuple[AssistantTurn, ...]]
    links: tuple[SubagentLink, ...]
    subagent_files: dict[str, str] = field(default_factory=dict)


def read_conversations(logs: Iterable[LogFile], problems: ProblemCounter) -> dict[str, Conversation]:
    """Read every conversation of these files; message ids seen in several conversations are counted."""
    return merge_conversations(map(read_log_group, group_logs(logs).values()), problems)


def read_log_group(files: list[LogFile]) -> tuple[Conversation, ProblemCounter]:
    """One conversation's files (a `group_logs` group) read on their own: conversations are
    independent, so groups can be read in worker processes and merged in order."""
    problems = ProblemCounter()
    return read_conversation(files, problems), problems


def merge_conversations(groups: Iterable[tuple[Conversation, ProblemCounter]],
                        problems: ProblemCounter) -> dict[str, Conversation]:
    """`read_log_group` results, in group order, as `read_conversations` returns them (problems
    merged in that order, so counts and examples are those of one sequential read)."""
    conversations: dict[str, Conversation] = {}
    for conversation, found in groups:
        problems.merge(found)
        conversations[conversation.conversation_id] = conversation
    owner: dict[str, str] = {}
    for conversation in conversations.values():
        for turn in _all_turns(conversation):
            first = owner.setdefault(turn.message_id, conversation.conversation_id)
            if first != conversation.conversation_id:
                problems.add("duplicate_message_id_across_conversations", turn.message_id)
    return conversations


def read_conversation(files: list[LogFile], problems: ProblemCounter) -> Conversation:
    """Read one conversation's parent and sub-agent files into ordered turns and sub-agent links."""
    conversation_id = files[0].conversation_id
    facts = _ParentFacts()
    seen: dict[str, str] = {}
    parent_turns: list[AssistantTurn] = []
    subagents: dict[str, tuple[AssistantTurn, ...]] = {}
    subagent_files: dict[str, str] = {}
    first_line_times: dict[str, datetime] = {}
    parent_file: Optional[str] = None
    for log in files:
        reader = _FileReader(log, problems, facts if not log.is_subagent else None)
        turns = [turn for turn in reader.read() if _first_sighting(turn, log, seen, problems)]
        if log.is_subagent:
            subagents[log.agent_id] = tuple(sorted([*subagents.get(log.agent_id, ()), *turns], key=_turn_order))
            subagent_files.setdefault(log.agent_id, str(log.path))
            if reader.first_time is not None:
                first_line_times.setdefault(log.agent_id, reader.first_time)
        else:
            parent_file = parent_file or str(log.path)
            parent_turns.extend(turns)
    if parent_file is None:
        problems.add("subagent_log_without_parent", conversation_id)
    links = facts.links(conversation_id, set(subagents), first_line_times, problems)
    for agent_id in sorted(set(subagents) - {link.agent_id for link in links}):
        problems.add("subagent_log_without_link", agent_id)
    return Conversation(
        conversation_id=conversation_id,
        parent_file=parent_file,
        turns=tuple(sorted(parent_turns, key=_turn_order)),
        subagents=subagents,
        links=links,
        subagent_files=subagent_files,
    )


def _first_sighting(turn: AssistantTurn, log: LogFile, seen: dict[str, str], problems: ProblemCounter) -> bool:
    """Keep a message id only in the first file of the conversation that logged it (docs/inputs.md#assistant-lines)."""
    first = seen.setdefault(turn.message_id, log.path.name)
    if first != log.path.name:
        problems.add("duplicate_message_id", f"{turn.message_id} ({first}, {log.path.name})")
        return False
    return True


def _turn_order(turn: AssistantTurn) -> tuple[datetime, int]:
    return turn.timestamp, turn.line_number


def _all_turns(conversation: Conversation) -> Iterator[AssistantTurn]:
    yield from conversation.turns
    for turns in conversation.subagents.values():
        yield from turns


@dataclass
class _AgentUse:
    subagent_type: str
    description: str
    spawn_time: Optional[datetime]


@dataclass
class _AgentResult:
    completion_time: Optional[datetime]
    result: dict[str, Any]
    is_error: bool


@dataclass
class _ParentFacts:
    """What the parent log says about its sub-agents: tool uses, their results, and agent_progress copies."""

    uses: dict[str, _AgentUse] = field(default_factory=dict)
    results: dict[str, _AgentResult] = field(default_factory=dict)
    progress_agents: dict[str, str] = field(default_factory=dict)  # parentToolUseID → agentId
    progress_starts: dict[str, datetime] = field(default_factory=dict)  # agentId → first agent_progress time

    def links(self, conversation_id: str, logged: set[str], first_line_times: dict[str, datetime],
              problems: ProblemCounter) -> tuple[SubagentLink, ...]:
        links = []
        for tool_use_id, use in self.uses.items():
            outcome = self.results.get(tool_use_id)
            result = outcome.result if outcome else {}
            agent_id = _text(result.get("agentId")) or self.progress_agents.get(tool_use_id, "")
            if not agent_id:
                problems.add("unlinked_agent_tool_use", tool_use_id)
            elif agent_id not in logged:
                problems.add("subagent_log_missing", agent_id)
            # Spawn is when the parent issued the call, never the result's time (docs/inputs.md#sub-agents).
            spawn = use.spawn_time or self.progress_starts.get(agent_id) or first_line_times.get(agent_id)
            if spawn is None:
                problems.add("agent_tool_use_without_time", tool_use_id)
                continue
            links.append(SubagentLink(
                conversation_id=conversation_id,
                agent_id=agent_id,
                tool_use_id=tool_use_id,
                subagent_type=use.subagent_type,
                description=use.description,
                spawn_time=spawn,
                completion_time=outcome.completion_time if outcome else None,
                duration_ms=_optional_int(result.get("totalDurationMs")),
                total_tokens=_optional_int(result.get("totalTokens")),
                tool_use_count=_optional_int(result.get("totalToolUseCount")),
                status=_status(outcome),
                has_log=agent_id in logged,
            ))
        return tuple(links)


def _status(outcome: Optional[_AgentResult]) -> str:
    if outcome is None:
        return "unfinished"  # no tool_result yet: the sub-agent was still running when the log was read
    return _text(outcome.result.get("status")) or ("error" if outcome.is_error else "completed")


@dataclass
class _TurnDraft:
    """Lines sharing one message.id, merged: earliest time, union of types, the most complete usage."""

    message_id: str
    line_number: int
    timestamp: datetime
    model: str
    content_types: list[str]
    rank: tuple[int, bool]
    stop_reason: str
    usage: Optional[Usage]
    request_id: Optional[str]


class _FileReader:
    """Reads one file; assistant turns always, sub-agent facts only for a parent file (`facts` given)."""

    def __init__(self, log: LogFile, problems: ProblemCounter, facts: Optional[_ParentFacts]) -> None:
        self.log = log
        self.problems = problems
        self.facts = facts
        self.drafts: dict[str, _TurnDraft] = {}
        self.first_time: Optional[datetime] = None

    def read(self) -> list[AssistantTurn]:
        try:
            for number, entry in iter_entries(self.log.path, self.problems):
                self._entry(number, entry)
        except OSError as error:
            self.problems.add("unreadable_jsonl_file", f"{self.log.path.name}: {error.strerror}")
        return [self._turn(draft) for draft in self.drafts.values()]

    def _entry(self, number: int, entry: dict[str, Any]) -> None:
        kind = entry.get("type")
        where = f"{self.log.path.name}:{number}"
        timestamp = parse_timestamp(entry.get("timestamp"))
        if self.first_time is None and timestamp is not None:
            self.first_time = timestamp
        if kind == "assistant":
            self._assistant(entry, timestamp, number, where)
        elif kind == "user" and self.facts is not None:
            self._user(entry, timestamp, self.facts)
        elif kind == "progress" and self.facts is not None:
            self._progress(entry, timestamp, self.facts)
        elif not isinstance(kind, str):
            # `"type": {}` is not a new entry type but a broken line (and would not hash).
            self.problems.add("entry_type_not_a_string", where)
        elif kind not in KNOWN_ENTRY_TYPES:
            self.problems.add(f"unknown_entry_type:{kind}", where)

    def _assistant(self, entry: dict[str, Any], timestamp: Optional[datetime], number: int, where: str) -> None:
        message = entry.get("message")
        if not isinstance(message, dict):
            self.problems.add("assistant_line_without_message", where)
            return
        model = _text(message.get("model"))
        if model == SYNTHETIC_MODEL:
            self.problems.add("synthetic_assistant_line", where)  # written by Claude Code, not an API call
            return
        content = message.get("content")
        blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
        if self.facts is not None:
            self._agent_uses(blocks, timestamp, self.facts)
            if entry.get("isSidechain") is True:
                # Very old versions logged sub-agent calls inside the parent file, without an agent id.
                self.problems.add("sidechain_line_in_parent_log", where)
                return
        message_id = _text(message.get("id"))
        if not message_id:
            self.problems.add("assistant_line_without_id", where)
            return
        if timestamp is None:
            self.problems.add("bad_timestamp", where)
            return
        types = [_text(b.get("type")) for b in blocks] if blocks else (["text"] if isinstance(content, str) else [])
        usage = _usage(message.get("usage"))
        stop_reason = _text(message.get("stop_reason"))
        rank = (usage.output_tokens if usage else 0, bool(stop_reason))
        draft = self.drafts.get(message_id)
        if draft is None:
            self.drafts[message_id] = _TurnDraft(message_id, number, timestamp, model, [], rank, stop_reason,
                                                 usage, _text(entry.get("requestId")) or None)
            draft = self.drafts[message_id]
        else:
            draft.timestamp = min(draft.timestamp, timestamp)
            draft.request_id = draft.request_id or _text(entry.get("requestId")) or None
            if rank >= draft.rank:  # the line with the largest output_tokens is the final one (docs/inputs.md#assistant-lines)
                draft.rank, draft.stop_reason, draft.usage = rank, stop_reason, usage
                draft.model = model or draft.model
        draft.content_types.extend(t for t in types if t and t not in draft.content_types)

    def _agent_uses(self, blocks: list[dict[str, Any]], timestamp: Optional[datetime], facts: _ParentFacts) -> None:
        for block in blocks:
            if block.get("type") == "tool_use" and block.get("name") in AGENT_TOOL_NAMES and _text(block.get("id")):
                tool_input = found if isinstance(found := block.get("input"), dict) else {}
                facts.uses.setdefault(block["id"], _AgentUse(
                    _text(tool_input.get("subagent_type")), _text(tool_input.get("description")), timestamp))

    def _user(self, entry: dict[str, Any], timestamp: Optional[datetime], facts: _ParentFacts) -> None:
        message = entry.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            return
        results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        tool_use_result = entry.get("toolUseResult")
        for block in results:
            tool_use_id = _text(block.get("tool_use_id"))
            if tool_use_id not in facts.uses or tool_use_id in facts.results:
                continue
            # toolUseResult belongs to the line, so it describes a block only when the line has one result.
            result = tool_use_result if isinstance(tool_use_result, dict) and len(results) == 1 else {}
            facts.results[tool_use_id] = _AgentResult(timestamp, result, block.get("is_error") is True)

    def _progress(self, entry: dict[str, Any], timestamp: Optional[datetime], facts: _ParentFacts) -> None:
        data = entry.get("data")
        if not isinstance(data, dict) or data.get("type") != "agent_progress":
            return
        agent_id, tool_use_id = _text(data.get("agentId")), _text(entry.get("parentToolUseID"))
        if agent_id and tool_use_id:
            facts.progress_agents.setdefault(tool_use_id, agent_id)
        if agent_id and timestamp is not None:
            facts.progress_starts.setdefault(agent_id, timestamp)

    def _turn(self, draft: _TurnDraft) -> AssistantTurn:
        return AssistantTurn(
            message_id=draft.message_id,
            conversation_id=self.log.conversation_id,
            agent_id=self.log.agent_id,
            timestamp=draft.timestamp,
            model=draft.model,
            stop_reason=draft.stop_reason,
            content_types=tuple(draft.content_types),
            output_tokens=draft.rank[0],
            usage=draft.usage,
            jsonl_request_id=draft.request_id,
            source_file=str(self.log.path),
            line_number=draft.line_number,
        )


def _usage(value: object) -> Optional[Usage]:
    if not isinstance(value, dict):
        return None
    breakdown = found if isinstance(found := value.get("cache_creation"), dict) else {}
    return Usage(
        input_tokens=_optional_int(value.get("input_tokens")) or 0,
        cache_read_input_tokens=_optional_int(value.get("cache_read_input_tokens")) or 0,
        cache_creation_input_tokens=_optional_int(value.get("cache_creation_input_tokens")) or 0,
        output_tokens=_optional_int(value.get("output_tokens")) or 0,
        cache_creation_5m_tokens=_optional_int(breakdown.get("ephemeral_5m_input_tokens")) or 0,
        cache_creation_1h_tokens=_optional_int(breakdown.get("ephemeral_1h_input_tokens")) or 0,
    )


def _optional_int(value: object) -> Optional[int]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
