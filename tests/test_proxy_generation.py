"""lib/capture/proxy_generation.py: old-proxy twin pairs and the per-capture verdict (docs/inputs.md#old-proxy-twins)."""
from __future__ import annotations

from lib.capture.proxy_generation import TwinCandidate, TwinPair, classify_generation, find_twin_pairs


def candidate(request_id: str, ts: float, streaming: bool, key: str = "k1", row_id: int = 0) -> TwinCandidate:
    return TwinCandidate(request_id, ts, row_id, streaming, key)


def test_pairs_need_same_key_opposite_flags_and_at_most_30_seconds() -> None:
    pairs = find_twin_pairs([
        candidate("s1", 100.0, True), candidate("n1", 103.0, False),               # a pair, 3 s apart
        candidate("s2", 200.0, True, key="k2"), candidate("n2", 231.0, False, key="k2"),  # 31 s: no pair
        candidate("s3", 300.0, True, key="k3"), candidate("s4", 300.0, True, key="k3"),   # same flag: no pair
    ])
    assert pairs == [TwinPair("s1", "n1", 3.0)]


def test_each_request_joins_at_most_one_pair_nearest_first() -> None:
    pairs = find_twin_pairs([
        candidate("s1", 100.0, True, row_id=1), candidate("n1", 100.0, False, row_id=2),
        candidate("s2", 110.0, True, row_id=3), candidate("n2", 112.0, False, row_id=4),
    ])
    assert pairs == [TwinPair("s1", "n1", 0.0), TwinPair("s2", "n2", 2.0)]


def test_generation_verdicts() -> None:
    pair = TwinPair("s1", "n1", 1.0)
    old = classify_generation([pair], has_streaming_turns=True)
    assert old.as_dict() == {"generation": "old", "pairs": 1, "artifact_request_ids": ["s1"]}
    assert classify_generation([], has_streaming_turns=True).generation == "fixed"
    assert classify_generation([], has_streaming_turns=False).generation == "cleaned/unknown"
