"""The JSONL-only and DB-only routes' outputs, built as the AIPerf conformance step builds them
(tests/conformance/), pass the validator's loading rules (docs/validate.md): every native file loads
in kv-cache-tester and AIPerf's weka_trace, every Mooncake file in AIPerf's mooncake_trace, no error.
kv-cache-tester cannot be installed here, so its loader is checked through these rules."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import build_minimal_traces
import validate_trace_cache
from lib.synthetic.example import generate_example
from route_sources import log_sessions, logs_only_folder

FLAGS = ["--block-size", "64", "--include-subagents", "--anonymize", "--format", "both", "--mooncake-sessions", "-q"]


def build(out: Path, *inputs: str) -> Path:
    result = CliRunner().invoke(build_minimal_traces.main, [*inputs, "--output-dir", str(out), *FLAGS])
    assert result.exit_code == 0, result.output
    return out


def schema(traces: Path) -> dict:
    result = CliRunner().invoke(validate_trace_cache.main, [str(traces), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["schema"]


def loads(native: int, mooncake: int) -> dict[str, int]:
    return {"kv-cache-tester": native, "AIPerf weka_trace": native, "AIPerf mooncake_trace": mooncake}


def test_logs_only_outputs_load_in_every_consumer(tmp_path: Path) -> None:
    jsonl = logs_only_folder(tmp_path)
    checked = schema(build(tmp_path / "out", "--jsonl-dir", str(jsonl)))
    # One trace per session of the logs; api_time and ttft absent by design (a warning each).
    assert (checked["native_files"], checked["mooncake_files"]) == (len(log_sessions(jsonl)), 2) == (4, 2)
    assert (checked["errors"], checked["warnings"]) == (0, 2 * 82)
    assert {problem["rule"] for problem in checked["problems"]} == {"missing_api_time", "missing_ttft"}
    assert checked["loads_in"] == loads(4, 2)


def test_db_only_outputs_load_in_every_consumer(tmp_path: Path) -> None:
    generate_example(tmp_path / "capture", variant="fixed", scale=0.2)
    checked = schema(build(tmp_path / "out", str(tmp_path / "capture" / "requests.db"), "--db-only",
                           "--index-db", str(tmp_path / "index.db")))
    assert (checked["native_files"], checked["mooncake_files"], checked["requests"]) == (1, 2, 90)
    assert (checked["errors"], checked["warnings"]) == (0, 0)
    assert checked["loads_in"] == loads(1, 2)
