"""The rows no log names: conversations rebuilt from the proxy DB alone (docs/routes.md#db-only), and the
requests of logged sub-agents whose own log is missing (docs/reliability.md).

Every answered turn row (not an old-proxy artifact, carrying a tools list: quota probes and
title/topic requests carry none) is read once in arrival order. Its messages, stripped of the
`cache_control` marks Claude Code moves from turn to turn, are digested message by message; a row
whose first k messages are exactly an earlier row's messages continues that row, so the rows of one
agent form a chain (a tree when the user rewinds). Chains become lanes and conversations:

- `X-Claude-Code-Agent-Id` names a sub-agent's lane; `X-Claude-Code-Session-Id` names the
  conversation (Claude Code 2.1.86 and later). Without them:
- a chain whose first prompt is the `prompt` of an earlier Agent/Task call is that call's sub-agent;
  else one without the Agent tool that starts while exactly one conversation waits on an Agent call
  is that call's sub-agent (its spawn window);
- a chain that opens with Claude Code's compaction summary continues the chain of the same
  system/tools signature (and session) that ended last before it;
- every other chain is a parent: its own conversation.

Sub-agent facts come from what the parent sent back to the API: the call's input (`subagent_type`,
`description`), its result (`agentId`, the `<usage>` trailer) or a `<task-notification>` for a
background agent; the spawn is the end of the row that answered with the call.
"""
from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable, Iterator, Optional

import orjson
import xxhash

from lib.capture.jsonl_conversations import AGENT_TOOL_NAMES, TASK_NOTIFICATION, USAGE_TRAILER, Conversation, tag_text
from lib.capture.proxy_reader import BATCH_ROWS, UNKNOWN_TIME
from lib.capture.response_parser import answer_tool_calls, header_value
from lib.capture.billing_header import split_billing_header
from lib.capture.message_index import iter_indexed_requests, load_message_ids
from lib.capture.turn_timing import answers_logged_at, first_sends, iter_turns, load_replay_twins
from lib.db import decode_text, repair_text
from lib.problems import ProblemCounter
from lib.records import AssistantTurn, ProxyRequest, SubagentLink

# The routes a conversation can take (docs/routes.md): the JSONL-only one is the logs' alone.
ROUTE_DB_JSONL = "DB+JSONL"
ROUTE_DB_ONLY = "DB-only"
ROUTE_JSONL_ONLY = "JSONL-only"
SESSION_HEADER = "X-Claude-Code-Session-Id"
AGENT_HEADER = "X-Claude-Code-Agent-Id"
# How Claude Code's compaction summary opens the prompt that replaces the history.
CONTINUATION_OPENING = "This session is being continued from a previous conversation"
CACHE_MARK = b'"cache_control"'
DB_ID_PREFIX = "db-"  # ids of conversations and agents no header or result names: db-<first row id>
AGENT_ID_IN_RESULT = re.compile(r"agentId: ([A-Za-z0-9_-]+)")


@dataclass
class _AgentCall:
    """An Agent/Task tool call as the parent's later prompts show it."""

    tool_use_id: str
    lane: int  # chain root of the caller
    spawner: ProxyRequest  # the row that answered with the call
    subagent_type: str
    description: str
    prompt: str
    agent_id: str = ""
    completion_time: Optional[datetime] = None
    status: str = "running"
    duration_ms: Optional[int] = None
    total_tokens: Optional[int] = None
    tool_use_count: Optional[int] = None
    taken: bool = False

    def take_totals(self, usage: Optional[re.Match[str]]) -> None:
        """The agent's totals from a `<usage>` trailer match (USAGE_TRAILER), when there is one."""
        if usage:
            self.total_tokens, self.tool_use_count, self.duration_ms = (int(value) for value in usage.groups())

    @property
    def spawn_time(self) -> datetime:
        return self.spawner.completed_at or self.spawner.timestamp


@dataclass
class _Chain:
    """Rows of one chain (root first), with what classifies it."""

    root: ProxyRequest
    rows: list[ProxyRequest]
    session: str
    agent_header: str
    signature: int
    first_prompt: tuple[str, ...]
    first_results: frozenset[str]  # tool_use ids its first message answers (a compaction mid tool loop)
    calls_agents: bool  # its tools include Agent/Task
    continuation: bool
    merged_into: Optional[int] = None  # root row id of the chain it continues
    call: Optional[_AgentCall] = None


@dataclass
class DbRoute:
    """What the DB-only reading found, for the summary (docs/routes.md#db-only)."""

    turn_rows: int = 0
    not_turn_rows: int = 0
    artifact_rows: int = 0
    session_headers: int = 0
    agent_headers: int = 0
    chains: int = 0
    continuations: int = 0
    subagents_by_header: int = 0
    subagents_by_prompt: int = 0
    subagents_by_window: int = 0
    problems: ProblemCounter = field(default_factory=ProblemCounter)

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "problems"}


def conversations_from_db(proxy: sqlite3.Connection, requests: dict[str, ProxyRequest], artifacts: set[str], *,
                          beside_logs: bool = False, subagent_windows: Iterable[tuple[datetime, datetime]] = (),
                          logged_ids: Iterable[str] = ()) -> tuple[dict[str, Conversation], DbRoute]:
    """Conversations (turn message ids are request ids) of every answered turn row of `requests`.

    `beside_logs`: `requests` are the rows no log names. A conversation whose first row already
    carries history then continues turns the logs hold (a turn whose log line was lost, a retry
    logged once, a compaction call): its rows are counted, not traced as a conversation of their own.
    `logged_ids`: the logged conversations' ids, which a session header must not take over.
    """
    route = DbRoute()
    rows = sorted((r for r in requests.values() if r.kind == "ok"), key=lambda r: r.row_id)
    candidates = []
    for request in rows:
        if request.request_id in artifacts:
            route.artifact_rows += 1
        else:
            candidates.append(request)
    reader = _ChainReader(proxy, route, beside_logs, list(subagent_windows))
    reader.logged_ids = set(logged_ids)
    for request, headers, body in _bodies(proxy, candidates):
        reader.add(request, headers, body)
    reader.add_unanswered_calls()
    return reader.conversations(), route


def _bodies(proxy: sqlite3.Connection, requests: list[ProxyRequest]) -> Iterator[tuple[ProxyRequest, Any, Any]]:
    """(request, parsed headers, parsed body) in row order; unparsable ones as None (the index counted them)."""
    for start in range(0, len(requests), BATCH_ROWS):
        chunk = requests[start:start + BATCH_ROWS]
        marks = ",".join("?" * len(chunk))
        # As bytes: orjson reads UTF-8 itself, without the connection's per-value text decoding.
        found = {row_id: (headers, body) for row_id, headers, body in
                 proxy.execute(f"SELECT rowid, CAST(headers AS BLOB), CAST(body AS BLOB) FROM requests "
                               f"WHERE rowid IN ({marks})", [r.row_id for r in chunk])}
        for request in chunk:
            headers, body = found.get(request.row_id, (None, None))
            yield request, _loads(headers), _loads(body)


def _loads(raw: Any) -> Any:
    try:
        return orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        if isinstance(raw, bytes):  # invalid UTF-8: read with U+FFFD, as every other reader does
            return _loads(repair_text(decode_text(raw))[0])
        return None


def _without_cache_marks(message: Any) -> Any:
    """The message as the next turn resends it: Claude Code moves `cache_control` to the newest blocks."""
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list) or not any(isinstance(b, dict) and "cache_control" in b for b in content):
        return message
    blocks = [{k: v for k, v in b.items() if k != "cache_control"} if isinstance(b, dict) else b for b in content]
    return {**message, "content": blocks}


def _prefix_digests(messages: list[Any]) -> list[bytes]:
    """digests[k] identifies messages[0..k] (cache marks ignored)."""
    digests, running = [], b""
    for message in messages:
        dumped = orjson.dumps(message)
        if CACHE_MARK in dumped:  # only the newest messages carry one: the others are digested as dumped
            dumped = orjson.dumps(_without_cache_marks(message))
        running = xxhash.xxh3_128_digest(running + dumped)
        digests.append(running)
    return digests


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    texts = []
    for block in content:
        if isinstance(block, dict):
            if isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif block.get("type") == "tool_result":
                texts.extend(_texts(block.get("content")))
    return texts


def _message_keys(message: Any) -> tuple[set[str], set[str]]:
    """What an assistant message shares with the answer it resends: its tool call ids, its texts."""
    content = message.get("content") if isinstance(message, dict) else None
    calls = {str(block["id"]) for block in content if isinstance(block, dict) and block.get("type") == "tool_use"
             and block.get("id")} if isinstance(content, list) else set()
    return calls, set(_texts(content))


def _result_ids(message: Any) -> list[str]:
    content = message.get("content") if isinstance(message, dict) else None
    return [str(block["tool_use_id"]) for block in content or [] if isinstance(content, list) and isinstance(block, dict)
            and block.get("type") == "tool_result" and block.get("tool_use_id")]


def _signature(body: dict[str, Any], tools: list[str]) -> int:
    system, _ = split_billing_header(body.get("system"))
    try:
        return xxhash.xxh3_64_intdigest(orjson.dumps([system, tools]))
    except TypeError:  # nested deeper than orjson writes (counted by the message index)
        return 0


class _ChainReader:
    """Chains rows in arrival order and collects the Agent calls their prompts show."""

    def __init__(self, proxy: sqlite3.Connection, route: DbRoute, beside_logs: bool,
                 subagent_windows: list[tuple[datetime, datetime]]) -> None:
        self.proxy = proxy
        self.route = route
        self.beside_logs = beside_logs
        self.subagent_windows = subagent_windows
        self.by_digest: dict[bytes, list[ProxyRequest]] = {}
        self.root_of: dict[str, int] = {}  # request id → chain root row id
        self.rows: dict[str, ProxyRequest] = {}
        self.continued: set[str] = set()  # rows a later row continues
        self.message_count: dict[str, int] = {}
        self.chains: dict[int, _Chain] = {}
        # Keyed by the caller's chain too: a DB holding a capture twice repeats every tool_use id.
        self.calls: dict[tuple[int, str], _AgentCall] = {}  # (caller's chain root, tool_use id) → call
        self.calls_by_id: dict[str, list[_AgentCall]] = {}
        # tool_use or agent id → chain root → first notification of its end: time, status, the `<usage>` match
        self.ends: dict[str, dict[int, tuple[datetime, str, Optional[re.Match[str]]]]] = {}
        self.answer_keys: dict[str, tuple[set[str], set[str]]] = {}  # request id → its answer's call ids, texts
        self.logged_ids: set[str] = set()

    def add(self, request: ProxyRequest, headers: Any, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            self.route.problems.add("db_row_without_messages", request.request_id)
            return
        tools = [str(tool.get("name")) for tool in body.get("tools") or [] if isinstance(tool, dict)]
        if not tools or (request.max_tokens is not None and request.max_tokens <= 1):
            self.route.not_turn_rows += 1  # quota probe, title or topic request: not a turn of any agent
            return
        messages = body["messages"]
        try:
            digests = _prefix_digests(messages)
        except TypeError:  # nested deeper than orjson writes: left out, as the hashing leaves it out (docs/reliability.md)
            self.route.problems.add("body_too_deep", request.request_id)
            return
        self.route.turn_rows += 1
        parent = self._parent(digests, messages, request)
        start = self.message_count[parent.request_id] if parent else 0
        self.rows[request.request_id] = request
        if parent is not None:
            self.continued.add(parent.request_id)
        if parent is None:
            self._open_chain(request, headers, body, tools)
        else:
            root = self.root_of[parent.request_id]
            self.root_of[request.request_id] = root
            self.chains[root].rows.append(request)
        self.message_count[request.request_id] = len(messages)
        self.by_digest.setdefault(digests[-1], []).append(request)
        self._read_new_messages(request, messages, digests, start)

    def _parent(self, digests: list[bytes], messages: list[Any], request: ProxyRequest) -> Optional[ProxyRequest]:
        """The latest earlier row whose whole prompt is the longest prefix of this one."""
        for length in range(len(digests) - 1, 0, -1):
            found = self.by_digest.get(digests[length - 1])
            if found:
                return found[-1] if len(found) == 1 else self._answered(found, messages[length], request)
        return None

    def _answered(self, found: list[ProxyRequest], following: Any, request: ProxyRequest) -> ProxyRequest:
        """Of several rows that sent one prompt (two sessions opened alike), the one of the row's session
        whose answer this row sends back next (by its tool call ids, else its text); else the latest."""
        alike = [row for row in found if row.session_header == request.session_header] or found
        calls, texts = _message_keys(following)
        for keys, index in ((calls, 0), (texts, 1)):
            answered = [row for row in alike if keys & self._answer_keys(row)[index]] if keys else []
            if answered:
                return answered[-1]
        return alike[-1]

    def _answer_keys(self, row: ProxyRequest) -> tuple[set[str], set[str]]:
        """The tool call ids and the texts of a row's answer."""
        if row.request_id not in self.answer_keys:
            found = self.proxy.execute("SELECT response FROM requests WHERE rowid = ?", (row.row_id,)).fetchone()
            raw = found[0] if found else None
            response = _loads(raw)
            body = response.get("body") if isinstance(response, dict) else None
            self.answer_keys[row.request_id] = (
                {str(call["id"]) for call in answer_tool_calls(raw) if call.get("id")},
                set(_texts(body.get("content")) if isinstance(body, dict) else []))
        return self.answer_keys[row.request_id]

    def _open_chain(self, request: ProxyRequest, headers: Any, body: dict[str, Any], tools: list[str]) -> None:
        first = body["messages"][0]
        texts = tuple(_texts(first.get("content") if isinstance(first, dict) else None))
        session = header_value(headers, SESSION_HEADER) or ""
        agent = header_value(headers, AGENT_HEADER) or ""
        self.route.chains += 1
        self.route.session_headers += bool(session)
        self.route.agent_headers += bool(agent)
        self.root_of[request.request_id] = request.row_id
        self.chains[request.row_id] = _Chain(
            root=request, rows=[request], session=session, agent_header=agent, signature=_signature(body, tools),
            first_prompt=texts, first_results=frozenset(_result_ids(first)), calls_agents=bool(AGENT_TOOL_NAMES & set(tools)),
            continuation=any(text.lstrip().startswith(CONTINUATION_OPENING) for text in texts))

    def _read_new_messages(self, request: ProxyRequest, messages: list[Any], digests: list[bytes], start: int) -> None:
        """Agent calls, their results and background agents' notifications first sent by this row."""
        lane = self.root_of[request.request_id]
        for position in range(start, len(messages)):
            message = messages[position]
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, list):
                content = [content]
            for block in content:
                if not isinstance(block, dict):
                    if isinstance(block, str) and TASK_NOTIFICATION in block:
                        self._notifications(block, request)
                    continue
                kind = block.get("type")
                if kind == "tool_use" and block.get("name") in AGENT_TOOL_NAMES and position > 0:
                    spawners = self.by_digest.get(digests[position - 1])
                    if spawners:
                        self._call(block, lane, spawners[-1])
                elif kind == "tool_result":
                    self._result(block, request)
                elif kind == "text" and TASK_NOTIFICATION in str(block.get("text")):
                    self._notifications(block["text"], request)

    def add_unanswered_calls(self) -> None:
        """Agent calls no later prompt shows (the capture ends while the caller waits on its agents): read
        from the answer of each chain's last rows that stopped for tool use."""
        ends = [request for request_id, request in self.rows.items()
                if request_id not in self.continued and request.stop_reason == "tool_use"]
        for start in range(0, len(ends), BATCH_ROWS):
            chunk = {request.row_id: request for request in ends[start:start + BATCH_ROWS]}
            marks = ",".join("?" * len(chunk))
            for row_id, response in self.proxy.execute(f"SELECT rowid, response FROM requests WHERE rowid IN ({marks})",
                                                  list(chunk)):
                request = chunk[row_id]
                for block in answer_tool_calls(response):
                    if block.get("name") in AGENT_TOOL_NAMES:
                        self._call(block, self.root_of[request.request_id], request)

    def _call(self, block: dict[str, Any], lane: int, spawner: ProxyRequest) -> None:
        tool_use_id = block.get("id")
        if not isinstance(tool_use_id, str) or (lane, tool_use_id) in self.calls:
            return
        given = block["input"] if isinstance(block.get("input"), dict) else {}
        call = self.calls[(lane, tool_use_id)] = _AgentCall(
            tool_use_id=tool_use_id, lane=lane, spawner=spawner,
            subagent_type=str(given.get("subagent_type") or ""), description=str(given.get("description") or ""),
            prompt=str(given.get("prompt") or ""))
        self.calls_by_id.setdefault(tool_use_id, []).append(call)

    def _result(self, block: dict[str, Any], request: ProxyRequest) -> None:
        call = self._call_of(block.get("tool_use_id"), self.root_of[request.request_id])
        if call is None or call.completion_time is not None or call.status == "async_launched":
            return
        text = "\n".join(_texts(block.get("content")))
        if found := AGENT_ID_IN_RESULT.search(text):
            call.agent_id = found.group(1)
        usage = USAGE_TRAILER.search(text)
        call.take_totals(usage)
        if block.get("is_error"):
            call.status, call.completion_time = "failed", request.timestamp
        elif usage or not call.agent_id:
            call.status, call.completion_time = "completed", request.timestamp
        else:
            # A background agent: the result only acknowledges the launch; it ends at its notification.
            call.status = "async_launched"

    def _call_of(self, tool_use_id: Any, lane: int) -> Optional[_AgentCall]:
        """The call of that id made in this chain; else (a chain continued after a compaction) the first."""
        found = self.calls_by_id.get(tool_use_id) if isinstance(tool_use_id, str) else None
        return next((call for call in found if call.lane == lane), found[0]) if found else None

    def _end(self, key: str, lane: int) -> Optional[tuple[datetime, str, Optional[re.Match[str]]]]:
        found = self.ends.get(key)
        return found.get(lane, next(iter(found.values()))) if found else None

    def _notifications(self, text: str, request: ProxyRequest) -> None:
        for notice in text.split(TASK_NOTIFICATION)[1:]:
            status = tag_text(notice, "status") or "completed"
            usage = USAGE_TRAILER.search(notice)
            for key in (tag_text(notice, "tool-use-id"), tag_text(notice, "task-id")):
                if key:
                    self.ends.setdefault(key, {}).setdefault(self.root_of[request.request_id], (request.timestamp, status, usage))

    # --- lanes and conversations ------------------------------------------------------------------

    def conversations(self) -> dict[str, Conversation]:
        for call in self.calls.values():
            end = self._end(call.tool_use_id, call.lane) or self._end(call.agent_id, call.lane)
            if call.status == "async_launched" and end is not None:
                call.completion_time, call.status, usage = end
                call.take_totals(usage)  # the launch acknowledgement has none; the notification's `<usage>` has them
        chains = sorted(self.chains.values(), key=lambda chain: chain.root.row_id)
        self._match_by_header_or_prompt(chains)
        self._merge_continuations(chains)
        self._match_by_window(chains)
        return self._assemble(chains)

    def _match_by_header_or_prompt(self, chains: list[_Chain]) -> None:
        by_agent = {call.agent_id: call for call in self.calls.values() if call.agent_id}
        by_prompt: dict[str, list[_AgentCall]] = {}
        for known in sorted(self.calls.values(), key=lambda c: (c.spawner.row_id, c.tool_use_id)):
            if known.prompt:
                by_prompt.setdefault(known.prompt, []).append(known)
        for chain in chains:
            call: Optional[_AgentCall] = by_agent.get(chain.agent_header) if chain.agent_header else None
            if call is not None:
                self.route.subagents_by_header += 1
            elif not chain.continuation:
                call = next((c for text in chain.first_prompt for c in by_prompt.get(text, ()) if _may_spawn(c, chain)), None)
                if call is None:  # a client that wraps the prompt in more text
                    call = next((c for c in self.calls.values() if c.prompt and _may_spawn(c, chain)
                                 and any(c.prompt in text for text in chain.first_prompt)), None)
                self.route.subagents_by_prompt += call is not None
            if call is not None:
                call.taken = True
                chain.call = call

    def _merge_continuations(self, chains: list[_Chain]) -> None:
        """A chain opening with a compaction summary continues the latest-ended chain of its signature."""
        last_row: dict[int, ProxyRequest] = {chain.root.row_id: chain.rows[-1] for chain in chains}
        alike: dict[tuple[int, str], list[_Chain]] = {}
        for chain in chains:
            alike.setdefault((chain.signature, chain.session), []).append(chain)
        for chain in chains:
            if not chain.continuation or chain.call is not None or chain.agent_header:
                continue
            start = chain.root.timestamp
            earlier = [other for other in alike[(chain.signature, chain.session)] if other is not chain
                       and other.merged_into is None and last_row[other.root.row_id].row_id < chain.root.row_id
                       and (last_row[other.root.row_id].completed_at or start) <= start]
            if not earlier:
                continue
            # Compacted mid tool loop, it answers the calls of the chain it continues: no guess needed.
            answering = [other for other in earlier if chain.first_results
                         and chain.first_results & self._answer_keys(last_row[other.root.row_id])[0]]
            host = max(answering or earlier, key=lambda other: last_row[other.root.row_id].completed_at or start)
            chain.merged_into = host.root.row_id
            last_row[host.root.row_id] = chain.rows[-1]
            self.route.continuations += 1

    def _match_by_window(self, chains: list[_Chain]) -> None:
        """A chain without Agent tools, started while one conversation waits on an unmatched Agent call."""
        for chain in chains:
            if chain.call is not None or chain.merged_into is not None or chain.calls_agents or chain.agent_header:
                continue
            start = chain.root.timestamp
            open_calls = [call for call in self.calls.values() if not call.taken and call.spawn_time <= start
                          and (call.completion_time is None or start <= call.completion_time)]
            lanes = {self._host(call.lane) for call in open_calls}
            if len(lanes) == 1:
                call = min(open_calls, key=lambda c: (c.spawn_time, c.tool_use_id))
                call.taken = True
                chain.call = call
                self.route.subagents_by_window += 1
            elif len(lanes) > 1:
                self.route.problems.add("db_subagent_ambiguous_window", chain.root.request_id)

    def _host(self, root: int) -> int:
        """The chain a chain's rows went to, through continuations."""
        while (merged := self.chains[root].merged_into) is not None:
            root = merged
        return root

    def _assemble(self, chains: list[_Chain]) -> dict[str, Conversation]:
        by_root = {chain.root.row_id: chain for chain in chains}

        def top(chain: _Chain) -> _Chain:
            """The parent chain a chain belongs to: through continuations and the calls that spawned it."""
            seen = set()
            while chain.root.row_id not in seen:
                seen.add(chain.root.row_id)
                if chain.merged_into is not None:
                    chain = by_root[chain.merged_into]
                elif chain.call is not None:
                    chain = by_root[self._host(chain.call.lane)]
                else:
                    break
            return chain

        # Sub-agents named by a header whose call no prompt shows: lanes of their session, without marker facts.
        by_session = {chain.session: chain for chain in chains
                      if chain.session and not chain.agent_header and chain.call is None and chain.merged_into is None}
        orphans = {chain.root.row_id for chain in chains if chain.agent_header and chain.call is None}
        conversation_of: dict[int, str] = {}
        claimed: set[int] = set()  # chains of logged sub-agents without a log
        for chain in chains:
            if chain.merged_into is None and chain.call is None and chain.root.row_id not in orphans:
                if self.beside_logs and chain.root.message_count > 1 and not chain.continuation:
                    continue  # its history is in logged rows: counted below as a chain without parent
                if not chain.calls_agents and any(start <= chain.root.timestamp <= end
                                                  for start, end in self.subagent_windows):
                    claimed.add(chain.root.row_id)
                    continue
                if chain.session in self.logged_ids:
                    # Rows of a logged session its log does not name (a DB holding the capture twice): traced
                    # apart, never in place of the logged conversation.
                    self.route.problems.add("db_session_also_logged", chain.session)
                conversation_of[chain.root.row_id] = (chain.session if chain.session not in self.logged_ids else ""
                                                      ) or DB_ID_PREFIX + chain.root.request_id
        drafts: dict[str, dict[str, Any]] = {}
        for chain in chains:
            owner = top(chain)
            if owner.root.row_id in orphans and owner.session in by_session:
                owner = by_session[owner.session]
            conversation_id = conversation_of.get(owner.root.row_id)
            if owner.root.row_id in claimed:
                continue
            if conversation_id is None:
                reason = "row_continues_logged_turns" if self.beside_logs else "db_chain_without_parent"
                for row in chain.rows:
                    self.route.problems.add(reason, row.request_id)
                continue
            draft = drafts.setdefault(conversation_id, {"turns": [], "subagents": {}, "links": {}})
            lane_chain = chain
            while lane_chain.merged_into is not None:
                lane_chain = by_root[lane_chain.merged_into]
            call = lane_chain.call
            if call is None and not lane_chain.agent_header:
                draft["turns"].extend(chain.rows)
                continue
            agent_id = lane_chain.agent_header or (call.agent_id if call else "") or DB_ID_PREFIX + lane_chain.root.request_id
            draft["subagents"].setdefault(agent_id, []).extend(chain.rows)
            if call is not None:
                draft["links"][agent_id] = _link(conversation_id, agent_id, call)
            elif chain is lane_chain:
                self.route.problems.add("db_subagent_without_agent_call", agent_id)
        # Links in the order the parent made its calls, as the logs list them.
        position = {tool_use_id: number for number, (_, tool_use_id) in enumerate(self.calls)}
        call_order = {agent_id: position[link.tool_use_id]
                      for draft in drafts.values() for agent_id, link in draft["links"].items()}
        conversations = {}
        for conversation_id, draft in drafts.items():
            conversations[conversation_id] = Conversation(
                conversation_id=conversation_id, parent_file=None,
                turns=_turns(draft["turns"], conversation_id, ""),
                subagents={agent_id: _turns(rows, conversation_id, agent_id) for agent_id, rows in draft["subagents"].items()},
                links=tuple(draft["links"][agent_id] for agent_id in sorted(draft["links"], key=call_order.__getitem__)))
        return conversations


def _may_spawn(call: _AgentCall, chain: _Chain) -> bool:
    """An untaken call of another chain, made before the chain's first row."""
    return not call.taken and call.lane != chain.root.row_id and call.spawner.row_id < chain.root.row_id


def _link(conversation_id: str, agent_id: str, call: _AgentCall) -> SubagentLink:
    return SubagentLink(
        conversation_id=conversation_id, agent_id=agent_id, tool_use_id=call.tool_use_id,
        subagent_type=call.subagent_type, description=call.description, spawn_time=call.spawn_time,
        completion_time=call.completion_time, duration_ms=call.duration_ms, total_tokens=call.total_tokens,
        tool_use_count=call.tool_use_count, status=call.status, has_log=True)


def _turns(rows: Iterable[ProxyRequest], conversation_id: str, agent_id: str) -> tuple[AssistantTurn, ...]:
    """The rows as turns of a conversation; a turn's message id is its request id (docs/routes.md#db-only)."""
    return tuple(AssistantTurn(
        message_id=row.request_id, conversation_id=conversation_id, agent_id=agent_id, timestamp=row.timestamp,
        model=row.model, stop_reason=row.stop_reason, content_types=row.output_types,
        output_tokens=row.usage.output_tokens if row.usage else 0, usage=row.usage, jsonl_request_id=None,
        source_file="", line_number=row.row_id) for row in sorted(rows, key=lambda r: (r.timestamp, r.row_id)))


# --- every conversation of a capture, each on its route ---------------------------------------------


@dataclass
class CaptureConversations:
    """Every conversation of a capture, each on its route, with what planning needs."""

    conversations: dict[str, Any]  # JSONL `Conversation`s, then those rebuilt from the DB alone
    message_ids: dict[str, str]  # turn message id → request id (a DB-only turn's message id is its request id)
    requests: dict[str, ProxyRequest]
    twins: dict[str, str]
    route_of: dict[str, str]
    db_route: DbRoute
    logs_name_rows: bool


def capture_conversations(proxy: sqlite3.Connection, index: sqlite3.Connection, logged: Optional[dict[str, Any]],
                          problems: ProblemCounter) -> CaptureConversations:
    """The logged conversations (None: no logs) with their DB rows, plus the conversations of the rows no log
    names, rebuilt from the DB alone (docs/routes.md). Shared by the builder and the validator's plans."""
    twins = dict(index.execute("SELECT request_id, twin_of FROM message_index WHERE twin_of IS NOT NULL"))
    replay_twins = load_replay_twins(index)
    indexed = {r.request_id: r for r in iter_indexed_requests(index)}
    message_ids = load_message_ids(index) if logged is not None else {}

    def in_db(turns: Any) -> bool:
        return any(message_ids.get(turn.message_id) in indexed for turn in turns)

    # A logged conversation whose parent turns name no row (the parent's log pruned, or its rows) gives no
    # trace: its sub-agents' rows are rebuilt on the DB-only route, with the parent's if any, rather than lost.
    conversations: dict[str, Any] = {}
    for conversation_id, conversation in (logged or {}).items():
        if in_db(conversation.turns) or not any(in_db(turns) for turns in conversation.subagents.values()):
            conversations[conversation_id] = conversation
        else:
            problems.add("conversation_without_db_requests", conversation_id)
    named = [(message_ids.get(turn.message_id), turn.timestamp) for turn in iter_turns(conversations.values())]
    # Sub-second starts, and each old-proxy turn as its first send (lib/capture/turn_timing.py).
    requests = first_sends(indexed, replay_twins, answers_logged_at(named))
    from_db, db_route, unnamed = conversations_beside_logs(proxy, requests, conversations, message_ids, twins,
                                                           set(replay_twins.values()))
    problems.merge(db_route.problems)
    route_of = {**{conversation_id: ROUTE_DB_JSONL for conversation_id in conversations},
                **{conversation_id: ROUTE_DB_ONLY for conversation_id in from_db}}
    conversations.update(from_db)
    message_ids.update({request_id: request_id for request_id in unnamed})
    return CaptureConversations(conversations, message_ids, requests, twins, route_of, db_route,
                                logs_name_rows=any(request_id in indexed for request_id, _ in named))


def conversations_beside_logs(proxy: sqlite3.Connection, requests: dict[str, ProxyRequest],
                              conversations: dict[str, Any], message_ids: dict[str, str], twins: dict[str, str],
                              artifacts: set[str]) -> tuple[dict[str, Conversation], DbRoute, dict[str, ProxyRequest]]:
    """The DB-only conversations of the rows no logged conversation names (every row without logs), what the
    reading found, and those rows. `conversations` are JSONL `Conversation`s or the index's `IndexedConversation`s."""
    named = [message_ids.get(turn.message_id) for turn in iter_turns(conversations.values())]
    counted_here = ProblemCounter()
    unnamed = _once_per_api_call(_rows_no_log_names(requests, conversations, message_ids, twins), named, requests,
                                 artifacts, counted_here)
    # Logs that name no row (another project's, another machine's) hold no turn a row could continue: a
    # capture that starts mid-session is then read as without logs, not left out as continuing them.
    logs_name_rows = any(request_id in requests for request_id in named)
    from_db, db_route = conversations_from_db(proxy, unnamed, artifacts, beside_logs=logs_name_rows,
                                              subagent_windows=_unlogged_subagent_windows(conversations),
                                              logged_ids=conversations)
    db_route.problems.merge(counted_here)
    return from_db, db_route, unnamed


def _once_per_api_call(unnamed: dict[str, ProxyRequest], named: list[Optional[str]], requests: dict[str, ProxyRequest],
                       artifacts: set[str], problems: ProblemCounter) -> dict[str, ProxyRequest]:
    """Without the rows whose answer's message id a logged turn's row or an earlier row already has: one API
    call stored twice (two DBs merged) is traced once (docs/reliability.md#one-request-one-trace)."""
    seen = {requests[request_id].message_id for request_id in named if request_id in requests}
    repeats = set()
    for request in sorted(unnamed.values(), key=lambda r: r.row_id):
        if request.kind != "ok" or not request.message_id or request.request_id in artifacts:
            continue
        if request.message_id in seen:
            repeats.add(request.request_id)
            problems.add("row_repeats_an_api_call", request.request_id)
        seen.add(request.message_id)
    return {request_id: request for request_id, request in unnamed.items() if request_id not in repeats}


def _unlogged_subagent_windows(conversations: dict[str, Any]) -> list[tuple[datetime, datetime]]:
    return [(link.spawn_time - PROXY_TIME_SLACK, link.completion_time + PROXY_TIME_SLACK)
            for conversation in conversations.values() for link in conversation.links
            if not link.has_log and link.completion_time is not None]


def _rows_no_log_names(requests: dict[str, ProxyRequest], conversations: dict[str, Any], message_ids: dict[str, str],
                       twins: dict[str, str]) -> dict[str, ProxyRequest]:
    """Rows for the DB-only route: those no logged turn names, nor their old-proxy twins, nor the rows
    found for a logged sub-agent whose own log is missing (below)."""
    if not conversations:
        return requests
    named = {message_ids[turn.message_id] for turn in iter_turns(conversations.values()) if turn.message_id in message_ids}
    named |= {twins[request_id] for request_id in named if request_id in twins}
    found = unlogged_subagent_requests(conversations.values(), message_ids, requests, ProblemCounter())
    named |= {request.request_id for rows in found.values() for request in rows}
    return {request_id: request for request_id, request in requests.items() if request_id not in named}


# --- logged sub-agents whose own log is missing ----------------------------------------------------

# The proxy stores whole seconds, the JSONL milliseconds: a sub-agent's first request can carry a
# proxy time just before its spawn line.
PROXY_TIME_SLACK = timedelta(seconds=1)


def unlogged_subagent_requests(conversations: Iterable[Any], message_ids: dict[str, str],
                               requests: dict[str, ProxyRequest], problems: ProblemCounter
                               ) -> dict[tuple[str, str], list[ProxyRequest]]:
    """(conversation id, agent id) → the DB requests of a sub-agent whose log is missing, in arrival order.

    `conversations` are JSONL `Conversation`s or the index's `IndexedConversation`s (both have
    turns with message ids, sub-agents by agent id and links).

    The parent's link still names the sub-agent and its spawn and completion times; its requests
    are the answered rows inside that window that no JSONL turn names (nor their old-proxy twins,
    which share the prompt key). A row inside the windows of two such sub-agents cannot be told
    apart and is counted, as is a sub-agent none of whose requests could be found.
    """
    conversations = list(conversations)
    # A resumed session's copy links sub-agents logged under the original session: those are not missing.
    logged = {agent_id for conversation in conversations for agent_id in conversation.subagents}
    unique: dict[str, SubagentLink] = {}
    for link in (link for conversation in conversations for link in conversation.links):
        if not link.has_log and link.agent_id and link.agent_id not in logged:
            # Linked again by a resumed session's copy: still one sub-agent (the plan moves it with its turn).
            unique.setdefault(link.agent_id, link)
    missing = list(unique.values())
    if not missing:
        return {}
    named = {message_ids[turn.message_id] for conversation in conversations
             for turns in (conversation.turns, *conversation.subagents.values()) for turn in turns
             if turn.message_id in message_ids}
    named_keys = {requests[r].prompt_key for r in named if r in requests and requests[r].prompt_key}
    candidates = [r for r in requests.values() if r.request_id not in named and r.kind == "ok"
                  and r.timestamp != UNKNOWN_TIME and r.prompt_key not in named_keys]
    found: dict[tuple[str, str], list[ProxyRequest]] = {}
    shared: set[tuple[str, str]] = set()
    for request in candidates:
        windows = [(link.conversation_id, link.agent_id) for link in missing if link.completion_time is not None
                   and link.spawn_time - PROXY_TIME_SLACK <= request.timestamp <= link.completion_time + PROXY_TIME_SLACK]
        if len(windows) == 1:
            found.setdefault(windows[0], []).append(request)
        elif windows:
            shared.update(windows)
            problems.add("subagent_request_ambiguous", request.request_id)
    for key in shared & set(found):
        # Some of its rows could be another's: a partial sub-agent would replay wrongly, so none is kept.
        for request in found.pop(key):
            problems.add("subagent_request_ambiguous", request.request_id)
    for link in missing:
        key = (link.conversation_id, link.agent_id)
        if key in found:
            found[key].sort(key=lambda r: (r.timestamp, r.row_id))
            problems.add("subagent_requests_from_db", link.agent_id)
        else:
            problems.add("subagent_lost", link.agent_id)
    return found
