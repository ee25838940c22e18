"""Native format rules (docs/traces.md#the-native-trace-file), the strict schema check
(docs/validate.md#schema-check) and the Mooncake export (docs/traces.md#mooncake-jsonl)."""
from __future__ import annotations

import math

import orjson

from lib.hashing.block_hashes import RequestHashes
from lib.traces.mooncake import MooncakeCollector
from lib.traces.native_format import InputTypes, RequestFacts, SubagentFacts, native_trace
from lib.validate.schema import check_mooncake_rows, check_native_trace


def make_facts(*, start_s: float, end_s: float, ids: list[int], stop: str = "tool_use", streaming: bool = True,
               tokens: int | None = None, last_types: tuple[str, ...] = ("tool_result",)) -> RequestFacts:
    return RequestFacts(
        start_s=start_s, end_s=end_s, is_streaming=streaming, model="claude-opus-4-6",
        token_count=tokens if tokens is not None else len(ids) * 4 + 1, hash_ids=ids, output_tokens=10,
        stop_reason=stop, output_types=("text", "tool_use"), api_time_s=end_s - start_s, ttft_s=0.5,
        last_message_types=last_types, all_message_types=("text", "tool_result", "tool_use"),
    )


def build(parent, subagents=(), include=True):
    # A one-block prefix: AIPerf refuses a prefix longer than a lane's first request (prefix_exceeds_first_request).
    return native_trace(trace_id="trace_0001", block_size=4, hash_id_scope="local", tool_tokens=3,
                        system_tokens=1, parent=parent, subagents=list(subagents), include_subagents=include)


def test_request_fields_think_time_and_input_types():
    parent = [
        make_facts(start_s=100, end_s=103, ids=[1, 2], stop="tool_use"),
        make_facts(start_s=107, end_s=110, ids=[1, 2, 3], stop="end_turn", streaming=False),
        make_facts(start_s=425, end_s=428, ids=[1, 2, 3, 4]),
        make_facts(start_s=430, end_s=431, ids=[9], tokens=5, stop="end_turn"),
    ]
    document = build(parent)
    requests = document["requests"]
    assert [r["t"] for r in requests] == [0, 7, 325, 330]
    assert [r["think_time"] for r in requests] == [0, 4, 315, 2]
    assert [r["input_types"] for r in requests] == [["text"], ["tool_result"], ["text"], ["text", "tool_result", "tool_use"]]
    assert "ttft" in requests[0] and "ttft" not in requests[1]
    assert "totals" not in document
    assert check_native_trace(document, "t.json") == []


def test_a_major_reset_counts_the_previous_requests_distinct_ids():
    rule = InputTypes()
    everything = ["text", "tool_result", "tool_use"]
    sequence = [
        ([1, 2, 3, 4], ["text"]),
        ([1, 2, 3, 4, 5], ["tool_result"]),  # extends: keeps all 5
        ([1, 2, 6, 7], everything),  # keeps {1, 2} of 5 distinct ids: under half, a major reset
        ([1, 1, 1, 1, 8], everything),  # keeps {1} of [1, 2, 6, 7]
        ([1, 1, 1, 1, 8, 9], everything),  # extends, but its predecessor had only 2 distinct ids of 5
        ([1, 1, 1, 1, 8, 9, 10], ["tool_result"]),  # extends: 3 distinct of 6 is half, not under
        ([], everything),  # keeps nothing
        ([11], ["tool_result"]),  # after an empty prompt nothing can be lost
    ]
    for number, (ids, expected) in enumerate(sequence):
        assert rule.next(make_facts(start_s=number, end_s=number + 0.5, ids=ids)) == expected, number


def test_markers_sorted_by_spawn_never_first_with_totals():
    parent = [make_facts(start_s=10, end_s=12, ids=[1]), make_facts(start_s=60, end_s=70, ids=[1, 2])]
    sub = SubagentFacts(spawn_s=12, agent_label="agent_001", subagent_type="Explore", duration_ms=40000,
                        total_tokens=500, tool_use_count=3, status="completed", tool_tokens=2, system_tokens=2,
                        requests=[make_facts(start_s=13, end_s=14, ids=[5]), make_facts(start_s=20, end_s=21, ids=[5, 6])])
    document = build(parent, [sub])
    kinds = [r["type"] for r in document["requests"]]
    assert kinds == ["s", "subagent", "s"]
    marker = document["requests"][1]
    assert marker["t"] == 2 and [r["t"] for r in marker["requests"]] == [0, 7]
    assert document["totals"] == {
        "parent_tokens": {"input": 5 + 9, "output": 20},
        "subagent_tokens": {"input": 5 + 9, "output": 20},
        "combined_tokens": {"input": 28, "output": 40},
        "subagent_count": 1,
    }
    assert check_native_trace(document, "t.json") == []


def test_aiperf_clock_starts_the_parent_past_every_subagent_t():
    # Sub-agent requests at t 0 and 7 (relative), marker at t 2: AIPerf 0.13 would read t 7 as
    # absolute (7 >= 2). Shifted by 8 s, the marker is at 10 and every sub-agent t is below it.
    parent = [make_facts(start_s=10, end_s=12, ids=[1]), make_facts(start_s=60, end_s=70, ids=[1, 2])]
    sub = SubagentFacts(spawn_s=12, agent_label="agent_001", subagent_type="Explore", duration_ms=40000,
                        total_tokens=500, tool_use_count=3, status="completed", tool_tokens=2, system_tokens=2,
                        requests=[make_facts(start_s=13, end_s=14, ids=[5]), make_facts(start_s=20, end_s=21, ids=[5, 6])])
    plain = native_trace(trace_id="trace_0001", block_size=4, hash_id_scope="local", tool_tokens=3, system_tokens=1,
                         parent=parent, subagents=[sub], include_subagents=True)
    shifted = native_trace(trace_id="trace_0001", block_size=4, hash_id_scope="local", tool_tokens=3, system_tokens=1,
                           parent=parent, subagents=[sub], include_subagents=True, aiperf_clock=True)
    assert [r["t"] for r in plain["requests"]] == [0, 2, 50]
    assert [r["t"] for r in shifted["requests"]] == [8, 10, 58]
    marker = shifted["requests"][1]
    assert [r["t"] for r in marker["requests"]] == [0, 7] and all(r["t"] < marker["t"] for r in marker["requests"])
    # Only the top-level `t` moves: think times, sub-agent times and everything else are unchanged.
    for key in plain:
        if key != "requests":
            assert shifted[key] == plain[key]
    assert [{**r, "t": 0} for r in shifted["requests"]] == [{**r, "t": 0} for r in plain["requests"]]
    assert check_native_trace(shifted, "t.json") == []
    # Without sub-agents there is nothing to move.
    assert native_trace(trace_id="trace_0001", block_size=4, hash_id_scope="local", tool_tokens=3, system_tokens=1,
                        parent=parent, subagents=[], include_subagents=True, aiperf_clock=True) == build(parent)


def test_schema_check_reports_file_index_and_rule():
    document = build([make_facts(start_s=0, end_s=1, ids=[1, 2]), make_facts(start_s=5, end_s=6, ids=[1, 2, 3])])
    document["requests"][1]["extra"] = 1
    document["requests"][0]["stop"] = None
    document["requests"][1]["hash_ids"] = [1]
    problems = {str(p) for p in check_native_trace(document, "bad.json")}
    assert "bad.json: requests[1]: unknown field `extra`" in problems
    assert "bad.json: requests[0]: `stop` is null" in problems
    assert "bad.json: requests[1]: len(hash_ids) = 1 but in // block_size = 3" in problems


def test_mooncake_ceil_and_rebucket_and_global_ids():
    # base block 4, Mooncake block 8 (ratio 2): 19 tokens -> 4 base keys + tail; ceil(19/8) = 3 ids.
    first = RequestHashes(19, [b"k1", b"k2", b"k3", b"k4"], b"t19")
    second = RequestHashes(16, [b"k1", b"k2", b"x3", b"x4"], None)
    collector = MooncakeCollector(base_block_size=4, block_size=8)
    collector.add(session="a", start_s=1.0, previous_end_s=None, hashes=first, output_length=3)
    collector.add(session="b", start_s=1.5, previous_end_s=None, hashes=second, output_length=1)
    rows = [orjson.loads(line) for line in collector.flat_lines()]
    assert rows == [
        {"timestamp": 0, "input_length": 19, "output_length": 3, "hash_ids": [1, 2, 3]},
        {"timestamp": 500, "input_length": 16, "output_length": 1, "hash_ids": [1, 4]},
    ]
    assert check_mooncake_rows(enumerate(rows, 1), "m.jsonl", block_size=8) == []
    assert all(len(r["hash_ids"]) == math.ceil(r["input_length"] / 8) for r in rows)


def test_mooncake_sessions_are_deltas_beyond_the_previous_prompt_and_answer():
    collector = MooncakeCollector(base_block_size=4, block_size=8)
    collector.add(session="s", start_s=0.0, previous_end_s=None, hashes=RequestHashes(16, [b"a", b"b", b"c", b"d"]), output_length=2)
    collector.add(session="s", start_s=3.0, previous_end_s=1.0, hashes=RequestHashes(24, [b"a", b"b", b"c", b"d", b"e", b"f"]),
                  output_length=2)
    rows = [orjson.loads(line) for line in collector.session_lines()]
    # AIPerf sends turn 2 as 16 + the 2-token answer + 6 = 24 tokens, the recorded prompt.
    assert rows == [
        {"session_id": "s", "timestamp": 0, "input_length": 16, "output_length": 2, "hash_ids": [1, 2]},
        {"session_id": "s", "delay": 2000, "input_length": 6, "output_length": 2, "hash_ids": [3]},
    ]
