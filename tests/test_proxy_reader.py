"""lib/capture/proxy_reader.py: streaming `requests` rows into ProxyRequest records."""
from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import pytest

from lib.capture.message_index import iter_indexed_requests, update_message_index
from lib.capture.proxy_reader import (
    count_request_problems,
    iter_proxy_rows,
    parse_proxy_row_with_facts,
    parse_request_body,
    prompt_key,
)
from lib.db import open_index_db, open_proxy_db
from lib.problems import ProblemCounter
from lib.records import ProxyRequest
from tests.proxy_builders import (
    client_exchanges,
    make_proxy_db,
    manifest_turns,
    message_response,
    proxy_row,
    request_body,
    request_headers,
    streaming_response,
)


def parse_rows(proxy: sqlite3.Connection, problems: Optional[ProblemCounter] = None) -> list[ProxyRequest]:
    """Every row in rowid order, parsed and its problems counted as the message index does."""
    requests = []
    for row in iter_proxy_rows(proxy):
        request, _ = parse_proxy_row_with_facts(row)
        if problems is not None:
            count_request_problems(problems, request.request_id, request.kind, request.problems)
        requests.append(request)
    return requests


def indexed(db: Path, **window: Optional[datetime]) -> list[ProxyRequest]:
    """The requests of a fresh message index, in its arrival order (within `since`/`until`)."""
    proxy, index = open_proxy_db(db), open_index_db(db)
    update_message_index(proxy, index)
    return list(iter_indexed_requests(index, **window))


@pytest.fixture
def fixture_requests(fixture_db: Path):
    proxy = open_proxy_db(fixture_db)
    problems = ProblemCounter()
    yield parse_rows(proxy, problems), problems, proxy
    proxy.close()


def test_fixture_message_ids_map_to_rows_with_the_manifest_request_id(fixture_requests, fixture_dir) -> None:
    requests, problems, _ = fixture_requests
    assert len(requests) == 40
    by_message = {r.message_id: r for r in requests if r.message_id}
    for message_id, turn in manifest_turns(fixture_dir).items():
        assert by_message[message_id].anthropic_request_id == turn["request_id"]
    assert problems.as_dict() == {"error_response": {"count": 1, "examples": ["db658db7dce53d4a"]}}


def test_fixture_stream_flags_status_and_retries_match_client_exchanges(fixture_requests, fixture_dir) -> None:
    requests, _, _ = fixture_requests
    by_message = {r.message_id: r for r in requests if r.message_id}
    for exchange in client_exchanges(fixture_dir):
        if exchange.get("msg_id"):
            request = by_message[exchange["msg_id"]]
            assert (request.is_streaming, request.status, request.retry_count) == (exchange["stream"], 200, exchange["retry"])
    (error,) = [r for r in requests if r.kind == "error"]
    assert (error.status, error.is_streaming, error.message_id, error.anthropic_request_id) == (
        529, True, None, "req_011CbK9zvVXKFjuDti48yTmW")
    quota = requests[0]
    assert (quota.is_streaming, quota.max_tokens, quota.message_count, quota.stop_reason) == (False, 1, 1, "max_tokens")


def test_rows_come_in_batches_in_rowid_order(tmp_path: Path) -> None:
    rows = [proxy_row(f"r{i}", "2026-11-29T19:20:42-08:00", response=None) for i in range(5)]
    proxy = open_proxy_db(make_proxy_db(tmp_path / "p.db", rows))
    assert [row[1] for row in iter_proxy_rows(proxy, batch_rows=2)] == ["r0", "r1", "r2", "r3", "r4"]
    assert [row[1] for row in iter_proxy_rows(proxy, after_rowid=3, batch_rows=2)] == ["r3", "r4"]


def test_mixed_offsets_sort_by_instant_then_rowid(tmp_path: Path) -> None:
    rows = [
        proxy_row("late_ny", "2026-03-25T10:00:05-04:00", response=None),    # 14:00:05Z
        proxy_row("early_utc", "2026-03-25T14:00:01Z", response=None),      # 14:00:01Z
        proxy_row("mid_la", "2026-03-25T07:00:03-07:00", response=None),    # 14:00:03Z
        proxy_row("tie_la", "2026-03-25T07:00:03-07:00", response=None),    # same second, later rowid
    ]
    requests = indexed(make_proxy_db(tmp_path / "p.db", rows))
    assert [r.request_id for r in requests] == ["early_utc", "mid_la", "tie_la", "late_ny"]
    by_raw_string = [row["id"] for row in sorted(rows, key=lambda row: row["timestamp"])]
    assert by_raw_string == ["mid_la", "tie_la", "late_ny", "early_utc"]  # what string sorting would get wrong


def test_since_until_filter_on_aware_instants(tmp_path: Path) -> None:
    rows = [proxy_row(f"r{i}", f"2026-03-25T07:00:0{i}-07:00", response=None) for i in range(4)]
    since = datetime(2026, 3, 25, 14, 0, 1, tzinfo=timezone.utc)
    until = datetime(2026, 3, 25, 14, 0, 2, tzinfo=timezone.utc)
    assert [r.request_id for r in indexed(make_proxy_db(tmp_path / "p.db", rows), since=since, until=until)] == ["r1", "r2"]


def test_broken_body_and_headers_degrade_and_are_counted(tmp_path: Path) -> None:
    rows = [
        proxy_row("broken", "2026-03-25T14:00:01Z", body='{"model":"x","messages":[', headers="{not json",
                  response=streaming_response("msg_1")),
        proxy_row("bad_time", "yesterday-ish", response=message_response("msg_2")),
    ]
    proxy = open_proxy_db(make_proxy_db(tmp_path / "p.db", rows))
    problems = ProblemCounter()
    broken, bad_time = parse_rows(proxy, problems)
    # Stream flag falls back to the response's isStreaming; the message facts survive.
    assert (broken.is_streaming, broken.prompt_key, broken.message_count, broken.message_id) == (True, None, 0, "msg_1")
    assert broken.problems == ("broken_request_headers", "broken_request_body")
    # completedAt 03:24:12Z − responseTime 3.548 s, not 1970 (tests/test_faults_data.py has the cases).
    assert bad_time.problems == ("bad_timestamp", "timestamp_from_completion")
    assert bad_time.timestamp == datetime(2026, 11, 30, 3, 24, 8, 452000, tzinfo=timezone.utc)
    assert problems.count("broken_request_body") == 1 and problems.count("bad_timestamp") == 1


def test_headers_give_session_and_retry_count(tmp_path: Path) -> None:
    rows = [proxy_row("s", "2026-03-25T14:00:01Z", headers=request_headers(retry=2, session="sess-1"),
                      response=message_response("msg_1"))]
    (request,) = parse_rows(open_proxy_db(make_proxy_db(tmp_path / "p.db", rows)))
    assert (request.session_header, request.retry_count) == ("sess-1", 2)


def test_absent_stream_key_means_non_streaming_and_prompt_key_ignores_stream_and_max_tokens() -> None:
    streamed = parse_request_body(request_body(stream=True, max_tokens=32000))
    replay = parse_request_body(request_body(stream=False, max_tokens=21333))
    other = parse_request_body(request_body(messages=[{"role": "user", "content": "other"}]))
    assert (streamed.is_streaming, replay.is_streaming) == (True, False)
    assert "stream" not in json.loads(request_body(stream=False))
    assert streamed.prompt_key == replay.prompt_key != other.prompt_key
    assert len(streamed.prompt_key) == 16
    assert prompt_key({"model": "m", "stream": True}) == prompt_key({"model": "m"})


def test_body_without_messages_is_named() -> None:
    facts = parse_request_body('{"model":"m","max_tokens":1}')
    assert (facts.message_count, facts.max_tokens, facts.problems) == (0, 1, ("body_without_messages",))
