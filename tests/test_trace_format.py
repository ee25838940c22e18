"""Native format rules (SPEC §5.1), the strict schema check (§7.1) and the Mooncake export (§5.2)."""
from __future__ import annotations

import math

from lib.mooncake import MooncakeExport, MooncakeRequest, ceil_keys
from lib.trace_format import RequestFacts, SubagentFacts, native_trace
from lib.trace_schema import check_mooncake_rows, check_native_trace


def make_facts(*, start_s: float, end_s: float, ids: list[int], stop: str = "tool_use", streaming: bool = True,
               tokens: int | None = None, last_types: tuple[str, ...] = ("tool_result",)) -> RequestFacts:
    return RequestFacts(
        start_s=start_s, end_s=end_s, is_streaming=streaming, model="claude-opus-4-6",
        token_count=tokens if tokens is not None else len(ids) * 4 + 1, hash_ids=ids, output_tokens=10,
        stop_reason=stop, output_types=("text", "tool_use"), api_time_s=end_s - start_s, ttft_s=0.5,
        last_message_types=last_types, all_message_types=("text", "tool_result", "tool_use"),
    )


def build(parent, subagents=(), include=True):
    return native_trace(trace_id="trace_0001", block_size=4, hash_id_scope="local", tool_tokens=8,
                        system_tokens=4, parent=parent, subagents=list(subagents), include_subagents=include)


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


def test_markers_sorted_by_spawn_never_first_with_totals():
    parent = [make_facts(start_s=10, end_s=12, ids=[1]), make_facts(start_s=60, end_s=70, ids=[1, 2])]
    sub = SubagentFacts(spawn_s=12, agent_label="agent_001", subagent_type="Explore", duration_ms=40000,
                        total_tokens=500, tool_use_count=3, status="completed", tool_tokens=4, system_tokens=4,
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
    # base block 4, mooncake block 8 (ratio 2); 19 tokens -> 4 base keys + tail; ceil(19/8) = 3 ids.
    first = MooncakeRequest(session="a", start_s=1.0, end_s=2.0, input_length=19, output_length=3,
                            block_keys=["k1", "k2", "k3", "k4"], tail_key="t19")
    assert ceil_keys(first, ratio=2, block_size=8) == ["k2", "k4", "t19"]
    second = MooncakeRequest(session="b", start_s=1.5, end_s=2.5, input_length=16, output_length=1,
                             block_keys=["k1", "k2", "x3", "x4"], tail_key=None)
    rows = MooncakeExport(base_block_size=4, block_size=8).flat_rows([second, first])
    assert rows == [
        {"timestamp": 0, "input_length": 19, "output_length": 3, "hash_ids": [1, 2, 3]},
        {"timestamp": 500, "input_length": 16, "output_length": 1, "hash_ids": [1, 4]},
    ]
    assert check_mooncake_rows(enumerate(rows, 1), "m.jsonl", block_size=8) == []
    assert all(len(r["hash_ids"]) == math.ceil(r["input_length"] / 8) for r in rows)


def test_mooncake_sessions_are_deltas():
    turns = [
        MooncakeRequest(session="s", start_s=0.0, end_s=1.0, input_length=16, output_length=2, block_keys=["a", "b", "c", "d"], tail_key=None),
        MooncakeRequest(session="s", start_s=3.0, end_s=4.0, input_length=24, output_length=2, block_keys=["a", "b", "c", "d", "e", "f"], tail_key=None),
    ]
    rows = MooncakeExport(base_block_size=4, block_size=8).session_rows(turns)
    assert rows == [
        {"session_id": "s", "timestamp": 0, "input_length": 16, "hash_ids": [1, 2], "output_length": 2},
        {"session_id": "s", "delay": 2000, "input_length": 8, "hash_ids": [3], "output_length": 2},
    ]
