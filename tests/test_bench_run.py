"""The bench runner (bench/run.py) on a tiny capture: the JSONL-only trace builder against both floors,
the DB-only one against the full run."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench import run as bench_run
from bench.floor import read_and_parse_jsonl
from bench.synthetic_capture import generate_capture


def _tiny_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, bench_run.Timer]:
    """A 1 MB capture, its DB's work copy and a timer over them (as bench.run sets them up)."""
    capture = tmp_path / "capture"
    generate_capture(capture, target_bytes=1_000_000, seed=1)
    work = tmp_path / "work"
    work.mkdir()
    (work / "requests.db").write_bytes((capture / "requests.db").read_bytes())
    monkeypatch.setattr(bench_run, "OUT", tmp_path)  # where measure() keeps /usr/bin/time's figure
    return capture, work, bench_run.Timer(work / "requests.db", 1, capture / "jsonl")


def test_runner_times_the_jsonl_only_route_against_the_db_and_jsonl_floors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    capture, work, timer = _tiny_run(tmp_path, monkeypatch)

    results, scalings, extra = bench_run.run_tools(capture, work, ("traces_jsonl",), 2, timer)

    assert "traces_jsonl" in bench_run.TOOLS and scalings == []
    assert [run.name for run in results] == ["floor jsonl (read+parse)", "build_minimal_traces jsonl-only -w1"]
    assert [run.exit_code for run in results] == [0, 0]
    floor, tool = results
    assert floor.summary == {**read_and_parse_jsonl(str(capture / "jsonl")), "elapsed_s": floor.summary["elapsed_s"]}
    assert (floor.summary["files"], floor.summary["lines"]) == (1, 20)
    assert (tool.summary["route"], tool.summary["requests_written"]) == ("JSONL-only", 10)
    assert len(timer.floors) == 1 and tool.floor_ratio == tool.wall_s / timer.floors[0].wall_s
    assert extra["traces_jsonl"]["jsonl_ratios"] == [round(tool.wall_s / floor.wall_s, 2)]
    assert extra["traces_jsonl"]["line"].startswith("build_minimal_traces jsonl-only -w1: ")
    # Only the logs are read: the index builders did not run on the DB copy.
    assert not (work / "requests.db-journal").exists() and (work / "requests.db").read_bytes() == (
        capture / "requests.db").read_bytes()


def test_runner_times_the_db_only_route_and_compares_it_with_the_full_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    capture, work, timer = _tiny_run(tmp_path, monkeypatch)

    results, scalings, extra = bench_run.run_tools(capture, work, ("traces", "traces_db_only"), 1, timer)

    assert "traces_db_only" in bench_run.TOOLS and scalings == []
    assert [run.name for run in results] == ["build_minimal_traces -w1", "build_minimal_traces db-only -w1"]
    assert [run.exit_code for run in results] == [0, 0]
    full, db_only = results
    assert (full.summary["route"], db_only.summary["route"]) == ("DB+JSONL", "DB-only")
    assert db_only.floor_ratio == db_only.wall_s / timer.floors[-1].wall_s
    # One conversation of 10 requests: same hash ids and lanes; its id (the session's or db-<row id>),
    # sub-second times and the route differ.
    assert extra["db_only_vs_traces"] == {
        "traces": [1, 1], "identical_files": 0, "requests": 10,
        "trace_fields": {"id": 1, "t": 9, "think_time": 9}, "sidecar_fields": {"timestamp": 9, "trace_id": 10},
        "manifest_fields": {"conversation_id": 1, "file": 1, "id": 1, "route": 1, "sidecar": 1}}


def test_generate_capture_summary_counts_sessions(tmp_path: Path):
    from click.testing import CliRunner

    from bench.generate_capture import main

    result = CliRunner().invoke(main, ["--size", "1MB", "--seed", "1", "--output-dir", str(tmp_path / "capture")])

    assert result.exit_code == 0, result.output
    # The count is of parent sessions (the sub-agents are not in it).
    assert "MB DB, 1 session(s), 0 error and 0 pending rows) and 1 JSONL files" in result.output
