"""The three routes on hostile but real-format captures: merged DBs, sessions opened alike, pruned logs.

Each capture is traced with its logs (DB+JSONL) and with --db-only, one salt, anonymized; the DB-only
route must find the same conversations, lanes and requests (docs/routes.md#db-only).
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bench.synthetic_capture import generate_capture
from build_minimal_traces import main
from lib.synthetic.example import generate_example
from validate_trace_cache import main as validate_main

FLAGS = ["--include-subagents", "--anonymize", "--salt", "routes-smoke"]


def _build(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, [*args, *FLAGS, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _traces(directory: Path) -> list[dict[str, list[tuple]]]:
    """Per trace, per lane: (hash_ids, in, out) of each request; traces sorted by content, as two
    conversations that start in one second may come in either order on the DB-only route."""
    traces = []
    for path in sorted(directory.glob("*.json")):
        lanes: dict[str, list[tuple]] = {"parent": []}
        for entry in json.loads(path.read_bytes())["requests"]:
            if entry.get("type") == "subagent":
                lanes[entry["agent_id"]] = [(r["hash_ids"], r["in"], r["out"]) for r in entry["requests"]]
            else:
                lanes["parent"].append((entry["hash_ids"], entry["in"], entry["out"]))
        traces.append(lanes)
    return sorted(traces, key=repr)


def _lane_sizes(directory: Path) -> list[list[int]]:
    return sorted([len(rows) for rows in lanes.values()] for lanes in _traces(directory))


def _rows(db: Path) -> tuple[list[str], str, list[tuple]]:
    with sqlite3.connect(db) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(requests)")]
        schema = connection.execute("SELECT sql FROM sqlite_master WHERE name = 'requests'").fetchone()[0]
        return columns, schema, connection.execute(f"SELECT {', '.join(columns)} FROM requests ORDER BY rowid").fetchall()


def _write(db: Path, schema: str, columns: list[str], rows: list[tuple]) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute(schema)
        connection.executemany(f"INSERT INTO requests ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)


def _without_marks(message: dict[str, Any]) -> dict[str, Any]:
    content = message["content"]
    if isinstance(content, list):
        content = [{k: v for k, v in block.items() if k != "cache_control"} for block in content]
    return {**message, "content": content}


def test_two_sessions_opened_with_one_prompt_stay_two_conversations(tmp_path: Path) -> None:
    """Two concurrent sessions whose first prompt is the same: each second turn continues the first turn
    whose answer it sends back, not the latest row that sent that prompt."""
    first, second = tmp_path / "seed7", tmp_path / "seed8"
    generate_example(first, variant="fixed", scale=0.05, seed=7)
    generate_example(second, variant="fixed", scale=0.05, seed=8)
    columns, schema, rows_7 = _rows(first / "requests.db")
    _, _, rows_8 = _rows(second / "requests.db")
    body_at = columns.index("body")
    opening_7 = json.loads(rows_7[2][body_at])["messages"][0]
    opening_8 = _without_marks(json.loads(rows_8[2][body_at])["messages"][0])
    rewritten = []
    for row in rows_8:  # session 8 opens with session 7's prompt, its cache marks kept
        body = json.loads(row[body_at])
        messages = body.get("messages") or []
        if messages and _without_marks(messages[0]) == opening_8:
            marks = [block.get("cache_control") for block in messages[0]["content"]]
            messages[0] = _without_marks(opening_7)
            for block, mark in zip(messages[0]["content"], marks):
                if mark:
                    block["cache_control"] = mark
            row = (*row[:body_at], json.dumps(body), *row[body_at + 1:])
        rewritten.append(row)
    timestamp_at = columns.index("timestamp")
    # Arrival order: both first turns land in the same second, before either session's second turn.
    merged = sorted([(row[timestamp_at], 0, n, row) for n, row in enumerate(rows_7)]
                    + [(row[timestamp_at], 1, n, row) for n, row in enumerate(rewritten)])
    db = tmp_path / "merged.db"
    _write(db, schema, columns, [row for *_, row in merged])
    logs = tmp_path / "jsonl"
    (first / "jsonl").rename(logs)
    (second / "jsonl").rename(logs / "second")

    full = _build(str(db), "--jsonl-dir", str(logs), "--output-dir", str(tmp_path / "full"))
    db_only = _build(str(db), "--db-only", "--output-dir", str(tmp_path / "db-only"))
    assert full["conversations_by_route"] == {"db_jsonl": 2} and db_only["conversations_by_route"] == {"db_only": 2}
    assert _lane_sizes(tmp_path / "db-only") == [[6, 21, 14, 26, 23], [6, 21, 14, 26, 23]]
    assert _traces(tmp_path / "db-only") == _traces(tmp_path / "full")


def _twice(source: Path, target: Path, *, interleaved: bool = False, same_answers: bool = False) -> None:
    """The capture's rows, then every row again under a new id: two DBs of one session merged. Unless
    `same_answers`, the copy's answers carry other message ids (the session replayed to the API, say)."""
    columns, schema, rows = _rows(source)
    id_at, response_at = columns.index("id"), columns.index("response")
    copies = []
    for row in rows:
        copy = list(row)
        copy[id_at] = "copy-" + row[id_at]
        if not same_answers and row[response_at]:
            copy[response_at] = row[response_at].replace('"msg_', '"msg_copy')
        copies.append(tuple(copy))
    merged = [row for pair in zip(rows, copies) for row in pair] if interleaved else rows + copies
    _write(target, schema, columns, merged)


def test_a_logged_session_id_is_never_taken_over_by_db_only_rows(tmp_path: Path) -> None:
    """A DB holding a capture twice, with a newer client's session headers: the copy the logs do not name is
    traced apart, under a db-<row id> name, instead of replacing the logged conversation of that id."""
    generate_example(tmp_path, variant="fixed", scale=0.05, client_headers=True)
    db = tmp_path / "twice.db"
    _twice(tmp_path / "requests.db", db)
    full = _build(str(db), "--jsonl-dir", str(tmp_path / "jsonl"), "--output-dir", str(tmp_path / "full"))
    assert full["conversations_by_route"] == {"db_jsonl": 1, "db_only": 1}
    assert (full["requests_written"], full["subagents_written"], full["subagent_requests_written"]) == (12, 8, 168)
    assert full["problems"] == {"db_session_also_logged": {"count": 1, "examples": ["trace_0001"]}}
    assert _lane_sizes(tmp_path / "full") == [[6, 21, 14, 26, 23], [6, 21, 14, 26, 23]]


def test_a_capture_twice_gives_each_copy_its_sub_agents(tmp_path: Path) -> None:
    """Both copies repeat every tool_use id: each copy's Agent calls still spawn its own sub-agents, not
    parent conversations of their own (6 traces instead of 2 before)."""
    generate_example(tmp_path, variant="fixed", scale=0.05)
    db = tmp_path / "twice.db"
    _twice(tmp_path / "requests.db", db)
    full = _build(str(db), "--jsonl-dir", str(tmp_path / "jsonl"), "--output-dir", str(tmp_path / "full"))
    db_only = _build(str(db), "--db-only", "--output-dir", str(tmp_path / "db-only"))
    assert full["conversations_by_route"] == {"db_jsonl": 1, "db_only": 1}
    assert db_only["conversations_by_route"] == {"db_only": 2} and db_only["db_route"]["subagents_by_prompt"] == 8
    assert _lane_sizes(tmp_path / "db-only") == [[6, 21, 14, 26, 23], [6, 21, 14, 26, 23]]
    assert _traces(tmp_path / "db-only") == _traces(tmp_path / "full")


def test_sub_agent_logs_without_their_parent_log_lose_no_row(tmp_path: Path) -> None:
    """The parent's log is gone, its sub-agents' logs remain: the conversation is rebuilt from the DB,
    sub-agents included, instead of its 84 sub-agent rows being dropped with the logged sub-agents."""
    generate_example(tmp_path, variant="fixed", scale=0.05)
    db = tmp_path / "requests.db"
    full = _build(str(db), "--jsonl-dir", str(tmp_path / "jsonl"), "--output-dir", str(tmp_path / "full"))
    (tmp_path / "jsonl" / "c7eb779f-2e12-4a2b-bfa9-8e0d73c6d846.jsonl").unlink()
    pruned = _build(str(db), "--jsonl-dir", str(tmp_path / "jsonl"), "--output-dir", str(tmp_path / "pruned"))
    assert pruned["conversations_by_route"] == {"db_only": 1}
    counts = ("requests_written", "subagents_written", "subagent_requests_written")
    assert [pruned[key] for key in counts] == [full[key] for key in counts] == [6, 4, 84]
    assert {reason: entry["count"] for reason, entry in pruned["problems"].items()} == {
        "subagent_log_without_parent": 1, "subagent_log_without_link": 4, "conversation_without_db_requests": 1}
    assert _traces(tmp_path / "pruned") == _traces(tmp_path / "full")


def test_logs_naming_no_row_leave_a_capture_started_mid_session_whole(tmp_path: Path) -> None:
    """The proxy started after the session's first turn, and the only logs are another session's: every
    row is rebuilt as without logs, not left out as continuing logged turns (nothing written before)."""
    capture, other = tmp_path / "capture", tmp_path / "other"
    generate_example(capture, variant="fixed", scale=0.05)
    generate_example(other, variant="fixed", scale=0.05, seed=8)
    db = capture / "requests.db"
    with sqlite3.connect(db) as connection:
        first_turn = connection.execute("SELECT min(rowid) FROM requests WHERE body LIKE '%\"tools\"%'").fetchone()[0]
        connection.execute("DELETE FROM requests WHERE rowid = ?", (first_turn,))
    unrelated = _build(str(db), "--jsonl-dir", str(other / "jsonl"), "--output-dir", str(tmp_path / "unrelated"))
    _build(str(db), "--db-only", "--output-dir", str(tmp_path / "db-only"))
    assert unrelated["conversations_by_route"] == {"db_only": 1}
    assert "row_continues_logged_turns" not in unrelated["problems"]
    assert (unrelated["requests_written"], unrelated["subagents_written"], unrelated["subagent_requests_written"]) == (5, 4, 84)
    assert _traces(tmp_path / "unrelated") == _traces(tmp_path / "db-only")


@pytest.fixture(scope="module")
def bench_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two concurrent sessions; the capture ends while three sub-agents, spawned in one second, run (their
    Agent calls never logged: `subagent_log_without_link`)."""
    path = tmp_path_factory.mktemp("bench")
    generate_capture(path, target_bytes=30 * 10**6, seed=4)
    return path


def _validate(traces: Path, db: Path, *extra: str) -> dict[str, Any]:
    result = CliRunner().invoke(validate_main, [str(traces), "--db", str(db), *extra, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["versus_api"]


def test_validator_orders_sub_agents_started_in_one_second_as_the_builder(bench_capture: Path, tmp_path: Path) -> None:
    """The anonymized traces' plan is re-derived on the builder's sub-second starts, not the proxy's whole
    seconds (7 requests of two swapped sub-agents unmatched before)."""
    db, logs = bench_capture / "requests.db", bench_capture / "jsonl"
    _build(str(db), "--jsonl-dir", str(logs), "--output-dir", str(tmp_path / "full"))
    versus = _validate(tmp_path / "full", db, "--jsonl-dir", str(logs))
    assert (versus["overall"]["matched"], versus["overall"]["requests"]) == (233, 233)
    assert "request_not_matched" not in versus["problems"]


def test_validator_rederives_a_db_only_run_without_the_logs_it_is_given(bench_capture: Path, tmp_path: Path) -> None:
    """--db-only traces validated with --jsonl-dir: planned from the DB alone, as built, not from the logs
    (whose plan orders the unlogged-call sub-agents otherwise: 226 of 233 matched before)."""
    db = bench_capture / "requests.db"
    _build(str(db), "--db-only", "--output-dir", str(tmp_path / "db-only"))
    versus = _validate(tmp_path / "db-only", db, "--jsonl-dir", str(bench_capture / "jsonl"))
    assert (versus["overall"]["matched"], versus["overall"]["requests"]) == (233, 233)
    assert "request_not_matched" not in versus["problems"]


def test_sub_agent_rows_without_their_parents_rows_are_traced_as_without_logs(tmp_path: Path) -> None:
    """The parent's rows are gone, its sub-agents' rows remain: the logged conversation gives no trace, so
    its sub-agents' rows are traced as --db-only traces them (nothing written before, exit 0)."""
    generate_example(tmp_path, variant="fixed", scale=0.05)
    db = tmp_path / "requests.db"
    with sqlite3.connect(db) as connection:
        connection.execute("DELETE FROM requests WHERE model LIKE 'claude-opus%'")
    logged = _build(str(db), "--jsonl-dir", str(tmp_path / "jsonl"), "--output-dir", str(tmp_path / "logged"))
    _build(str(db), "--db-only", "--output-dir", str(tmp_path / "db-only"))
    assert logged["conversations_by_route"] == {"db_only": 4}
    assert (logged["requests_written"], logged["subagents_written"]) == (84, 0)
    assert {reason: entry["count"] for reason, entry in logged["problems"].items()} == {"conversation_without_db_requests": 1}
    assert _traces(tmp_path / "logged") == _traces(tmp_path / "db-only")


def test_a_db_merged_with_itself_traces_each_api_call_once(tmp_path: Path) -> None:
    """Every row twice, row after row, with the same answers: one API call stored twice is traced once on
    both routes (the DB-only route made 5 tangled conversations of it before, the logged run 2)."""
    generate_example(tmp_path, variant="fixed", scale=0.05)
    db = tmp_path / "twice.db"
    _twice(tmp_path / "requests.db", db, interleaved=True, same_answers=True)
    full = _build(str(db), "--jsonl-dir", str(tmp_path / "jsonl"), "--output-dir", str(tmp_path / "full"))
    db_only = _build(str(db), "--db-only", "--output-dir", str(tmp_path / "db-only"))
    _build(str(tmp_path / "requests.db"), "--db-only", "--output-dir", str(tmp_path / "once"))
    for run in (full, db_only):
        assert run["problems"]["row_repeats_an_api_call"]["count"] == 92
        assert (run["requests_written"], run["subagents_written"], run["subagent_requests_written"]) == (6, 4, 84)
    assert _traces(tmp_path / "db-only") == _traces(tmp_path / "full") == _traces(tmp_path / "once")
