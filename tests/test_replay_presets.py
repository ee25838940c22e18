"""build_minimal_traces.py --preset: each preset writes what it promises and prints its pinned command line."""
from __future__ import annotations

import json
import math
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from build_minimal_traces import main
from lib.traces.presets import PRESETS, preset_table
from lib.validate.trace_files import check_directory

ROOT = Path(__file__).resolve().parent.parent

# Per preset: the files at the output's top level and the printed command line (DIR = --output-dir).
EXPECTED = {
    "kv-cache-tester": (["trace_0001.json"],
                        "python trace_replay_tester.py --api-endpoint http://localhost:8000 --trace-directory DIR "
                        "--output-dir results"),
    "aiperf-weka": (["trace_0001.json"],
                    "aiperf profile --model '<model>' --url http://localhost:8000 --endpoint-type chat --streaming "
                    "--custom-dataset-type weka_trace --input-file DIR --request-count 90"),
    "aiperf-mooncake": (["mooncake_sessions.jsonl", "mooncake_trace.jsonl"],
                        "aiperf profile --model '<model>' --url http://localhost:8000 --endpoint-type chat --streaming "
                        "--custom-dataset-type mooncake_trace --input-file DIR/mooncake_sessions.jsonl "
                        "--isl-block-size 512 --request-count 90"),
    "dynamo-replay": (["mooncake_trace.jsonl"],
                      "python -m dynamo.replay DIR/mooncake_trace.jsonl --replay-mode offline --num-workers 1 "
                      "--extra-engine-args '{\"block_size\":512}' --report-json replay-report.json"),
    "sglang": (["mooncake_trace.jsonl"],
               "python -m sglang.bench_serving --backend sglang --dataset-name mooncake --dataset-path "
               "DIR/mooncake_trace.jsonl --mooncake-num-rounds 1 --mooncake-slowdown-factor 1.0 --num-prompts 90"),
}


def build(example_db: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    args = [str(example_db), "--jsonl-dir", str(ROOT / "examples" / "jsonl"), "--output-dir", str(out),
            "--include-subagents", "--anonymize", "--salt", "presets", *extra]
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.stdout, result.stderr


def test_every_preset_is_pinned():
    assert list(PRESETS) == list(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_preset_writes_what_it_promises(name: str, example_db: Path, tmp_path: Path):
    out = tmp_path / "out"
    code, stdout, stderr = build(example_db, out, "--preset", name)
    assert code == 0, stderr
    files, command = EXPECTED[name]
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == files
    tool = PRESETS[name].tool
    assert stdout.splitlines()[-2:] == [f"Replay with {tool}:", "  " + command.replace("DIR", str(out))]
    manifest = orjson.loads((out / "_sidecar" / "manifest.json").read_bytes())
    options = manifest["options"]
    assert (options["block_size"], options["hash_id_scope"]) == (64, "local")
    assert options["mooncake_sessions"] is (name == "aiperf-mooncake")
    for trace in out.glob("*.json"):
        document = orjson.loads(trace.read_bytes())
        assert (document["block_size"], document["hash_id_scope"]) == (64, "local")
    for name_of_file in ("mooncake_trace.jsonl", "mooncake_sessions.jsonl"):
        if (out / name_of_file).exists():
            rows = [orjson.loads(line) for line in (out / name_of_file).read_bytes().splitlines()]
            assert len(rows) == 90
            assert all(len(row["hash_ids"]) == math.ceil(row["input_length"] / 512) for row in rows)
    assert check_directory(out).problems == []


def test_json_summary_names_the_preset_and_command(example_db: Path, tmp_path: Path):
    code, stdout, stderr = build(example_db, tmp_path / "out", "--preset", "sglang", "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["preset"] == "sglang"
    assert summary["replay_command"] == EXPECTED["sglang"][1].replace("DIR", str(tmp_path / "out"))


@pytest.mark.parametrize(("preset", "flags", "message"), [
    ("aiperf-weka", ["--global-hash-ids"],
     "--preset aiperf-weka writes --format kv --block-size 64 --local-hash-ids; drop --global-hash-ids"),
    ("kv-cache-tester", ["--block-size", "16", "--format", "both"],
     "--preset kv-cache-tester writes --format kv --block-size 64 --local-hash-ids; drop --format both, --block-size 16"),
    ("kv-cache-tester", ["--mooncake-block-size", "512"],
     "--preset kv-cache-tester writes --format kv --block-size 64 --local-hash-ids; drop --mooncake-block-size 512"),
    ("dynamo-replay", ["--mooncake-sessions", "--mooncake-block-size", "256"],
     "--preset dynamo-replay writes --format mooncake --block-size 64 --mooncake-block-size 512 --local-hash-ids; "
     "drop --mooncake-block-size 256, --mooncake-sessions"),
])
def test_contradicting_flags_are_a_usage_error(preset: str, flags: list[str], message: str, example_db: Path,
                                                tmp_path: Path):
    code, _, stderr = build(example_db, tmp_path / "out", "--preset", preset, *flags)
    assert code == 2
    assert stderr == f"Error: {message} (see --help)\n"
    assert not (tmp_path / "out").exists()


def test_flags_that_agree_with_the_preset_are_accepted(example_db: Path, tmp_path: Path):
    code, _, stderr = build(example_db, tmp_path / "out", "--preset", "aiperf-mooncake", "--format", "mooncake",
                            "--block-size", "64", "--mooncake-block-size", "512", "--mooncake-sessions",
                            "--local-hash-ids")
    assert code == 0, stderr


def test_preset_list_prints_the_documented_table():
    result = CliRunner().invoke(main, ["--preset", "list"])
    assert result.exit_code == 0
    assert result.stdout == preset_table() + "\n"
    # docs/traces.md carries the table generated from the code, verbatim.
    assert preset_table() in (ROOT / "docs" / "traces.md").read_text()
    assert "| — | vLLM `vllm bench serve` | none:" in preset_table()


def test_aiperf_mooncake_request_count_is_the_rows_of_the_file_it_replays(tmp_path: Path):
    """--request-count is every session row (AIPerf's default cap of 10 would stop the replay short); here
    the parent's 6 requests of the example logs, on the route without a DB."""
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["--jsonl-dir", str(ROOT / "examples" / "jsonl"), "--output-dir", str(out),
                                       "--preset", "aiperf-mooncake", "--json"])
    assert result.exit_code == 0, result.stderr
    rows = (out / "mooncake_sessions.jsonl").read_bytes().splitlines()
    assert len(rows) == 6
    assert json.loads(result.stdout)["replay_command"].endswith(
        f"--input-file {out / 'mooncake_sessions.jsonl'} --isl-block-size 512 --request-count 6")
