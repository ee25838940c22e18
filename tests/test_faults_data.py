"""Fault suite, data half (issue 14): inputs that gave silent wrong results, lost data or leaked ids.

Each case mutates a copy of a generated capture (the example generator at --scale 0.05) or of the
real-proxy fixture, runs the tools, and pins what they now do: a corrupt number is range-checked
and counted under a named reason (never written as if true), an input that yields nothing says so,
nothing is lost without being named, and nothing identifying leaves an --anonymize run.
Crashes, recovery and orphans are in tests/test_faults_boundary.py.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from click.testing import CliRunner

import complete_cache_visualizer
from lib.synthetic.example import generate_example
from lib.validate.trace_files import check_directory
from tests.test_turn_timing import assert_same_trace_but_agent_times
from tests.tool_runner import TOOL_BY_NAME, ToolRun, Workspace, run_tool

SCALE = 0.05
SESSION = "c7eb779f-2e12-4a2b-bfa9-8e0d73c6d846"


# --- captures and helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Pristine generated captures: "cleaned" (non-streaming rows) and "fixed" (streaming chunks)."""
    root = tmp_path_factory.mktemp("data-fault-captures")
    result = {}
    for variant in ("cleaned", "fixed"):
        generate_example(root / variant, variant=variant, seed=7, scale=SCALE)
        result[variant] = root / variant
    return result


def _workspace(source: Path, target: Path) -> Workspace:
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "requests.db", target / "requests.db")
    shutil.copytree(source / "jsonl", target / "jsonl")
    return Workspace(db=target / "requests.db", jsonl=target / "jsonl", out=target / "out")


def _run(name: str, workspace: Workspace, *extra: str) -> ToolRun:
    return run_tool(TOOL_BY_NAME[name], workspace, *extra)


def _sql(db: Path, sql: str, *params: Any) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute(sql, params).fetchall()


def _edit_response(db: Path, request_id: str, edit: Callable[[dict], None]) -> None:
    (raw,) = _sql(db, "SELECT response FROM requests WHERE id = ?", request_id)[0]
    response = json.loads(raw)
    edit(response)
    _sql(db, "UPDATE requests SET response = ? WHERE id = ?", json.dumps(response), request_id)


def _parent_request_ids(source: Path) -> list[str]:
    """The parent conversation's request ids in arrival order (message ids of the parent log)."""
    parent_log = source / "jsonl" / f"{SESSION}.jsonl"
    message_ids = []
    for line in parent_log.read_text().splitlines():
        entry = json.loads(line)
        message = entry.get("message") if entry.get("type") == "assistant" else None
        if isinstance(message, dict) and message.get("id") not in message_ids:
            message_ids.append(message["id"])
    rows = dict(_sql(source / "requests.db",
                     "SELECT json_extract(response, '$.body.id'), id FROM requests WHERE json_extract(response, '$.body.id') IS NOT NULL"))
    return [rows[m] for m in message_ids]


def _sidecar_rows(traces: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for sidecar in sorted((traces / "_sidecar").glob("*.jsonl"))
            for line in sidecar.read_text().splitlines()]


def _parent_times(traces: Path) -> dict[str, float]:
    """request id → `t` of the parent lane (trace requests and sidecar rows are in the same order)."""
    (trace_file,) = [path for path in traces.glob("*.json")]
    requests = [r for r in json.loads(trace_file.read_text())["requests"] if r["type"] != "subagent"]
    parent_rows = [row for row in _sidecar_rows(traces) if row["lane"] == "parent"]
    return {row["request_id"]: request["t"] for row, request in zip(parent_rows, requests)}


def _numbers(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _numbers(item, name)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item, key)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield key, value


# --- silent wrong results: times and numbers from the capture -------------------------------------


@pytest.fixture(scope="module")
def clean_times(sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """Parent-lane `t` of the unmutated cleaned capture."""
    workspace = _workspace(sources["cleaned"], tmp_path_factory.mktemp("clean-run"))
    assert _run("traces", workspace).exit_code == 0
    return _parent_times(workspace.traces)


@pytest.mark.parametrize(("raw", "reason"), [
    ("garbage", "bad_timestamp"),
    ("0001-01-01T00:00:00Z", "timestamp_out_of_range"),
    ("9999-12-31T23:59:59Z", "timestamp_out_of_range"),
    ("1970-01-01T00:00:00Z", "timestamp_out_of_range"),
])
def test_corrupt_request_time_falls_back_to_completion(raw: str, reason: str, sources: dict[str, Path],
                                                      clean_times: dict[str, float], tmp_path: Path) -> None:
    """Before: the first parent row went to 1970 (or 9999): every other `t` became ~1.8e9 s, unflagged."""
    workspace = _workspace(sources["cleaned"], tmp_path)
    first = _parent_request_ids(sources["cleaned"])[0]
    _sql(workspace.db, "UPDATE requests SET timestamp = ? WHERE id = ?", raw, first)
    run = _run("traces", workspace)
    assert run.exit_code == 0, run.describe()
    times = _parent_times(workspace.traces)
    # completedAt (whole seconds) − responseTime puts the row within a second of its real arrival.
    assert list(times) == list(clean_times)
    assert times[first] == 0 and all(abs(times[r] - t) <= 1.0 for r, t in clean_times.items())
    assert run.problems[reason] == {"count": 1, "examples": [first]}
    assert run.problems["timestamp_from_completion"]["count"] == 1


def test_unusable_request_time_without_completion_takes_the_jsonl_time(
        sources: dict[str, Path], clean_times: dict[str, float], tmp_path: Path) -> None:
    """Before: 1970 again. Now the JSONL time of the turn places the row; the dashboard never starts in 1970."""
    workspace = _workspace(sources["cleaned"], tmp_path)
    second = _parent_request_ids(sources["cleaned"])[1]
    _sql(workspace.db, "UPDATE requests SET timestamp = 'soon' WHERE id = ?", second)
    _edit_response(workspace.db, second, lambda response: response.pop("completedAt"))
    run = _run("traces", workspace, "--anonymize")
    assert run.exit_code == 0, run.describe()
    times = _parent_times_anonymized(workspace.traces)
    assert times == sorted(times) and max(times) == max(clean_times.values())
    assert {reason: run.problems[reason]["count"] for reason in ("bad_timestamp", "timestamp_unknown", "timestamp_from_jsonl")} \
        == {"bad_timestamp": 1, "timestamp_unknown": 1, "timestamp_from_jsonl": 1}
    assert all(value < 1e6 for key, value in _numbers(_trace_json(workspace.traces)) if key == "t")

    viz = _run("visualizer", workspace, "--projects-path", str(workspace.jsonl))
    assert viz.exit_code == 0, viz.describe()
    assert viz.problems["timestamp_from_jsonl"]["count"] == 1
    stats = workspace.html.with_name("combined_stats.txt").read_text()
    assert "1970" not in stats and "timestamp unknown" in stats


def test_time_of_a_row_no_log_names_is_left_out_of_the_dashboard(sources: dict[str, Path], tmp_path: Path) -> None:
    """Before: the quota probe without a time opened the combined report at 1970-01-01."""
    workspace = _workspace(sources["cleaned"], tmp_path)
    (probe,) = _sql(workspace.db, "SELECT id FROM requests ORDER BY rowid LIMIT 1")[0]
    _sql(workspace.db, "UPDATE requests SET timestamp = '' WHERE id = ?", probe)
    _edit_response(workspace.db, probe, lambda response: response.pop("responseTime"))
    viz = _run("visualizer", workspace)
    assert viz.exit_code == 0, viz.describe()
    assert viz.problems["timestamp_unknown_row"] == {"count": 1, "examples": [probe]}
    assert viz.summary["reports"][0]["requests"] == 91
    assert "1970" not in workspace.html.with_name("combined_stats.txt").read_text()


def _trace_json(traces: Path) -> dict:
    (trace_file,) = traces.glob("*.json")
    return json.loads(trace_file.read_text())


def _parent_times_anonymized(traces: Path) -> list[float]:
    return [r["t"] for r in _trace_json(traces)["requests"] if r["type"] != "subagent"]


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda r: r.update(completedAt="2026-03-25T10:00:00-04:00"), "completed_before_request"),
    (lambda r: r.update(completedAt="9999-01-01T00:00:00Z"), "completed_at_out_of_range"),
    (lambda r: r.update(responseTime=-5000), "negative_response_time"),
    (lambda r: r["body"]["usage"].update(input_tokens=-7), "negative_usage"),
    (lambda r: r["body"]["usage"].update(cache_read_input_tokens=-1), "negative_usage"),
    (lambda r: r["body"]["usage"].update(output_tokens=10**15), "implausible_usage"),
], ids=["completed-before-request", "completed-year-9999", "negative-response-time", "negative-input",
        "negative-cache-read", "absurd-output"])
def test_implausible_numbers_are_dropped_and_counted(edit: Callable[[dict], None], reason: str,
                                                     sources: dict[str, Path], tmp_path: Path) -> None:
    """Before: written as if true, unflagged, and our own validator rejected the trace."""
    workspace = _workspace(sources["cleaned"], tmp_path)
    target = _parent_request_ids(sources["cleaned"])[2]
    _edit_response(workspace.db, target, edit)
    run = _run("traces", workspace)
    assert run.exit_code == 0, run.describe()
    assert run.problems[reason] == {"count": 1, "examples": [target]}
    # Every number the trace holds is one the validator accepts (no negative, no 10^15).
    assert check_directory(workspace.traces).problems == []
    row = next(row for row in _sidecar_rows(workspace.traces) if row["request_id"] == target)
    assert all(value >= 0 for _, value in _numbers(row))
    assert all(value <= 10**8 for key, value in _numbers(row["usage"]))
    validator = _run("validator", workspace)
    assert validator.exit_code == 0, validator.describe()
    index = _run("message_index", workspace)
    assert index.problems[reason]["count"] == 1


def test_row_problems_reach_the_dashboards_data_quality_notes(sources: dict[str, Path], tmp_path: Path) -> None:
    """Before: bad_timestamp, broken_stream_chunk and invalid_utf8_* were counted by the index, never shown."""
    workspace = _workspace(sources["fixed"], tmp_path)
    first, second, third = _parent_request_ids(sources["fixed"])[:3]
    _sql(workspace.db, "UPDATE requests SET timestamp = 'garbage' WHERE id = ?", first)

    def break_chunk(response: dict) -> None:
        response["streamingChunks"].insert(2, "data: {not json")
    _edit_response(workspace.db, second, break_chunk)
    (body,) = _sql(workspace.db, "SELECT body FROM requests WHERE id = ?", third)[0]
    corrupt = body.encode().replace(b"Explore", b"Expl\xffre", 1)
    _sql(workspace.db, "UPDATE requests SET body = CAST(? AS TEXT) WHERE id = ?", corrupt, third)
    viz = _run("visualizer", workspace, "--projects-path", str(workspace.jsonl))
    assert viz.exit_code == 0, viz.describe()
    assert {reason: viz.problems[reason] for reason in ("bad_timestamp", "broken_stream_chunk", "invalid_utf8_body")} == {
        "bad_timestamp": {"count": 1, "examples": [first]},
        "broken_stream_chunk": {"count": 1, "examples": [second]},
        "invalid_utf8_body": {"count": 1, "examples": [third]},
    }
    stats = workspace.html.with_name("combined_stats.txt").read_text()
    assert "bad timestamp" in stats and "broken stream chunk" in stats and "invalid utf8 body" in stats


# --- silent wrong results: inputs that gave an empty or ungated result with exit 0 -------------------


@pytest.mark.parametrize(("tool", "option", "value"), [
    ("validator", "--max-error", "nan"),
    ("validator", "--min-accuracy", "nan"),
    ("validator", "--max-error", "inf"),
    ("traces", "--split-at-gap", "nan"),
    ("traces", "--split-at-gap", "inf"),
])
def test_non_finite_option_values_are_refused(tool: str, option: str, value: str, sources: dict[str, Path],
                                              tmp_path: Path) -> None:
    """Before: nan passed FloatRange (every comparison with nan is false), so the CI gate never failed."""
    workspace = _workspace(sources["cleaned"], tmp_path)
    if tool == "validator":
        assert _run("traces", workspace).exit_code == 0
    run = _run(tool, workspace, option, value)
    assert run.exit_code == 2, run.describe()
    assert run.stderr.strip().splitlines() == [
        f"Error: Invalid value for '{option}': {value!r} is not a finite number (see --help)"]


@pytest.mark.parametrize("tool", ["message_index", "conversation_index", "traces", "validator", "visualizer"])
def test_requests_view_is_refused(tool: str, sources: dict[str, Path], tmp_path: Path) -> None:
    """Before: rows are read by rowid, which a view lacks: 0 rows, exit 0, no problem named."""
    workspace = _workspace(sources["cleaned"], tmp_path)
    if tool == "validator":
        assert _run("traces", workspace).exit_code == 0
    _sql(workspace.db, "ALTER TABLE requests RENAME TO captured")
    _sql(workspace.db, "CREATE VIEW requests AS SELECT * FROM captured")
    run = _run(tool, workspace)
    assert run.exit_code == 2, run.describe()
    assert run.stderr.strip().splitlines() == [
        f"Error: {workspace.db}: not a claude-code-proxy DB (`requests` is a view, not the proxy's table)"]


def test_trace_builder_refuses_a_folder_without_logs(sources: dict[str, Path], tmp_path: Path) -> None:
    """Before: "Wrote 0 trace(s)", exit 0 (the README promises exit 2, as the conversation index does)."""
    workspace = _workspace(sources["cleaned"], tmp_path)
    empty = tmp_path / "no-logs"
    (empty / "project").mkdir(parents=True)
    (empty / "project" / "notes.txt").write_text("not a log\n")
    for tool in ("traces", "conversation_index"):
        run = _run(tool, Workspace(workspace.db, empty, workspace.out))
        assert run.exit_code == 2, run.describe()
        assert run.stderr.strip().splitlines() == [f"Error: {empty}: no Claude Code JSONL logs found"]
    assert not workspace.traces.exists()
    assert _sql(workspace.db, "SELECT name FROM sqlite_master WHERE name = 'message_index'") == []


def test_dashboard_of_a_conversation_none_of_whose_turns_is_in_the_db(fixture_db: Path, sources: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    """Before: "0 requests" and "No data-quality problems found" for logs of another capture."""
    workspace = Workspace(fixture_db, sources["cleaned"] / "jsonl", tmp_path / "out")
    run = run_tool(TOOL_BY_NAME["visualizer"], workspace, "--conversation-id", SESSION,
                   "--projects-path", str(workspace.jsonl), "--index-db", str(tmp_path / "index.db"))
    # (the tool's own arguments name `combined`; the later --conversation-id wins)
    assert run.exit_code == 0, run.describe()
    (report,) = run.summary["reports"]
    assert report["requests"] == 0
    assert {reason: entry["count"] for reason, entry in report["problems"].items()} == {"turn_outside_capture": 90}
    stats = workspace.html.with_name("combined_stats.txt").read_text()
    assert "No data-quality problems found" not in stats
    assert "None of the conversation's 90 JSONL turns is in this DB" in stats


# --- data loss -------------------------------------------------------------------------------------

SALTED = ("--salt", "data-faults")


def _subagent_markers(traces: Path) -> dict[str, int]:
    """agent id (or anonymized label) → number of requests, over every native trace."""
    markers: dict[str, int] = {}
    for path in sorted(traces.glob("*.json")):
        for request in json.loads(path.read_text())["requests"]:
            if request["type"] == "subagent":
                markers[request["agent_id"]] = len(request["requests"])
    return markers


@pytest.fixture(scope="module")
def clean_markers(sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, int], bytes]:
    workspace = _workspace(sources["cleaned"], tmp_path_factory.mktemp("clean-markers"))
    assert _run("traces", workspace, *SALTED).exit_code == 0
    return _subagent_markers(workspace.traces), (workspace.traces / f"{SESSION}.json").read_bytes()


def test_resumed_copy_winning_the_tie_keeps_the_originals_subagents(sources: dict[str, Path], clean_markers, tmp_path: Path) -> None:
    """Before: the copy (same start, same 6 turns, an id sorting first) claimed the parent turns and the
    original, left without a parent turn, was dropped with its 4 sub-agents (84 requests)."""
    workspace = _workspace(sources["cleaned"], tmp_path)
    copy_id = "0a0a0a0a-0000-4000-8000-000000000001"
    lines = (workspace.jsonl / f"{SESSION}.jsonl").read_text().replace(SESSION, copy_id)
    (workspace.jsonl / f"{copy_id}.jsonl").write_text(lines)
    run = _run("traces", workspace, *SALTED)
    assert run.exit_code == 0, run.describe()
    markers, _ = clean_markers
    assert _subagent_markers(workspace.traces) == markers == {
        "a41c152eb70bc28fb": 14, "a42827dbf5fd2cfab": 21, "a800df9c163b689d1": 23, "a9fbac25ae054618e": 26}
    assert [path.stem for path in workspace.traces.glob("*.json")] == [copy_id]
    assert run.problems["subagent_moved_with_its_parent_turn"]["count"] == 4
    assert run.problems["conversation_without_db_requests"] == {"count": 1, "examples": [SESSION]}
    validator = _run("validator", workspace)
    assert validator.exit_code == 0, validator.describe()
    overall = validator.summary["versus_api"]["overall"]
    assert (overall["requests"], overall["matched"]) == (90, 90)


def test_missing_subagent_log_keeps_the_marker_with_its_db_requests(sources: dict[str, Path], clean_markers,
                                                                    tmp_path: Path) -> None:
    """Before: the sub-agent vanished (subagent_count 3 of 4, 14 requests gone) though the parent still links it."""
    workspace = _workspace(sources["cleaned"], tmp_path)
    (workspace.jsonl / "agent-a41c152eb70bc28fb.jsonl").unlink()
    run = _run("traces", workspace, *SALTED)
    assert run.exit_code == 0, run.describe()
    markers, trace_bytes = clean_markers
    # Found in the DB inside the link's window: the same trace, but for the sub-second starts the log gave.
    assert_same_trace_but_agent_times((workspace.traces / f"{SESSION}.json").read_bytes(), trace_bytes,
                                      "a41c152eb70bc28fb")
    assert json.loads(trace_bytes)["totals"]["subagent_count"] == 4
    assert {reason: run.problems[reason] for reason in ("subagent_log_missing", "subagent_requests_from_db")} == {
        "subagent_log_missing": {"count": 1, "examples": ["a41c152eb70bc28fb"]},
        "subagent_requests_from_db": {"count": 1, "examples": ["a41c152eb70bc28fb"]}}

    # The conversation index names the missing log on every run, not only the one that saw it go.
    for _ in range(2):
        index = _run("conversation_index", workspace)
        assert index.problems["subagent_log_missing"] == {"count": 1, "examples": ["a41c152eb70bc28fb"]}
    viz = _run("visualizer", workspace)
    assert viz.exit_code == 0, viz.describe()
    # Only the quota probe and the title stay unlinked, as in the complete capture.
    assert viz.problems["unlinked"]["count"] == 2
    assert viz.problems["subagent_requests_from_db"]["count"] == 1
    one = _run("visualizer", workspace, "--conversation-id", SESSION)
    assert one.summary["reports"][0]["requests"] == 90


def test_missing_subagent_logs_that_cannot_be_told_apart_are_named(sources: dict[str, Path], tmp_path: Path) -> None:
    """Two concurrent sub-agents without logs: their rows share both windows, so the loss is named."""
    workspace = _workspace(sources["cleaned"], tmp_path)
    for agent in ("a41c152eb70bc28fb", "a42827dbf5fd2cfab"):
        (workspace.jsonl / f"agent-{agent}.jsonl").unlink()
    run = _run("traces", workspace, *SALTED)
    assert run.exit_code == 0, run.describe()
    markers = _subagent_markers(workspace.traces)
    lost = {reason: run.problems.get(reason, {}).get("count", 0)
            for reason in ("subagent_request_ambiguous", "subagent_requests_from_db", "subagent_lost")}
    # All 14 + 21 rows lie in both windows or in the window of one sharing rows with the other: no
    # partial sub-agent is written, each row and both sub-agents are named.
    assert set(markers) == {"a800df9c163b689d1", "a9fbac25ae054618e"}
    assert lost == {"subagent_request_ambiguous": 35, "subagent_requests_from_db": 0, "subagent_lost": 2}


def test_unreadable_log_directory_is_counted(sources: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a subdirectory that cannot be listed was skipped without a word (a glob hides the error)."""
    workspace = _workspace(sources["cleaned"], tmp_path)
    locked = workspace.jsonl / "other-project"
    locked.mkdir()
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        # chmod 000 does not stop root, who runs CI containers: refuse the listing the way the kernel would.
        if Path(os.fsdecode(path)) == locked:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    for tool in ("conversation_index", "traces"):
        run = _run(tool, workspace)
        assert run.exit_code == 0, run.describe()
        assert run.problems["unreadable_directory"] == {"count": 1, "examples": [f"{locked}: Permission denied"]}


def test_all_reports_never_overwrite_each_other_or_the_index(sources: dict[str, Path], tmp_path: Path) -> None:
    """Before: ids `x y` and `x_y` wrote one x_y.html, and an id `index` overwrote index.html."""
    workspace = _workspace(sources["cleaned"], tmp_path)
    parent = (workspace.jsonl / f"{SESSION}.jsonl").read_text()
    logs = tmp_path / "named"
    logs.mkdir()
    for name in ("index", "x y", "x_y", "X_Y"):  # each its own session: the lines' sessionId names it
        (logs / f"{name}.jsonl").write_text(parent.replace(SESSION, name))
    out = tmp_path / "reports"
    result = CliRunner().invoke(complete_cache_visualizer.main, [
        str(workspace.db), "--conversation-id", "all", "--output-dir", str(out), "--projects-path", str(logs), "--json"])
    assert result.exit_code == 0, result.output
    written = {report["name"]: Path(report["html"]).name for report in json.loads(result.stdout)["reports"]}
    assert written == {"X_Y": "X_Y.html", "index": "index-2.html", "x y": "x_y-2.html", "x_y": "x_y-3.html"}
    assert sorted(path.name for path in out.glob("*.html")) == ["X_Y.html", "index-2.html", "index.html",
                                                                "x_y-2.html", "x_y-3.html"]
    index_page = (out / "index.html").read_text()
    assert all(name in index_page for name in written.values())


# --- privacy -----------------------------------------------------------------------------------------

ANONYMOUS_EXAMPLE = re.compile(r"trace_\d{4}(/(parent|agent_\d{3})(#\d+)?)?")


def test_anonymized_summaries_name_only_trace_positions(sources: dict[str, Path], tmp_path: Path) -> None:
    """Before: --json and the closing paragraph named row ids, msg_ ids, session and agent ids and file
    names in problem examples, though the README promises trace positions under --anonymize."""
    workspace = _workspace(sources["cleaned"], tmp_path)
    parent_ids = _parent_request_ids(sources["cleaned"])
    _sql(workspace.db, "UPDATE requests SET timestamp = 'garbage' WHERE id = ?", parent_ids[1])   # a row id
    _sql(workspace.db, "DELETE FROM requests WHERE id = ?", parent_ids[3])                       # a msg_ id
    (workspace.jsonl / "agent-a41c152eb70bc28fb.jsonl").unlink()                                  # an agent id
    copy_id = "0a0a0a0a-0000-4000-8000-000000000001"                                              # session ids
    (workspace.jsonl / f"{copy_id}.jsonl").write_text(
        (workspace.jsonl / f"{SESSION}.jsonl").read_text().replace(SESSION, copy_id) + '{"broken\n')  # a file name
    secrets = {copy_id, SESSION, "a41c152eb70bc28fb", str(tmp_path), "msg_"}
    secrets |= {row[0] for row in _sql(workspace.db, "SELECT id FROM requests")} | set(parent_ids)

    for extra in ((), ("--json",)):
        result = CliRunner().invoke(__import__("build_minimal_traces").main, [
            str(workspace.db), "--jsonl-dir", str(workspace.jsonl), "--output-dir", str(tmp_path / "anon"),
            "--include-subagents", "--anonymize", "--salt", "s", *extra])
        assert result.exit_code == 0, result.output
        paragraph = result.stdout.split("Wrote ", 1)[-1]  # the output directory is the user's own argument
        leaks = sorted(secret for secret in secrets if secret in paragraph.replace(str(tmp_path / "anon"), ""))
        assert leaks == [], (leaks, paragraph)
    problems = json.loads(result.stdout)["problems"]
    # Counts are kept; each example is a trace name or position, or left out.
    assert {reason: entry["count"] for reason, entry in problems.items()} == {
        "bad_timestamp": 1, "conversation_without_db_requests": 1, "duplicate_message_id_across_conversations": 6,
        "request_in_two_conversations": 5, "subagent_log_missing": 5, "subagent_moved_with_its_parent_turn": 3,
        "subagent_requests_from_db": 1, "timestamp_from_completion": 1, "turn_not_in_db": 2,
        "unparsable_jsonl_line": 1}
    examples = [example for entry in problems.values() for example in entry["examples"]]
    assert examples and all(ANONYMOUS_EXAMPLE.fullmatch(example) for example in examples), examples


@pytest.mark.parametrize("raw", ["not a time", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59+14:00"])
def test_real_proxy_rows_with_corrupt_times_keep_their_place(raw: str, fixture_db: Path) -> None:
    """The real proxy's streaming rows: completedAt − responseTime is within a second of the true arrival
    (rows of the same second may swap; before, the rows went to 1970 or 9999)."""
    def order(db: Path) -> list[tuple[str, float]]:
        return _sql(db, "SELECT request_id, ts_epoch FROM message_index ORDER BY ts_epoch, row_id")

    clean = fixture_db.with_name("clean.db")
    shutil.copyfile(fixture_db, clean)
    workspace = Workspace(clean, fixture_db.parent, fixture_db.parent / "out")
    assert _run("message_index", workspace).exit_code == 0
    before = order(clean)
    targets = [request_id for request_id, _ in before[5:40:10]]
    for target in targets:
        _sql(fixture_db, "UPDATE requests SET timestamp = ? WHERE id = ?", raw, target)
    run = _run("message_index", Workspace(fixture_db, fixture_db.parent, fixture_db.parent / "out"))
    assert run.exit_code == 0, run.describe()
    clean_times, times = dict(before), dict(order(fixture_db))
    assert times.keys() == clean_times.keys()
    shifts = sorted(round(times[target] - clean_times[target], 3) for target in targets)
    assert shifts == [-0.599, -0.187, -0.012, 0.098]
    assert all(times[r] == clean_times[r] for r in clean_times if r not in targets)
    reason = "bad_timestamp" if raw == "not a time" else "timestamp_out_of_range"
    assert run.problems[reason]["count"] == run.problems["timestamp_from_completion"]["count"] == len(targets) == 4


def test_a_time_window_that_selects_nothing_is_named(example_db: Path, tmp_path: Path) -> None:
    from build_minimal_traces import main as build
    from complete_cache_visualizer import main as visualize

    jsonl = str(Path(__file__).resolve().parent.parent / "examples" / "jsonl")
    traces = CliRunner().invoke(build, [str(example_db), "--jsonl-dir", jsonl, "--output-dir", str(tmp_path / "t"),
                                        "--since", "2099-01-01", "--json"])
    assert traces.exit_code == 0
    assert json.loads(traces.stdout)["problems"]["conversation_outside_time_window"]["count"] == 1
    report = CliRunner().invoke(visualize, [str(example_db), "--conversation-id", "combined", "--projects-path", jsonl,
                                            "--since", "2099-01-01", "--text-only", "--output-dir", str(tmp_path / "v")])
    assert report.exit_code == 0
    assert "combined: 0 requests selected (see the data-quality notes" in report.output
    assert "API hit rate 0.0%" not in report.output
