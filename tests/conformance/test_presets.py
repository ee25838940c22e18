"""The aiperf-weka and aiperf-mooncake presets' exports load in AIPerf's own loaders.

Runs the loaders under the AIPerf 0.13 interpreter named by AIPERF_PYTHON (`.ci/run` sets it);
skips when it names no file, because AIPerf is not a requirement of this project.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from build_minimal_traces import main

ROOT = Path(__file__).resolve().parents[2]
AIPERF_PYTHON = os.environ.get("AIPERF_PYTHON", "")
pytestmark = pytest.mark.skipif(not (AIPERF_PYTHON and Path(AIPERF_PYTHON).is_file()),
                                reason="AIPERF_PYTHON does not name an interpreter with aiperf 0.13 (.ci/run sets it)")

# Load with the classes `aiperf profile --custom-dataset-type weka_trace|mooncake_trace` uses and
# print what they parsed. Parsing asks the Mooncake loader's prompt generator only for a tokenizer
# name and its per-file block cache, so a stand-in is enough (prompts are built later, per server).
LOAD = """
import json, sys
from types import SimpleNamespace
from aiperf.dataset.loader.weka_trace import WekaTraceLoader
from aiperf.dataset.loader.mooncake_trace import MooncakeTraceDatasetLoader
kind, path = sys.argv[1:]
if kind == "weka":
    data = WekaTraceLoader(filename=path).load_dataset()
    print(json.dumps({key: [t.block_size, t.hash_id_scope, len(t.requests)] for key, [t] in data.items()}))
else:
    generator = SimpleNamespace(tokenizer=None, _cache={},
                                _hash_id_corpus_rng=SimpleNamespace(set_trace_id=lambda trace_id: None))
    loader = MooncakeTraceDatasetLoader(filename=path, prompt_generator=generator, default_block_size=512)
    data = loader.load_dataset()
    print(json.dumps({"sessions": len(data), "rows": sum(len(rows) for rows in data.values()),
                      "first": data["trace_0001"][0].input_length}))
"""


def build(example_db: Path, out: Path, preset: str) -> None:
    result = CliRunner().invoke(main, [str(example_db), "--jsonl-dir", str(ROOT / "examples" / "jsonl"),
                                       "--output-dir", str(out), "--include-subagents", "--anonymize",
                                       "--salt", "presets", "--preset", preset])
    assert result.exit_code == 0, result.stderr


def load(kind: str, path: Path) -> dict:
    done = subprocess.run([AIPERF_PYTHON, "-c", LOAD, kind, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_aiperf_weka_preset_loads_in_weka_trace(example_db: Path, tmp_path: Path):
    build(example_db, tmp_path / "out", "aiperf-weka")
    # 6 parent requests and 4 sub-agent markers, at the declared 64-token blocks.
    assert load("weka", tmp_path / "out") == {"trace_0001": [64, "local", 10]}


def test_aiperf_mooncake_preset_loads_in_mooncake_trace(example_db: Path, tmp_path: Path):
    build(example_db, tmp_path / "out", "aiperf-mooncake")
    # One session per lane (the parent and 4 sub-agents), every request a row.
    assert load("mooncake", tmp_path / "out" / "mooncake_sessions.jsonl") == {"sessions": 5, "rows": 90, "first": 21237}
