"""build_traces end to end: the real-format fixture, hand-made captures with pinned token counts,
determinism, every option, both proxy generations and the Mooncake export (docs/hashing.md, docs/traces.md)."""
from __future__ import annotations

import importlib.util
import math
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from lib.hashing.block_hashes import RequestHashes, SegmentTokenizer, normalize_section
from lib.traces.mooncake import MooncakeCollector
from lib.hashing.tokenizer import load_encoder
from lib.validate.trace_files import check_directory, iter_jsonl
from lib.traces.plan import PlanOptions
from lib.traces.build import MANIFEST, MOONCAKE_FILE, MOONCAKE_SESSIONS_FILE, SIDECAR_DIR, build_traces
from lib.traces.options import TraceOptions, TraceSummary
from tests.jsonl_builders import OTHER_SESSION, SESSION
from tests.test_hashing import common_prefix
from tests.proxy_builders import jsonl_output_types, manifest_turns
from tests import trace_inputs
from tests.trace_inputs import AGENT_ID, hand_capture, twin_capture

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "examples" / "generate_example.py"
FIXTURE_SESSION = "aece16d6-730c-4020-ab76-fd7ec747f412"
FIXTURE_AGENTS = {"a0c19174b948a6397": 7, "a3a42969eb2a3945f": 8, "a096565023a673e7b": 10}

# cl100k_base token counts of the hand-made segments, printed once and pinned (tests/trace_inputs.py).
TOOLS, SYSTEM, ASK, TOOL_CALL, TOOL_RESULT, ANSWER, FOLLOW_UP, COMPACTED = 37, 16, 24, 44, 30, 19, 22, 30
SUB_ASK, SUB_CALL, SUB_RESULT, OTHER_ASK = 21, 32, 29, 22
# Leading tokens two segments have in common: every message starts `{"role":"user","content":[{"text":"`.
COMMON_MESSAGE_START, COMMON_SYSTEM_START = 9, 5


def run(db: Path, jsonl: Path, out: Path, **options: Any) -> TraceSummary:
    """build_traces with TraceOptions fields and PlanOptions fields mixed as keywords."""
    plan_fields = set(PlanOptions.__dataclass_fields__)
    plan = PlanOptions(**{k: v for k, v in options.items() if k in plan_fields})
    rest = {k: v for k, v in options.items() if k not in plan_fields}
    rest.setdefault("salt", "test")
    return build_traces(str(db), str(jsonl), str(out), TraceOptions(plan=plan, **rest))


def native(out: Path) -> dict[str, dict]:
    """Every native trace file of an output dir, by file stem."""
    return {p.stem: orjson.loads(p.read_bytes()) for p in sorted(out.glob("*.json")) if p.name != MANIFEST}


def parents(document: dict) -> list[dict]:
    return [r for r in document["requests"] if r["type"] != "subagent"]


def markers(document: dict) -> list[dict]:
    return [r for r in document["requests"] if r["type"] == "subagent"]


def sidecar(out: Path, trace_id: str) -> list[dict]:
    return [row for _, row in iter_jsonl(out / SIDECAR_DIR / f"{trace_id}.jsonl")]


def all_requests(document: dict) -> list[dict]:
    """Parent requests then each marker's requests (the sidecar's order within a lane)."""
    return parents(document) + [r for m in markers(document) for r in m["requests"]]


def tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}




@pytest.fixture
def hand(tmp_path: Path) -> tuple[Path, Path]:
    return hand_capture(tmp_path / "capture")


# --- the real-format fixture ----------------------------------------------------------------------


def test_fixture_trace_has_parent_turns_and_three_markers_by_spawn_time(fixture_db: Path, fixture_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    summary = run(fixture_db, fixture_dir / "jsonl", out, include_subagents=True, formats=("kv", "mooncake"))
    assert (summary.traces_written, summary.requests_written) == (1, 12)
    assert (summary.subagents_written, summary.subagent_requests_written, summary.mooncake_rows) == (3, 25, 37)
    document = native(out)[FIXTURE_SESSION]
    entries = document["requests"]
    assert entries[0]["type"] == "s" and len(parents(document)) == 12
    assert {m["agent_id"]: len(m["requests"]) for m in markers(document)} == FIXTURE_AGENTS
    # All three were spawned by parent turn 4 (t=7, done at ~11.2 s) and precede turn 5.
    kinds = [r["type"] for r in entries]
    assert kinds == ["s"] * 4 + ["subagent"] * 3 + ["s"] * 8
    assert all(7 < m["t"] < entries[7]["t"] for m in markers(document))
    assert {m["subagent_type"] for m in markers(document)} == {"Explore"}
    assert sorted(m["duration_ms"] for m in markers(document)) == [7758, 9573, 11970]
    assert document["totals"]["subagent_count"] == 3
    assert document["models"] == ["claude-haiku-4-5-20251001", "claude-opus-4-6"]
    assert check_directory(out).problems == []


def test_fixture_streaming_facts_come_from_the_chunks(fixture_db: Path, fixture_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    run(fixture_db, fixture_dir / "jsonl", out, include_subagents=True)
    document = native(out)[FIXTURE_SESSION]
    rows = sidecar(out, FIXTURE_SESSION)
    truth, types = manifest_turns(fixture_dir), jsonl_output_types(fixture_dir)
    by_position = {(row["lane"], row["request_index"]): row for row in rows}
    pairs = [(r, by_position["parent", i]) for i, r in enumerate(parents(document))]
    pairs += [(r, by_position[m["agent_id"], i]) for m in markers(document) for i, r in enumerate(m["requests"])]
    assert len(pairs) == len(rows) == 37
    for request, row in pairs:
        assert request["type"] == "s"
        assert request["stop"] == truth[row["message_id"]]["stop_reason"] != ""
        assert request["output_types"] == list(types[row["message_id"]])
        assert request["api_time"] > 0 and request["ttft"] > 0
        assert row["anthropic_request_id"] == truth[row["message_id"]]["request_id"]
    stops = [r["stop"] for r in parents(document)]
    assert stops == ["tool_use"] * 11 + ["end_turn"]
    # The 529 row never becomes a trace request (its retry does): 37 = 12 + 7 + 8 + 10.
    with sqlite3.connect(fixture_db) as db:
        errors = {rid for rid, status in db.execute("SELECT id, json_extract(response, '$.statusCode') FROM requests")
                  if status != 200}
    assert len(errors) == 1 and not errors & {row["request_id"] for row in rows}
    assert len({row["request_id"] for row in rows}) == 37


def test_fixture_ids_are_local_dense_and_shared_by_subagents(fixture_db: Path, fixture_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    run(fixture_db, fixture_dir / "jsonl", out, include_subagents=True, block_size=64)
    document = native(out)[FIXTURE_SESSION]
    seen: list[int] = []
    for request in all_requests_in_file_order(document):
        assert len(request["hash_ids"]) == request["in"] // 64
        seen.extend(i for i in request["hash_ids"] if i not in seen)
    # Dense from 1 in first-appearance order (file order: markers' requests where the marker is).
    assert seen == list(range(1, len(seen) + 1))
    first = parents(document)[0]
    assert first["hash_ids"] == list(range(1, first["in"] // 64 + 1)) and first["in"] == 5029
    subs = markers(document)
    # The Explore agents share their tools and system prompt (2738 + 570 tokens, 51 full blocks):
    # its first block, the billing header with a per-agent `cch=` value, is dropped before hashing.
    firsts = [m["requests"][0]["hash_ids"] for m in subs]
    assert [common_prefix(firsts[0], other) for other in firsts[1:]] == [51, 51]
    assert [(m["tool_tokens"], m["system_tokens"]) for m in subs] == [(2738, 570)] * 3
    for document_requests in [parents(document)] + [m["requests"] for m in subs]:
        for previous, request in zip(document_requests, document_requests[1:]):
            # Every turn of the fixture extends its predecessor's prompt.
            assert common_prefix(previous["hash_ids"], request["hash_ids"]) >= len(previous["hash_ids"]) - 1


def all_requests_in_file_order(document: dict) -> list[dict]:
    ordered = []
    for entry in document["requests"]:
        ordered.extend(entry["requests"] if entry["type"] == "subagent" else [entry])
    return ordered


def test_fixture_mooncake_rows_follow_the_ceil_convention(fixture_db: Path, fixture_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    run(fixture_db, fixture_dir / "jsonl", out, include_subagents=True, formats=("kv", "mooncake"), mooncake_sessions=True)
    rows = [row for _, row in iter_jsonl(out / MOONCAKE_FILE)]
    assert len(rows) == 37
    assert all(len(r["hash_ids"]) == math.ceil(r["input_length"] / 512) for r in rows)
    assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows) and rows[0]["timestamp"] == 0
    sessions = [row for _, row in iter_jsonl(out / MOONCAKE_SESSIONS_FILE)]
    assert len({r["session_id"] for r in sessions}) == 4
    assert all(len(r["hash_ids"]) == math.ceil(r["input_length"] / 512) for r in sessions)
    # Later turns extend their context: AIPerf replays the rows and the answers before the last.
    parent_rows = [r for r in sessions if r["session_id"] == FIXTURE_SESSION]
    replayed = sum(r["input_length"] for r in parent_rows) + sum(r["output_length"] for r in parent_rows[:-1])
    assert replayed == 9198  # the last turn's whole prompt
    # One `timestamp` per session, then `delay` = think time, also for the turn after the markers.
    for session in {r["session_id"] for r in sessions}:
        keys = [("timestamp" in r, "delay" in r) for r in sessions if r["session_id"] == session]
        assert keys == [(True, False)] + [(False, True)] * (len(keys) - 1)
    document = native(out)[FIXTURE_SESSION]
    assert [r["delay"] for r in parent_rows[1:]] == [r["think_time"] * 1000 for r in parents(document)[1:]]
    assert check_directory(out).problems == []


# --- hand-made capture: hash-id prefixes computed by hand ----------------------------------------


def test_pinned_token_counts_of_the_hand_made_segments():
    tokens = SegmentTokenizer(load_encoder("cl100k_base"))
    count = lambda value: len(tokens.tokens(normalize_section(value)))  # noqa: E731
    assert [count(getattr(trace_inputs, name)) for name in ("TOOLS", "SYSTEM", "ASK", "TOOL_CALL", "TOOL_RESULT", "ANSWER",
            "FOLLOW_UP", "COMPACTED", "SUB_ASK", "SUB_CALL", "SUB_RESULT", "OTHER_ASK")] == [
        TOOLS, SYSTEM, ASK, TOOL_CALL, TOOL_RESULT, ANSWER, FOLLOW_UP, COMPACTED, SUB_ASK, SUB_CALL, SUB_RESULT, OTHER_ASK]
    ask, compacted = (tokens.tokens(normalize_section(getattr(trace_inputs, n))) for n in ("ASK", "COMPACTED"))
    assert common_prefix(ask, compacted) == COMMON_MESSAGE_START
    system, sub_system = (tokens.tokens(normalize_section(getattr(trace_inputs, n))) for n in ("SYSTEM", "SUB_SYSTEM"))
    assert common_prefix(system, sub_system) == COMMON_SYSTEM_START


def test_hand_made_conversation_shares_exactly_the_hand_computed_prefix(hand: tuple[Path, Path], tmp_path: Path):
    out = tmp_path / "out"
    run(*hand, out, include_subagents=True, block_size=4)
    document = native(out)[SESSION]
    r1, r2, r3, r4 = parents(document)
    n1 = TOOLS + SYSTEM + ASK
    n2 = n1 + TOOL_CALL + TOOL_RESULT
    n3 = n2 + ANSWER + FOLLOW_UP
    n4 = TOOLS + SYSTEM + COMPACTED
    assert [r["in"] for r in (r1, r2, r3, r4)] == [n1, n2, n3, n4] == [77, 151, 192, 83]
    assert (document["tool_tokens"], document["system_tokens"]) == (TOOLS, SYSTEM)
    assert r1["hash_ids"] == list(range(1, n1 // 4 + 1))  # [1..19]
    # The sub-agent (placed right after r1) shares the tools and the first 5 system tokens: 42 // 4 blocks.
    (sub,) = markers(document)
    s1, s2 = sub["requests"]
    k = (TOOLS + COMMON_SYSTEM_START) // 4
    assert s1["hash_ids"] == r1["hash_ids"][:k] + list(range(20, 20 + s1["in"] // 4 - k))
    assert s2["hash_ids"][: len(s1["hash_ids"])] == s1["hash_ids"]
    # r2 extends r1 (cache_control moved, thinking signature dropped): exactly n1 // 4 = 19 shared ids.
    fresh = max(s2["hash_ids"]) + 1
    assert r2["hash_ids"] == r1["hash_ids"] + list(range(fresh, fresh + n2 // 4 - n1 // 4))
    assert common_prefix(r2["hash_ids"], r3["hash_ids"]) == n2 // 4 == 37
    # After compaction only tools, system and the common message start survive: (37+16+9) // 4 = 15.
    kept = (TOOLS + SYSTEM + COMMON_MESSAGE_START) // 4
    assert r4["hash_ids"][:kept] == r1["hash_ids"][:kept]
    assert r4["hash_ids"][kept:] == list(range(max(r3["hash_ids"]) + 1, max(r3["hash_ids"]) + 1 + n4 // 4 - kept))
    # Input types: first → text; after tool_use → tool_result; after end_turn → text; major reset
    # (15 of r3's 48 ids kept < 50 %) → the types of the whole prompt even though r3 stopped on tool_use.
    assert [r["input_types"] for r in (r1, r2, r3, r4)] == [["text"], ["tool_result"], ["text"], ["text"]]
    assert [r["input_types"] for r in (s1, s2)] == [["text"], ["tool_result"]]
    # Whole-second proxy starts refined to the latest start the sources allow: completedAt (whole
    # seconds) − 1.5 s puts r1 at 10:00:00.5, so the spawn (JSONL 18:00:01.900Z) is at t = 1.4.
    assert [r["t"] for r in document["requests"]] == [0, 1.4, 10, 60, 1200]
    assert [r["think_time"] for r in (r1, r2, r3, r4)] == [0, 8.5, 48.5, 1138.5]
    assert (r1["api_time"], r1["ttft"], s2["think_time"]) == (1.5, 0.7, 0.5)


def test_global_scope_shares_identical_prefixes_across_conversations(hand: tuple[Path, Path], tmp_path: Path):
    local, shared = tmp_path / "local", tmp_path / "global"
    run(*hand, local, block_size=4, formats=("kv", "mooncake"), mooncake_block_size=8)
    run(*hand, shared, block_size=4, hash_id_scope="global", formats=("kv", "mooncake"), mooncake_block_size=8)
    a_local, b_local = native(local)[SESSION], native(local)[OTHER_SESSION]
    a_global, b_global = native(shared)[SESSION], native(shared)[OTHER_SESSION]
    assert (a_local["hash_id_scope"], a_global["hash_id_scope"]) == ("local", "global")
    b_ids = parents(b_global)[0]["hash_ids"]
    kept = (TOOLS + SYSTEM + COMMON_MESSAGE_START) // 4
    assert parents(b_local)[0]["hash_ids"] == list(range(1, (TOOLS + SYSTEM + OTHER_ASK) // 4 + 1))
    assert b_ids[:kept] == parents(a_global)[0]["hash_ids"][:kept]
    top = max(max(r["hash_ids"]) for r in parents(a_global))
    assert b_ids[kept:] == list(range(top + 1, top + 1 + len(b_ids) - kept))
    assert parents(a_local) == parents(a_global)
    # Mooncake ids are unique across conversations in both scopes: same file either way.
    assert (local / MOONCAKE_FILE).read_bytes() == (shared / MOONCAKE_FILE).read_bytes()
    rows = [row for _, row in iter_jsonl(local / MOONCAKE_FILE)]
    a1, b1 = rows[0], rows[-1]
    assert a1["input_length"] == TOOLS + SYSTEM + ASK and b1["input_length"] == TOOLS + SYSTEM + OTHER_ASK
    assert common_prefix(a1["hash_ids"], b1["hash_ids"]) == kept * 4 // 8


# --- determinism ---------------------------------------------------------------------------------


def test_same_salt_is_byte_identical_and_other_salts_give_the_same_ids(hand: tuple[Path, Path], tmp_path: Path):
    options = dict(include_subagents=True, block_size=4, formats=("kv", "mooncake"), mooncake_block_size=8,
                   mooncake_sessions=True)
    run(*hand, tmp_path / "a", **options)
    run(*hand, tmp_path / "b", **options)
    run(*hand, tmp_path / "c", **options, salt="another salt")
    assert tree(tmp_path / "a") == tree(tmp_path / "b") == tree(tmp_path / "c")
    assert b"another salt" not in b"".join(tree(tmp_path / "c").values())


class OneWorkerPerChunk:
    """A stand-in pool that runs every chunk in a freshly initialized "worker" (cold memo, deterministic)."""

    def __init__(self, max_workers: int, initializer: Any, initargs: tuple) -> None:
        self.initializer, self.initargs = initializer, initargs

    def submit(self, function: Any) -> None:
        function()

    def map(self, function: Any, items: Any) -> Any:
        for item in items:
            self.initializer(*self.initargs)
            yield function(item)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        return None


@pytest.mark.parametrize("pool", ["processes", "one worker per request"])
def test_workers_do_not_change_the_output_even_with_a_random_salt(pool: str, hand: tuple[Path, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch):
    # A is split at its 18-minute pause, so three plans; a worker drawing its own random salt
    # would give A's second segment keys (and so ids) unrelated to its first.
    monkeypatch.setattr("lib.hashing.hash_pool.CHUNK_REQUESTS", 1)
    if pool != "processes":
        # Every request its own chunk in a cold worker: a chunk starting mid-conversation must
        # re-hash its history to the same keys.
        monkeypatch.setattr("lib.hashing.hash_pool.ProcessPoolExecutor", OneWorkerPerChunk)
        monkeypatch.setattr("lib.hashing.hash_pool.MAX_CHUNK_FACTOR", 1)
    options = dict(include_subagents=True, block_size=4, split_at_gap_s=300, salt=None, formats=("kv", "mooncake"),
                   mooncake_block_size=8)
    run(*hand, tmp_path / "one", workers=1, **options)
    run(*hand, tmp_path / "two", workers=2, **options)
    assert tree(tmp_path / "one") == tree(tmp_path / "two")
    segment_2 = native(tmp_path / "two")[f"{SESSION}_s2"]
    assert parents(segment_2)[0]["hash_ids"][:15] == list(range(1, 16))


def test_jsonl_read_by_workers_counts_the_same_problems_in_the_same_order(hand: tuple[Path, Path], tmp_path: Path):
    """With workers the conversations' logs are read in the worker processes and merged in order."""
    db, jsonl = hand
    for name, junk in ((f"{SESSION}.jsonl", b'{"type": "future-entry"}\n{"type": "assistant", "mess'),
                       (f"{OTHER_SESSION}.jsonl", b'{"type": "future-entry"}\n{"type": "future-entry"}\n')):
        with (jsonl / name).open("ab") as stream:
            stream.write(junk)
    one = run(db, jsonl, tmp_path / "one", workers=1, include_subagents=True)
    two = run(db, jsonl, tmp_path / "two", workers=2, include_subagents=True)
    assert one.problems.as_dict() == two.problems.as_dict()
    assert one.problems.as_dict()["unknown_entry_type:future-entry"] == {
        "count": 3, "examples": [f"{SESSION}.jsonl:7", f"{OTHER_SESSION}.jsonl:3", f"{OTHER_SESSION}.jsonl:4"]}
    assert one.problems.count("truncated_jsonl_line") == 1
    assert tree(tmp_path / "one") == tree(tmp_path / "two")


# --- options --------------------------------------------------------------------------------------


def test_split_at_gap_restarts_t_and_keeps_a_subagent_in_its_spawn_segment(hand: tuple[Path, Path], tmp_path: Path):
    out = tmp_path / "out"
    summary = run(*hand, out, include_subagents=True, block_size=4, split_at_gap_s=30)
    documents = native(out)
    # Gaps: 8 s, 48 s, 1138 s → A splits into [r1, r2], [r3], [r4]; B is one trace.
    assert sorted(documents) == sorted([f"{SESSION}_s1", f"{SESSION}_s2", f"{SESSION}_s3", OTHER_SESSION])
    assert summary.traces_written == 4
    s1, s2, s3 = (documents[f"{SESSION}_s{i}"] for i in (1, 2, 3))
    assert [r["t"] for r in s1["requests"]] == [0, 1.4, 10]
    assert [r["t"] for r in s2["requests"]] == [0] and [r["t"] for r in s3["requests"]] == [0]
    assert len(markers(s1)) == 1 and not markers(s2) and not markers(s3)
    # Segments share the conversation's id namespace (docs/hashing.md#integer-ids-and-scopes).
    assert parents(s2)[0]["hash_ids"][:37] == parents(s1)[1]["hash_ids"]
    manifest = orjson.loads((out / MANIFEST).read_bytes())
    assert [(t["id"], t["segment"], t["requests"]) for t in manifest["traces"]][:3] == [
        (f"{SESSION}_s1", 1, 2), (f"{SESSION}_s2", 2, 1), (f"{SESSION}_s3", 3, 1)]


def test_min_requests_drops_short_traces_and_counts_them(hand: tuple[Path, Path], tmp_path: Path):
    out = tmp_path / "out"
    summary = run(*hand, out, block_size=4, min_requests=2)
    assert list(native(out)) == [SESSION]
    assert summary.dropped_min_requests == 1 and summary.as_dict()["dropped_min_requests"] == 1
    assert orjson.loads((out / MANIFEST).read_bytes())["dropped_min_requests"] == 1


def test_conversation_id_and_time_window_select_requests(hand: tuple[Path, Path], tmp_path: Path):
    from lib.timestamps import parse_timestamp

    run(*hand, tmp_path / "one", block_size=4, conversation_id=OTHER_SESSION)
    assert list(native(tmp_path / "one")) == [OTHER_SESSION]
    run(*hand, tmp_path / "window", block_size=4, since=parse_timestamp("2026-11-29T10:00:05-08:00"),
        until=parse_timestamp("2026-11-29T10:30:00-08:00"))
    (document,) = native(tmp_path / "window").values()
    assert [r["in"] for r in parents(document)] == [151, 192, 83]
    assert parents(document)[0]["t"] == 0 and parents(document)[0]["input_types"] == ["text"]


def test_anonymize_leaves_no_ids_timestamps_or_content(hand: tuple[Path, Path], tmp_path: Path):
    out = tmp_path / "out"
    run(*hand, out, include_subagents=True, block_size=4, anonymize=True, split_at_gap_s=300,
        formats=("kv", "mooncake"), mooncake_block_size=8, mooncake_sessions=True)
    assert sorted(native(out)) == ["trace_0001_s1", "trace_0001_s2", "trace_0002"]
    (marker,) = markers(native(out)["trace_0001_s1"])
    assert marker["agent_id"] == "agent_001"
    text = b"".join(tree(out).values()).decode()
    for forbidden in ("msg_", "toolu_", "req_", SESSION, OTHER_SESSION, AGENT_ID, "2026", "a000000000000001",
                      "main.py", "docstring", "terse"):
        assert forbidden not in text, forbidden
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text)
    manifest = orjson.loads((out / MANIFEST).read_bytes())
    assert all("conversation_id" not in entry for entry in manifest["traces"])


def test_token_count_api_uses_the_api_prompt_size(fixture_db: Path, fixture_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    summary = run(fixture_db, fixture_dir / "jsonl", out, include_subagents=True, token_count="api",
                  formats=("kv", "mooncake"))
    document = native(out)[FIXTURE_SESSION]
    rows = sidecar(out, FIXTURE_SESSION)
    requests = parents(document)
    parent_rows = [row for row in rows if row["lane"] == "parent"]
    assert [r["in"] for r in requests] == [row["api_prompt_tokens"] for row in parent_rows]
    assert requests[0]["in"] == 1 + 0 + 6183 == parent_rows[0]["usage"]["cache_creation_input_tokens"] + 1
    assert all(len(r["hash_ids"]) == r["in"] // 64 for r in all_requests(document))
    # Scaling keeps block boundaries stable: each turn shares most of its predecessor's ids.
    for previous, request in zip(requests, requests[1:]):
        assert common_prefix(previous["hash_ids"], request["hash_ids"]) >= 0.85 * len(previous["hash_ids"])
    assert summary.tokens_tokenized > 0
    assert check_directory(out).problems == []


def test_stale_files_are_removed_and_a_rerun_is_idempotent(hand: tuple[Path, Path], tmp_path: Path):
    out = tmp_path / "out"
    run(*hand, out, block_size=4, formats=("kv", "mooncake"), mooncake_block_size=8, mooncake_sessions=True)
    (out / "notes.txt").write_text("mine")
    summary = run(*hand, out, block_size=4, anonymize=True)
    assert sorted(tree(out)) == sorted([MANIFEST, "notes.txt", "trace_0001.json", "trace_0002.json",
                                        f"{SIDECAR_DIR}/trace_0001.jsonl", f"{SIDECAR_DIR}/trace_0002.jsonl"])
    assert summary.stale_removed == 6  # the named traces and sidecars, both Mooncake files
    before = tree(out)
    again = run(*hand, out, block_size=4, anonymize=True)
    assert tree(out) == before and again.stale_removed == 0


# --- proxy generations -----------------------------------------------------------------------------


def test_old_proxy_turn_gives_only_its_non_streaming_twin(tmp_path: Path):
    db, jsonl = twin_capture(tmp_path)
    out = tmp_path / "out"
    run(db, jsonl, out)
    (request,) = parents(native(out)[SESSION])
    assert (request["type"], request["stop"], request["output_types"]) == ("n", "tool_use", ["thinking", "tool_use"])
    # The turn starts at the twin's send (09:00:00); api_time runs to the replay's answer: the replay
    # started at 09:00:02.952 (JSONL line 06.500 − 3.548 s) and took 3.548 s.
    assert "ttft" not in request and (request["t"], request["api_time"]) == (0, 6.5)
    (row,) = sidecar(out, SESSION)
    assert row["message_id"] == "msg_Replay" and row["has_old_proxy_twin"] is True


def _generate(variant: str, target: Path) -> tuple[Path, Path]:
    if importlib.util.find_spec("lib.synthetic.scenario") is None or not GENERATOR.is_file():
        pytest.skip("examples/generate_example.py is not available")
    subprocess.run([sys.executable, str(GENERATOR), "--variant", variant, "--scale", "0.05", "--output-dir", str(target), "-q"],
                   check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})  # `lib` without installing
    return target / "requests.db", target / "jsonl"


def test_generated_old_proxy_capture_has_one_request_per_turn(tmp_path: Path):
    db, jsonl = _generate("old", tmp_path / "old")
    out = tmp_path / "out"
    summary = run(db, jsonl, out, include_subagents=True)
    (document,) = native(out).values()
    requests = all_requests(document)
    assert len(markers(document)) == 4 and summary.requests_written == len(parents(document))
    assert {r["type"] for r in requests} == {"n"}
    rows = sidecar(out, document["id"])
    assert all(row["has_old_proxy_twin"] for row in rows)
    assert len({row["request_id"] for row in rows}) == len(rows) == len(requests)
    assert check_directory(out).problems == []


def test_generated_fixed_proxy_capture_has_streaming_facts_from_chunks(tmp_path: Path):
    db, jsonl = _generate("fixed", tmp_path / "fixed")
    out = tmp_path / "out"
    run(db, jsonl, out, include_subagents=True, anonymize=True)
    document = native(out)["trace_0001"]
    requests = all_requests(document)
    assert len(markers(document)) == 4 and [m["agent_id"] for m in markers(document)] == [f"agent_00{i}" for i in range(1, 5)]
    assert {r["type"] for r in requests} == {"s"}
    assert all(r["stop"] in ("tool_use", "end_turn") and r["output_types"] and r["api_time"] > 0 and r["ttft"] > 0
               for r in requests)
    assert check_directory(out).problems == []


# --- Mooncake session deltas -----------------------------------------------------------------------


def test_mooncake_session_deltas_survive_a_partial_tail_block():
    # Base block 4, Mooncake block 8. 19 tokens → keys k1..k4 + tail; then 27 tokens extending it.
    collector = MooncakeCollector(base_block_size=4, block_size=8)
    collector.add(session="s", start_s=0.0, previous_end_s=None,
                  hashes=RequestHashes(19, [b"k1", b"k2", b"k3", b"k4"], b"t19"), output_length=2)
    collector.add(session="s", start_s=5.0, previous_end_s=2.0,
                  hashes=RequestHashes(27, [b"k1", b"k2", b"k3", b"k4", b"k5", b"k6"], b"t27"), output_length=2)
    collector.add(session="s", start_s=9.0, previous_end_s=6.0,
                  hashes=RequestHashes(12, [b"z1", b"z2", b"z3"], None), output_length=2)
    rows = [orjson.loads(line) for line in collector.session_lines()]
    assert rows == [
        {"session_id": "s", "timestamp": 0, "input_length": 19, "output_length": 2, "hash_ids": [1, 2, 3]},
        # 27 - 19 - the 2-token answer = 6 new tokens: one id, the last block of the extended
        # prompt (ids [1, 2, 4, 5]).
        {"session_id": "s", "delay": 3000, "input_length": 6, "output_length": 2, "hash_ids": [5]},
        # A rewritten context starts a new session, sent whole.
        {"session_id": "s#2", "timestamp": 9000, "input_length": 12, "output_length": 2, "hash_ids": [6, 7]},
    ]
