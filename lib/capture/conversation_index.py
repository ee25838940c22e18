"""The conversation index: JSONL turns linked to proxy rows, sub-agent links, and file stats (docs/indexes.md#conversation-index).

Tables live in the index DB (the proxy DB itself unless `--index-db`). Incremental by file size and
mtime: a conversation is re-read when any of its files changed, appeared or vanished, and its rows
are replaced in one short transaction, so an interrupted run leaves earlier conversations intact
and a re-run finishes the job (docs/reliability.md#interruption-and-re-runs).
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, cast

from lib.cli import counted
from lib.db import table_exists, transaction
from lib.errors import InputError
from lib.capture.jsonl_conversations import Conversation, read_conversation
from lib.capture.jsonl_files import LogFile, default_projects_dir, discover_logs, group_logs
from lib.problems import ProblemCounter
from lib.records import AssistantTurn, SubagentLink
from lib.timestamps import from_epoch, parse_timestamp, to_epoch

UNMATCHED_EXAMPLES = 5
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS conversation_index (
        conversation_id TEXT NOT NULL, agent_id TEXT NOT NULL, turn_number INTEGER NOT NULL,
        message_id TEXT NOT NULL, request_id TEXT, timestamp TEXT NOT NULL, ts_epoch REAL NOT NULL,
        model TEXT, stop_reason TEXT, content_types TEXT, output_tokens INTEGER,
        jsonl_request_id TEXT, source_file TEXT,
        PRIMARY KEY (conversation_id, agent_id, message_id))""",
    "CREATE INDEX IF NOT EXISTS conversation_index_message_id ON conversation_index (message_id)",
    """CREATE TABLE IF NOT EXISTS subagent_links (
        conversation_id TEXT NOT NULL, agent_id TEXT NOT NULL, tool_use_id TEXT NOT NULL,
        subagent_type TEXT, description TEXT, spawn_epoch REAL, completion_epoch REAL,
        duration_ms INTEGER, total_tokens INTEGER, tool_use_count INTEGER, status TEXT, has_log INTEGER,
        PRIMARY KEY (conversation_id, tool_use_id))""",
    """CREATE TABLE IF NOT EXISTS jsonl_files (
        path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, conversation_id TEXT NOT NULL)""",
)
TABLES = ("conversation_index", "subagent_links", "jsonl_files")
LINK_COLUMNS = ("conversation_id, agent_id, tool_use_id, subagent_type, description, spawn_epoch, completion_epoch,"
                " duration_ms, total_tokens, tool_use_count, status, has_log")


@dataclass(frozen=True)
class IndexedTurn:
    """One JSONL assistant turn as stored in the index, with the proxy row it maps to (None when absent)."""

    conversation_id: str
    agent_id: str
    turn_number: int
    message_id: str
    request_id: Optional[str]
    timestamp: datetime
    model: str
    stop_reason: str
    content_types: tuple[str, ...]
    output_tokens: int
    jsonl_request_id: Optional[str]
    source_file: str


@dataclass(frozen=True)
class IndexedConversation:
    """A conversation from the index: parent turns, sub-agent turns by agent id, and links, all time-ordered."""

    conversation_id: str
    turns: tuple[IndexedTurn, ...]
    subagents: dict[str, tuple[IndexedTurn, ...]]
    links: tuple[SubagentLink, ...]

    @property
    def start(self) -> Optional[datetime]:
        """Time of the earliest turn (parent or sub-agent)."""
        firsts = [turns[0].timestamp for turns in (self.turns, *self.subagents.values()) if turns]
        return min(firsts) if firsts else None


@dataclass
class ConversationIndexSummary:
    """What one run did and what the index now holds."""

    files_read: int = 0
    files_unchanged: int = 0
    conversations_read: int = 0
    conversations_identical: int = 0
    conversations: int = 0
    parent_turns: int = 0
    subagents: int = 0
    subagent_turns: int = 0
    links: int = 0
    matched_ids: int = 0
    total_ids: int = 0
    newly_matched_ids: int = 0
    unmatched_examples: list[str] = field(default_factory=list)
    problems: ProblemCounter = field(default_factory=ProblemCounter)
    elapsed_s: float = 0.0

    @property
    def match_rate(self) -> float:
        """Share of JSONL assistant message ids found in the proxy DB."""
        return self.matched_ids / self.total_ids if self.total_ids else 0.0

    @property
    def is_nothing_new(self) -> bool:
        """True when no file changed and no earlier-unmatched id found its row."""
        return self.files_read == 0 and self.newly_matched_ids == 0

    def as_dict(self) -> dict[str, Any]:
        """The summary for `--json`."""
        return {
            "files_read": self.files_read, "files_unchanged": self.files_unchanged,
            "conversations_read": self.conversations_read,
            "conversations_identical": self.conversations_identical, "conversations": self.conversations,
            "parent_turns": self.parent_turns, "subagents": self.subagents,
            "subagent_turns": self.subagent_turns, "subagent_links": self.links,
            "matched_ids": self.matched_ids, "total_ids": self.total_ids,
            "match_rate": round(self.match_rate, 4), "newly_matched_ids": self.newly_matched_ids,
            "unmatched_examples": self.unmatched_examples, "nothing_new": self.is_nothing_new,
            "problems": self.problems.as_dict(), "elapsed_s": round(self.elapsed_s, 3),
        }

    def describe(self) -> str:
        """The closing paragraph for humans."""
        if self.is_nothing_new:
            head = f"Conversation index: nothing new ({self.files_unchanged} files unchanged)."
        else:
            head = (f"Conversation index: re-read {counted(self.conversations_read, 'conversation')} "
                    f"({counted(self.files_read, 'file')}; {self.files_unchanged} unchanged)")
            if self.conversations_identical:
                head += f", {self.conversations_identical} of them identical to the index (nothing written)"
            if self.newly_matched_ids:
                head += f", {counted(self.newly_matched_ids, 'earlier id')} newly matched"
            head += "."
        text = (f"{head} Index holds {counted(self.conversations, 'conversation')}, "
                f"{counted(self.parent_turns, 'parent turn')}, {counted(self.subagents, 'sub-agent')} "
                f"({counted(self.subagent_turns, 'turn')}), {counted(self.links, 'sub-agent link')}. "
                f"Match rate {self.match_rate:.1%} ({self.matched_ids}/{self.total_ids} assistant ids in the DB)")
        if self.unmatched_examples:
            text += f"; unmatched e.g. {', '.join(self.unmatched_examples[:3])}"
        text += f". {self.elapsed_s:.2f} s."
        if self.problems:
            text += f" Problems: {self.problems.describe()}."
        return text


def update_conversation_index(
    proxy: sqlite3.Connection,
    index: sqlite3.Connection,
    logs_path: Optional[str | Path],
    *,
    rebuild: bool = False,
    progress: Optional[Callable[..., Iterable]] = None,
    say: Callable[[str], None] = lambda message: None,
) -> ConversationIndexSummary:
    """Bring the conversation index up to date with the JSONL logs under `logs_path` (default: ~/.claude/projects)."""
    from lib.capture.message_index import ensure_message_index, load_message_ids  # lazy: keeps `--help` light

    started = time.monotonic()
    summary = ConversationIndexSummary()
    # Find the logs first: a wrong path must fail before anything is written (docs/cli.md#exit-codes).
    logs = discover_logs(logs_path, summary.problems)
    if not logs:
        raise InputError(f"{logs_path or default_projects_dir()}: no Claude Code JSONL logs found")
    ensure_message_index(proxy, index, say=say)
    ensure_conversation_tables(index)
    if rebuild:
        with transaction(index):
            for table in TABLES:
                index.execute(f"DELETE FROM {table}")
    groups = group_logs(logs)
    logs_root = _logs_root(logs_path)
    stale = _stale_conversations(index, groups, logs_root)
    summary.files_unchanged = sum(len(files) for cid, files in groups.items() if cid not in stale)
    message_ids = load_message_ids(index)
    wrap = progress or (lambda items, **_: items)
    for conversation_id in wrap(sorted(stale), total=len(stale), desc="conversations"):
        files = groups[conversation_id]
        conversation = read_conversation(files, summary.problems)
        if not _replace_conversation(index, conversation, files, message_ids, logs_root):
            summary.conversations_identical += 1
        summary.files_read += len(files)
        summary.conversations_read += 1
    summary.newly_matched_ids = _match_pending_ids(index, message_ids)
    # A conversation not re-read still lacks its sub-agent logs: a re-run must keep naming them.
    for conversation_id, agent_id in index.execute(
        "SELECT conversation_id, agent_id FROM subagent_links WHERE has_log = 0 AND agent_id != '' "
        "ORDER BY conversation_id, spawn_epoch, agent_id"
    ):
        if conversation_id not in stale:
            summary.problems.add("subagent_log_missing", agent_id)
    _fill_totals(index, summary)
    summary.elapsed_s = time.monotonic() - started
    return summary


def ensure_conversation_index(proxy: sqlite3.Connection, index: sqlite3.Connection, logs_path: Optional[str | Path],
                              *, say: Callable[[str], None]) -> ConversationIndexSummary:
    """Bring the index up to date for a tool that needs it (cheap when nothing changed), saying when it is new."""
    if not table_exists(index, "conversation_index"):
        say("No conversation index yet: building it now (as build_conversation_index.py would).")
    return update_conversation_index(proxy, index, logs_path, say=say)


def ensure_conversation_tables(index: sqlite3.Connection) -> None:
    """Create the three conversation-index tables if they do not exist."""
    with transaction(index):
        for statement in SCHEMA:
            index.execute(statement)


def load_conversations(index: sqlite3.Connection, conversation_id: Optional[str] = None) -> list[IndexedConversation]:
    """Every indexed conversation (or just one) with parent turns, sub-agent turns and links, ordered by start."""
    where, params = ("WHERE conversation_id = ?", (conversation_id,)) if conversation_id else ("", ())
    turns: dict[str, dict[str, list[IndexedTurn]]] = {}
    for row in index.execute(
        "SELECT conversation_id, agent_id, turn_number, message_id, request_id, timestamp, model, stop_reason,"
        f" content_types, output_tokens, jsonl_request_id, source_file FROM conversation_index {where}"
        " ORDER BY conversation_id, agent_id, turn_number", params,
    ):
        turn = _indexed_turn(row)
        turns.setdefault(turn.conversation_id, {}).setdefault(turn.agent_id, []).append(turn)
    links: dict[str, list[SubagentLink]] = {}
    for row in index.execute(f"SELECT {LINK_COLUMNS} FROM subagent_links {where} ORDER BY spawn_epoch, tool_use_id", params):
        link = _link_from_row(row)
        links.setdefault(link.conversation_id, []).append(link)
    conversations = []
    for cid in sorted(set(turns) | set(links)):
        by_agent = turns.get(cid, {})
        conversations.append(IndexedConversation(
            conversation_id=cid,
            turns=tuple(by_agent.get("", ())),
            subagents={agent: tuple(items) for agent, items in sorted(by_agent.items()) if agent},
            links=tuple(links.get(cid, ())),
        ))
    return sorted(conversations, key=lambda c: (c.start is None, c.start or datetime.min, c.conversation_id))


def _stale_conversations(index: sqlite3.Connection, groups: dict[str, list[LogFile]], logs_root: Path) -> set[str]:
    """Conversations with a new, changed or vanished file since the last run."""
    known: dict[str, dict[str, tuple[int, int]]] = {}
    for path, size, mtime_ns, cid in index.execute("SELECT path, size, mtime_ns, conversation_id FROM jsonl_files"):
        known.setdefault(cid, {})[path] = (size, mtime_ns)
    return {
        cid for cid, files in groups.items()
        if {_stored_path(log.path, logs_root): (log.size, log.mtime_ns) for log in files} != known.get(cid)
    }


def _replace_conversation(index: sqlite3.Connection, conversation: Conversation, files: list[LogFile],
                          message_ids: dict[str, str], logs_root: Path) -> bool:
    """Store one conversation's rows; returns False when nothing had to be written.

    Identical rows are left alone, and so are file stats that differ only in mtime: a freshly cloned
    log folder (new mtimes, same content) is re-read but never rewrites the index file."""
    cid = conversation.conversation_id
    turn_rows = [_turn_row(turn, number, message_ids, logs_root)
                 for turns in (conversation.turns, *conversation.subagents.values())
                 for number, turn in enumerate(turns, start=1)]
    link_rows = [_link_row(link) for link in conversation.links]
    file_rows = [(_stored_path(log.path, logs_root), log.size, log.mtime_ns, cid) for log in files]
    if _stored_rows(index, cid) == (sorted(turn_rows, key=_turn_key), sorted(link_rows, key=_link_key)):
        stored_paths = {path for (path,) in index.execute("SELECT path FROM jsonl_files WHERE conversation_id = ?", (cid,))}
        if stored_paths != {row[0] for row in file_rows}:
            # Files added, removed or stored by an older version under absolute paths: record them,
            # or every later run would re-read this conversation. Changed mtimes alone write nothing.
            with transaction(index):
                index.execute("DELETE FROM jsonl_files WHERE conversation_id = ?", (cid,))
                index.executemany("INSERT OR REPLACE INTO jsonl_files VALUES (?, ?, ?, ?)", file_rows)
            return True
        return False
    with transaction(index):
        for table in TABLES:
            index.execute(f"DELETE FROM {table} WHERE conversation_id = ?", (cid,))
        index.executemany(f"INSERT INTO conversation_index VALUES ({', '.join('?' * 13)})", turn_rows)
        index.executemany(f"INSERT INTO subagent_links VALUES ({', '.join('?' * 12)})", link_rows)
        # OR REPLACE: an older-layout agent file may have been filed under another conversation before.
        index.executemany("INSERT OR REPLACE INTO jsonl_files VALUES (?, ?, ?, ?)",
                          file_rows)
    return True


def _turn_key(row: tuple) -> tuple:
    return row[1], row[2]


def _link_key(row: tuple) -> tuple:
    return row[2]


def _stored_rows(index: sqlite3.Connection, cid: str) -> tuple[list[tuple], list[tuple]]:
    """The conversation's turn and link rows as stored, in `_turn_key` / `_link_key` order."""
    turns = index.execute("SELECT * FROM conversation_index WHERE conversation_id = ? ORDER BY agent_id, turn_number",
                          (cid,)).fetchall()
    links = index.execute("SELECT * FROM subagent_links WHERE conversation_id = ? ORDER BY tool_use_id",
                          (cid,)).fetchall()
    return turns, links


def _match_pending_ids(index: sqlite3.Connection, message_ids: dict[str, str]) -> int:
    """Fill request ids of turns whose proxy row arrived after they were indexed; return how many."""
    pending = [(message_ids[message_id], rowid) for rowid, message_id in
               index.execute("SELECT rowid, message_id FROM conversation_index WHERE request_id IS NULL")
               if message_id in message_ids]
    if pending:
        with transaction(index):
            index.executemany("UPDATE conversation_index SET request_id = ? WHERE rowid = ?", pending)
    return len(pending)


def _fill_totals(index: sqlite3.Connection, summary: ConversationIndexSummary) -> None:
    def scalar(sql: str) -> int:
        return index.execute(sql).fetchone()[0] or 0

    summary.conversations = scalar("SELECT COUNT(DISTINCT conversation_id) FROM conversation_index")
    summary.parent_turns = scalar("SELECT COUNT(*) FROM conversation_index WHERE agent_id = ''")
    summary.subagent_turns = scalar("SELECT COUNT(*) FROM conversation_index WHERE agent_id != ''")
    summary.subagents = scalar(
        "SELECT COUNT(*) FROM (SELECT DISTINCT conversation_id, agent_id FROM conversation_index WHERE agent_id != '')")
    summary.links = scalar("SELECT COUNT(*) FROM subagent_links")
    summary.total_ids = scalar("SELECT COUNT(*) FROM conversation_index")
    summary.matched_ids = scalar("SELECT COUNT(request_id) FROM conversation_index")
    summary.unmatched_examples = [row[0] for row in index.execute(
        "SELECT message_id FROM conversation_index WHERE request_id IS NULL ORDER BY ts_epoch LIMIT ?",
        (UNMATCHED_EXAMPLES,))]
    # A resumed session copies earlier turns into a new file: same ids in two conversations (docs/reliability.md#one-request-one-trace).
    for (message_id,) in index.execute(
        "SELECT message_id FROM conversation_index GROUP BY message_id HAVING COUNT(DISTINCT conversation_id) > 1"
    ):
        summary.problems.add("duplicate_message_id_across_conversations", message_id)
    # The JSONL requestId must equal the matched row's Request-Id header (docs/inputs.md#timing-and-request-ids).
    for (message_id,) in index.execute(
        "SELECT c.message_id FROM conversation_index c JOIN message_index m ON m.request_id = c.request_id"
        " WHERE c.jsonl_request_id IS NOT NULL AND m.anthropic_request_id IS NOT NULL"
        " AND c.jsonl_request_id != m.anthropic_request_id"
    ):
        summary.problems.add("jsonl_request_id_mismatch", message_id)


def _logs_root(logs_path: Optional[str | Path]) -> Path:
    """The folder that `source_file` is stored relative to, so the index does not depend on where logs live."""
    root = (Path(logs_path).expanduser() if logs_path else default_projects_dir()).resolve()
    return root.parent if root.is_file() else root


def _stored_path(path: Path, logs_root: Path) -> str:
    """A log's path as the index stores it: relative to the logs folder, so a shipped or moved index
    names no machine's folders."""
    return str(path.relative_to(logs_root)) if path.is_relative_to(logs_root) else str(path)


def _turn_row(turn: AssistantTurn, number: int, message_ids: dict[str, str], logs_root: Path) -> tuple:
    source_file = _stored_path(Path(turn.source_file), logs_root)
    return (turn.conversation_id, turn.agent_id, number, turn.message_id, message_ids.get(turn.message_id),
            turn.timestamp.isoformat(), turn.timestamp.timestamp(), turn.model, turn.stop_reason,
            json.dumps(list(turn.content_types)), turn.output_tokens, turn.jsonl_request_id, source_file)


def _link_row(link: SubagentLink) -> tuple:
    return (link.conversation_id, link.agent_id, link.tool_use_id, link.subagent_type, link.description,
            to_epoch(link.spawn_time), to_epoch(link.completion_time), link.duration_ms, link.total_tokens,
            link.tool_use_count, link.status, int(link.has_log))


def _indexed_turn(row: tuple) -> IndexedTurn:
    (cid, agent_id, number, message_id, request_id, timestamp, model, stop_reason, types, output_tokens,
     jsonl_request_id, source_file) = row
    # `timestamp` was written from a datetime (_turn_row), so it parses.
    return IndexedTurn(cid, agent_id, number, message_id, request_id, cast(datetime, parse_timestamp(timestamp)), model or "",
                       stop_reason or "", tuple(json.loads(types or "[]")), output_tokens or 0, jsonl_request_id,
                       source_file or "")


def _link_from_row(row: tuple) -> SubagentLink:
    (cid, agent_id, tool_use_id, subagent_type, description, spawn_epoch, completion_epoch, duration_ms,
     total_tokens, tool_use_count, status, has_log) = row
    return SubagentLink(cid, agent_id, tool_use_id, subagent_type or "", description or "", from_epoch(spawn_epoch),
                        from_epoch(completion_epoch), duration_ms, total_tokens, tool_use_count, status or "",
                        bool(has_log))


