"""Sub-second starts, old-proxy first sends and cleaned old-proxy estimates (lib/capture/turn_timing.py)."""
from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from complete_cache_visualizer import main as visualizer_main
from lib.synthetic.example import generate_example
from lib.synthetic.scenario import build_scenario
from lib.synthetic.usage import TokenMeter, tiktoken_counter
from lib.records import ProxyRequest, Usage
from lib.capture.proxy_reader import UNKNOWN_TIME
from lib.capture.turn_timing import first_send, start_lower_bound, without_twin_write
from lib.validate.versus_api import API_TRUTH_CLEANED, API_TRUTH_USAGE
from lib.validate.validator import validate_traces
from tests.test_traces import markers, native, parents, run

SMALL = 0.05
FIXTURE = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "real-proxy-fixed"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
T0 = datetime(2026, 3, 25, 19, 0, 0, tzinfo=timezone.utc)


def _request(request_id: str = "r", *, at: datetime = T0, completed: datetime | None = None, api_s: float | None = 1.5,
             streaming: bool = False, usage: Usage | None = None, ttft_s: float | None = None) -> ProxyRequest:
    return ProxyRequest(row_id=1, request_id=request_id, timestamp=at, completed_at=completed, is_streaming=streaming,
                        status=200, kind="ok", model="claude-opus-4-6", message_id=f"msg_{request_id}", usage=usage,
                        stop_reason="end_turn", output_types=("text",), api_time_s=api_s, ttft_s=ttft_s,
                        anthropic_request_id=None, session_header=None, max_tokens=32000, retry_count=None,
                        prompt_key="k", message_count=1)


def assert_same_trace_but_agent_times(actual: bytes, expected: bytes, agent_id: str) -> None:
    """Two native traces equal but for the `t` and `think_time` of one sub-agent whose JSONL log is gone.

    Without the log's answer times its starts are refined from completedAt − responseTime only, so
    each moves inside the proxy's whole second (docs/traces.md, "Times"); everything else is equal.
    """
    got, want = json.loads(actual), json.loads(expected)

    def lane_of(trace: dict) -> list[dict]:
        return next(r["requests"] for r in trace["requests"] if r["type"] == "subagent" and r["agent_id"] == agent_id)

    for mine, theirs in zip(lane_of(got), lane_of(want)):
        for key in ("t", "think_time"):
            assert abs(mine[key] - theirs[key]) < 1, (key, mine[key], theirs[key])
            mine[key] = theirs[key]
    assert got == want


# --- units --------------------------------------------------------------------------------------


def test_a_whole_second_start_moves_to_the_latest_start_its_sources_allow():
    seconds = lambda value: timedelta(seconds=value)  # noqa: E731
    ended = T0 + seconds(2)
    # completedAt (whole seconds) − 1.5 s: the start is at least 0.5 s into its second.
    assert start_lower_bound(_request(completed=ended)) == T0 + seconds(0.5)
    # The answer's first JSONL line at 2.2 s puts it at 0.7 s.
    assert start_lower_bound(_request(completed=ended), answer_logged_at=T0 + seconds(2.2)) == T0 + seconds(0.7)
    # Never past the proxy's second, never before it; a proxy timestamp with a fraction is kept.
    assert start_lower_bound(_request(completed=ended), answer_logged_at=T0 + seconds(9)) == T0 + seconds(0.999)
    assert start_lower_bound(_request(completed=T0 + seconds(1))) == T0
    assert start_lower_bound(_request(at=T0 + seconds(0.25), completed=ended)) == T0 + seconds(0.25)
    assert start_lower_bound(_request(completed=ended, api_s=None)) == T0


def test_first_send_takes_the_twins_start_usage_and_first_token():
    twin = _request("twin", at=T0, streaming=True, usage=Usage(10, 500, 4000, 90), ttft_s=1.2)
    replay = _request("replay", at=T0 + timedelta(seconds=2.5), api_s=3.0, usage=Usage(3, 4500, 0, 88))
    turn = first_send(replay, twin)
    assert (turn.request_id, turn.timestamp, turn.usage, turn.ttft_s, turn.api_time_s, turn.is_streaming) == (
        "replay", T0, Usage(10, 500, 4000, 90), 1.2, 5.5, False)


def test_a_row_without_a_time_of_its_own_is_left_for_its_jsonl_time():
    # UNKNOWN_TIME is a marker the trace plan and the visualizer replace with the turn's JSONL time.
    unknown = _request("replay", at=UNKNOWN_TIME, completed=T0 + timedelta(seconds=2))
    assert start_lower_bound(unknown, answer_logged_at=T0 + timedelta(seconds=2.2)) == UNKNOWN_TIME
    twin = _request("twin", at=UNKNOWN_TIME, streaming=True, usage=Usage(10, 500, 4000, 90), ttft_s=1.2)
    replay = _request("replay", at=T0, usage=Usage(3, 4500, 0, 88))
    assert first_send(replay, twin) is replay


def test_without_twin_write_moves_the_twins_write_from_read_to_creation():
    replay = Usage(input_tokens=3, cache_read_input_tokens=4500, cache_creation_input_tokens=10, output_tokens=8,
                   cache_creation_5m_tokens=10)
    assert without_twin_write(replay, 1200) == Usage(3, 1200, 3310, 8, 3310, 0)
    assert without_twin_write(replay, 9000) == replay
    long_lived = Usage(3, 4500, 10, 8, 0, 10)
    assert without_twin_write(long_lived, 1200) == Usage(3, 1200, 3310, 8, 0, 3310)


# --- the example's proxy variants ------------------------------------------------------------------


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small captures of the three variants of the same conversation, with traces (seed options)."""
    folders = {}
    for variant in ("fixed", "old", "cleaned"):
        folder = tmp_path_factory.mktemp(variant)
        generate_example(folder, variant=variant, seed=7, scale=SMALL)
        run(folder / "requests.db", folder / "jsonl", folder / "traces", include_subagents=True, anonymize=True)
        folders[variant] = folder
    return folders


def _versus_api(folder: Path):
    return validate_traces(str(folder / "traces"), db_path=str(folder / "requests.db"),
                           jsonl_dir=str(folder / "jsonl")).api


def _raw_replay_hit_pct(folder: Path) -> float:
    """cache_read / prompt of the non-streaming turns (rows with tools), as the proxy stored them."""
    with sqlite3.connect(folder / "requests.db") as connection:
        rows = connection.execute("SELECT body, response FROM requests").fetchall()
    usages = [response["body"]["usage"] for body, response in
              ((json.loads(body), json.loads(response)) for body, response in rows)
              if "tools" in body and not response["isStreaming"]]
    read = sum(u.get("cache_read_input_tokens", 0) for u in usages)
    return 100 * read / sum(u.get("cache_read_input_tokens", 0) + u.get("cache_creation_input_tokens", 0)
                            + u["input_tokens"] for u in usages)


def test_old_variant_replays_read_their_twins_write(variants: dict[str, Path]):
    # The phenomenon of real old-proxy captures: the row the JSONL names says "almost all cached".
    assert round(_raw_replay_hit_pct(variants["old"]), 1) == round(_raw_replay_hit_pct(variants["cleaned"]), 1) == 99.7


def test_old_variant_api_truth_is_the_first_send(variants: dict[str, Path]):
    old, fixed = _versus_api(variants["old"]), _versus_api(variants["fixed"])
    assert old.api_truth == fixed.api_truth == API_TRUTH_USAGE
    figures = lambda api: (round(api.overall.sim_pct, 1), round(api.overall.api_pct, 1),  # noqa: E731
                           round(api.overall.accuracy_pct, 1))
    assert figures(old) == (91.5, 92.2, 99.3)
    assert figures(fixed) == (91.6, 92.2, 99.3)
    assert old.overall.accuracy_pct >= 98 and abs(old.overall.accuracy_pct - fixed.overall.accuracy_pct) <= 1


def test_old_variant_times_start_at_the_first_send(variants: dict[str, Path]):
    scenario = build_scenario(7, SMALL, TokenMeter(tiktoken_counter()), old_proxy=True)
    calls = scenario.parent.calls
    requests = parents(native(variants["old"] / "traces")["trace_0001"])
    first_sends = [call.twin.start_s - calls[0].twin.start_s for call in calls]
    replays = [call.start_s - calls[0].twin.start_s for call in calls]
    client_pauses = [0.0] + [call.twin.start_s - previous.end_s for previous, call in zip(calls, calls[1:])]
    # Within the proxy's whole second of the twin's send (the twin has no JSONL line to refine it).
    assert max(abs(r["t"] - sent) for r, sent in zip(requests, first_sends)) < 1
    assert max(abs(r["t"] - replay) for r, replay in zip(requests, replays)) > 2
    assert max(abs(r["think_time"] - pause) for r, pause in zip(requests, client_pauses)) < 1
    assert [r["t"] for r in requests] == [0, 12.031, 19.339, 188, 210, 530.444]
    assert [r["think_time"] for r in requests] == [0, 3.483, 0, 143.843, 0.288, 314.627]


def test_cleaned_variant_is_recognised_and_its_api_figures_estimated(variants: dict[str, Path]):
    api = _versus_api(variants["cleaned"])
    assert api.api_truth == API_TRUTH_CLEANED
    # The replays alone say 99.7 %; the estimate takes the deleted twins' writes back out.
    assert (round(api.overall.sim_pct, 1), round(api.overall.api_pct, 1), round(api.overall.accuracy_pct, 1)) == (
        91.5, 87.9, 95.8)
    assert api.overall.api_pct < _raw_replay_hit_pct(variants["cleaned"])
    text = validate_traces(str(variants["cleaned"] / "traces"), db_path=str(variants["cleaned"] / "requests.db"),
                           jsonl_dir=str(variants["cleaned"] / "jsonl")).text()
    assert "API figures estimated: a cleaned old-proxy capture" in text


def test_visualizer_flags_the_cleaned_estimate_and_reads_old_turns_from_the_first_send(variants: dict[str, Path],
                                                                                        tmp_path: Path):
    figures = {}
    for variant in ("old", "cleaned"):
        folder = tmp_path / variant
        shutil.copytree(variants[variant], folder)
        result = CliRunner().invoke(visualizer_main, [str(folder / "requests.db"), "--conversation-id", "combined",
                                                      "--projects-path", str(folder / "jsonl"), "--text-only",
                                                      "--output-dir", str(folder / "viz"), "--json", "-q"])
        assert result.exit_code == 0, result.output
        (report,) = json.loads(result.stdout)["reports"]
        # The eviction time is fitted to the same API truth: first sends, or the cleaned estimate.
        fitted = next(fit for fit in report["eviction_time"]["fits"] if fit["family"] == "all")
        figures[variant] = (round(100 * report["api_hit_rate"], 1), round(100 * fitted["billed_hit_rate"], 1),
                            report["api_estimated"])
    assert figures == {"old": (92.2, 92.2, False), "cleaned": (87.9, 87.9, True)}


# --- no lane overlaps -------------------------------------------------------------------------------


def _overlaps(document: dict) -> tuple[int, int]:
    """(overlapping, all) consecutive request pairs over every lane: t_prev + api_time_prev > t_next."""
    lanes = [parents(document)] + [marker["requests"] for marker in markers(document)]
    pairs = [(a, b) for lane in lanes for a, b in zip(lane, lane[1:])]
    return sum(a["t"] + a["api_time"] > b["t"] for a, b in pairs), len(pairs)


def test_no_lane_of_the_variants_overlaps(variants: dict[str, Path]):
    assert {v: _overlaps(native(folder / "traces")["trace_0001"]) for v, folder in variants.items()} == {
        "fixed": (0, 85), "old": (0, 85), "cleaned": (0, 85)}


def test_no_lane_of_the_shipped_example_overlaps(tmp_path: Path):
    shutil.copyfile(EXAMPLES / "requests.db", tmp_path / "requests.db")
    run(tmp_path / "requests.db", EXAMPLES / "jsonl", tmp_path / "traces", include_subagents=True, anonymize=True)
    assert _overlaps(native(tmp_path / "traces")["trace_0001"]) == (0, 85)


@pytest.mark.skipif(not FIXTURE.is_dir(), reason="real-proxy fixture absent")
def test_no_lane_of_the_real_proxy_fixture_overlaps(tmp_path: Path):
    # Whole-second `t` made 8 of these 33 pairs overlap (`t` 0, api_time 3.328, next `t` 3).
    shutil.copyfile(FIXTURE / "requests.db", tmp_path / "requests.db")
    run(tmp_path / "requests.db", FIXTURE / "jsonl", tmp_path / "traces", include_subagents=True, anonymize=True)
    document = native(tmp_path / "traces")["trace_0001"]
    assert _overlaps(document) == (0, 33)
    assert [r["t"] for r in parents(document)][:4] == [0, 3.464, 5.257, 7.217]
