"""build_minimal_traces.py as a user runs it: the seed command, --json, formats, exit codes (docs/cli.md#exit-codes)."""
from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from build_minimal_traces import main
from lib.validate.trace_files import check_directory
from tests.jsonl_builders import OTHER_SESSION, SESSION
from tests.trace_inputs import hand_capture

ROOT = Path(__file__).resolve().parent.parent
SEED_ARGS = ["examples/requests.db", "--jsonl-dir", "examples/jsonl/", "--output-dir", "examples/traces/",
             "--block-size", "64", "--include-subagents", "--anonymize"]


@pytest.fixture
def hand(tmp_path: Path) -> tuple[str, str]:
    db, jsonl = hand_capture(tmp_path / "capture")
    return str(db), str(jsonl)


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_help_shows_the_seed_command():
    code, out, _ = invoke("--help")
    assert code == 0
    assert "python3 build_minimal_traces.py examples/requests.db" in out
    assert "--jsonl-dir examples/jsonl/ --output-dir examples/traces/" in out
    assert "--block-size 64 --include-subagents --anonymize" in out


def test_seed_command_verbatim_on_the_example(example_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "examples").mkdir()
    shutil.move(example_db, tmp_path / "examples" / "requests.db")
    shutil.copytree(ROOT / "examples" / "jsonl", tmp_path / "examples" / "jsonl")
    monkeypatch.chdir(tmp_path)
    code, out, err = invoke(*SEED_ARGS)
    assert code == 0, err
    # A fresh DB gets its message index on the fly, and the run says so.
    note, summary = out.splitlines()
    assert note.startswith("No message index yet: building it now")
    assert summary.startswith("Wrote 1 trace(s) to examples/traces: 6 parent requests, 4 sub-agents with ")
    assert "dropped 0 under --min-requests" in summary
    traces = tmp_path / "examples" / "traces"
    document = orjson.loads((traces / "trace_0001.json").read_bytes())
    markers = [r for r in document["requests"] if r["type"] == "subagent"]
    assert [m["agent_id"] for m in markers] == ["agent_001", "agent_002", "agent_003", "agent_004"]
    assert all(m["requests"] for m in markers) and document["requests"][0]["type"] != "subagent"
    assert check_directory(traces).problems == []
    text = b"".join(path.read_bytes() for path in traces.rglob("*") if path.is_file()).decode()
    assert not re.search(r"msg_|toolu_|req_|/home/|[0-9a-f]{8}-[0-9a-f]{4}-|20[0-9]{2}-[0-9]{2}-[0-9]{2}", text)


def test_json_summary_is_machine_readable(hand: tuple[str, str], tmp_path: Path):
    code, out, err = invoke(hand[0], "--jsonl-dir", hand[1], "--output-dir", str(tmp_path / "out"), "--block-size", "4",
                            "--include-subagents", "--format", "both", "--mooncake-block-size", "8", "--salt", "s",
                            "--json")
    # Human notes go to stderr under --json, so stdout is exactly one JSON document.
    assert code == 0 and err.startswith("No message index yet")
    summary = json.loads(out)
    assert (summary["traces_written"], summary["requests_written"]) == (2, 5)
    assert (summary["subagents_written"], summary["subagent_requests_written"], summary["mooncake_rows"]) == (1, 2, 7)
    assert summary["files"] == sorted([f"{SESSION}.json", f"{OTHER_SESSION}.json", f"_sidecar/{SESSION}.jsonl",
                                       f"_sidecar/{OTHER_SESSION}.jsonl", "mooncake_trace.jsonl"])
    assert summary["dropped_min_requests"] == 0 and summary["problems"] == {}
    assert 0 < summary["memo_ratio"] < 1


@pytest.mark.parametrize("fmt, expected", [
    ("kv", {f"{SESSION}.json", f"{OTHER_SESSION}.json"}),
    ("mooncake", {"mooncake_trace.jsonl", "mooncake_sessions.jsonl"}),
    ("both", {f"{SESSION}.json", f"{OTHER_SESSION}.json", "mooncake_trace.jsonl", "mooncake_sessions.jsonl"}),
])
def test_format_chooses_the_files(fmt: str, expected: set[str], hand: tuple[str, str], tmp_path: Path):
    out = tmp_path / "out"
    extra = ["--mooncake-sessions"] if fmt != "kv" else []
    code, _, err = invoke(hand[0], "--jsonl-dir", hand[1], "--output-dir", str(out), "--format", fmt, "-q", *extra)
    assert code == 0, err
    assert {p.name for p in out.iterdir() if p.is_file()} == expected
    assert check_directory(out).problems == []


def _not_a_proxy_db(tmp_path: Path) -> str:
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE notes (text TEXT)").connection.close()
    return str(path)


@pytest.mark.parametrize("case, message", [
    ("missing db", "missing.db: no such file"),
    ("not a proxy db", "not a claude-code-proxy DB"),
    ("block sizes", "--mooncake-block-size 100 must be a multiple of --block-size 64"),
    ("sessions without mooncake", "--mooncake-sessions needs --format mooncake or --format both"),
    ("empty window", "is after --until"),
    ("unknown conversation", "--conversation-id nope: no such conversation in the JSONL logs or the DB (2 found)"),
])
def test_input_errors_exit_2_with_one_line(case: str, message: str, hand: tuple[str, str], tmp_path: Path):
    db, jsonl = hand
    common = ["--jsonl-dir", jsonl, "--output-dir", str(tmp_path / "out")]
    args = {
        "missing db": [str(tmp_path / "missing.db"), *common],
        "not a proxy db": [_not_a_proxy_db(tmp_path), *common],
        "block sizes": [db, *common, "--format", "both", "--mooncake-block-size", "100"],
        "sessions without mooncake": [db, *common, "--mooncake-sessions"],
        "empty window": [db, *common, "--since", "2026-12-01", "--until", "2026-11-01"],
        "unknown conversation": [db, *common, "--conversation-id", "nope"],
    }[case]
    code, out, err = invoke(*args)
    assert code == 2 and "Wrote" not in out
    assert err.count("\n") == 1 and err.startswith("Error: ") and message in err
    assert "Traceback" not in err


def test_rerun_is_idempotent_and_removes_stale_files(hand: tuple[str, str], tmp_path: Path):
    out = tmp_path / "out"
    args = [hand[0], "--jsonl-dir", hand[1], "--output-dir", str(out), "--salt", "s", "-q"]
    assert invoke(*args, "--format", "both")[0] == 0
    assert invoke(*args, "--anonymize", "--conversation-id", SESSION)[0] == 0
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert sorted(map(str, first)) == ["_sidecar/manifest.json", "_sidecar/trace_0001.jsonl", "trace_0001.json"]
    code, out_text, _ = invoke(*args, "--anonymize", "--conversation-id", SESSION, "--json")
    assert code == 0 and json.loads(out_text)["stale_removed"] == 0
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == first


def test_subagent_clock_aiperf_on_the_example(example_db: Path, tmp_path: Path):
    """The example's Explore agents spawn at t 49.815 and run to t 161.262: AIPerf 0.13 would read 41
    of their 84 requests as absolute. --subagent-clock aiperf starts the parent at t 162 instead."""
    def built(*extra: str) -> dict:
        out = tmp_path / ("out" + "".join(extra))
        code, _, err = invoke(str(example_db), "--jsonl-dir", str(ROOT / "examples" / "jsonl"), "--output-dir", str(out),
                              "--block-size", "64", "--include-subagents", "--anonymize", "-q", *extra)
        assert code == 0, err
        assert check_directory(out).problems == []
        return orjson.loads((out / "trace_0001.json").read_bytes())

    def read_as_absolute(document: dict) -> int:
        return sum(r["t"] >= m["t"] for m in document["requests"] if m["type"] == "subagent" for r in m["requests"])

    default, shifted = built(), built("--subagent-clock", "aiperf")
    assert [r["t"] for r in default["requests"]] == [0, 12.809, 31.848, 49.815, 49.815, 49.815, 49.815, 298.817, 415.667, 741.01]
    assert [r["t"] for r in shifted["requests"]] == [162, 174.809, 193.848, 211.815, 211.815, 211.815, 211.815, 460.817, 577.667,
                                                        903.01]
    assert (read_as_absolute(default), read_as_absolute(shifted)) == (41, 0)
    assert [{**r, "t": 0} for r in shifted["requests"]] == [{**r, "t": 0} for r in default["requests"]]
