"""DB-only traces: conversations rebuilt from the proxy DB alone (lib/capture/db_conversations.py, docs/routes.md).

Each capture is traced twice with one salt, anonymized: with its logs (DB+JSONL) and with --db-only.
The DB-only run must give the same traces, lanes and requests, the same `in` and hash ids, and `t`
within 1 s (the logs' millisecond times refine the proxy's whole seconds; the DB alone cannot).
"""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bench.synthetic_capture import generate_capture
from build_minimal_traces import main
from lib.synthetic.example import generate_example
from tests.proxy_builders import make_proxy_db, proxy_row
from validate_trace_cache import main as validate_main

SALT = ["--salt", "db-only-suite"]
TRACE_FLAGS = ["--include-subagents", "--anonymize", *SALT]


def _build(*args: str) -> tuple[dict[str, Any], str]:
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def _lanes(directory: Path) -> dict[str, dict[str, list[tuple]]]:
    """Per trace file, per lane: (hash_ids, in, out, t) of each request, in file order."""
    traces = {}
    for path in sorted(directory.glob("*.json")):
        lanes: dict[str, list[tuple]] = {"parent": []}
        for entry in json.loads(path.read_bytes())["requests"]:
            if entry.get("type") == "subagent":
                lanes[entry["agent_id"]] = [(r["hash_ids"], r["in"], r["out"], r["t"]) for r in entry["requests"]]
            else:
                lanes["parent"].append((entry["hash_ids"], entry["in"], entry["out"], entry["t"]))
        traces[path.name] = lanes
    return traces


def _usage(directory: Path) -> list[tuple]:
    """Each sidecar row's API prompt size and usage, in file order."""
    return [(row["api_prompt_tokens"], json.dumps(row["usage"], sort_keys=True))
            for path in sorted((directory / "_sidecar").glob("*.jsonl")) for row in map(json.loads, path.open())]


def _compare(full: Path, db_only: Path) -> float:
    """Asserts equal traces, lanes, requests, `in`, hash ids and API usage; returns the largest `t` difference."""
    assert _usage(full) == _usage(db_only)
    with_logs, without = _lanes(full), _lanes(db_only)
    assert list(with_logs) == list(without)
    worst = 0.0
    for name, lanes in with_logs.items():
        assert {lane: len(rows) for lane, rows in lanes.items()} == {lane: len(rows) for lane, rows in without[name].items()}
        for lane, rows in lanes.items():
            assert [row[:3] for row in rows] == [row[:3] for row in without[name][lane]], (name, lane)
            worst = max([worst, *(abs(a[3] - b[3]) for a, b in zip(rows, without[name][lane]))])
    return worst


def _both_routes(db: Path, jsonl: Path, out: Path, *extra: str) -> tuple[dict, dict, float]:
    full, _ = _build(str(db), "--jsonl-dir", str(jsonl), "--output-dir", str(out / "full"), *TRACE_FLAGS, *extra)
    db_only, _ = _build(str(db), "--db-only", "--output-dir", str(out / "db-only"), *TRACE_FLAGS, *extra)
    return full, db_only, _compare(out / "full", out / "db-only")


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("example")
    generate_example(path, variant="fixed", scale=0.05)
    return path


@pytest.mark.parametrize("variant, artifacts", [("fixed", 0), ("old", 91), ("cleaned", 0)])
def test_example_variants_give_the_full_runs_traces(variant: str, artifacts: int, tmp_path: Path) -> None:
    generate_example(tmp_path, variant=variant, scale=0.05)
    full, db_only, worst_t = _both_routes(tmp_path / "requests.db", tmp_path / "jsonl", tmp_path, "--block-size", "64")
    assert worst_t < 1.0
    assert (full["requests_written"], full["subagents_written"], full["subagent_requests_written"]) == (6, 4, 84)
    assert db_only["route"] == "DB-only" and db_only["conversations_by_route"] == {"db_only": 1}
    assert full["conversations_by_route"] == {"db_jsonl": 1}
    assert db_only["db_route"] == {
        "turn_rows": 90, "not_turn_rows": 2, "artifact_rows": artifacts, "session_headers": 0, "agent_headers": 0,
        "chains": 5, "continuations": 0, "subagents_by_header": 0, "subagents_by_prompt": 4, "subagents_by_window": 0}
    assert db_only["problems"] == full["problems"] == {}


def test_real_proxy_fixture_gives_the_full_runs_traces(fixture_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "requests.db"
    shutil.copyfile(fixture_dir / "requests.db", db)
    full, db_only, worst_t = _both_routes(db, fixture_dir / "jsonl", tmp_path)
    assert round(worst_t, 3) == 0.839
    assert (db_only["requests_written"], db_only["subagents_written"], db_only["subagent_requests_written"]) == (12, 3, 25)
    # The 529 row and the quota probe and title stay out, as with the logs.
    assert db_only["db_route"]["turn_rows"] == 37 and db_only["db_route"]["not_turn_rows"] == 2
    assert db_only["db_route"]["subagents_by_prompt"] == 3


def test_newer_client_headers_name_conversations_and_agents_as_the_logs_do(tmp_path: Path) -> None:
    """X-Claude-Code-Session-Id / -Agent-Id: the DB-only files carry the logged ids, byte for byte."""
    generate_example(tmp_path, variant="fixed", scale=0.05, client_headers=True)
    db, plain = tmp_path / "requests.db", ["--include-subagents", *SALT]
    _build(str(db), "--jsonl-dir", str(tmp_path / "jsonl"), "--output-dir", str(tmp_path / "full"), *plain)
    db_only, _ = _build(str(db), "--db-only", "--output-dir", str(tmp_path / "db-only"), *plain)
    assert db_only["db_route"]["subagents_by_header"] == 4 and db_only["db_route"]["session_headers"] == 5
    names = sorted(path.name for path in (tmp_path / "full").glob("*.json"))
    assert names == ["c7eb779f-2e12-4a2b-bfa9-8e0d73c6d846.json"]
    assert sorted(path.name for path in (tmp_path / "db-only").glob("*.json")) == names
    full_trace = json.loads((tmp_path / "full" / names[0]).read_bytes())
    db_trace = json.loads((tmp_path / "db-only" / names[0]).read_bytes())
    agents = [(e["agent_id"], e["subagent_type"]) for e in full_trace["requests"] if e["type"] == "subagent"]
    assert agents == [(e["agent_id"], e["subagent_type"]) for e in db_trace["requests"] if e["type"] == "subagent"]
    # In the order of the parent's four Agent calls.
    assert [agent for agent, _ in agents] == ["a233e7ebb41fca57c", "ace60a948b726d83f", "a2dc1a62ce7092ea4",
                                              "a882b6eb9dda02305"]


def test_no_logs_found_takes_the_db_only_route_and_says_so(example: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "no-claude-here"))
    db = tmp_path / "requests.db"
    shutil.copyfile(example / "requests.db", db)
    summary, stderr = _build(str(db), "--output-dir", str(tmp_path / "out"), *TRACE_FLAGS)
    assert stderr.splitlines()[-1] == (f"No Claude Code logs at {tmp_path / 'no-claude-here' / 'projects'}: conversations "
                                       f"rebuilt from {db} alone (docs/routes.md#db-only).")
    assert summary["route"] == "DB-only" and summary["traces_written"] == 1
    manifest = json.loads((tmp_path / "out" / "_sidecar" / "manifest.json").read_bytes())
    assert (manifest["route"], manifest["traces"][0]["route"]) == ("DB-only", "DB-only")


def test_logs_of_another_capture_leave_the_db_to_the_db_only_route(example: Path, fixture_dir: Path,
                                                                   tmp_path: Path) -> None:
    db = tmp_path / "requests.db"
    shutil.copyfile(example / "requests.db", db)
    summary, stderr = _build(str(db), "--jsonl-dir", str(fixture_dir / "jsonl"), "--output-dir", str(tmp_path / "out"),
                             *TRACE_FLAGS)
    assert (f"None of the 1 logged conversation(s) names a request of {db}: conversations rebuilt from the DB alone "
            "(docs/routes.md#db-only).") in stderr
    assert summary["conversations_by_route"] == {"db_only": 1}
    # The fixture's conversation names no row of this DB: counted, not traced.
    assert summary["problems"]["conversation_without_db_requests"]["count"] == 1
    assert summary["requests_written"] + summary["subagent_requests_written"] == 90


def test_a_turn_the_logs_lost_is_counted_not_a_conversation_of_its_own(example: Path, tmp_path: Path) -> None:
    """Beside logged conversations, a row no log names whose prompt already carries history continues
    logged turns: it is counted (`row_continues_logged_turns`), never traced as a new conversation."""
    shutil.copytree(example, tmp_path / "capture")
    parent_log = tmp_path / "capture" / "jsonl" / "c7eb779f-2e12-4a2b-bfa9-8e0d73c6d846.jsonl"
    lines = parent_log.read_text().splitlines(keepends=True)
    lost = [line for line in lines if '"type":"assistant"' in line.replace(" ", "")][-1]
    message_id = json.loads(lost)["message"]["id"]
    parent_log.write_text("".join(line for line in lines if json.loads(line).get("message", {}).get("id") != message_id))
    summary, _ = _build(str(tmp_path / "capture" / "requests.db"), "--jsonl-dir", str(parent_log.parent),
                        "--output-dir", str(tmp_path / "out"), *TRACE_FLAGS)
    assert summary["conversations_by_route"] == {"db_jsonl": 1}
    assert summary["problems"]["row_continues_logged_turns"]["count"] == 1
    assert summary["requests_written"] == 5


@pytest.fixture(scope="module")
def bench_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two concurrent sessions with 14 sub-agents over 420 turn rows (bench/synthetic_capture.py)."""
    path = tmp_path_factory.mktemp("bench")
    generate_capture(path, target_bytes=60 * 10**6, seed=4)
    return path


def test_concurrent_sessions_give_the_full_runs_traces(bench_capture: Path, tmp_path: Path) -> None:
    full, db_only, worst_t = _both_routes(bench_capture / "requests.db", bench_capture / "jsonl", tmp_path)
    assert worst_t < 1.0
    assert (db_only["traces_written"], db_only["subagents_written"], db_only["requests_written"]) == (2, 14, 92)
    assert db_only["db_route"]["chains"] == 16 and db_only["db_route"]["subagents_by_prompt"] == 14


def test_a_session_whose_logs_are_gone_comes_back_beside_the_logged_one(bench_capture: Path, tmp_path: Path) -> None:
    """Mixed capture: the session whose logs were pruned is rebuilt from the DB; the other keeps its logs."""
    capture = tmp_path / "capture"
    shutil.copytree(bench_capture, capture, ignore=shutil.ignore_patterns("full", "db-only"))
    full, _ = _build(str(capture / "requests.db"), "--jsonl-dir", str(capture / "jsonl"), "--output-dir",
                     str(tmp_path / "full"), *TRACE_FLAGS)
    sessions = sorted(path for path in (capture / "jsonl").rglob("*.jsonl") if "subagents" not in path.parts)
    pruned = sessions[-1]
    shutil.rmtree(pruned.parent / pruned.stem, ignore_errors=True)
    pruned.unlink()
    mixed, stderr = _build(str(capture / "requests.db"), "--jsonl-dir", str(capture / "jsonl"), "--output-dir",
                           str(tmp_path / "mixed"), *TRACE_FLAGS)
    assert mixed["conversations_by_route"] == {"db_jsonl": 1, "db_only": 1}
    assert "Conversations by route: DB+JSONL 1, DB-only 1." in CliRunner().invoke(main, [
        str(capture / "requests.db"), "--jsonl-dir", str(capture / "jsonl"), "--output-dir", str(tmp_path / "text"),
        *TRACE_FLAGS]).stdout
    assert _compare(tmp_path / "full", tmp_path / "mixed") < 1.0
    manifest = json.loads((tmp_path / "mixed" / "_sidecar" / "manifest.json").read_bytes())
    assert sorted(entry["route"] for entry in manifest["traces"]) == ["DB+JSONL", "DB-only"]


def test_a_compacted_session_is_one_conversation(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """Compaction restarts the prompt with Claude Code's summary: its chain continues the compacted one."""
    capture = tmp_path_factory.mktemp("compacted")
    generate_capture(capture, target_bytes=200 * 10**6, seed=1)
    full, db_only, worst_t = _both_routes(capture / "requests.db", capture / "jsonl", tmp_path)
    assert db_only["db_route"]["continuations"] == 1
    assert (db_only["traces_written"], db_only["requests_written"]) == (full["traces_written"], full["requests_written"]) == (3, 414)
    assert worst_t < 1.0


def test_validator_matches_anonymized_db_only_traces_with_the_db_alone(example: Path, tmp_path: Path) -> None:
    db = tmp_path / "requests.db"
    shutil.copyfile(example / "requests.db", db)
    _build(str(db), "--db-only", "--output-dir", str(tmp_path / "out"), "--block-size", "64", *TRACE_FLAGS)
    result = CliRunner().invoke(validate_main, [str(tmp_path / "out"), "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    (trace,) = json.loads(result.stdout)["versus_api"]["traces"]
    assert (trace["route"], trace["matched"], trace["requests"]) == ("db", 90, 90)


def test_db_only_needs_a_db_and_no_logs(example: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--db-only", "--output-dir", str(tmp_path / "o")])
    assert (result.exit_code, result.stderr.strip()) == (2, "Error: --db-only needs a DB")
    result = CliRunner().invoke(main, [str(example / "requests.db"), "--db-only", "--jsonl-dir", str(example / "jsonl"),
                                       "--output-dir", str(tmp_path / "o")])
    assert (result.exit_code, result.stderr.strip()) == (
        2, "Error: --db-only reads no logs: drop --jsonl-dir, or --db-only to use them")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("variant", ["fixed", "cleaned"])
def test_an_agent_call_the_capture_ends_on_is_read_from_the_answer(variant: str, tmp_path: Path) -> None:
    """The capture stops while the parent waits on its agents: the calls are only in the parent's answer
    (a stream's chunks, or a non-streaming body), and the sub-agents still become its lanes."""
    generate_example(tmp_path, variant=variant, scale=0.05)
    db = tmp_path / "requests.db"
    with sqlite3.connect(db) as connection:
        # Every parent row after the one that called the agents (the rows with 7 messages and more).
        rows = [rowid for rowid, body in connection.execute("SELECT rowid, body FROM requests")
                if len(json.loads(body)["messages"]) >= 7 and len(json.loads(body).get("tools", [])) == 16]
        connection.executemany("DELETE FROM requests WHERE rowid = ?", [(rowid,) for rowid in rows])
    summary, _ = _build(str(db), "--db-only", "--output-dir", str(tmp_path / "out"), *TRACE_FLAGS)
    assert (summary["requests_written"], summary["subagents_written"], summary["subagent_requests_written"]) == (3, 4, 84)
    assert summary["db_route"]["subagents_by_prompt"] == 4


@pytest.mark.parametrize("rewrite, by_prompt, by_window", [
    (lambda text: "Task from the lead agent:\n" + text, 4, 0),  # the prompt inside a longer text
    (lambda text: f"Explore part {len(text)}", 0, 4),  # no trace of the prompt
])
def test_sub_agents_whose_prompt_is_not_their_first_message(rewrite: Any, by_prompt: int, by_window: int,
                                                            tmp_path: Path) -> None:
    """A client that wraps the Agent prompt is still matched by it; one whose sub-agents show no trace of
    it has them join, by their spawn window, the one conversation waiting on Agent calls."""
    generate_example(tmp_path, variant="fixed", scale=0.05)
    db = tmp_path / "requests.db"
    with sqlite3.connect(db) as connection:
        for rowid, body in connection.execute("SELECT rowid, body FROM requests").fetchall():
            parsed = json.loads(body)
            first = parsed["messages"][0]["content"]
            if len(parsed.get("tools", [])) == 11 and isinstance(first, list):
                for block in first:
                    if block.get("type") == "text":
                        block["text"] = rewrite(block["text"])
                connection.execute("UPDATE requests SET body = ? WHERE rowid = ?", (json.dumps(parsed), rowid))
    _build(str(db), "--jsonl-dir", str(tmp_path / "jsonl"), "--output-dir", str(tmp_path / "full"), *TRACE_FLAGS)
    db_only, _ = _build(str(db), "--db-only", "--output-dir", str(tmp_path / "db-only"), *TRACE_FLAGS)
    assert (db_only["db_route"]["subagents_by_prompt"], db_only["db_route"]["subagents_by_window"]) == (by_prompt, by_window)
    # The same lanes; by window, a lane may take another call's place in the file (the calls look alike).
    full, without = _lanes(tmp_path / "full")["trace_0001.json"], _lanes(tmp_path / "db-only")["trace_0001.json"]
    assert sorted(len(rows) for rows in full.values()) == sorted(len(rows) for rows in without.values())
    assert [row[1] for row in full["parent"]] == [row[1] for row in without["parent"]]
    if not by_window:
        assert _compare(tmp_path / "full", tmp_path / "db-only") < 1.0


def test_visualizer_reports_db_only_conversations_as_with_the_logs(bench_capture: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Without logs, `--conversation-id all` writes one report per DB-only conversation, with the figures
    the logged conversations give."""
    from complete_cache_visualizer import main as visualizer_main

    def reports(db: Path, *extra: str) -> list[tuple]:
        result = CliRunner().invoke(visualizer_main, [str(db), "--conversation-id", "all", "--text-only", "--json",
                                                      "--output-dir", str(db.parent / "out"), *extra])
        assert result.exit_code == 0, result.output
        return sorted((r["requests"], round(r["api_hit_rate"], 6), round(r["api_model_hit_rate"], 6),
                       round(r["ttl_model_hit_rate"], 6)) for r in json.loads(result.stdout)["reports"])

    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "no-claude"))
    for name in ("logged", "db-only"):
        (tmp_path / name).mkdir()
        shutil.copyfile(bench_capture / "requests.db", tmp_path / name / "requests.db")
    logged = reports(tmp_path / "logged" / "requests.db", "--projects-path", str(bench_capture / "jsonl"))
    db_only = reports(tmp_path / "db-only" / "requests.db")
    assert db_only == logged and [r[0] for r in logged] == [137, 283]


def _with_last_parent_body(example: Path, tmp_path: Path, edit: Any) -> Path:
    """A copy of the example DB whose last parent row (the last body naming the Agent tool) has `edit(body)`."""
    db = tmp_path / "requests.db"
    shutil.copyfile(example / "requests.db", db)
    with sqlite3.connect(db) as connection:
        rowid, body = connection.execute("SELECT rowid, body FROM requests WHERE body LIKE '%Agent%' "
                                         "ORDER BY rowid DESC LIMIT 1").fetchone()
        connection.execute("UPDATE requests SET body = CAST(? AS TEXT) WHERE rowid = ?", (edit(body), rowid))
    return db


def test_a_body_nested_deeper_than_orjson_writes_is_counted_not_fatal(example: Path, tmp_path: Path) -> None:
    def nested(body: str) -> str:
        parsed = json.loads(body)
        deep: Any = "leaf"
        for _ in range(300):
            deep = [deep]
        parsed["messages"][-1]["content"].append({"type": "text", "text": "x", "extra": deep})
        return json.dumps(parsed)

    db = _with_last_parent_body(example, tmp_path, nested)
    summary, _ = _build(str(db), "--db-only", "--output-dir", str(tmp_path / "out"), *TRACE_FLAGS)
    # Left out once (the hashing would count it too, but it never gets the row), the rest traced.
    assert summary["problems"] == {"body_too_deep": {"count": 1, "examples": []}}
    assert (summary["requests_written"], summary["subagent_requests_written"]) == (5, 84)


def _turn_row(request_id: str, at: str, messages: list, answer: list, stop: str, completed: str) -> dict:
    body = {"model": "claude-opus-4-6", "max_tokens": 32000, "stream": False, "messages": messages,
            "system": [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."}],
            "tools": [{"name": "Bash", "input_schema": {}}, {"name": "Read", "input_schema": {}}]}
    response = {"statusCode": 200, "headers": {}, "isStreaming": False, "responseTime": 900, "completedAt": completed,
                "body": {"id": f"msg_{request_id}", "type": "message", "role": "assistant", "model": "claude-opus-4-6",
                         "content": answer, "stop_reason": stop,
                         "usage": {"input_tokens": 10, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 90,
                                   "output_tokens": 5}}}
    return proxy_row(request_id, at, body=json.dumps(body), response=json.dumps(response))


def test_a_compaction_mid_tool_loop_continues_the_session_whose_calls_it_answers(tmp_path: Path) -> None:
    """Two sessions of one signature; A is compacted while its Bash call runs, B ends later. The summary's
    prompt answers A's call, so it continues A, not the latest-ended B."""
    def user(text: str) -> dict:
        return {"role": "user", "content": [{"type": "text", "text": text}]}

    def said(text: str) -> dict:
        return {"role": "assistant", "content": [{"type": "text", "text": text}]}

    call = {"type": "tool_use", "id": "toolu_A", "name": "Bash", "input": {"command": "make"}}
    summary = "This session is being continued from a previous conversation that ran out of context. Summary: …"
    rows = [
        _turn_row("a000000000000001", "2026-12-01T10:00:00Z", [user("task A")], [{"type": "text", "text": "ok A"}],
                  "end_turn", "2026-12-01T10:00:02Z"),
        _turn_row("b000000000000001", "2026-12-01T10:00:01Z", [user("task B")], [{"type": "text", "text": "ok B"}],
                  "end_turn", "2026-12-01T10:00:03Z"),
        _turn_row("a000000000000002", "2026-12-01T10:00:05Z", [user("task A"), said("ok A"), user("more A")], [call],
                  "tool_use", "2026-12-01T10:00:06Z"),
        _turn_row("b000000000000002", "2026-12-01T10:00:07Z", [user("task B"), said("ok B"), user("more B")],
                  [{"type": "text", "text": "done B"}], "end_turn", "2026-12-01T10:00:08Z"),
        _turn_row("c000000000000001", "2026-12-01T10:00:09Z", [{"role": "user", "content": [
            {"type": "text", "text": summary}, {"type": "tool_result", "tool_use_id": "toolu_A", "content": "built"}]}],
            [{"type": "text", "text": "built, continuing"}], "end_turn", "2026-12-01T10:00:10Z"),
    ]
    db = make_proxy_db(tmp_path / "requests.db", rows)
    summary, _ = _build(str(db), "--db-only", "--output-dir", str(tmp_path / "out"), *SALT)
    assert summary["db_route"]["continuations"] == 1 and summary["traces_written"] == 2
    manifest = json.loads((tmp_path / "out" / "_sidecar" / "manifest.json").read_bytes())
    assert {entry["conversation_id"]: entry["requests"] for entry in manifest["traces"]} == {
        "db-a000000000000001": 3, "db-b000000000000001": 2}


def test_a_body_with_invalid_utf8_is_read_with_replacement_characters(example: Path, tmp_path: Path) -> None:
    """Bodies are read as bytes; one with an invalid UTF-8 byte is still chained, as the other readers keep it."""
    db = _with_last_parent_body(example, tmp_path, lambda body: body.encode().replace(b"Thoroughly", b"Thorough\xffly", 1))
    summary, _ = _build(str(db), "--db-only", "--output-dir", str(tmp_path / "out"), *TRACE_FLAGS)
    assert (summary["requests_written"], summary["subagent_requests_written"]) == (6, 84)
    assert summary["problems"]["invalid_utf8_body"]["count"] == 1
