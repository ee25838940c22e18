"""Which requests a visualizer report simulates, and in which lane (docs/inputs.md#old-proxy-twins,
docs/inputs.md#rows-that-are-not-turns, docs/visualizer.md).

A report is one conversation (its parent and every sub-agent as lanes), `combined` (every turn
of the DB through one shared cache) or, for `all`, one report per conversation. Rows that are not
turns never reach a cache model but are counted and named in the data-quality notes: error,
pending and unparsable rows; the streaming half of each old-proxy twin pair (its non-streaming
replay is the turn, so the pair is shown once); in `combined`, turns no JSONL names stay in, in
lane `unlinked` (quota probes, titles, other sessions).
"""
from __future__ import annotations

import dataclasses
import functools
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterable, Optional

from lib.capture.conversation_index import IndexedConversation, IndexedTurn, ensure_conversation_index, load_conversations
from lib.db import table_exists
from lib.errors import InputError
from lib.db import read_state
from lib.capture.jsonl_files import default_projects_dir
from lib.capture.message_index import ensure_message_index, iter_indexed_requests
from lib.problems import ProblemCounter
from lib.capture.proxy_reader import UNKNOWN_TIME
from lib.cli import counted
from lib.records import AssistantTurn, ProxyRequest, SubagentLink
from lib.report.model import LANE_PARENT, LANE_UNLINKED
from lib.capture.response_parser import KIND_OK
from lib.capture.turn_timing import answers_logged_at, first_sends, is_cleaned_old_proxy, iter_turns, load_replay_twins
from lib.capture.db_conversations import DB_ID_PREFIX, conversations_beside_logs, unlogged_subagent_requests
from lib.capture.jsonl_conversations import Conversation

COMBINED = "combined"
ALL = "all"
# Label per data-quality reason, in the order the notes list them.
QUALITY_LABELS: dict[str, str] = {
    "error_row": "error rows (4xx/5xx): labelled, left out of the simulation",
    "pending_row": "rows without a response (in flight or failed forward): left out",
    "unparsable_row": "rows with an unparsable response: left out",
    "duplicate_pair": "old-proxy duplicate pairs shown once (the streaming artifact is left out)",
    "unlinked": "requests no JSONL log names (quota probes, titles, other sessions): lane `unlinked`",
    "turn_not_in_db": "JSONL assistant ids inside the capture's time span not found in the DB",
    "turn_outside_capture": "JSONL assistant ids outside the capture's time span (not in the DB)",
    "request_in_two_conversations": "requests named by two conversations (resumed sessions): kept in the first",
    "body_missing": "rows without a request body: left out",
    "body_unparsable": "rows with an unparsable request body: left out",
    "body_without_messages": "request bodies without messages: left out",
    "subagent_requests_from_db": "sub-agents whose log is missing: requests found in the DB inside the link's window",
    "subagent_lost": "sub-agents whose log is missing and whose requests could not be found in the DB",
    "subagent_request_ambiguous": "rows inside the windows of two sub-agents without logs: left unlinked",
    "timestamp_unknown_row": "rows without a usable time of their own or a JSONL turn: left out",
    "turn_without_usage": "JSONL turns without usage (no API prompt size): left out",
    "turn_not_rebuilt": "JSONL turns whose prompt chain could not be rebuilt from the log: left out",
    "row_continues_logged_turns": "rows no log names that continue logged turns (a lost log line, a retry): unlinked",
    "db_chain_without_parent": "DB-only: prompt chains no parent conversation owns: unlinked",
    "db_subagent_ambiguous_window": "DB-only: sub-agents starting while two conversations waited on agents: own lanes",
    "db_subagent_without_agent_call": "DB-only: agents named by a header whose call no prompt shows: lanes without facts",
    "db_row_without_messages": "DB-only: turn rows whose body has no messages: unlinked",
}
CLEANED_OLD_PROXY_NOTE = (
    "Cleaned old-proxy capture: every linked turn (every turn, without JSONL links) is a non-streaming replay whose "
    "streaming twin was deleted, and each replay read its twin's cache write. Their API figures are estimated: "
    "cache read capped at the API model's read, the rest counted as creation (docs/visualizer.md).")
# Body problems of a row: counted by the hashing stage as body_unparsable / body_without_messages.
_BODY_REASONS = frozenset({"broken_request_body", "request_body_not_an_object", "body_without_messages"})
_ROW_KIND_REASONS = {"error": "error_row", "pending": "pending_row", "unparsable": "unparsable_row",
                     "without_usage": "turn_without_usage"}  # the last only from the logs (docs/jsonl.md)
ROUTE_DB = "DB"


@dataclass(frozen=True)
class Capture:
    """What every report of one run selects from: indexed requests, old-proxy twins, conversations."""

    source: str
    requests: tuple[ProxyRequest, ...]
    artifact_twins: dict[str, str]
    conversations: tuple[IndexedConversation, ...]
    generation: str
    jsonl_note: str = ""
    # Sub-agents whose log is missing: (conversation id, agent id) → their requests found in the DB.
    unlogged: dict[tuple[str, str], list[ProxyRequest]] = field(default_factory=dict)
    unlogged_problems: ProblemCounter = field(default_factory=ProblemCounter)
    db_only: frozenset[str] = frozenset()  # conversations rebuilt from the DB alone (docs/routes.md#db-only)

    @functools.cached_property
    def span(self) -> Optional[tuple[datetime, datetime]]:
        """First arrival to last completion of the requests with a time (rows without one sort first)."""
        timed = [r for r in self.requests if r.timestamp != UNKNOWN_TIME]
        return (timed[0].timestamp, timed[-1].completed_at or timed[-1].timestamp) if timed else None


@dataclass(frozen=True)
class SelectedRequest:
    """One turn a report simulates: the proxy row, its lane and its conversation (None if unlinked)."""

    request: ProxyRequest
    lane: str
    conversation_id: Optional[str]


@dataclass
class Selection:
    """One report's turns in arrival order, its sub-agent links, row counts and data-quality counts."""

    name: str
    title: str
    source: str
    requests: list[SelectedRequest]
    links: tuple[SubagentLink, ...] = ()
    conversations: int = 0
    rows: list[ProxyRequest] = field(default_factory=list)
    problems: ProblemCounter = field(default_factory=ProblemCounter)
    notes: list[str] = field(default_factory=list)
    # Every linked turn (every turn, without links) a replay whose old-proxy twin was deleted: API usage is
    # estimated (lib/capture/turn_timing.py).
    cleaned_old_proxy: bool = False
    # Where the requests come from; without a DB, the figures the logs cannot give (lib/report/jsonl_capture.py).
    route: str = ROUTE_DB
    unavailable: tuple[str, ...] = ()


def load_capture(proxy: sqlite3.Connection, index: sqlite3.Connection, *, source: str,
                 projects_path: Optional[str], since: Optional[datetime], until: Optional[datetime],
                 say: Callable[[str], None]) -> Capture:
    """Bring the indexes up to date (building them when missing) and load what selection needs."""
    ensure_message_index(proxy, index, say=say)
    conversations, jsonl_note = _conversations(proxy, index, projects_path, say)
    # Sub-second starts, and each old-proxy turn as its first send (lib/capture/turn_timing.py).
    loaded = first_sends({r.request_id: r for r in iter_indexed_requests(index, since=since, until=until)},
                         load_replay_twins(index),
                         answers_logged_at((turn.request_id, turn.timestamp) for turn in iter_turns(conversations)))
    requests = tuple(sorted(loaded.values(), key=lambda request: (request.timestamp, request.row_id)))
    twins = dict(index.execute("SELECT request_id, twin_of FROM message_index WHERE is_artifact = 1"))
    generation = read_state(index, "message_index.").get("generation", "")
    message_ids = {turn.message_id: turn.request_id for c in conversations
                   for turns in (c.turns, *c.subagents.values()) for turn in turns if turn.request_id}
    unlogged_problems = ProblemCounter()
    unlogged = unlogged_subagent_requests(conversations, message_ids, {r.request_id: r for r in requests},
                                          unlogged_problems)
    # The rows no log names, as conversations rebuilt from the DB alone (docs/routes.md#db-only).
    all_twins = dict(index.execute("SELECT request_id, twin_of FROM message_index WHERE twin_of IS NOT NULL"))
    from_db, db_route, _ = conversations_beside_logs(
        proxy, loaded, {c.conversation_id: c for c in conversations}, message_ids, all_twins, set(twins))
    unlogged_problems.merge(db_route.problems)
    if from_db:
        rebuilt = (f"{counted(len(from_db), 'conversation')} rebuilt from the DB alone, no log naming "
                   f"{'their' if len(from_db) > 1 else 'its'} rows (docs/routes.md#db-only)")
        jsonl_note = f"{jsonl_note}: {rebuilt}." if jsonl_note else f"{rebuilt[0].upper()}{rebuilt[1:]}."
        conversations = [*conversations, *(_indexed(conversation) for conversation in from_db.values())]
    elif jsonl_note:
        jsonl_note += ": no request could be linked to a conversation, so all are `unlinked`."
    if jsonl_note:
        say(jsonl_note)
    return Capture(source, requests, twins, tuple(conversations), generation, jsonl_note, unlogged, unlogged_problems,
                   frozenset(from_db))


def _indexed(conversation: Conversation) -> IndexedConversation:
    """A DB-only conversation as the index would hold it: each turn's message id is its request id."""
    def turns(agent_turns: Iterable[AssistantTurn]) -> tuple[IndexedTurn, ...]:
        return tuple(IndexedTurn(
            conversation_id=turn.conversation_id, agent_id=turn.agent_id, turn_number=number, message_id=turn.message_id,
            request_id=turn.message_id, timestamp=turn.timestamp, model=turn.model, stop_reason=turn.stop_reason,
            content_types=turn.content_types, output_tokens=turn.output_tokens, jsonl_request_id=None, source_file="")
            for number, turn in enumerate(agent_turns))
    return IndexedConversation(conversation.conversation_id, turns(conversation.turns),
                               {agent_id: turns(agent_turns) for agent_id, agent_turns in conversation.subagents.items()},
                               conversation.links)


def _conversations(proxy: sqlite3.Connection, index: sqlite3.Connection, projects_path: Optional[str],
                   say: Callable[[str], None]) -> tuple[list[IndexedConversation], str]:
    """Indexed conversations: refreshed from --projects-path, else the existing index, else the default logs."""
    if projects_path:
        ensure_conversation_index(proxy, index, projects_path, say=say)
    elif not table_exists(index, "conversation_index") and not _index_default_logs(proxy, index, say):
        # No JSONL is not fatal: `combined` still works, with every row unlinked (docs/visualizer.md).
        return [], f"No conversation index and no JSONL logs (looked in {default_projects_dir()}; give --projects-path)"
    conversations = load_conversations(index)
    return conversations, "" if conversations else "The conversation index is empty"


def _index_default_logs(proxy: sqlite3.Connection, index: sqlite3.Connection, say: Callable[[str], None]) -> bool:
    """Build the conversation index from the default logs folder; False when it holds no JSONL."""
    if not default_projects_dir().is_dir():
        return False
    try:
        ensure_conversation_index(proxy, index, None, say=say)
    except InputError:  # the folder exists but holds no Claude Code logs
        return False
    return True


def select_combined(capture: Capture) -> Selection:
    """Every turn of the capture through one shared cache; error rows and twin artifacts only counted."""
    lanes = _lane_map(capture.conversations)
    for (owner_id, agent_id), found in capture.unlogged.items():
        for request in found:
            lanes.setdefault(request.request_id, (agent_id, owner_id))
    selection = Selection(COMBINED, "combined", capture.source, [], conversations=len(capture.conversations))
    selection.links = tuple(link for c in capture.conversations for link in c.links)
    if capture.jsonl_note:
        selection.notes.append(capture.jsonl_note)
    if capture.generation:
        selection.notes.append(f"Proxy generation (docs/inputs.md#old-proxy-twins): {capture.generation}.")
    turn_times = _turn_times(capture.conversations)
    for request in capture.requests:
        if request.timestamp == UNKNOWN_TIME:
            if request.request_id not in turn_times:
                # Placed nowhere in time: simulating it would start the report in 1970.
                _count_row_problems(request, selection.problems)
                selection.problems.add("timestamp_unknown_row", request.request_id)
                continue
            request = _with_jsonl_time(request, turn_times[request.request_id], selection.problems)
        selection.rows.append(request)
        _count_row_problems(request, selection.problems)
        if not _is_turn(request, capture, selection.problems):
            continue
        lane, conversation_id = lanes.get(request.request_id, (LANE_UNLINKED, None))
        if conversation_id is None:
            selection.problems.add("unlinked", request.request_id)
        selection.requests.append(SelectedRequest(request, lane, conversation_id))
    _count_unmatched(capture.conversations, capture, selection.problems)
    _count_shared(capture.conversations, selection.problems)
    selection.problems.merge(capture.unlogged_problems)
    _sort(selection)
    _mark_cleaned(selection, capture)
    return selection


def select_conversation(capture: Capture, conversation_id: str) -> Selection:
    """One conversation: parent turns in lane `parent`, each sub-agent in its own lane."""
    found = [c for c in capture.conversations if c.conversation_id == conversation_id]
    if not found:
        known = ", ".join(c.conversation_id for c in capture.conversations[:3]) or "none"
        raise InputError(f"--conversation-id {conversation_id}: no such conversation in the index (known: {known})")
    conversation = found[0]
    by_id = {request.request_id: request for request in capture.requests}
    selection = Selection(conversation_id, conversation_id, capture.source, [], conversation.links, conversations=1)
    if conversation_id in capture.db_only:
        selection.notes.append("Rebuilt from the DB alone (no log names its rows): lanes from the prompt chains, "
                               "session and agent headers and the parent's Agent calls (docs/routes.md#db-only).")
    for lane, turns in ((LANE_PARENT, conversation.turns), *conversation.subagents.items()):
        for request in _resolve(turns, by_id, capture, selection.problems, whole=True):
            selection.rows.append(request)
            _count_row_problems(request, selection.problems)
            if _is_turn(request, capture, selection.problems):
                selection.requests.append(SelectedRequest(request, lane, conversation_id))
    logged = {agent_id for c in capture.conversations for agent_id in c.subagents}
    found_agents = {agent_id for _, agent_id in capture.unlogged}
    for link in conversation.links:
        from_db = capture.unlogged.get((conversation_id, link.agent_id), [])
        if from_db:
            selection.problems.add("subagent_requests_from_db", link.agent_id)
        elif not link.has_log and link.agent_id and link.agent_id not in logged | found_agents:
            selection.problems.add("subagent_lost", link.agent_id)
        for request in from_db:
            selection.rows.append(request)
            _count_row_problems(request, selection.problems)
            if _is_turn(request, capture, selection.problems):
                selection.requests.append(SelectedRequest(request, link.agent_id, conversation_id))
    if not selection.rows:
        turn_count = sum(len(t) for t in (conversation.turns, *conversation.subagents.values()))
        selection.notes.append(f"None of the conversation's {turn_count} JSONL turns is in this DB "
                               "(logs of another capture, or outside --since/--until): nothing to simulate.")
    kept = {item.request.request_id for item in selection.requests}
    pairs = sum(1 for replay in capture.artifact_twins.values() if replay in kept)
    if pairs:
        selection.problems.add("duplicate_pair", count=pairs)
    _sort(selection)
    _mark_cleaned(selection, capture)
    return selection


def _mark_cleaned(selection: Selection, capture: Capture) -> None:
    """Recognise a cleaned old-proxy capture among the linked turns and say so in the notes."""
    replays = {replay: artifact for artifact, replay in capture.artifact_twins.items()}
    # Without JSONL links every turn is judged (a fixed-proxy capture still has its streaming rows).
    linked = [item.request for item in selection.requests if item.conversation_id is not None]
    selection.cleaned_old_proxy = is_cleaned_old_proxy(linked or [item.request for item in selection.requests], replays)
    if selection.cleaned_old_proxy:
        selection.notes.append(CLEANED_OLD_PROXY_NOTE)


def select_all(capture: Capture, *, min_parent_requests: int) -> tuple[list[Selection], int]:
    """One selection per conversation with at least `min_parent_requests` parent turns; and how many were dropped."""
    selections = [select_conversation(capture, c.conversation_id) for c in capture.conversations]
    kept = [s for s in selections if sum(1 for r in s.requests if r.lane == LANE_PARENT) >= min_parent_requests]
    return kept, len(selections) - len(kept)


def newest_conversation_id(capture: Capture) -> str:
    """The conversation that started last (the one a user just ran)."""
    started = [c for c in capture.conversations if c.start is not None]
    if not started:
        raise InputError(f"{capture.source}: --newest needs the conversation index, and it holds no conversation")
    return max(started, key=lambda c: (c.start, c.conversation_id)).conversation_id


def _is_turn(request: ProxyRequest, capture: Capture, problems: ProblemCounter) -> bool:
    """True for an answered row that is not the streaming artifact of an old-proxy pair; counts the others."""
    if request.kind != KIND_OK:
        problems.add(_ROW_KIND_REASONS.get(request.kind, "unparsable_row"), request.request_id)
        return False
    if request.request_id in capture.artifact_twins:
        problems.add("duplicate_pair", request.request_id)
        return False
    return True


def _count_row_problems(request: ProxyRequest, problems: ProblemCounter) -> None:
    """The row's own degradations (bad timestamp, broken chunk, invalid UTF-8, …) for the data-quality notes."""
    for reason in request.problems:
        if reason not in _BODY_REASONS:
            problems.add(reason, request.request_id)


def _resolve(turns: Iterable[IndexedTurn], by_id: dict[str, ProxyRequest], capture: Capture,
             problems: ProblemCounter, *, whole: bool = False) -> list[ProxyRequest]:
    """The proxy rows of a lane's turns; unmatched ids counted, rows outside --since/--until skipped.

    With `whole` (a report of this one conversation), unmatched turns outside the capture's span
    are counted too: a conversation none of whose turns is in the DB must not look clean.
    """
    resolved = []
    for turn in turns:
        if turn.request_id is None:
            if _in_window(turn.timestamp, capture):
                problems.add("turn_not_in_db", turn.message_id)
            elif whole:
                problems.add("turn_outside_capture", turn.message_id)
            continue
        request = by_id.get(turn.request_id)
        if request is not None:
            if request.timestamp == UNKNOWN_TIME:
                request = _with_jsonl_time(request, turn.timestamp, problems)
            resolved.append(request)
    return resolved


def _turn_times(conversations: Iterable[IndexedConversation]) -> dict[str, datetime]:
    """request id → the JSONL time of its turn (the first conversation naming it)."""
    times: dict[str, datetime] = {}
    for conversation in conversations:
        for turns in (conversation.turns, *conversation.subagents.values()):
            for turn in turns:
                if turn.request_id is not None:
                    times.setdefault(turn.request_id, turn.timestamp)
    return times


def _with_jsonl_time(request: ProxyRequest, moment: datetime, problems: ProblemCounter) -> ProxyRequest:
    """A row without a time of its own, placed at its JSONL turn's time (counted)."""
    problems.add("timestamp_from_jsonl", request.request_id)
    return dataclasses.replace(request, timestamp=moment)


def _in_window(moment: datetime, capture: Capture) -> bool:
    """Whether a JSONL turn falls inside the span of the loaded requests (the --since/--until window)."""
    span = capture.span
    return span is not None and span[0] <= moment <= span[1]


def _lane_map(conversations: Iterable[IndexedConversation]) -> dict[str, tuple[str, str]]:
    """request id → (lane, conversation id); with several conversations a parent lane is named after its id."""
    conversations = list(conversations)
    mapping: dict[str, tuple[str, str]] = {}
    for conversation in conversations:
        # 8 characters of the id, after the `db-` of a conversation rebuilt from the DB alone.
        short = conversation.conversation_id[:len(DB_ID_PREFIX) + 8 if conversation.conversation_id.startswith(DB_ID_PREFIX) else 8]
        parent_lane = LANE_PARENT if len(conversations) == 1 else f"{LANE_PARENT} {short}"
        for lane, turns in ((parent_lane, conversation.turns), *conversation.subagents.items()):
            for turn in turns:
                if turn.request_id is not None:
                    mapping.setdefault(turn.request_id, (lane, conversation.conversation_id))
    return mapping


def _count_unmatched(conversations: Iterable[IndexedConversation], capture: Capture, problems: ProblemCounter) -> None:
    """JSONL turns inside the window whose message id is not in the DB."""
    for conversation in conversations:
        for turns in (conversation.turns, *conversation.subagents.values()):
            for turn in turns:
                if turn.request_id is None and _in_window(turn.timestamp, capture):
                    problems.add("turn_not_in_db", turn.message_id)


def _count_shared(conversations: Iterable[IndexedConversation], problems: ProblemCounter) -> None:
    """Requests two conversations claim (a resumed session copies its earlier turns)."""
    owner: dict[str, str] = {}
    for conversation in conversations:
        for turns in (conversation.turns, *conversation.subagents.values()):
            for turn in turns:
                if turn.request_id is None:
                    continue
                first = owner.setdefault(turn.request_id, conversation.conversation_id)
                if first != conversation.conversation_id:
                    problems.add("request_in_two_conversations", turn.request_id)


def _sort(selection: Selection) -> None:
    """Arrival order (timestamp, then rowid), as docs/inputs.md#the-requests-table requires."""
    selection.requests.sort(key=lambda item: (item.request.timestamp, item.request.row_id))
    selection.rows.sort(key=lambda request: (request.timestamp, request.row_id))

