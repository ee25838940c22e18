"""Live capture: the tools run repeatedly while another process writes like the proxy (docs/inputs.md#reading-a-live-database,
docs/reliability.md#live-captures).

tests/live_writer.py replays a generated capture into a fresh proxy DB (INSERT with response NULL,
UPDATE of `response` later, rollback journal, 5 s busy timeout) while the indexers and the trace
builder run again and again on the same file, their index tables in it too. Nothing may fail
with "database is locked" on either side, no row may be lost or counted twice, and the final
incremental index must equal a fresh rebuild.
"""
from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

from lib.synthetic.proxy_db_writer import CaptureWriter
from lib.synthetic.example import generate_example
from tests.tool_runner import PYTHON, ROOT, TOOL_BY_NAME, ToolRun, Workspace, run_tool

WRITER = ROOT / "tests" / "live_writer.py"
LIVE_TOOLS = ("message_index", "conversation_index", "traces")
MIN_ROUNDS = 3
PAUSE_MS = "80"


def _table(db: Path, table: str, order: str) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()


def _request_ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        return [row[0] for row in connection.execute("SELECT id FROM requests ORDER BY rowid")]


def _assert_clean(run: ToolRun, name: str) -> None:
    assert run.exit_code == 0, f"{name}: {run.describe()}"
    assert "locked" not in run.stderr, f"{name}: {run.stderr}"


def _check_round(workspace: Workspace, runs: dict[str, ToolRun]) -> None:
    """Mid-capture: every indexed row is a real row, once; every trace request is indexed as answered."""
    indexed = runs["message_index"].summary["rows_total"]
    with sqlite3.connect(workspace.db) as connection:
        index_ids = [row[0] for row in connection.execute("SELECT request_id FROM message_index")]
        present = {row[0] for row in connection.execute("SELECT id FROM requests")}
        kinds = dict(connection.execute("SELECT request_id, kind FROM message_index"))
    # The trace builder may have indexed newer rows since the message index run: never fewer.
    assert len(index_ids) == len(set(index_ids)) >= indexed
    assert set(index_ids) <= present
    written = runs["traces"].summary["requests_written"] + runs["traces"].summary["subagent_requests_written"]
    assert written <= sum(1 for kind in kinds.values() if kind == "ok")


def test_tools_keep_up_with_a_live_capture(tmp_path: Path) -> None:
    """Repeated runs during the capture, then the incremental index equals a fresh rebuild."""
    source = tmp_path / "source"
    generate_example(source, variant="fixed", seed=11, scale=0.05)
    live = Workspace(db=tmp_path / "live" / "requests.db", jsonl=tmp_path / "live" / "jsonl", out=tmp_path / "live" / "out")
    shutil.copytree(source / "jsonl", live.jsonl)
    CaptureWriter(live.db).close()  # the proxy's schema, no rows yet, default journal

    writer = subprocess.Popen([PYTHON, str(WRITER), str(source / "requests.db"), str(live.db), "--seed", "3",
                               "--pause-ms", PAUSE_MS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rounds = pending_seen = 0
    try:
        while writer.poll() is None or rounds < MIN_ROUNDS:
            runs = {name: run_tool(TOOL_BY_NAME[name], live) for name in LIVE_TOOLS}
            for name, run in runs.items():
                _assert_clean(run, name)
            _check_round(live, runs)
            pending_seen += runs["message_index"].summary["pending"]
            rounds += 1
    finally:
        stdout, stderr = writer.communicate(timeout=60)
    assert writer.returncode == 0, stderr
    assert int(stdout) == len(_request_ids(source / "requests.db"))

    final = {name: run_tool(TOOL_BY_NAME[name], live) for name in LIVE_TOOLS}
    for name, run in final.items():
        _assert_clean(run, name)
    assert _request_ids(live.db) == _request_ids(source / "requests.db")
    assert final["message_index"].summary["pending"] == 0

    fresh_index = tmp_path / "fresh-index.sqlite"
    for name, extra in (("message_index", ("--rebuild",)), ("conversation_index", ("--rebuild",))):
        _assert_clean(run_tool(TOOL_BY_NAME[name], live, "--index-db", str(fresh_index), *extra), name)
    assert _table(live.db, "message_index", "request_id") == _table(fresh_index, "message_index", "request_id")
    order = "conversation_id, agent_id, message_id"
    assert _table(live.db, "conversation_index", order) == _table(fresh_index, "conversation_index", order)

    # The traces written from the live DB equal those of the finished capture, byte for byte.
    done = Workspace(db=tmp_path / "done" / "requests.db", jsonl=source / "jsonl", out=tmp_path / "done" / "out")
    done.db.parent.mkdir()
    shutil.copyfile(source / "requests.db", done.db)
    _assert_clean(run_tool(TOOL_BY_NAME["traces"], done), "traces")
    assert {p.name: p.read_bytes() for p in live.traces.glob("*.json")} == \
        {p.name: p.read_bytes() for p in done.traces.glob("*.json")}
    assert rounds >= MIN_ROUNDS
    # Some rounds indexed rows still waiting for their response: the pending → arrived path ran.
    assert pending_seen > 0, rounds
