"""Hostile inputs at the boundary, kills and runaways (issue 14: crashes, recovery, orphans).

Every case here crashed a tool with a traceback, hung it, or left processes behind before the
fix. Now: a bad row is counted under a named reason and the run goes on; an unusable input or
output is one line `Error: <file>: <problem>` and exit 2; a killed tool leaves no process and no
unreadable DB behind, and its re-run finishes; `--workers` never exceeds the CPU count.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import shutil
import signal
import sqlite3
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lib.capture.proxy_reader import checked_facts
from lib.capture.response_parser import ResponseFacts
from lib.db import open_proxy_db
from lib.synthetic.example import generate_example
from lib.worker_guard import cpu_limit
from tests.tool_runner import PYTHON, ROOT, TOOL_BY_NAME, TOOLS, Tool, ToolRun, Workspace, run_tool, tool_params

SCALE = 0.05
DB_TOOLS = ("message_index", "conversation_index", "traces", "visualizer")
# orjson reads 1024 levels of nesting but writes only 254.
TOO_DEEP = 1000
# Enough rows for the message index to parse in a pool (PARALLEL_MIN_ROWS) and to run a while.
MANY_ROWS = 3_000
EXIT_WAIT_S = 2.0
KILL_ROUNDS = 4
JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")


# --- the capture, and what an undisturbed pipeline makes of it -------------------------------------


@dataclass(frozen=True)
class Capture:
    source: Path
    baseline: Path  # the source after every tool ran on it: index tables and outputs
    grown: Path  # the source grown to MANY_ROWS rows, not indexed
    parent_ids: list[str]
    trace_ids: frozenset[str]


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Capture:
    """The example generator's streaming capture at --scale 0.05, and the parent turns its traces hold."""
    root = tmp_path_factory.mktemp("boundary")
    generate_example(root / "source", variant="fixed", seed=7, scale=SCALE)
    workspace = _copy(root / "source", root / "baseline")
    for tool in TOOLS:
        run = run_tool(tool, workspace)
        assert run.exit_code == 0, f"{tool.name}: {run.describe()}"
    rows = _sidecar_rows(workspace)
    grown = _copy(root / "source", root / "grown")
    _grown(grown, MANY_ROWS)
    return Capture(root / "source", root / "baseline", root / "grown",
                   [row["request_id"] for row in rows if row["lane"] == "parent"],
                   frozenset(row["request_id"] for row in rows))


def _sidecar_rows(workspace: Workspace) -> list[dict[str, Any]]:
    return [row for sidecar in sorted((workspace.traces / "_sidecar").glob("*.jsonl"))
            for row in map(json.loads, sidecar.read_text().splitlines())]


def _copy(source: Path, target: Path) -> Workspace:
    target.mkdir(parents=True)
    shutil.copyfile(source / "requests.db", target / "requests.db")
    shutil.copytree(source / "jsonl", target / "jsonl")
    if (source / "out").is_dir():
        shutil.copytree(source / "out", target / "out")
    return Workspace(db=target / "requests.db", jsonl=target / "jsonl", out=target / "out")


@pytest.fixture
def workspace(capture: Capture, tmp_path: Path) -> Workspace:
    return _copy(capture.source, tmp_path / "ws")


@pytest.fixture
def indexed(capture: Capture, tmp_path: Path) -> Workspace:
    """A copy of the capture with its indexes and every tool's outputs up to date."""
    return _copy(capture.baseline, tmp_path / "indexed")


def _target(capture: Capture) -> str:
    return capture.parent_ids[len(capture.parent_ids) // 2]


def _counts(run: ToolRun) -> dict[str, int]:
    return {reason: detail["count"] for reason, detail in run.problems.items()}


def _one_error_line(run: ToolRun | subprocess.CompletedProcess, *phrases: str) -> str:
    """Assert exit 2 ending in exactly one `Error:` line (no traceback) holding every phrase; return it.

    Notes before it ("No message index yet: building it now") are the run's progress under --json.
    """
    code = run.exit_code if isinstance(run, ToolRun) else run.returncode
    stderr = run.stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, f"exit {code}: {stderr[-2000:]!r}"
    assert "Traceback" not in stderr and lines, stderr[-2000:]
    assert lines[-1].startswith("Error: ") and sum(line.startswith("Error") for line in lines) == 1, stderr[-2000:]
    for phrase in phrases:
        assert phrase in lines[-1], lines[-1]
    return lines[-1]


def _edit_row(db: Path, request_id: str, column: str, edit: Any) -> None:
    with sqlite3.connect(db) as connection:
        value = connection.execute(f"SELECT {column} FROM requests WHERE id = ?", (request_id,)).fetchone()[0]
        connection.execute(f"UPDATE requests SET {column} = ? WHERE id = ?", (edit(value), request_id))


def _nest_last_message(levels: int) -> Any:
    """A body edit: the last message's content nested `levels` lists deep (built as text: json.dumps recurses)."""
    def edit(body: str) -> str:
        parsed = json.loads(body)
        parsed["messages"][-1]["content"] = [{"type": "text", "text": "deep", "nested": "DEEP"}]
        return json.dumps(parsed).replace('"DEEP"', "[" * levels + '"x"' + "]" * levels)
    return edit


def _set_start_usage(key: str, value: Any) -> Any:
    """A response edit: `message_start`'s usage[key] = value (the prompt-side counts come from there)."""
    def edit(response: str) -> str:
        parsed = json.loads(response)
        chunks = parsed["streamingChunks"]
        index = next(i for i, chunk in enumerate(chunks) if '"message_start"' in chunk)
        event = json.loads(chunks[index][len("data: "):])
        event["message"]["usage"][key] = value
        chunks[index] = "data: " + json.dumps(event)
        return json.dumps(parsed)
    return edit


def _set_response_field(key: str, value: Any) -> Any:
    def edit(response: str) -> str:
        parsed = json.loads(response)
        parsed[key] = value
        return json.dumps(parsed)
    return edit


def _index_row(db: Path, request_id: str, *columns: str) -> tuple:
    with sqlite3.connect(db) as connection:
        return connection.execute(f"SELECT {', '.join(columns)} FROM message_index WHERE request_id = ?",
                                  (request_id,)).fetchone()


# --- crashes: bad rows are counted and skipped ------------------------------------------------------


@pytest.mark.parametrize("levels", [300, TOO_DEEP])
def test_a_body_nested_deeper_than_orjson_writes_is_counted_and_skipped(levels: int, capture: Capture, workspace: Workspace):
    """Was `TypeError: Recursion limit reached` in four tools (the prompt key re-serializes the body)."""
    rid = _target(capture)
    _edit_row(workspace.db, rid, "body", _nest_last_message(levels))
    runs = {tool.name: run_tool(tool, workspace) for tool in TOOLS}
    for name, run in runs.items():
        assert run.exit_code == 0, f"{name}: {run.describe()}"
    assert _counts(runs["message_index"])["request_body_too_deep"] == 1
    assert _counts(runs["traces"])["body_too_deep"] == 1
    assert _counts(runs["visualizer"])["body_too_deep"] == 1
    # Only that request leaves the traces; the row keeps its response facts; only the twin key is unknown.
    assert {row["request_id"] for row in _sidecar_rows(workspace)} == capture.trace_ids - {rid}
    assert _index_row(workspace.db, rid, "kind", "prompt_key") == ("ok", None)


def test_a_trace_file_nested_300_deep_is_a_schema_problem_not_a_crash(indexed: Workspace):
    workspace = indexed
    trace = next(workspace.traces.glob("*.json"))
    document = json.loads(trace.read_text())
    document["requests"][1]["input_types"] = "DEEP"
    trace.write_text(json.dumps(document).replace('"DEEP"', "[" * 300 + '"text"' + "]" * 300))
    run = run_tool(TOOL_BY_NAME["validator"], workspace)
    assert run.exit_code == 1 and run.exception is None, run.describe()
    assert {"problem": f"{trace.name}: requests: nested deeper than 254 levels", "rule": "nested_too_deep",
            "severity": "error"} in run.summary["schema"]["problems"]


@pytest.mark.parametrize("value, reason", [(2**64 - 1, "implausible_usage"), (2**63 - 1, "implausible_usage"),
                                           (10_000_001, "implausible_usage"), (-5, "negative_usage")],
                         ids=["2^64-1", "2^63-1", "10M+1", "negative"])
def test_a_usage_count_out_of_range_is_counted_and_dropped(value: int, reason: str, capture: Capture, workspace: Workspace):
    """2^64-1 was an OverflowError storing into SQLite in four tools; with --token-count api a huge
    count made a block key per 64 tokens (2^63-1: memory ran out)."""
    rid = _target(capture)
    _edit_row(workspace.db, rid, "response", _set_start_usage("cache_read_input_tokens", value))
    runs = {tool.name: run_tool(tool, workspace, *(["--token-count", "api"] if tool.name == "traces" else []))
            for tool in TOOLS}
    for name, run in runs.items():
        assert run.exit_code == 0, f"{name}: {run.describe()}"
    assert _counts(runs["message_index"])[reason] == 1
    assert _counts(runs["traces"])[reason] == 1
    assert _index_row(workspace.db, rid, "cache_read_tokens", "problems") == (None, f'["{reason}"]')


@pytest.mark.parametrize("field, value, reason", [
    ("responseTime", 1e308, "implausible_response_time"),
    ("responseTime", 2**63 - 1, "implausible_response_time"),
    ("responseTime", -250, "negative_response_time"),
], ids=["1e308", "2^63-1", "negative"])
def test_a_response_time_out_of_range_is_counted_and_dropped(field: str, value: float, reason: str, capture: Capture,
                                                             workspace: Workspace):
    """`responseTime: 1e308` was `Integer exceeds 64-bit range` in the trace writer."""
    rid = _target(capture)
    _edit_row(workspace.db, rid, "response", _set_response_field(field, value))
    runs = {tool.name: run_tool(tool, workspace) for tool in TOOLS}
    for name, run in runs.items():
        assert run.exit_code == 0, f"{name}: {run.describe()}"
    assert _counts(runs["message_index"])[reason] == 1
    assert _counts(runs["traces"])[reason] == 1
    assert _index_row(workspace.db, rid, "api_time_s") == (None,)


@pytest.mark.parametrize("field, value, reason", [
    ("output_tokens", 10_000_000, None),
    ("output_tokens", 10_000_001, "implausible_usage"),
    ("input_tokens", -1, "negative_usage"),
    ("api_time_s", 2**32 / 1000, None),
    ("api_time_s", 2**32 / 1000 + 1, "implausible_response_time"),
    ("api_time_s", float("nan"), "implausible_response_time"),
    ("api_time_s", -0.5, "negative_response_time"),
    ("ttft_s", float("inf"), "implausible_ttft"),
    ("ttft_s", -1.0, "negative_ttft"),
], ids=["10M", "10M+1", "usage-negative", "2^32ms", "above-2^32ms", "time-nan", "time-negative", "ttft-inf",
        "ttft-negative"])
def test_one_range_rule_for_every_capture_number(field: str, value: float, reason: str | None):
    """Below 0 is `negative_<what>`; not finite or above the bound is `implausible_<what>`; the bound itself is kept."""
    facts = checked_facts(ResponseFacts(kind="ok", **{field: value}))
    assert (getattr(facts, field), facts.problems) == ((value, ()) if reason is None else (None, (reason,)))


# --- crashes: unusable databases ------------------------------------------------------------------


def _db_tool_run(name: str, workspace: Workspace, *extra: str) -> ToolRun:
    return run_tool(TOOL_BY_NAME[name], workspace, *extra)


@pytest.mark.parametrize("name", DB_TOOLS)
def test_a_corrupt_page_is_one_error_line(name: str, workspace: Workspace):
    data = bytearray(workspace.db.read_bytes())
    page = 4096
    middle = len(data) // page // 2
    data[middle * page:(middle + 3) * page] = b"\xa5" * (3 * page)
    workspace.db.write_bytes(bytes(data))
    _one_error_line(_db_tool_run(name, workspace), f"{workspace.db}: database disk image is malformed")


@pytest.mark.parametrize("name", DB_TOOLS)
def test_an_index_db_that_is_not_sqlite_is_one_error_line(name: str, workspace: Workspace):
    index = workspace.db.parent / "index.sqlite"
    index.write_text("not a database\n" * 200)
    before = index.read_bytes()
    _one_error_line(_db_tool_run(name, workspace, "--index-db", str(index)), f"{index}: not a SQLite database")
    assert index.read_bytes() == before


@pytest.mark.parametrize("lock", ["BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"])
@pytest.mark.parametrize("name", DB_TOOLS)
def test_a_lock_held_past_the_busy_timeout_is_one_error_line(name: str, lock: str, workspace: Workspace,
                                                             monkeypatch: pytest.MonkeyPatch):
    """The 30 s busy timeout, shortened: another process holds the write lock throughout."""
    monkeypatch.setattr("lib.db.BUSY_TIMEOUT_MS", 200)
    holder = sqlite3.connect(workspace.db, isolation_level=None)
    holder.execute(lock)
    try:
        run = _db_tool_run(name, workspace)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    _one_error_line(run, f"{workspace.db}: database is locked", "retry")


def _read_only(directory: Path, command: list[str]) -> list[str]:
    """`command` seeing `directory` as read-only storage: as root (whom mode bits do not stop), in a
    private mount namespace where it is bind-mounted read-only (EROFS); otherwise by its mode bits."""
    if os.geteuid() != 0:
        for item in [directory, *directory.rglob("*")]:
            item.chmod(item.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        return command
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare(1) and mount(8) to make a read-only mount")
    remount = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    return ["unshare", "--mount", "sh", "-c", remount, "sh", str(directory), *command]


def _writable_again(directory: Path) -> None:
    for item in [directory, *directory.rglob("*")]:
        item.chmod(item.stat().st_mode | stat.S_IWUSR)


@pytest.mark.parametrize("name", DB_TOOLS)
def test_a_db_on_read_only_storage_without_index_db_is_one_error_line(name: str, capture: Capture, tmp_path: Path):
    copy = _copy(capture.source, tmp_path / "ro")
    shutil.move(copy.jsonl, tmp_path / "jsonl")
    workspace = Workspace(db=copy.db, jsonl=tmp_path / "jsonl", out=tmp_path / "out")
    tool = TOOL_BY_NAME[name]
    command = _read_only(workspace.db.parent, tool.command(workspace))
    completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    _one_error_line(completed, f"{workspace.db}: attempt to write a readonly database", "give --index-db FILE")
    # With the index elsewhere the same read-only capture works.
    index = tmp_path / "index.sqlite"
    completed = subprocess.run(command + ["--index-db", str(index)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    _writable_again(workspace.db.parent)
    assert completed.returncode == 0, completed.stderr


# --- crashes: outputs that cannot be written ------------------------------------------------------


OUTPUT_OPTIONS = {
    "message_index": "--json-out",
    "traces": "--output-dir",
    "validator": "--csv",
    "visualizer": "--output",
}


@pytest.mark.parametrize("name", sorted(OUTPUT_OPTIONS))
def test_an_impossible_output_path_is_one_error_line(name: str, indexed: Workspace):
    workspace = indexed
    blocker = workspace.db.parent / "a-file"
    blocker.write_text("in the way\n")
    target = blocker / "sub" / "output"
    run = run_tool(TOOL_BY_NAME[name], workspace, OUTPUT_OPTIONS[name], str(target))
    _one_error_line(run, str(target), "a-file")
    assert blocker.read_text() == "in the way\n"


@pytest.mark.parametrize("name", sorted(OUTPUT_OPTIONS))
def test_an_output_on_read_only_storage_is_one_error_line(name: str, indexed: Workspace, tmp_path: Path):
    workspace = indexed
    locked = tmp_path / "locked"
    locked.mkdir()
    target = locked / "output"
    command = _read_only(locked, TOOL_BY_NAME[name].command(workspace) + [OUTPUT_OPTIONS[name], str(target)])
    completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    _writable_again(locked)
    _one_error_line(completed, str(target), "Read-only file system" if os.geteuid() == 0 else "Permission denied")
    assert list(locked.iterdir()) == []


def _file_size_limit(limit: int) -> Any:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.parametrize("name", ["traces", "visualizer", "validator", "message_index"])
def test_a_full_disk_is_one_error_line_and_outputs_stay_whole(name: str, indexed: Workspace):
    """A file-size limit (writes past it fail with EFBIG, as ENOSPC would) on a re-run whose
    indexes are up to date: the outputs of the first run stay as they were."""
    workspace = indexed
    tool = TOOL_BY_NAME[name]
    extra = [OUTPUT_OPTIONS[name], str(workspace.out / "output")] if name in ("message_index", "validator") else []
    first_run = run_tool(tool, workspace, *extra)
    assert first_run.exit_code == 0, first_run.describe()
    before = _files(workspace.out)
    # Something to write each time: other hash ids for the traces, a rebuilt table for the message index.
    rerun = {"traces": ["--salt", "other"], "message_index": ["--rebuild"]}.get(name, [])
    completed = subprocess.run(tool.command(workspace) + extra + rerun,
                               capture_output=True, text=True, cwd=ROOT, preexec_fn=_file_size_limit(256), timeout=120)
    # The message index writes its table into the DB first: there SQLite reports the failure.
    _one_error_line(completed, f"{workspace.db}: disk I/O error" if name == "message_index" else "File too large")
    assert _files(workspace.out) == before


def test_a_full_disk_during_an_atomic_write_names_the_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """ENOSPC names no file; the atomic writer names the output, and the old file stays."""
    from lib import atomic
    from lib.cli import _boundary_message

    target = tmp_path / "out.json"
    target.write_text("old")

    def full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError) as raised:
        atomic.write_atomic(target, "new")
    assert _boundary_message(raised.value) == f"{target}: No space left on device"
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["out.json"]


def _files(directory: Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*"))
            if path.is_file() and not path.name.startswith(".")}


# --- crashes: options checked at the boundary -----------------------------------------------------


@pytest.mark.parametrize("name, option, value, phrase", [
    ("traces", "--block-size", str(10**23), "1<=x<=1048576"),
    ("visualizer", "--block-size", str(10**23), "1<=x<=1048576"),
    ("traces", "--mooncake-block-size", str(10**23), "1<=x<=1048576"),
    ("visualizer", "--cache-ttl", "nan", "'nan' is not a finite number"),
    ("visualizer", "--cache-ttl", "inf", "'inf' is not a finite number"),
])
def test_an_absurd_option_is_refused_at_the_boundary(name: str, option: str, value: str, phrase: str, workspace: Workspace):
    _one_error_line(run_tool(TOOL_BY_NAME[name], workspace, option, value), option, phrase)


class RecordingPool:
    """A real ProcessPoolExecutor that records how many workers each pool was given."""

    sizes: list[int] = []

    def __new__(cls, max_workers: int, **kwargs: Any) -> Any:
        from concurrent.futures import ProcessPoolExecutor

        cls.sizes.append(max_workers)
        return ProcessPoolExecutor(max_workers=max_workers, **kwargs)


@pytest.fixture
def recording_pools(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    RecordingPool.sizes = []
    monkeypatch.setattr("lib.hashing.hash_pool.ProcessPoolExecutor", RecordingPool)
    monkeypatch.setattr("lib.capture.message_index.ProcessPoolExecutor", RecordingPool)
    return RecordingPool.sizes


@pytest.mark.parametrize("tool", [t for t in tool_params() if t.values[0].name in ("traces", "validator", "visualizer")])
def test_workers_beyond_the_cpu_count_are_capped_with_a_note(tool: Tool, indexed: Workspace, recording_pools: list[int]):
    """`--workers 1000` started 570+ processes; now at most the CPU count, and the run says so."""
    run = run_tool(tool, indexed, "--workers", "1000")
    assert run.exit_code == 0, run.describe()
    assert f"Note: --workers 1000 capped at {cpu_limit()} (the CPU count).\n" in run.stderr
    expected = [cpu_limit()] if cpu_limit() > 1 else []
    assert recording_pools == expected


def _grown(workspace: Workspace, rows: int) -> None:
    """Copies of the capture's rows (new ids) until the DB holds `rows`: a large capture."""
    with sqlite3.connect(workspace.db) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(requests)") if row[1] != "id"]
        names = ", ".join(columns)
        copy = 0
        while connection.execute("SELECT COUNT(*) FROM requests").fetchone()[0] < rows:
            copy += 1
            connection.execute(f"INSERT INTO requests (id, {names}) SELECT id || '-copy{copy}', {names} FROM requests "
                               "WHERE id NOT LIKE '%-copy%'")


@pytest.fixture
def small_pool_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """The message index parses in a pool from 10 rows on (2,000 in use): the small capture is "large"."""
    monkeypatch.setattr("lib.capture.message_index.PARALLEL_MIN_ROWS", 10)


def test_the_message_index_starts_no_pool_of_its_own_inside_other_tools(workspace: Workspace, small_pool_threshold: None,
                                                                       recording_pools: list[int]):
    """Above 2,000 rows it parsed in a pool of os.cpu_count() processes whatever --workers said."""
    run = run_tool(TOOL_BY_NAME["conversation_index"], workspace)
    assert run.exit_code == 0, run.describe()
    assert recording_pools == []


@pytest.mark.parametrize("workers, pools", [("1", []), ("1000", [cpu_limit()] if cpu_limit() > 1 else [])])
def test_the_message_index_pool_follows_workers(workers: str, pools: list[int], workspace: Workspace,
                                                small_pool_threshold: None, recording_pools: list[int]):
    run = run_tool(TOOL_BY_NAME["message_index"], workspace, "--workers", workers)
    assert run.exit_code == 0, run.describe()
    assert recording_pools == pools
    with sqlite3.connect(workspace.db) as connection:
        assert run.summary["rows_total"] == connection.execute("SELECT COUNT(*) FROM requests").fetchone()[0]


# --- runaways: JSONL discovery --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["conversation_index", "traces"])
def test_a_fifo_and_a_link_to_dev_zero_named_jsonl_are_counted_not_read(name: str, workspace: Workspace):
    """A FIFO blocked the scan forever; a link to /dev/zero grew until memory ran out."""
    os.mkfifo(workspace.jsonl / "waiting.jsonl")
    os.symlink("/dev/zero", workspace.jsonl / "endless.jsonl")
    tool = TOOL_BY_NAME[name]
    # Bounded, so that a scan reading /dev/zero fails here instead of exhausting the machine.
    completed = subprocess.run(tool.command(workspace), capture_output=True, text=True, cwd=ROOT, timeout=60,
                               preexec_fn=_memory_limit(4 << 30))
    assert completed.returncode == 0, completed.stderr
    problems = json.loads(completed.stdout)["problems"]
    assert problems["jsonl_not_a_regular_file"] == {"count": 2, "examples": ["endless.jsonl", "waiting.jsonl"]}


def _memory_limit(limit: int) -> Any:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def test_a_line_over_the_length_cap_is_counted_and_the_rest_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from lib.capture.jsonl_files import iter_entries
    from lib.problems import ProblemCounter

    monkeypatch.setattr("lib.capture.jsonl_files.MAX_LINE_BYTES", 100)
    monkeypatch.setattr("lib.capture.jsonl_files._READ_CHUNK_BYTES", 7)
    log = tmp_path / "s.jsonl"
    log.write_bytes(b'{"a": 1}\n{"long": "' + b"x" * 500 + b'"}\n{"b": 2}\n{"tail": "' + b"y" * 300)
    problems = ProblemCounter()
    entries = list(iter_entries(log, problems))
    assert entries == [(1, {"a": 1}), (3, {"b": 2})]
    assert problems.as_dict() == {"jsonl_line_too_long": {"count": 2, "examples": ["s.jsonl:2", "s.jsonl:4"]}}


# --- recovery: a killed writer's hot journal ------------------------------------------------------


def _is_hot(journal: Path) -> bool:
    """True when the rollback journal holds a transaction (its header has the magic once synced)."""
    try:
        with journal.open("rb") as stream:
            return stream.read(len(JOURNAL_MAGIC)) == JOURNAL_MAGIC
    except OSError:
        return False


def _kill_when_journal_is_hot(command: list[str], journal: Path, limit_s: float = 60.0) -> bool:
    """Start the command, SIGKILL it as soon as its rollback journal is hot; True when killed so."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + limit_s
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if _is_hot(journal):
                process.send_signal(signal.SIGKILL)
                process.wait()
                return _is_hot(journal)
        return False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_writer_killed_mid_transaction_leaves_a_db_every_tool_can_read(capture: Capture, tmp_path: Path):
    """Was 14 of 16 kills: every later read-only open failed with "attempt to write a readonly database"."""
    for round_number in range(KILL_ROUNDS):  # a fresh copy each round: a finished run leaves nothing to write
        workspace = _copy(capture.grown, tmp_path / f"round-{round_number}")
        journal = Path(f"{workspace.db}-journal")
        if _kill_when_journal_is_hot(TOOL_BY_NAME["message_index"].command(workspace), journal):
            break
    else:
        pytest.fail("no kill landed inside a write transaction")
    done = _copy(capture.grown, tmp_path / "done")
    assert run_tool(TOOL_BY_NAME["message_index"], done).exit_code == 0
    expected = _message_index(done.db)
    # A read-only open first (every tool's), then the re-run that finishes the job.
    with contextlib.closing(open_proxy_db(workspace.db)) as proxy:
        assert proxy.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == len(expected)
    assert not journal.exists()
    rerun = run_tool(TOOL_BY_NAME["message_index"], workspace)
    assert rerun.exit_code == 0, rerun.describe()
    assert _message_index(workspace.db) == expected
    with sqlite3.connect(workspace.db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_hot_journal_on_read_only_storage_says_what_to_do(capture: Capture, tmp_path: Path):
    workspace = _copy(capture.grown, tmp_path / "hot")
    journal = Path(f"{workspace.db}-journal")
    command = TOOL_BY_NAME["message_index"].command(workspace)
    for _ in range(KILL_ROUNDS * 2):
        if _kill_when_journal_is_hot(command, journal):
            break
    else:
        pytest.skip("no kill landed inside a write transaction")
    command = _read_only(workspace.db.parent, TOOL_BY_NAME["visualizer"].command(workspace))
    completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    _writable_again(workspace.db.parent)
    _one_error_line(completed, f"{workspace.db}: an interrupted write left the hot journal requests.db-journal",
                    "write access")


def _message_index(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT * FROM message_index ORDER BY request_id").fetchall()


# --- orphans: a killed tool leaves no process behind ---------------------------------------------


def _children(pid: int) -> set[int]:
    """Processes whose parent is `pid` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


ORPHAN_RUNS = {
    "message_index": ["--workers", "2", "--rebuild"],
    "traces": ["--workers", "2"],
    "validator": ["--workers", "2"],
    "visualizer": ["--workers", "2"],
}


@pytest.mark.skipif(not Path("/proc/self/stat").exists() or cpu_limit() < 2, reason="needs /proc and 2 CPUs")
@pytest.mark.parametrize("name", sorted(ORPHAN_RUNS))
def test_a_killed_tool_leaves_no_worker_and_releases_the_callers_pipes(name: str, capture: Capture, tmp_path: Path):
    """Workers were left at ppid 1 for minutes, holding stdout open: a caller waiting for EOF hung.

    SIGTERM, then SIGKILL of a second run on the same workspace, then one re-run that finishes.
    """
    # The message index parses in a pool only above 2,000 rows; the others hash with any capture.
    workspace = _copy(capture.grown if name == "message_index" else capture.baseline, tmp_path / "ws")
    tool = TOOL_BY_NAME[name]
    for kill in (signal.SIGTERM, signal.SIGKILL):
        _kill_once_workers_run(tool.command(workspace) + ORPHAN_RUNS[name], kill, f"{name} ({kill.name})")
    rerun = run_tool(tool, workspace, *ORPHAN_RUNS[name])
    assert rerun.exit_code == 0, rerun.describe()


def _kill_once_workers_run(command: list[str], kill: signal.Signals, what: str) -> None:
    """Start `command`, send `kill` once it has two children; its pipes close and its workers die at once."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and len(workers) < 2 and time.monotonic() < deadline:
            workers |= _children(process.pid)
        assert len(workers) >= 2, f"{what} finished or timed out before starting its workers"
        process.send_signal(kill)
        process.wait()
        # The caller's pipes reach EOF at once: no worker holds them.
        process.communicate(timeout=EXIT_WAIT_S)
        deadline = time.monotonic() + EXIT_WAIT_S
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in workers if _alive(pid)], f"{what}: workers outlived their parent"
    finally:
        for pid in workers:  # a failing run must not leave its workers behind either
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
        process.wait()


FORKED_PARENT = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from lib.report.forked import ForkedCall
call = ForkedCall(time.sleep, 60)
print(call._pid, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_forked_model_dies_with_its_parent(kill: signal.Signals):
    """The visualizer's forked children (TTL sweep, capacity curve) ran on after a kill, holding stdout."""
    process = subprocess.Popen([PYTHON, "-c", FORKED_PARENT, str(ROOT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child = int(process.stdout.readline())
    try:
        process.send_signal(kill)
        process.wait()
        process.communicate(timeout=EXIT_WAIT_S)
        deadline = time.monotonic() + EXIT_WAIT_S
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the forked child outlived its parent"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
        process.wait()


def test_a_killed_conversation_index_releases_the_callers_pipes_and_reruns(capture: Capture, tmp_path: Path):
    """The one tool without workers: killed mid-run (SIGTERM, then SIGKILL) it holds nothing, and its re-run finishes."""
    tool = TOOL_BY_NAME["conversation_index"]
    for kill in (signal.SIGTERM, signal.SIGKILL):
        # A fresh copy each time: after a first kill the message index is partly built, and a second
        # run on it could end before the 0.5 s mark on an idle machine.
        workspace = _copy(capture.grown, tmp_path / f"ws-{kill.name}")
        process = subprocess.Popen(tool.command(workspace), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        children: set[int] = set()
        try:
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                children |= _children(process.pid)
            process.send_signal(kill)
            process.wait()
            process.communicate(timeout=EXIT_WAIT_S)
        finally:
            for pid in children:  # a failing run must not leave processes behind
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
            if process.poll() is None:
                process.kill()
            process.wait()
        assert process.returncode == -kill, f"{kill.name}: the run ended before the kill"
    rerun = run_tool(tool, workspace)
    assert rerun.exit_code == 0, rerun.describe()
