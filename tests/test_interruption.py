"""Interruption: SIGKILL each tool at random points, then re-run (docs/reliability.md#interruption-and-re-runs).

Scenario: a capture was processed once (the "old" outputs and index tables); ten more rows
arrived; each tool re-runs as a subprocess and is killed after a seeded random delay. Right
after the kill every output file is byte-for-byte the old or the new complete version (temp
files may remain only as hidden dot-files), JSON parses, the manifest lists only files that
exist, and the index's resume point never claims rows it has not stored. A re-run then
produces exactly what an uninterrupted run produces.
"""
from __future__ import annotations

import json
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lib.synthetic.example import generate_example
from tests.tool_runner import TOOLS, Tool, Workspace, run_tool, tool_params

NEW_ROWS = 10
ATTEMPTS = 4
SEED = 20260325
# The visualizer stamps its report with the source path and the minute it was generated.
_VOLATILE = re.compile(rb"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC")
_DB_PATH = re.compile(rb"/[^\s<>\"']*/requests\.db")
# The conversation index stores absolute JSONL paths, which differ per workspace copy.
_JSONL_DIR = re.compile(r"^.*/jsonl/")
_TEMP_FILE = re.compile(r"^\..+\.tmp$")


def _extra(tool: Tool, workspace: Workspace) -> list[str]:
    """Options that make the tool write a file it would otherwise only print."""
    if tool.name == "message_index":
        return ["--json-out", str(workspace.out / "message_id_index.json")]
    if tool.name == "validator":
        return ["--csv", str(workspace.out / "validation.csv")]
    return []


def _workspace(root: Path) -> Workspace:
    return Workspace(db=root / "requests.db", jsonl=root / "jsonl", out=root / "out")


def _copy_tree(source: Path, target: Path) -> Workspace:
    shutil.copytree(source, target)
    return _workspace(target)


def _outputs(workspace: Workspace) -> dict[str, bytes]:
    """Every visible output file (path relative to out/) with volatile stamps and paths normalized."""
    return {str(path.relative_to(workspace.out)): _DB_PATH.sub(b"<db>", _VOLATILE.sub(b"generated <time>", path.read_bytes()))
            for path in sorted(workspace.out.rglob("*")) if path.is_file() and not path.name.startswith(".")}


def _hidden_files(workspace: Workspace) -> list[str]:
    return [path.name for path in workspace.out.rglob(".*") if path.is_file()] if workspace.out.is_dir() else []


def _tables(db: Path) -> dict[str, list[tuple]]:
    """Our index tables (never the proxy's), sorted, for equality with an uninterrupted run."""
    with sqlite3.connect(db) as connection:
        names = [row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN "
            "('message_index', 'conversation_index', 'subagent_links', 'index_state')")]
        # `jsonl_files` holds absolute paths and mtimes of each workspace: compare it apart.
        return {name: sorted((tuple(_JSONL_DIR.sub("<jsonl>/", v) if isinstance(v, str) else v for v in row)
                              for row in connection.execute(f"SELECT * FROM {name}")), key=repr) for name in names}


@dataclass(frozen=True)
class Scenario:
    """The start state (old outputs + new rows) and each tool's uninterrupted result on it."""

    start: Path
    old: dict[str, bytes]
    expected: dict[str, dict[str, bytes]]
    expected_tables: dict[str, dict[str, dict[str, list[tuple]]]]
    durations_s: dict[str, float]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """Run the pipeline on the capture minus its last rows, then add the rows back: the start state."""
    root = tmp_path_factory.mktemp("interruption")
    generate_example(root / "source", variant="fixed", seed=5, scale=0.05)
    old = _copy_tree(root / "source", root / "start")
    with sqlite3.connect(old.db) as connection:
        connection.execute("DELETE FROM requests WHERE rowid > (SELECT MAX(rowid) FROM requests) - ?", (NEW_ROWS,))
    for tool in TOOLS:
        if tool.is_present:
            run = run_tool(tool, old, *_extra(tool, old))
            assert run.exit_code == 0, f"{tool.name}: {run.describe()}"
    with sqlite3.connect(old.db) as connection:
        connection.execute("ATTACH DATABASE ? AS source", (str(root / "source" / "requests.db"),))
        connection.execute("INSERT INTO requests (rowid, id, timestamp, method, endpoint, headers, body, user_agent,"
                           " content_type, prompt_grade, response, model, original_model, routed_model, created_at)"
                           " SELECT rowid, * FROM source.requests WHERE rowid > (SELECT MAX(rowid) FROM main.requests)")
    expected, tables, durations = {}, {}, {}
    for tool in TOOLS:
        if not tool.is_present:
            continue
        done = _copy_tree(old.db.parent, root / f"expected-{tool.name}")
        started = time.monotonic()
        completed = subprocess.run(tool.command(done) + _extra(tool, done), capture_output=True, text=True)
        durations[tool.name] = time.monotonic() - started
        assert completed.returncode == 0, completed.stderr
        expected[tool.name] = _outputs(done)
        tables[tool.name] = _tables(done.db)
    return Scenario(old.db.parent, _outputs(old), expected, tables, durations)


def _check_after_kill(workspace: Workspace, old: dict[str, bytes], new: dict[str, bytes]) -> None:
    """Each visible file is the old or the new complete version; the manifest names only real files."""
    for name in _hidden_files(workspace):
        # Only the atomic writer's own temp files may be left behind, hidden (lib/atomic.py).
        assert _TEMP_FILE.match(name), name
    for name, data in _outputs(workspace).items():
        assert data in (old.get(name), new.get(name)), f"{name} is neither the old nor the new version"
    for name in old:
        # A file disappears only when the new run no longer writes it (stale-file removal).
        assert name in _outputs(workspace) or name not in new, f"{name} vanished"
    manifest = workspace.out / "traces" / "_sidecar" / "manifest.json"
    if manifest.is_file():
        for entry in json.loads(manifest.read_bytes())["traces"]:
            for key in ("file", "sidecar"):
                assert entry[key] is None or (workspace.traces / entry[key]).is_file(), entry[key]


def _check_index(db: Path) -> None:
    """The DB is intact and the message index's resume point never runs ahead of its rows."""
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "message_index" not in tables or "index_state" not in tables:
            return
        state = dict(connection.execute("SELECT key, value FROM index_state"))
        last_rowid = int(state.get("message_index.last_rowid", 0))
        missing = connection.execute(
            "SELECT COUNT(*) FROM requests WHERE rowid <= ? AND id NOT IN (SELECT request_id FROM message_index)",
            (last_rowid,)).fetchone()[0]
        assert missing == 0, f"{missing} rows at or below the resume point {last_rowid} are not indexed"


def _kill_after(command: list[str], delay_s: float) -> bool:
    """Start the command, SIGKILL it after `delay_s`; True when it was still running (really killed)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=delay_s)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


@pytest.mark.parametrize("tool", tool_params())
def test_killed_tool_leaves_old_or_new_outputs_and_rerun_completes(tool: Tool, scenario: Scenario, tmp_path: Path) -> None:
    """SIGKILL at seeded random points; outputs stay whole; the re-run equals an uninterrupted run."""
    rng = random.Random(f"{SEED}-{tool.name}")
    new = scenario.expected[tool.name]
    kills = 0
    for attempt in range(ATTEMPTS):
        workspace = _copy_tree(scenario.start, tmp_path / f"attempt-{attempt}")
        # Early, middle and late points of a normal run (interpreter start-up included).
        delay_s = scenario.durations_s[tool.name] * rng.uniform(attempt / ATTEMPTS, (attempt + 1) / ATTEMPTS)
        kills += _kill_after(tool.command(workspace) + _extra(tool, workspace), delay_s)
        _check_after_kill(workspace, scenario.old, new)
        _check_index(workspace.db)
        rerun = run_tool(tool, workspace, *_extra(tool, workspace))
        assert rerun.exit_code == 0, rerun.describe()
        assert _outputs(workspace) == new
        assert _tables(workspace.db) == scenario.expected_tables[tool.name]
    assert kills, "every run finished before its kill: the delays are too long"
