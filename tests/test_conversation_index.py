"""lib/capture/conversation_index.py: JSONL turns linked to proxy rows, incremental by file size+mtime."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Iterator

import pytest

from jsonl_builders import (OTHER_SESSION, SESSION, agent_result, assistant, tool_result, user_prompt,
                            write_jsonl)
from lib.capture.conversation_index import (ConversationIndexSummary, ensure_conversation_index, load_conversations,
                                    update_conversation_index)
from lib.db import open_index_db, open_proxy_db

FIXTURE_SESSION = "aece16d6-730c-4020-ab76-fd7ec747f412"
# The real proxy's schema (docs/inputs.md#the-requests-table), for hand-made logs that need an (empty) DB beside them.
PROXY_SCHEMA = """CREATE TABLE requests (id TEXT PRIMARY KEY, timestamp DATETIME DEFAULT CURRENT_TIMESTAMP,
    method TEXT NOT NULL, endpoint TEXT NOT NULL, headers TEXT NOT NULL, body TEXT NOT NULL, user_agent TEXT,
    content_type TEXT, prompt_grade TEXT, response TEXT, model TEXT, original_model TEXT, routed_model TEXT,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP)"""

pytest.importorskip("lib.capture.message_index")


class Indexer:
    """One proxy DB + index DB pair, updated as a user would re-run the command."""

    def __init__(self, db: Path, logs: Path, index_db: Path | None = None) -> None:
        self.proxy = open_proxy_db(db)
        self.index = open_index_db(db, index_db)
        self.logs = logs

    def update(self, *, rebuild: bool = False) -> ConversationIndexSummary:
        return update_conversation_index(self.proxy, self.index, self.logs, rebuild=rebuild)

    def dump(self) -> dict[str, list[tuple]]:
        return {table: sorted(self.index.execute(f"SELECT * FROM {table}"))
                for table in ("conversation_index", "subagent_links", "jsonl_files")}

    def close(self) -> None:
        self.index.close()
        self.proxy.close()


@pytest.fixture
def fixture_indexer(fixture_db: Path, fixture_dir: Path) -> Iterator[Indexer]:
    indexer = Indexer(fixture_db, fixture_dir / "jsonl")
    yield indexer
    indexer.close()


@pytest.fixture
def empty_db(tmp_path: Path) -> Path:
    path = tmp_path / "empty.db"
    with sqlite3.connect(path) as connection:
        connection.execute(PROXY_SCHEMA)
    return path


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """Two conversations: A with one sub-agent (parent + agent file), B alone."""
    root = tmp_path / "projects"
    write_jsonl(root / f"{SESSION}.jsonl", [
        user_prompt("2026-01-01T10:00:00Z"),
        assistant("msg_a1", "2026-01-01T10:00:02Z", agent_calls=[("toolu_1", "Agent", "Explore", "Scan")],
                  stop_reason="tool_use"),
        tool_result("toolu_1", "2026-01-01T10:00:20Z", agent_result("sub1", duration_ms=17000)),
        assistant("msg_a2", "2026-01-01T10:00:25Z"),
    ])
    write_jsonl(root / "agent-sub1.jsonl", [assistant("msg_s1", "2026-01-01T10:00:05Z", agent_id="sub1"),
                                            assistant("msg_s2", "2026-01-01T10:00:09Z", agent_id="sub1")])
    write_jsonl(root / f"{OTHER_SESSION}.jsonl", [assistant("msg_b1", "2026-01-02T09:00:00Z", session=OTHER_SESSION)])
    return root


def request_id_header(proxy: sqlite3.Connection, request_id: str) -> str:
    (response,) = proxy.execute("SELECT response FROM requests WHERE id = ?", (request_id,)).fetchone()
    return json.loads(response)["headers"]["Request-Id"][0]


def test_every_fixture_assistant_id_maps_to_the_right_db_row(fixture_indexer: Indexer, fixture_dir: Path) -> None:
    summary = fixture_indexer.update()
    manifest = json.loads((fixture_dir / "manifest.json").read_text())
    expected = [("", turn) for turn in manifest["parent_turns"]]
    expected += [(agent["agentId"], turn) for agent in manifest["agents"] for turn in agent["turns"]]
    for agent_id, turn in expected:
        (request_id,) = fixture_indexer.index.execute(
            "SELECT request_id FROM conversation_index WHERE message_id = ? AND agent_id = ?",
            (turn["msg_id"], agent_id)).fetchone()
        # Ground truth independent of the message index: the row's own Request-Id header.
        assert request_id_header(fixture_indexer.proxy, request_id) == turn["request_id"]
    assert (summary.matched_ids, summary.total_ids, summary.parent_turns, summary.subagents,
            summary.subagent_turns, summary.links) == (37, 37, 12, 3, 25, 3)
    assert summary.problems.as_dict() == {}


def test_fixture_links_are_stored_with_epochs_and_totals(fixture_indexer: Indexer) -> None:
    fixture_indexer.update()
    rows = sorted(fixture_indexer.index.execute(
        "SELECT agent_id, subagent_type, duration_ms, total_tokens, tool_use_count, status, has_log,"
        " completion_epoch - spawn_epoch FROM subagent_links"))
    assert [row[:7] for row in rows] == [
        ("a096565023a673e7b", "Explore", 11970, 6040, 9, "completed", 1),
        ("a0c19174b948a6397", "Explore", 7758, 5292, 6, "completed", 1),
        ("a3a42969eb2a3945f", "Explore", 9573, 5650, 7, "completed", 1),
    ]
    assert [round(row[7], 3) for row in rows] == [11.971, 7.769, 9.594]


def test_load_conversations_returns_ordered_turns_with_request_ids(fixture_indexer: Indexer, fixture_dir: Path) -> None:
    fixture_indexer.update()
    (conversation,) = load_conversations(fixture_indexer.index)
    manifest = json.loads((fixture_dir / "manifest.json").read_text())
    assert conversation.conversation_id == FIXTURE_SESSION
    assert [t.turn_number for t in conversation.turns] == list(range(1, 13))
    assert [t.message_id for t in conversation.turns] == [t["msg_id"] for t in manifest["parent_turns"]]
    assert {agent: len(turns) for agent, turns in conversation.subagents.items()} == {
        "a096565023a673e7b": 10, "a0c19174b948a6397": 7, "a3a42969eb2a3945f": 8}
    assert all(t.request_id for turns in (conversation.turns, *conversation.subagents.values()) for t in turns)
    assert conversation.turns[0].content_types == ("thinking", "text", "tool_use")
    assert [link.tool_use_id for link in conversation.links] == sorted(link.tool_use_id for link in conversation.links)
    assert load_conversations(fixture_indexer.index, "no-such-id") == []


def test_second_run_reads_nothing_and_rematches_ids_whose_rows_arrived(fixture_indexer: Indexer) -> None:
    fixture_indexer.update()
    again = fixture_indexer.update()
    assert (again.is_nothing_new, again.files_read, again.files_unchanged) == (True, 0, 4)
    assert "nothing new" in again.describe()
    fixture_indexer.index.execute("UPDATE conversation_index SET request_id = NULL WHERE turn_number <= 1")
    healed = fixture_indexer.update()
    assert (healed.files_read, healed.newly_matched_ids, healed.matched_ids) == (0, 4, 37)


def test_unmatched_ids_are_reported(empty_db: Path, logs: Path) -> None:
    indexer = Indexer(empty_db, logs)
    summary = indexer.update()
    assert (summary.matched_ids, summary.total_ids, summary.match_rate) == (0, 5, 0.0)
    assert summary.unmatched_examples == ["msg_a1", "msg_s1", "msg_s2", "msg_a2", "msg_b1"]
    indexer.close()


def test_appending_to_one_file_rereads_only_its_conversation_and_equals_a_rebuild(
        empty_db: Path, logs: Path, tmp_path: Path) -> None:
    indexer = Indexer(empty_db, logs)
    first = indexer.update()
    assert (first.conversations_read, first.files_read) == (2, 3)
    with (logs / f"{OTHER_SESSION}.jsonl").open("a") as stream:
        stream.write(json.dumps(assistant("msg_b2", "2026-01-02T09:00:07Z", session=OTHER_SESSION)) + "\n")
    second = indexer.update()
    assert (second.conversations_read, second.files_read, second.files_unchanged) == (1, 1, 2)
    assert second.parent_turns == 4
    fresh = Indexer(empty_db, logs, tmp_path / "fresh-index.db")
    fresh.update(rebuild=True)
    assert indexer.dump() == fresh.dump()
    indexer.close()
    fresh.close()


def test_touching_or_removing_a_subagent_file_rereads_its_conversation(empty_db: Path, logs: Path) -> None:
    indexer = Indexer(empty_db, logs)
    indexer.update()
    agent_file = logs / "agent-sub1.jsonl"
    stat = agent_file.stat()
    os.utime(agent_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = indexer.update()
    assert (touched.conversations_read, touched.files_read) == (1, 2)
    agent_file.unlink()
    removed = indexer.update()
    assert (removed.conversations_read, removed.subagent_turns) == (1, 0)
    assert indexer.index.execute("SELECT agent_id, has_log FROM subagent_links").fetchall() == [("sub1", 0)]
    assert removed.problems.as_dict() == {"subagent_log_missing": {"count": 1, "examples": ["sub1"]}}
    indexer.close()


def test_rebuild_rereads_everything(empty_db: Path, logs: Path) -> None:
    indexer = Indexer(empty_db, logs)
    indexer.update()
    before = indexer.dump()
    rebuilt = indexer.update(rebuild=True)
    assert (rebuilt.conversations_read, rebuilt.files_read, rebuilt.files_unchanged) == (2, 3, 0)
    assert indexer.dump() == before
    indexer.close()


def test_jsonl_request_id_that_disagrees_with_the_rows_header_is_counted(
        fixture_db: Path, fixture_dir: Path, tmp_path: Path) -> None:
    logs = tmp_path / "jsonl"
    logs.mkdir()
    for source in (fixture_dir / "jsonl").iterdir():
        text = source.read_text()
        (logs / source.name).write_text(text.replace('"requestId":"req_011CBhujlxzwhJAReMvB83mB"',
                                                     '"requestId":"req_wrong"'))
    indexer = Indexer(fixture_db, logs)
    summary = indexer.update()
    assert summary.matched_ids == 37
    assert summary.problems.as_dict() == {
        "jsonl_request_id_mismatch": {"count": 1, "examples": ["msg_01ugcYq8YYUt3pnMWdKNHpZh"]}}
    indexer.close()


def test_ensure_builds_a_missing_index_saying_so_and_is_quiet_afterwards(fixture_db: Path, fixture_dir: Path) -> None:
    proxy, index = open_proxy_db(fixture_db), open_index_db(fixture_db)
    said: list[str] = []
    first = ensure_conversation_index(proxy, index, fixture_dir / "jsonl", say=said.append)
    second = ensure_conversation_index(proxy, index, fixture_dir / "jsonl", say=said.append)
    assert (first.total_ids, second.is_nothing_new) == (37, True)
    assert [line.split(":")[0] for line in said] == ["No conversation index yet", "No message index yet"]
    index.close()
    proxy.close()


def test_a_moved_log_folder_is_reread_but_leaves_the_index_file_byte_identical(empty_db: Path, logs: Path,
                                                                               tmp_path: Path) -> None:
    # A fresh clone of a project that ships an indexed DB: same logs, new paths and mtimes.
    indexer = Indexer(empty_db, logs)
    indexer.update()
    indexer.close()
    before = empty_db.read_bytes()
    moved = tmp_path / "clone" / "projects"
    shutil.copytree(logs, moved)
    for path in moved.rglob("*.jsonl"):  # a checkout writes new mtimes
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    clone = Indexer(empty_db, moved)
    summary = clone.update()
    clone.close()
    assert (summary.conversations_read, summary.conversations_identical) == (2, 2)
    assert "2 of them identical to the index (nothing written)" in summary.describe()
    assert empty_db.read_bytes() == before
    paths = sqlite3.connect(empty_db).execute("SELECT path FROM jsonl_files").fetchall()
    assert sorted(paths) == sorted([(f"{OTHER_SESSION}.jsonl",), (f"{SESSION}.jsonl",), ("agent-sub1.jsonl",)])
    stored = sqlite3.connect(empty_db).execute("SELECT DISTINCT source_file FROM conversation_index").fetchall()
    assert sorted(stored) == sorted([(f"{OTHER_SESSION}.jsonl",), (f"{SESSION}.jsonl",), ("agent-sub1.jsonl",)])


def test_an_unchanged_state_value_is_not_rewritten(empty_db: Path) -> None:
    from lib.db import create_state_table, read_state, write_state
    from lib.db import transaction

    with sqlite3.connect(empty_db) as index:
        create_state_table(index)
        with transaction(index):
            write_state(index, "demo.key", "1")
    before = empty_db.read_bytes()
    with sqlite3.connect(empty_db) as index:
        with transaction(index):
            write_state(index, "demo.key", "1")
        assert read_state(index, "demo.") == {"key": "1"}
    assert empty_db.read_bytes() == before
    with sqlite3.connect(empty_db) as index:
        with transaction(index):
            write_state(index, "demo.key", "2")
        assert read_state(index, "demo.") == {"key": "2"}
