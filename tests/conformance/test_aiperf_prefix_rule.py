"""The validator's `prefix_exceeds_first_request` rule against the real AIPerf 0.13 (docs/validate.md).

AIPerf's `weka_trace` loader refuses a trace whose declared tools + system prefix needs more hash
blocks than a lane's first request has. Each case below is the seed example's trace with one lane's
prefix set around that boundary (and the published-format corpus as its generator wrote it before its
prefixes were made to fit); AIPerf (tests/conformance/aiperf_probe.py) must refuse exactly the files
the rule flags, with the same block counts. Runs only when AIPERF_PYTHON names AIPerf's interpreter.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Callable, Optional

import pytest
from click.testing import CliRunner

from tests.validate_inputs import build_example_traces, published_corpus
from validate_trace_cache import main as validate_main

HERE = Path(__file__).resolve().parent
AIPERF_PYTHON = os.environ.get("AIPERF_PYTHON", "")
RULE = "prefix_exceeds_first_request"

pytestmark = pytest.mark.skipif(
    not (AIPERF_PYTHON and Path(AIPERF_PYTHON).is_file()),
    reason="AIPERF_PYTHON does not name an interpreter with aiperf 0.13 (.ci/run sets it)")


@pytest.fixture(scope="module")
def aiperf_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for AIPerf: cl100k_base from a local cache, no model hub, no network."""
    cache = tmp_path_factory.mktemp("tiktoken")
    subprocess.run([AIPERF_PYTHON, str(HERE / "aiperf_probe.py"), "tokenizer", str(cache)], check=True)
    return {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def example_trace(tmp_path_factory: pytest.TempPathFactory) -> dict:
    built = build_example_traces(tmp_path_factory.mktemp("example"))
    return json.loads((built / "examples" / "traces" / "trace_0001.json").read_text())


def _fill(lane: dict, extra_tokens: int) -> None:
    """The lane's prefix: its first request's hash blocks, full, plus `extra_tokens`."""
    lane["tool_tokens"] = len(lane["requests"][0]["hash_ids"]) * 64 - lane["system_tokens"] + extra_tokens


def _marker(document: dict) -> dict:
    return next(entry for entry in document["requests"] if entry["type"] == "subagent")


CASES: dict[str, Optional[Callable[[dict], None]]] = {
    "as built": None,
    "parent prefix fills its first request": lambda d: _fill(d, 0),
    "parent prefix one token over": lambda d: _fill(d, 1),
    "marker prefix fills its first request": lambda d: _fill(_marker(d), 0),
    "marker prefix one token over": lambda d: _fill(_marker(d), 1),
    "marker prefix one block over": lambda d: _fill(_marker(d), 64),
}


def _aiperf_refusal(aiperf_env: dict[str, str], directory: Path) -> Optional[tuple[int, int]]:
    """(blocks required, blocks recorded) when AIPerf refuses the directory for the prefix, None when it loads."""
    out = directory.parent / f"{directory.name}.aiperf.json"
    subprocess.run([AIPERF_PYTHON, str(HERE / "aiperf_probe.py"), "load", str(directory), "weka_trace", str(out)],
                   env=aiperf_env, capture_output=True, text=True, timeout=300)
    result = json.loads(out.read_text())
    if "error" not in result:
        return None
    found = re.search(r"system prefix requires (\d+) hash blocks but only (\d+) were recorded", result["error"])
    assert found, f"AIPerf refused {directory.name} for another reason: {result['error']}"
    return int(found[1]), int(found[2])


def _flagged(directory: Path) -> list[tuple[int, int]]:
    """(blocks needed, blocks present) of each of the rule's findings."""
    schema = json.loads(CliRunner().invoke(validate_main, [str(directory), "--json"]).stdout)["schema"]
    assert {problem["rule"] for problem in schema["problems"] if problem["severity"] == "error"} <= {RULE}
    return [(int(found[1]), int(found[2])) for problem in schema["problems"] if problem["rule"] == RULE
            for found in [re.search(r"= (\d+) hash blocks but the lane's first request has (\d+)", problem["problem"])]
            if found]


@pytest.mark.parametrize("case", list(CASES))
def test_aiperf_refuses_exactly_what_the_rule_flags(case: str, example_trace: dict, aiperf_env: dict[str, str],
                                                     tmp_path: Path):
    document = json.loads(json.dumps(example_trace))
    change = CASES[case]
    if change:
        change(document)
    directory = tmp_path / "traces"
    directory.mkdir()
    (directory / "trace_0001.json").write_text(json.dumps(document))
    refusal = _aiperf_refusal(aiperf_env, directory)
    flagged = _flagged(directory)
    assert (refusal is not None) == bool(flagged) == case.endswith("over")
    if refusal:
        assert refusal == flagged[0]


def test_published_format_corpus_before_its_prefixes_fit(aiperf_env: dict[str, str], tmp_path: Path):
    # bench/validate_corpus.py used to declare 15,000 + 6,000 prefix tokens over a ~20,000-token first request.
    corpus = published_corpus(tmp_path / "corpus")
    directory = tmp_path / "old"
    directory.mkdir()
    document = json.loads((corpus / "trace_0002.json").read_text())
    document.update(tool_tokens=15_000, system_tokens=6_000)
    (directory / "trace_0002.json").write_text(json.dumps(document))
    assert _aiperf_refusal(aiperf_env, directory) == _flagged(directory)[0] == (329, 313)
    assert _aiperf_refusal(aiperf_env, corpus) is None and _flagged(corpus) == []
