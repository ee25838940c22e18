"""The statistics table (docs/validate.md#statistics-table) against values computed by hand from the trace JSON with numpy."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from lib.validate.trace_files import check_directory
from lib.validate.stats_table import POOLED_ROWS, TRACE_ROWS, StatsCollector, StatsTable
from tests.validate_inputs import build_example_traces


@pytest.fixture(scope="module")
def split_traces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example split at 60 s pauses: three traces of different lengths, so rows are not trivial."""
    workdir = build_example_traces(tmp_path_factory.mktemp("split"), "--split-at-gap", "60")
    return workdir / "examples" / "traces"


def table_of(directory: Path) -> StatsTable:
    collector = StatsCollector()
    check_directory(directory, visit=lambda path, document: collector.add(path.name, document))
    return collector.table()


def leading_hits(previous: list[int], ids: list[int]) -> int:
    count = 0
    for block in ids:
        if block not in previous:
            break
        count += 1
    return count


def by_hand(document: dict) -> dict[str, float]:
    """One trace's figures, straight from the docs/traces.md#the-native-trace-file fields, written independently of lib/."""
    parent = [r for r in document["requests"] if r["type"] != "subagent"]
    inputs = np.array([r["in"] for r in parent], dtype=float)
    outputs = np.array([r["out"] for r in parent], dtype=float)
    hits = sum(leading_hits(parent[k - 1]["hash_ids"], parent[k]["hash_ids"]) for k in range(1, len(parent)))
    blocks = sum(len(r["hash_ids"]) for r in parent)
    warm = math.floor(0.75 * (document["tool_tokens"] + document["system_tokens"])) // document["block_size"]
    think = [r["think_time"] for r in parent[1:]]
    return {
        "requests": len(parent), "start_in": inputs[0], "end_in": inputs[-1],
        "in_p10": np.percentile(inputs, 10), "in_p50": np.percentile(inputs, 50),
        "in_p90": np.percentile(inputs, 90), "in_mean": inputs.mean(),
        "out_p10": np.percentile(outputs, 10), "out_p50": np.percentile(outputs, 50),
        "out_p90": np.percentile(outputs, 90), "out_mean": outputs.mean(),
        "duration_min": (parent[-1]["t"] + parent[-1]["api_time"] - parent[0]["t"]) / 60,
        "think_time_s": np.mean(think) if think else None,
        "api_time_s": np.mean([r["api_time"] for r in parent]),
        "hit_rate_pct": 100 * hits / blocks,
        "hit_rate_warm_pct": 100 * (hits + min(warm, len(parent[0]["hash_ids"]))) / blocks,
    }


def summary_by_hand(values: list[float]) -> dict[str, float]:
    array = np.array(values, dtype=float)
    low, p25, median, p75, high = np.percentile(array, [0, 25, 50, 75, 100])
    return {"min": low, "p25": p25, "median": median, "p75": p75, "max": high, "mean": array.mean()}


def test_every_row_matches_numpy_over_the_split_example(split_traces: Path):
    documents = [json.loads(path.read_text()) for path in sorted(split_traces.glob("*.json"))]
    assert len(documents) == 3
    hand = [by_hand(document) for document in documents]
    table = table_of(split_traces)
    rows = {row.key: row for row in table.rows if row.scope == "traces"}
    assert [row.key for row in table.rows if row.scope == "traces"] == [key for key, _, _ in TRACE_ROWS]
    for key, _, _ in TRACE_ROWS:
        values = [figures[key] for figures in hand if figures[key] is not None]
        assert rows[key].values == pytest.approx(summary_by_hand(values)), key


def test_pooled_rows_and_hit_rates_cover_every_parent_request(split_traces: Path):
    documents = [json.loads(path.read_text()) for path in sorted(split_traces.glob("*.json"))]
    parent = [[r for r in d["requests"] if r["type"] != "subagent"] for d in documents]
    pooled = {row.key: row.values for row in table_of(split_traces).rows if row.scope == "pooled"}
    assert list(pooled) == [key for key, _, _ in POOLED_ROWS]
    assert pooled["in"] == pytest.approx(summary_by_hand([r["in"] for lane in parent for r in lane]))
    assert pooled["api_time"] == pytest.approx(summary_by_hand([r["api_time"] for lane in parent for r in lane]))
    # Think time: the first request of each trace has none by definition.
    assert pooled["think_time"] == pytest.approx(summary_by_hand([r["think_time"] for lane in parent for r in lane[1:]]))
    table = table_of(split_traces)
    hits = sum(leading_hits(lane[k - 1]["hash_ids"], lane[k]["hash_ids"]) for lane in parent for k in range(1, len(lane)))
    assert table.pooled_hit_rate.hits == hits
    assert table.pooled_hit_rate.total == sum(len(r["hash_ids"]) for lane in parent for r in lane)


def test_one_trace_gives_equal_columns_and_the_seed_conversation_shape(tmp_path: Path):
    traces = build_example_traces(tmp_path) / "examples" / "traces"
    row = {r.key: r.values for r in table_of(traces).rows}
    assert row["requests"] == dict.fromkeys(row["requests"], 6.0)
    assert row["start_in"]["min"] == row["start_in"]["max"] < row["end_in"]["min"]
    assert 0 < row["hit_rate_pct"]["mean"] < row["hit_rate_warm_pct"]["mean"] < 100


def test_csv_and_json_hold_the_same_rows(split_traces: Path):
    table = table_of(split_traces)
    parsed = list(csv.DictReader(io.StringIO(table.csv_text())))
    assert len(parsed) == len(TRACE_ROWS) + len(POOLED_ROWS)
    assert parsed[0]["metric"] == "Requests per trace" and parsed[0]["scope"] == "traces"
    as_json = json.loads(json.dumps(table.as_dict()))
    assert float(parsed[1]["median"]) == pytest.approx(as_json["rows"][1]["values"]["median"], rel=1e-5)
    assert [t["trace_id"] for t in as_json["traces"]] == ["trace_0001_s1", "trace_0001_s2", "trace_0001_s3"]


def test_foreign_or_broken_entries_are_skipped_not_fatal():
    collector = StatsCollector()
    collector.add("a.json", {"block_size": 64, "requests": [
        {"t": 0, "type": "n", "in": 128, "out": 5, "hash_ids": [1, 2]},
        "not an object",
        {"t": 3, "type": "n", "in": None},
        {"t": 4, "type": "n", "in": 192, "out": 7, "hash_ids": [1, 2, 3], "think_time": 2, "api_time": 1},
    ]})
    collector.add("b.json", {"requests": "nope"})
    table = collector.table()
    assert table.skipped_files == ["b.json"]
    (figures,) = table.traces
    assert (figures.requests, figures.start_in, figures.end_in, figures.hit_blocks, figures.blocks) == (2, 128, 192, 2, 5)
    assert figures.duration_min == pytest.approx(5 / 60)
    assert "Requests per trace" in table.text()
