"""Which rows a visualizer report simulates (docs/inputs.md#old-proxy-twins, docs/inputs.md#rows-that-are-not-turns,
docs/visualizer.md), on hand-made captures with every kind of row."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from lib.db import open_index_db, open_proxy_db
from lib.errors import InputError
from lib.report.model import LANE_PARENT, LANE_UNLINKED
from lib.report.selection import Capture, load_capture, newest_conversation_id, select_all, select_combined, select_conversation
from lib.timestamps import parse_timestamp
from tests.jsonl_builders import OTHER_SESSION, SESSION
from tests.proxy_builders import error_response, insert_rows, message_response, proxy_row, streaming_response
from tests.trace_inputs import AGENT_ID, ASK, _body, hand_capture


def _extra_rows() -> list[dict]:
    """An overloaded error, a request still in flight, and an old-proxy twin pair (streaming, then replay)."""
    return [
        proxy_row("e000000000000001", "2026-11-29T10:30:00-08:00", response=error_response(529)),
        proxy_row("e000000000000002", "2026-11-29T10:31:00-08:00", response=None),
        proxy_row("c000000000000001", "2026-11-29T09:00:00-08:00", body=_body([ASK]),
                  response=streaming_response("msg_Stream", completed_at="2026-11-29T09:00:01-08:00")),
        proxy_row("c000000000000002", "2026-11-29T09:00:02-08:00", body=_body([ASK], stream=False, max_tokens=21333),
                  response=message_response("msg_Replay", completed_at="2026-11-29T09:00:06-08:00")),
    ]


def _capture(db: Path, projects: Path | None, **options) -> Capture:
    proxy, index = open_proxy_db(db), open_index_db(db)
    try:
        return load_capture(proxy, index, source=str(db), projects_path=str(projects) if projects else None,
                            since=options.get("since"), until=options.get("until"), say=lambda _: None)
    finally:
        index.close()
        proxy.close()


@pytest.fixture
def capture(tmp_path: Path) -> Capture:
    db, jsonl = hand_capture(tmp_path / "capture")
    connection = sqlite3.connect(db)
    insert_rows(connection, _extra_rows())
    connection.close()
    return _capture(db, jsonl)


def test_combined_keeps_every_turn_and_counts_the_rest(capture: Capture) -> None:
    selection = select_combined(capture)
    lanes = [item.lane for item in selection.requests]
    # 7 JSONL turns of two conversations + the twin pair's replay: no JSONL names it, so it is a
    # conversation rebuilt from the DB alone (docs/routes.md#db-only), not `unlinked`.
    assert len(selection.requests) == 8 and len(selection.rows) == 11
    assert lanes.count(LANE_UNLINKED) == 0 and lanes.count(AGENT_ID) == 2
    assert {lane for lane in lanes if lane.startswith(LANE_PARENT)} == {
        f"parent {SESSION[:8]}", f"parent {OTHER_SESSION[:8]}", "parent db-c0000000"}
    assert capture.db_only == {"db-c000000000000002"}
    problems = selection.problems
    assert (problems.count("error_row"), problems.count("pending_row")) == (1, 1)
    assert problems.count("duplicate_pair") == 1 and problems.count("unlinked") == 0
    assert "c000000000000001" not in {item.request.request_id for item in selection.requests}


def test_one_conversation_has_its_sub_agent_as_a_lane(capture: Capture) -> None:
    selection = select_conversation(capture, SESSION)
    assert [item.lane for item in selection.requests] == ["parent", AGENT_ID, AGENT_ID, "parent", "parent", "parent"]
    assert [link.agent_id for link in selection.links] == [AGENT_ID]
    assert not selection.problems


def test_all_applies_min_requests_to_parent_turns(capture: Capture) -> None:
    kept, dropped = select_all(capture, min_parent_requests=2)
    # OTHER_SESSION and the DB-only conversation of the twin pair have one parent turn each.
    assert ([s.name for s in kept], dropped) == ([SESSION], 2)
    assert newest_conversation_id(capture) == OTHER_SESSION


def test_unknown_conversation_is_an_input_error(capture: Capture) -> None:
    with pytest.raises(InputError, match="--conversation-id nope: no such conversation"):
        select_conversation(capture, "nope")


def test_without_jsonl_the_rows_are_rebuilt_into_db_only_conversations(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "no-claude"))
    db, _ = hand_capture(tmp_path / "capture")
    capture = _capture(db, None)
    selection = select_combined(capture)
    # The hand-made bodies do not resend their history, so each prompt that no earlier one prefixes
    # starts a conversation: 4, where the logs know 2 (the example and fixture tests check real chains).
    assert sorted(capture.db_only) == ["db-a000000000000001", "db-a000000000000002", "db-a000000000000005",
                                       "db-b000000000000001"]
    assert LANE_UNLINKED not in {item.lane for item in selection.requests} and len(selection.requests) == 7
    assert any("no JSONL logs" in note and "4 conversations rebuilt from the DB alone" in note for note in selection.notes)


def test_since_until_window(tmp_path: Path) -> None:
    db, jsonl = hand_capture(tmp_path / "capture")
    capture = _capture(db, jsonl, since=parse_timestamp("2026-11-29T10:00:05-08:00"),
                       until=parse_timestamp("2026-11-29T10:30:00-08:00"))
    selection = select_conversation(capture, SESSION)
    assert [item.request.request_id for item in selection.requests] == [
        "a000000000000006", "a000000000000003", "a000000000000004", "a000000000000005"]
