"""Traces versus the API (docs/validate.md#simulated-vs-api-per-trace): matching routes, same-request comparison, API-model errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lib.cache.api_model import PredictedUsage
from lib.errors import InputError
from lib.validate.matching import trace_lanes
from lib.validate.versus_api import Comparison, _scaled
from lib.validate.validator import validate_traces
from tests.validate_inputs import build_example_traces


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed's anonymized example traces (with sidecar and manifest) under <dir>/examples."""
    return build_example_traces(tmp_path_factory.mktemp("example")) / "examples"


def validate(traces: Path, examples: Path, *, jsonl: bool = True, **options):
    return validate_traces(str(traces), db_path=str(examples / "requests.db"),
                           jsonl_dir=str(examples / "jsonl") if jsonl else None, **options)


def test_accuracy_is_one_minus_relative_gap_and_undefined_without_api_hits():
    assert Comparison(45, 50, 900, 1000).accuracy_pct == pytest.approx(100.0)
    assert Comparison(40, 50, 900, 1000).accuracy_pct == pytest.approx(100 * (1 - 10 / 90))
    assert Comparison(40, 50, 0, 1000).accuracy_pct is None
    assert Comparison(0, 0, 0, 0).sim_pct is None
    assert (Comparison(1, 2, 3, 4) + Comparison(10, 20, 30, 40)) == Comparison(11, 22, 33, 44)


def test_prediction_is_scaled_to_api_tokens_and_adds_up():
    assert _scaled(PredictedUsage(800, 150, 50), 1000, 1170) == (936, 176, 58)
    assert sum(_scaled(PredictedUsage(333, 333, 334), 1000, 1171)) == 1171


def test_each_lane_is_compared_with_its_own_previous_request():
    document = {"id": "x", "block_size": 2, "requests": [
        {"type": "n", "model": "m", "in": 4, "hash_ids": [1, 2]},
        {"type": "subagent", "agent_id": "agent_001", "requests": [
            {"type": "n", "model": "h", "in": 4, "hash_ids": [7, 8]},
            {"type": "n", "model": "h", "in": 6, "hash_ids": [7, 8, 9]},
        ]},
        {"type": "n", "model": "m", "in": 6, "hash_ids": [1, 2, 3]},
    ]}
    lanes = trace_lanes("x.json", Path("."), document).lanes
    assert [(r.hit_blocks, r.blocks) for r in lanes["parent"]] == [(0, 2), (2, 3)]
    assert [(r.hit_blocks, r.blocks) for r in lanes["agent_001"]] == [(0, 2), (2, 3)]


def test_example_matches_every_request_through_the_re_derived_plan(example: Path):
    api = validate(example / "traces", example).api
    (trace,) = api.traces
    assert (trace.trace_id, trace.route, trace.requests, trace.matched) == ("trace_0001", "plan", 90, 90)
    assert not api.problems
    assert 80 < trace.comparison.sim_pct < 100 and 80 < trace.comparison.api_pct < 100
    assert api.model_requests == 90
    read = api.error("cache_read")
    # The example's usage comes from a cache simulation of the same rules: a consistency check.
    assert read.median_pct < 2 and read.p90_pct < 5


def test_api_side_sums_the_sidecar_usage_of_the_same_requests(example: Path):
    rows = [json.loads(line) for line in (example / "traces" / "_sidecar" / "trace_0001.jsonl").read_text().splitlines()]
    comparison = validate(example / "traces", example).api.overall
    assert comparison.api_prompt_tokens == sum(r["api_prompt_tokens"] for r in rows)
    # The example is a cleaned old-proxy capture: the stored reads (the sidecar's) include each deleted
    # twin's write, which the validator's API side takes back out (lib/capture/turn_timing.py).
    assert (comparison.api_read_tokens, sum(r["usage"]["cache_read_input_tokens"] for r in rows)) == (
        3_181_137, 3_560_615)
    document = json.loads((example / "traces" / "trace_0001.json").read_text())
    requests = [r for e in document["requests"] for r in (e["requests"] if e["type"] == "subagent" else [e])]
    assert comparison.sim_blocks == sum(len(r["hash_ids"]) for r in requests)


def test_without_sidecar_and_manifest_matching_falls_back_to_jsonl_ids(example: Path, tmp_path: Path):
    bare = tmp_path / "bare"
    shutil.copytree(example / "traces", bare, ignore=shutil.ignore_patterns("_sidecar"))
    report = validate(bare, example)
    assert report.schema.ok and report.stats.traces[0].requests == 6
    (trace,) = report.api.traces
    assert (trace.route, trace.matched) == ("jsonl", 90)


def test_without_ids_or_jsonl_the_plan_comes_from_the_db_alone(example: Path, tmp_path: Path):
    """No sidecar ids and no logs: the trace is matched through the DB-only route's plan (docs/routes.md)."""
    bare = tmp_path / "bare"
    shutil.copytree(example / "traces", bare, ignore=shutil.ignore_patterns("_sidecar"))
    with_logs = validate(bare, example).api.traces[0]
    report = validate(bare, example, jsonl=False)
    (trace,) = report.api.traces
    assert (trace.route, trace.matched) == ("db", 90)
    assert trace.comparison.accuracy_pct == with_logs.comparison.accuracy_pct


def test_thresholds_without_a_db_are_a_usage_error(example: Path):
    with pytest.raises(InputError, match="needs --db"):
        validate_traces(str(example / "traces"), needs_api=True)


def test_fixture_matches_37_of_37_with_api_hit_rate_from_the_jsonl_usage(fixture_db: Path, fixture_dir: Path, tmp_path: Path):
    from click.testing import CliRunner

    from build_minimal_traces import main as build_main

    out = tmp_path / "traces"
    built = CliRunner().invoke(build_main, [str(fixture_db), "--jsonl-dir", str(fixture_dir / "jsonl"),
                                            "--output-dir", str(out), "--include-subagents", "-q"])
    assert built.exit_code == 0, built.output
    report = validate_traces(str(out), db_path=str(fixture_db), jsonl_dir=str(fixture_dir / "jsonl"))
    (trace,) = report.api.traces
    assert (trace.route, trace.requests, trace.matched) == ("sidecar", 37, 37)
    # By hand: the usage Claude Code logged for the 37 message ids the fixture's manifest lists.
    manifest = json.loads((fixture_dir / "manifest.json").read_text())
    wanted = {t["msg_id"] for t in manifest["parent_turns"]} | {t["msg_id"] for a in manifest["agents"] for t in a["turns"]}
    usage: dict[str, dict] = {}
    for path in (fixture_dir / "jsonl").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            message = entry.get("message") if entry.get("type") == "assistant" else None
            if message and message.get("id") in wanted and message.get("usage"):
                usage[message["id"]] = message["usage"]
    assert len(usage) == 37
    read = sum(u["cache_read_input_tokens"] for u in usage.values())
    prompt = sum(u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"] for u in usage.values())
    assert (trace.comparison.api_read_tokens, trace.comparison.api_prompt_tokens) == (read, prompt)
    assert trace.comparison.api_pct == pytest.approx(100 * read / prompt)
