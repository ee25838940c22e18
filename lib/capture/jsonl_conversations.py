"""Claude Code JSONL logs turned into per-conversation turns and sub-agent links (docs/inputs.md#session-logs).

Files are found and streamed by `jsonl_files`. Broken lines, unknown entry types, `<synthetic>` lines
and duplicate message ids are skipped or degraded and counted in a ProblemCounter, never fatal (docs/reliability.md#bad-input).
Every entry type Claude Code writes is known by name (docs/inputs.md#entries): read for turns and sub-agent
facts, or ignored; only types no version writes are counted as unknown.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Iterator, Optional

from lib.capture.jsonl_files import AgentMeta, LogFile, group_logs, iter_entries, read_agent_meta
from lib.problems import ProblemCounter
from lib.records import AssistantTurn, SubagentLink, Usage
from lib.timestamps import parse_timestamp

# Lines whose content reaches the API prompt (`attachment`: hook output, queued prompts, files read).
PROMPT_ENTRY_TYPES = frozenset({"user", "assistant", "attachment", "system"})
# Lines read only for sub-agent facts: progress copies, queued task notifications.
AGENT_FACT_ENTRY_TYPES = frozenset({"progress", "queue-operation"})
# Client bookkeeping that never reaches the API: titles, modes, file history, cost, links.
IGNORED_ENTRY_TYPES = frozenset({
    "summary", "file-history-snapshot", "file-history-delta", "last-prompt", "permission-mode", "mode",
    "ai-title", "custom-title", "bridge-session", "pr-link", "cost-state", "turn_end",
})
KNOWN_ENTRY_TYPES = PROMPT_ENTRY_TYPES | AGENT_FACT_ENTRY_TYPES | IGNORED_ENTRY_TYPES
AGENT_TOOL_NAMES = frozenset({"Agent", "Task"})  # `Task` in Claude Code before the rename (docs/inputs.md#sub-agents)
TASK_OUTPUT_TOOL = "TaskOutput"  # reads a background task's result (and waits for it)
SYNTHETIC_MODEL = "<synthetic>"
INLINE_AGENT_PREFIX = "sidechain-"  # id of a sub-agent logged inside its parent (1.0.x): prefix + root uuid
TASK_NOTIFICATION = "<task-notification>"
# The agent's totals Claude Code appends to a finished agent's result and to its notification.
USAGE_TRAILER = re.compile(r"<usage>total_tokens: (\d+)\s+tool_uses: (\d+)\s+duration_ms: (\d+)</usage>")
RUNNING_STATUSES = frozenset({"running", "pending", "async_launched"})


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
    metas: dict[str, AgentMeta] = {}
    parent_file: Optional[str] = None
    for log in files:
        reader = _FileReader(log, problems, facts if not log.is_subagent else None)
        turns = [turn for turn in reader.read() if _first_sighting(turn, log, seen, problems)]
        if log.is_subagent:
            subagents[log.agent_id] = tuple(sorted([*subagents.get(log.agent_id, ()), *turns], key=_turn_order))
            subagent_files.setdefault(log.agent_id, str(log.path))
            if reader.first_time is not None:
                first_line_times.setdefault(log.agent_id, reader.first_time)
            if log.agent_id not in metas and (meta := read_agent_meta(log, problems)) is not None:
                metas[log.agent_id] = meta
        else:
            parent_file = parent_file or str(log.path)
            parent_turns.extend(turn for turn in turns if not turn.agent_id)
            for turn in turns:
                if turn.agent_id:  # a sub-agent logged inline (isSidechain lines of a 1.0.x parent)
                    subagents[turn.agent_id] = (*subagents.get(turn.agent_id, ()), turn)
                    subagent_files.setdefault(turn.agent_id, str(log.path))
            for agent_id in reader.inline_agents:
                subagents[agent_id] = tuple(sorted(subagents.get(agent_id, ()), key=_turn_order))
    if parent_file is None:
        problems.add("subagent_log_without_parent", conversation_id)
    links = facts.links(conversation_id, set(subagents), first_line_times, metas, problems)
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
    first = seen.setdefault(turn.message_id, log.label)
    if first != log.label:
        problems.add("duplicate_message_id", f"{turn.message_id} ({first}, {log.label})")
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
    prompt: str
    spawn_time: Optional[datetime]


@dataclass
class _AgentResult:
    completion_time: Optional[datetime]
    result: dict[str, Any]
    is_error: bool

    @property
    def is_async_launch(self) -> bool:
        """A background agent's launch acknowledgement: the agent has started, not finished."""
        return self.result.get("status") == "async_launched" or self.result.get("isAsync") is True


@dataclass(frozen=True)
class _AgentEnd:
    """Where the parent learnt that a background agent ended: its notification or a TaskOutput result,
    with the totals (total tokens, tool uses, duration in ms) a notification's `<usage>` gives."""

    time: datetime
    status: str
    totals: Optional[tuple[int, int, int]] = None


@dataclass
class _InlineAgent:
    """A sub-agent logged inside the parent file (1.0.x): a chain of `isSidechain` lines."""

    prompt: str
    start_time: Optional[datetime]


@dataclass
class _ParentFacts:
    """What the parent log says about its sub-agents: tool uses, their results, and agent_progress copies."""

    uses: dict[str, _AgentUse] = field(default_factory=dict)
    results: dict[str, _AgentResult] = field(default_factory=dict)
    progress_agents: dict[str, str] = field(default_factory=dict)  # parentToolUseID → agentId
    progress_starts: dict[str, datetime] = field(default_factory=dict)  # agentId → first agent_progress time
    inline_agents: dict[str, _InlineAgent] = field(default_factory=dict)  # agent id → its sidechain
    # Background agents' ends, by the tool_use id and by the agent (task) id the notification names;
    # `queued_ends` hold notifications only queued (not yet delivered into the parent's prompt).
    ends: dict[str, _AgentEnd] = field(default_factory=dict)
    queued_ends: dict[str, _AgentEnd] = field(default_factory=dict)
    task_output_uses: dict[str, str] = field(default_factory=dict)  # TaskOutput tool_use id → task id

    def end(self, key: str, end: _AgentEnd, *, queued: bool = False) -> None:
        """Keep the earliest end known for an agent (or tool_use) id."""
        ends = self.queued_ends if queued else self.ends
        if key and (key not in ends or end.time < ends[key].time):
            ends[key] = end

    def links(self, conversation_id: str, logged: set[str], first_line_times: dict[str, datetime],
              metas: dict[str, AgentMeta], problems: ProblemCounter) -> tuple[SubagentLink, ...]:
        inline = self._inline_links()
        by_meta = {meta.tool_use_id: agent_id for agent_id, meta in metas.items() if meta.tool_use_id}
        links = []
        for tool_use_id, use in self.uses.items():
            outcome = self.results.get(tool_use_id)
            result = outcome.result if outcome else {}
            agent_id = (_text(result.get("agentId")) or self.progress_agents.get(tool_use_id, "")
                        or inline.get(tool_use_id, "") or by_meta.get(tool_use_id, ""))
            if not agent_id and outcome is not None and outcome.is_error:
                problems.add("failed_agent_launch", tool_use_id)  # refused before any agent ran: no link
                continue
            if not agent_id:
                problems.add("unlinked_agent_tool_use", tool_use_id)
            elif agent_id not in logged:
                problems.add("subagent_log_missing", agent_id)
            # Spawn is when the parent issued the call, never the result's time (docs/inputs.md#sub-agents).
            spawn = use.spawn_time or self.progress_starts.get(agent_id) or first_line_times.get(agent_id)
            if spawn is None:
                problems.add("agent_tool_use_without_time", tool_use_id)
                continue
            meta = metas.get(agent_id)
            completion, status, totals = self._completion(tool_use_id, agent_id, outcome)
            # A background agent's launch result has no totals; its notification's `<usage>` has them.
            total_tokens, tool_use_count, duration_ms = totals or (
                _optional_int(result.get("totalTokens")), _optional_int(result.get("totalToolUseCount")),
                _optional_int(result.get("totalDurationMs")))
            links.append(SubagentLink(
                conversation_id=conversation_id,
                agent_id=agent_id,
                tool_use_id=tool_use_id,
                subagent_type=use.subagent_type or (meta.agent_type if meta else ""),
                description=use.description or (meta.description if meta else ""),
                spawn_time=spawn,
                completion_time=completion,
                duration_ms=duration_ms,
                total_tokens=total_tokens,
                tool_use_count=tool_use_count,
                status=status,
                has_log=agent_id in logged,
            ))
        return tuple(links)

    def _completion(self, tool_use_id: str, agent_id: str, outcome: Optional[_AgentResult]
                    ) -> tuple[Optional[datetime], str, Optional[tuple[int, int, int]]]:
        """When the parent received the agent's result, the agent's final status, and a background
        agent's totals from its notification."""
        if outcome is None:
            return None, "unfinished", None  # no tool_result yet: the sub-agent was still running when the log was read
        if not outcome.is_async_launch:
            return outcome.completion_time, _text(outcome.result.get("status")) or (
                "error" if outcome.is_error else "completed"), None
        # A background agent ends where its notification (or a TaskOutput result) reaches the parent.
        end = (self.ends.get(tool_use_id) or self.ends.get(agent_id)
               or self.queued_ends.get(tool_use_id) or self.queued_ends.get(agent_id))
        return (end.time, end.status, end.totals) if end else (None, "unfinished", None)

    def _inline_links(self) -> dict[str, str]:
        """Tool_use id → inline sub-agent: the sidechain whose first prompt is the call's prompt, else
        the first unclaimed sidechain starting at or after the call (1.0.x results name no agent)."""
        unclaimed = dict(self.inline_agents)  # in file order, i.e. by start
        pending = [tool_use_id for tool_use_id in self.uses if tool_use_id not in self.progress_agents
                   and not _text(self.results[tool_use_id].result.get("agentId") if tool_use_id in self.results else "")]
        linked: dict[str, str] = {}
        for tool_use_id in pending:
            prompt = self.uses[tool_use_id].prompt
            match = next((agent_id for agent_id, agent in unclaimed.items() if prompt and agent.prompt == prompt), None)
            if match is not None:
                del unclaimed[match]
                linked[tool_use_id] = match
        for tool_use_id in (tool_use_id for tool_use_id in pending if tool_use_id not in linked):
            spawn = self.uses[tool_use_id].spawn_time
            match = next((agent_id for agent_id, agent in unclaimed.items()
                          if spawn is not None and agent.start_time is not None and agent.start_time >= spawn), None)
            if match is not None:
                del unclaimed[match]
                linked[tool_use_id] = match
        return linked


@dataclass
class _TurnDraft:
    """Lines sharing one message.id, merged: earliest time, union of types, the most complete usage."""

    message_id: str
    agent_id: str
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
        self.sidechain_roots: dict[str, str] = {}  # uuid of an isSidechain line in a parent → its agent id
        self.inline_agents: list[str] = []

    def read(self) -> list[AssistantTurn]:
        try:
            for number, entry in iter_entries(self.log.path, self.problems, self.log.label):
                self._entry(number, entry)
        except OSError as error:
            self.problems.add("unreadable_jsonl_file", f"{self.log.label}: {error.strerror}")
        return [self._turn(draft) for draft in self.drafts.values()]

    def _entry(self, number: int, entry: dict[str, Any]) -> None:
        kind = entry.get("type")
        where = f"{self.log.label}:{number}"
        timestamp = parse_timestamp(entry.get("timestamp"))
        if self.first_time is None and timestamp is not None:
            self.first_time = timestamp
        if not isinstance(kind, str):
            # `"type": {}` is not a new entry type but a broken line (and would not hash).
            self.problems.add("entry_type_not_a_string", where)
            return
        if kind not in KNOWN_ENTRY_TYPES:
            self.problems.add(f"unknown_entry_type:{kind}", where)
            return
        inline_agent = self._inline_agent(entry, kind, timestamp, self.facts) if self.facts is not None else ""
        if kind == "assistant":
            self._assistant(entry, timestamp, number, where, inline_agent)
        elif self.facts is None or inline_agent:
            return  # sub-agent lines carry no facts about the parent's sub-agents
        elif kind == "user":
            self._user(entry, timestamp, self.facts)
        elif kind == "attachment":
            self._attachment(entry, timestamp, self.facts)
        elif kind == "queue-operation":
            self._queue_operation(entry, timestamp, self.facts)
        elif kind == "progress":
            self._progress(entry, timestamp, self.facts)

    def _inline_agent(self, entry: dict[str, Any], kind: str, timestamp: Optional[datetime],
                      facts: _ParentFacts) -> str:
        """The inline sub-agent a parent's `isSidechain` line belongs to ('' for the parent's own lines).

        1.0.x logged each sub-agent inside the parent as a `parentUuid` chain of sidechain lines; the
        chain's root (its task prompt) names the sub-agent."""
        if entry.get("isSidechain") is not True:
            return ""
        if named := _text(entry.get("agentId")):
            return named  # a line of a sub-agent that has its own log: filed under it, never an inline agent
        uuid, parent = _text(entry.get("uuid")), _text(entry.get("parentUuid"))
        agent_id = self.sidechain_roots.get(parent, "")
        if not agent_id:
            agent_id = INLINE_AGENT_PREFIX + (uuid or f"line-{len(self.sidechain_roots)}")
            facts.inline_agents[agent_id] = _InlineAgent(_prompt_text(entry) if kind == "user" else "", timestamp)
            self.inline_agents.append(agent_id)
        if uuid:
            self.sidechain_roots[uuid] = agent_id
        return agent_id

    def _assistant(self, entry: dict[str, Any], timestamp: Optional[datetime], number: int, where: str,
                   inline_agent: str) -> None:
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
        if self.facts is not None and not inline_agent:
            self._tool_uses(blocks, timestamp, self.facts)
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
        agent_id = inline_agent or self.log.agent_id
        draft = self.drafts.get(message_id)
        if draft is None:
            self.drafts[message_id] = _TurnDraft(message_id, agent_id, number, timestamp, model, [], rank,
                                                 stop_reason, usage, _text(entry.get("requestId")) or None)
            draft = self.drafts[message_id]
        else:
            draft.timestamp = min(draft.timestamp, timestamp)
            draft.request_id = draft.request_id or _text(entry.get("requestId")) or None
            if rank >= draft.rank:  # the line with the largest output_tokens is the final one (docs/inputs.md#assistant-lines)
                draft.rank, draft.stop_reason, draft.usage = rank, stop_reason, usage
                draft.model = model or draft.model
        draft.content_types.extend(t for t in types if t and t not in draft.content_types)

    def _tool_uses(self, blocks: list[dict[str, Any]], timestamp: Optional[datetime], facts: _ParentFacts) -> None:
        for block in blocks:
            if block.get("type") != "tool_use" or not (tool_use_id := _text(block.get("id"))):
                continue
            tool_input = found if isinstance(found := block.get("input"), dict) else {}
            if block.get("name") in AGENT_TOOL_NAMES:
                facts.uses.setdefault(tool_use_id, _AgentUse(
                    _text(tool_input.get("subagent_type")), _text(tool_input.get("description")),
                    _text(tool_input.get("prompt")), timestamp))
            elif block.get("name") == TASK_OUTPUT_TOOL and _text(tool_input.get("task_id")):
                facts.task_output_uses[tool_use_id] = tool_input["task_id"]

    def _user(self, entry: dict[str, Any], timestamp: Optional[datetime], facts: _ParentFacts) -> None:
        message = entry.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if timestamp is not None:
            self._notifications(_prompt_text(entry), timestamp, facts)
        if not isinstance(content, list):
            return
        results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        tool_use_result = entry.get("toolUseResult")
        for block in results:
            tool_use_id = _text(block.get("tool_use_id"))
            # toolUseResult belongs to the line, so it describes a block only when the line has one result.
            result = tool_use_result if isinstance(tool_use_result, dict) and len(results) == 1 else {}
            if tool_use_id in facts.task_output_uses and timestamp is not None:
                self._task_output(facts.task_output_uses[tool_use_id], result, block, timestamp, facts)
            if tool_use_id not in facts.uses or tool_use_id in facts.results:
                continue
            facts.results[tool_use_id] = _AgentResult(timestamp, result, block.get("is_error") is True)

    def _task_output(self, task_id: str, result: dict[str, Any], block: dict[str, Any], timestamp: datetime,
                     facts: _ParentFacts) -> None:
        """A TaskOutput result ends a background agent when it reports a finished task."""
        task = found if isinstance(found := result.get("task"), dict) else {}
        status = _text(task.get("status")) or tag_text(_block_text(block.get("content")), "status")
        if status and status not in RUNNING_STATUSES and result.get("retrieval_status") != "timeout":
            facts.end(task_id, _AgentEnd(timestamp, status))

    def _attachment(self, entry: dict[str, Any], timestamp: Optional[datetime], facts: _ParentFacts) -> None:
        """A queued prompt delivered into the parent's next request (how newer versions deliver notifications)."""
        attachment = entry.get("attachment")
        if isinstance(attachment, dict) and attachment.get("type") == "queued_command" and timestamp is not None:
            self._notifications(_block_text(attachment.get("prompt")), timestamp, facts)

    def _queue_operation(self, entry: dict[str, Any], timestamp: Optional[datetime], facts: _ParentFacts) -> None:
        """A notification queued while the parent was busy: the agent's end when no delivery was logged."""
        if entry.get("operation") == "enqueue" and timestamp is not None:
            self._notifications(_block_text(entry.get("content")), timestamp, facts, queued=True)

    @staticmethod
    def _notifications(text: str, timestamp: datetime, facts: _ParentFacts, *, queued: bool = False) -> None:
        for notice in text.split(TASK_NOTIFICATION)[1:]:
            totals = USAGE_TRAILER.search(notice)
            end = _AgentEnd(timestamp, tag_text(notice, "status") or "completed",
                            (int(totals[1]), int(totals[2]), int(totals[3])) if totals else None)
            facts.end(tag_text(notice, "tool-use-id"), end, queued=queued)
            facts.end(tag_text(notice, "task-id"), end, queued=queued)

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
            agent_id=draft.agent_id,
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


def _prompt_text(entry: dict[str, Any]) -> str:
    """A user line's text: its string content, or its text blocks joined."""
    message = entry.get("message")
    return _block_text(message.get("content")) if isinstance(message, dict) else ""


def _block_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text(block.get("text")) for block in content
                         if isinstance(block, dict) and block.get("type") == "text")
    return ""


def tag_text(text: str, name: str) -> str:
    """The text of the first `<name>…</name>` in `text` ('' when absent)."""
    found = re.search(f"<{name}>(.*?)</{name}>", text, re.DOTALL)
    return found.group(1).strip() if found else ""


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
