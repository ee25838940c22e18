"""validate_trace_cache.py as a user runs it: the seed command, broken traces, gates, exit codes (SPEC §3, §7)."""
from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from tests.validate_inputs import build_example_traces
from validate_trace_cache import main

SEED_ARGS = ["examples/traces/", "--db", "examples/requests.db", "--jsonl-dir", "examples/jsonl/"]
BLOCK = re.compile(
    r"^(?P<id>\S+) \((?P<n>\d+) reqs, (?P<m>\d+) matched\)\n"
    r"  Simulated: (?P<sim>[\d.]+)% \(([\d,]+)/([\d,]+) blocks\)\n"
    r"  API: (?P<api>[\d.]+)% \(([\d,]+)/([\d,]+) tokens\)\n"
    r"  Accuracy: (?P<acc>[\d.]+)%$",
    re.MULTILINE,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_example_traces(tmp_path_factory.mktemp("built"))


@pytest.fixture
def workdir(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of examples/ (DB, JSONL, traces), and the current directory set to it."""
    shutil.copytree(built / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_help_shows_the_seed_command_and_common_options():
    code, out, _ = invoke("--help")
    assert code == 0
    assert "python3 validate_trace_cache.py examples/traces/" in out
    assert "--db examples/requests.db" in out and "--jsonl-dir examples/jsonl/" in out
    for option in ("--json", "--quiet", "--progress", "--debug", "--min-accuracy", "--max-error", "--csv"):
        assert option in out


def test_seed_command_prints_the_block_per_trace(workdir: Path):
    code, out, err = invoke(*SEED_ARGS)
    assert code == 0, err
    assert out.startswith("Schema check: 1 native file(s), 0 Mooncake file(s), 90 requests: no problems.")
    blocks = list(BLOCK.finditer(out))
    assert [b["id"] for b in blocks] == ["trace_0001"]
    for block in blocks:
        assert block["n"] == block["m"] == "90"
        assert all(0 <= float(block[key]) <= 100 for key in ("sim", "api", "acc"))
    assert "Statistics (1 trace(s), parent requests only)" in out
    assert re.search(r"^cache_read +[\d,]+ +[\d,]+ +[\d.]+% +[\d.]+%", out, re.MULTILINE)
    assert re.search(r"^Overall \(1 trace\(s\), 90 reqs, 90 matched\): simulated [\d.]+%, API [\d.]+%, accuracy [\d.]+%$",
                     out, re.MULTILINE)


def test_json_and_csv_outputs(workdir: Path):
    code, out, _ = invoke(*SEED_ARGS, "--json", "--csv", "stats.csv")
    assert code == 0
    report = json.loads(out)
    assert report["schema"]["problems"] == []
    assert report["versus_api"]["overall"]["matched"] == 90
    rows = list(csv.DictReader((workdir / "stats.csv").open()))
    assert rows[0]["metric"] == "Requests per trace" and float(rows[0]["median"]) == 6


def test_stats_and_schema_work_without_a_db(workdir: Path):
    code, out, _ = invoke("examples/traces/")
    assert code == 0
    assert "Statistics (1 trace(s)" in out and "Simulated:" not in out


@pytest.mark.parametrize(("gate", "code", "reason"), [
    (["--min-accuracy", "50"], 0, None),
    (["--min-accuracy", "100"], 1, r"Check failed: overall accuracy [\d.]+% < --min-accuracy 100%"),
    (["--max-error", "50"], 0, None),
    (["--max-error", "0"], 1, r"Check failed: API model median \w+ error [\d.]+% > --max-error 0%"),
])
def test_accuracy_and_error_gates(workdir: Path, gate: list[str], code: int, reason: str):
    exit_code, _, err = invoke(*SEED_ARGS, *gate)
    assert exit_code == code
    if reason:
        assert re.fullmatch(reason + "\n", err)


def test_gate_without_db_and_missing_traces_exit_2(workdir: Path):
    code, _, err = invoke("examples/traces/", "--min-accuracy", "90")
    assert (code, err) == (2, "Error: --min-accuracy needs --db or --jsonl-dir, --max-error needs --db\n")
    code, _, err = invoke("nowhere/")
    assert (code, err) == (2, "Error: nowhere/: no such file or directory\n")


def _edit(workdir: Path, change: Callable[[dict], None]) -> None:
    path = workdir / "examples" / "traces" / "trace_0001.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def _copy_trace(workdir: Path, name: str, change: Callable[[dict], None]) -> None:
    traces = workdir / "examples" / "traces"
    document = json.loads((traces / "trace_0001.json").read_text())
    change(document)
    (traces / name).write_text(json.dumps(document))


def _marker_first(document: dict) -> None:
    index = next(i for i, r in enumerate(document["requests"]) if r["type"] == "subagent")
    document["requests"].insert(0, document["requests"].pop(index))


def _ceil_violation(workdir: Path) -> None:
    (workdir / "examples" / "traces" / "mooncake_trace.jsonl").write_text(
        '{"timestamp": 0, "input_length": 1000, "output_length": 5, "hash_ids": [1, 2]}\n'
        '{"timestamp": 9, "input_length": 1025, "output_length": 5, "hash_ids": [1, 2]}\n')


BREAKAGES = {
    "unknown field": (lambda w: _edit(w, lambda d: d["requests"][1].update(extra=1)),
                      "trace_0001.json: requests[1]: unknown field `extra`"),
    "null stop": (lambda w: _edit(w, lambda d: d["requests"][2].update(stop=None)),
                  "trace_0001.json: requests[2]: `stop` is null"),
    "marker first": (lambda w: _edit(w, _marker_first),
                     "trace_0001.json: requests[0]: first entry is a sub-agent marker"),
    "hash_ids length": (lambda w: _edit(w, lambda d: d["requests"][0]["hash_ids"].pop()),
                        "trace_0001.json: requests[0]: len(hash_ids) = 331 but in // block_size = 332"),
    "duplicate id": (lambda w: _copy_trace(w, "trace_copy.json", lambda d: d["requests"].pop()),
                     "trace_copy.json: top level: duplicate trace id `trace_0001` (also in trace_0001.json)"),
    "duplicate trace": (lambda w: _copy_trace(w, "trace_0002.json", lambda d: d.update(id="trace_0002")),
                        "trace_0002.json: requests: duplicate trace: identical request list to trace_0001.json"),
    "broken JSON": (lambda w: (w / "examples" / "traces" / "broken.json").write_text('{"id": "x", "requests": ['),
                    "broken.json: file: not valid JSON"),
    "Mooncake ceil": (_ceil_violation, "mooncake_trace.jsonl: line 2: len(hash_ids) = 2 but ceil(input_length / 512) = 3"),
}


@pytest.mark.parametrize("name", list(BREAKAGES))
def test_broken_traces_name_file_request_and_rule_and_exit_1(workdir: Path, name: str):
    breakage, expected = BREAKAGES[name]
    breakage(workdir)
    code, out, err = invoke("examples/traces/")
    assert code == 1
    assert f"\n  {expected}" in out
    assert err.startswith("Check failed: ") and "schema problem(s), first: " in err and err.count("\n") == 1


def test_workers_give_the_same_report(workdir: Path, monkeypatch: pytest.MonkeyPatch):
    # Chunks of 3 requests: most start mid-conversation in a worker that has not seen the history.
    monkeypatch.setattr("lib.hashing.hash_pool.CHUNK_REQUESTS", 3)
    reports = []
    for workers in ("1", "2"):
        code, out, err = invoke(*SEED_ARGS, "--json", "--workers", workers)
        assert code == 0, err
        report = json.loads(out)
        del report["elapsed_s"]
        reports.append(report)
    assert reports[0] == reports[1]
    assert reports[0]["versus_api"]["api_model"]["requests"] > 0


def test_progress_shows_a_bar_over_the_requests_being_hashed(workdir: Path):
    code, out, err = invoke(*SEED_ARGS, "--progress")
    assert code == 0 and "Accuracy: 99.7%" in out
    assert "hashing:" in err and "0/90 " in err  # a bar over the 90 matched requests, cleared at the end
    code, _, err = invoke(*SEED_ARGS)
    assert code == 0 and "hashing" not in err
