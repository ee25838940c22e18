"""lib/capture/message_index.py: the message_index table, incremental updates, twins, reconstruction."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from lib.db import open_index_db, open_proxy_db
from lib.capture.message_index import (
    COLUMN_NAMES,
    ensure_message_index,
    iter_indexed_requests,
    load_message_ids,
    update_message_index,
)
from tests.proxy_builders import (
    insert_rows,
    jsonl_output_types,
    make_proxy_db,
    manifest_turns,
    message_response,
    proxy_row,
    request_body,
    streaming_response,
)
from tests.test_proxy_reader import parse_rows

OTHER_MESSAGES = [{"role": "user", "content": "second turn"}]


def build(db: Path, **options):
    proxy, index = open_proxy_db(db), open_index_db(db)
    try:
        return update_message_index(proxy, index, **options)
    finally:
        proxy.close()
        index.close()


def table(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute(f"SELECT {', '.join(COLUMN_NAMES)} FROM message_index ORDER BY row_id").fetchall()


def column(db: Path, name: str, request_id: str):
    with sqlite3.connect(db) as connection:
        return connection.execute(f"SELECT {name} FROM message_index WHERE request_id = ?", (request_id,)).fetchone()[0]


def test_fixture_index_counts_and_ground_truth(fixture_db: Path, fixture_dir: Path) -> None:
    summary = build(fixture_db)
    assert (summary.rows_total, summary.rows_processed, summary.message_ids) == (40, 40, 39)
    assert (summary.streaming, summary.non_streaming, summary.errors, summary.pending, summary.unparsable) == (39, 1, 1, 0, 0)
    assert (summary.skipped, summary.twins, summary.generation) == (1, 0, "fixed")
    with sqlite3.connect(fixture_db) as connection:
        ids = load_message_ids(connection)
        rows = {r[0]: r[1:] for r in connection.execute(
            "SELECT request_id, anthropic_request_id, stop_reason, output_types, kind, status FROM message_index")}
    types = jsonl_output_types(fixture_dir)
    for message_id, turn in manifest_turns(fixture_dir).items():
        anthropic_id, stop_reason, output_types, kind, status = rows[ids[message_id]]
        assert (anthropic_id, stop_reason, kind, status) == (turn["request_id"], turn["stop_reason"], "ok", 200)
        assert tuple(json.loads(output_types)) == types[message_id]
    assert column(fixture_db, "kind", "db658db7dce53d4a") == "error"
    assert "db658db7dce53d4a" not in ids.values()


def test_indexed_requests_equal_freshly_parsed_ones_in_arrival_order(fixture_db: Path) -> None:
    build(fixture_db)
    proxy, index = open_proxy_db(fixture_db), open_index_db(fixture_db)
    indexed = list(iter_indexed_requests(index))
    parsed = sorted(parse_rows(proxy), key=lambda r: (r.timestamp, r.row_id))
    assert indexed == parsed
    window = list(iter_indexed_requests(index, since=indexed[10].timestamp, until=indexed[12].timestamp))
    assert [r.row_id for r in window] == [r.row_id for r in indexed if indexed[10].timestamp <= r.timestamp <= indexed[12].timestamp]


def test_requests_table_is_never_modified(fixture_db: Path) -> None:
    dump = lambda: sqlite3.connect(fixture_db).execute("SELECT rowid, * FROM requests ORDER BY rowid").fetchall()  # noqa: E731
    before = dump()
    build(fixture_db)
    build(fixture_db, rebuild=True)
    assert dump() == before


def twin_rows() -> list[dict]:
    """An old-proxy turn (stream, then the replay 3 s later) and a later fixed-style turn alone."""
    return [
        proxy_row("stream1", "2026-03-25T10:00:00-04:00", body=request_body(stream=True, max_tokens=32000),
                  response=streaming_response("msg_artifact", stop_reason="tool_use")),
        proxy_row("replay1", "2026-03-25T14:00:03Z", body=request_body(stream=False, max_tokens=21333),
                  response=message_response("msg_turn")),
        proxy_row("stream2", "2026-03-25T14:05:00Z", body=request_body(stream=True, messages=OTHER_MESSAGES),
                  response=streaming_response("msg_alone")),
    ]


def test_old_proxy_twins_are_linked_and_the_stream_marked_artifact(tmp_path: Path) -> None:
    db = make_proxy_db(tmp_path / "old.db", twin_rows())
    summary = build(db)
    assert (summary.twins, summary.generation) == (1, "old")
    assert (column(db, "twin_of", "stream1"), column(db, "is_artifact", "stream1")) == ("replay1", 1)
    assert (column(db, "twin_of", "replay1"), column(db, "is_artifact", "replay1")) == ("stream1", 0)
    assert (column(db, "twin_of", "stream2"), column(db, "is_artifact", "stream2")) == (None, 0)
    with sqlite3.connect(db) as connection:
        assert load_message_ids(connection) == {"msg_artifact": "stream1", "msg_turn": "replay1", "msg_alone": "stream2"}


def test_a_cleaned_capture_has_no_generation_evidence(tmp_path: Path) -> None:
    db = make_proxy_db(tmp_path / "clean.db", [twin_rows()[1]])
    assert build(db).generation == "cleaned/unknown"


def test_broken_rows_are_indexed_and_counted(tmp_path: Path) -> None:
    rows = [
        proxy_row("pending", "2026-03-25T14:00:00Z", response=None),
        proxy_row("broken", "2026-03-25T14:00:01Z", response='{"statusCode":200,"body":'),
        proxy_row("nodelta", "2026-03-25T14:00:02Z", response=streaming_response("msg_nd", with_delta=False)),
    ]
    db = make_proxy_db(tmp_path / "p.db", rows)
    summary = build(db)
    assert (summary.pending, summary.unparsable, summary.skipped, summary.message_ids) == (1, 1, 2, 1)
    assert summary.problems.count("missing_message_delta") == 1
    assert summary.problems.count("broken_response_json") == 1
    assert (column(db, "output_tokens", "nodelta"), column(db, "input_tokens", "nodelta")) == (None, 3)
    assert json.loads(column(db, "problems", "nodelta")) == ["missing_message_delta"]


def test_incremental_run_processes_only_new_and_arrived_rows_and_equals_a_rebuild(tmp_path: Path) -> None:
    rows = [
        proxy_row("a", "2026-03-25T14:00:00Z", response=streaming_response("msg_a")),
        proxy_row("b", "2026-03-25T14:00:01Z", response=None),
        proxy_row("c", "2026-03-25T14:00:02Z", response=None),
    ]
    db = make_proxy_db(tmp_path / "p.db", rows)
    assert build(db).rows_processed == 3
    assert build(db).rows_processed == 0  # still-pending rows are not re-read until a response arrives
    with sqlite3.connect(db) as connection:
        insert_rows(connection, [proxy_row("d", "2026-03-25T14:00:03Z", response=message_response("msg_d"))])
        connection.execute("UPDATE requests SET response = ? WHERE id = 'b'", (streaming_response("msg_b"),))
        connection.commit()
    summary = build(db)
    assert (summary.rows_processed, summary.pending, summary.message_ids) == (2, 1, 3)
    incremental = table(db)
    copy = tmp_path / "copy.db"
    shutil.copyfile(db, copy)
    assert build(copy, rebuild=True).rows_processed == 4
    assert table(copy) == incremental
    assert build(db).rows_processed == 0


def test_an_interrupted_rebuild_keeps_the_previous_index(tmp_path: Path) -> None:
    db = make_proxy_db(tmp_path / "p.db", twin_rows())
    build(db)
    before = table(db)

    def explode(rows, **_):
        yield next(iter(rows))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(db, rebuild=True, progress=explode)
    assert table(db) == before
    assert build(db).rows_processed == 0


def test_index_of_another_db_is_rebuilt(tmp_path: Path) -> None:
    index_path = tmp_path / "index.sqlite"
    first = make_proxy_db(tmp_path / "one.db", twin_rows())
    second = make_proxy_db(tmp_path / "two.db", [proxy_row("x", "2026-03-25T14:00:00Z", response=message_response("msg_x"))])
    for db in (first, second):
        proxy, index = open_proxy_db(db), open_index_db(db, index_path)
        summary = update_message_index(proxy, index)
    assert (summary.rows_total, summary.rows_processed) == (1, 1)
    assert "not the one indexed" in summary.note


def test_ensure_builds_when_missing_updates_when_stale_and_is_quiet_otherwise(tmp_path: Path) -> None:
    db = make_proxy_db(tmp_path / "p.db", twin_rows()[:1])
    said: list[str] = []
    proxy, index = open_proxy_db(db), open_index_db(db)
    ensure_message_index(proxy, index, say=said.append)
    ensure_message_index(proxy, index, say=said.append)
    with sqlite3.connect(db) as connection:
        insert_rows(connection, twin_rows()[1:])
    ensure_message_index(proxy, index, say=said.append)
    assert said == [
        "No message index yet: building it now (as build_message_index.py would).",
        "Message index is out of date (2 new rows): updating it now.",
    ]
    assert load_message_ids(index) == {"msg_artifact": "stream1", "msg_turn": "replay1", "msg_alone": "stream2"}
    assert column(db, "is_artifact", "stream1") == 1
