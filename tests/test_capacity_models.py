"""LRU and Belady capacity simulation, hand-computed (docs/cache-models.md#capacity-simulation), plus brute-force cross-checks.

The stream (block_size 16, one request per second, applied atomically in start order):
    R1 [1,2,3]  R2 [4,5]  R3 [1,2,3,6]  R4 [4,5,7]  R5 [1,2]          14 blocks, 224 tokens
LRU stack depths at each read (ancestors above descendants): R3 reads 1,2,3 at 3,4,5; R4 reads
4,5 at 5,6; R5 reads 1,2 at 4,5. So LRU hits by capacity: ≤2 → 0, 3 → 1, 4 → 3, 5 → 6, ≥6 → 7.
Belady evicts the block read again last (never-read first, deepest on ties). With 4 blocks: after
R2 it drops 5 (next read R4, later than R3's), R3 hits 1,2,3 and drops 6; R4 hits 4 and drops 3
and 7; R5 hits 1,2: 3 + 1 + 2 = 6. The same walk gives 1 → 2, 2 → 4, 3 → 5, ≥5 → 7.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings

from lib.cache.capacity_model import capacity_curve, capacity_needed, lru_profile
from lib.cache.ttl_model import CacheEvent, sweep_ttl
from tests.cache_references import chained_events, reference_lru, reference_opt

FAST = settings(derandomize=True, max_examples=150, deadline=None)
BS = 16
REQUESTS = [[1, 2, 3], [4, 5], [1, 2, 3, 6], [4, 5, 7], [1, 2]]
STREAM = [CacheEvent(t, t + 0.5, ids, len(ids) * BS, str(t % 2)) for t, ids in enumerate(REQUESTS)]
LRU_HITS = {0: 0, 1: 0, 2: 0, 3: 1, 4: 3, 5: 6, 6: 7, 7: 7, 100: 7}
OPT_HITS = {0: 0, 1: 2, 2: 4, 3: 5, 4: 6, 5: 7, 6: 7, 100: 7}


@pytest.mark.parametrize("capacity", sorted(LRU_HITS))
def test_lru_hits_by_hand(capacity):
    assert lru_profile(STREAM, block_size=BS).hit_blocks(capacity) == LRU_HITS[capacity]


@pytest.mark.parametrize("capacity", sorted(OPT_HITS))
def test_opt_hits_by_hand(capacity):
    (point,) = capacity_curve(STREAM, [capacity], block_size=BS)
    assert point.opt_hit_rate == OPT_HITS[capacity] * BS / (14 * BS)


def test_capacity_curve_reports_tokens_and_both_policies():
    curve = capacity_curve(STREAM, [2, 4, 6], block_size=BS)
    assert [(p.capacity_blocks, p.capacity_tokens) for p in curve] == [(2, 32), (4, 64), (6, 96)]
    assert [p.lru_hit_rate for p in curve] == [0.0, 3 / 14, 7 / 14]
    assert [p.opt_hit_rate for p in curve] == [4 / 14, 6 / 14, 7 / 14]
    assert capacity_curve(STREAM, [4], block_size=BS, with_opt=False)[0].opt_hit_rate is None


def test_default_curve_runs_up_to_no_eviction():
    curve = capacity_curve(STREAM, block_size=BS)
    assert curve[0].capacity_blocks == 1
    assert curve[-1].lru_hit_rate == 0.5


def test_capacity_needed_is_exact_from_events():
    # Infinite-cache rate 7/14; 40 % → 2.8 hit blocks → 4 blocks; 50 % → 3.5 → 5; 90 % and 100 % → 6.
    needed = capacity_needed(STREAM, fractions=(0.4, 0.5, 0.9, 1.0), block_size=BS)
    assert needed == {0.4: 4 * BS, 0.5: 5 * BS, 0.9: 6 * BS, 1.0: 6 * BS}


def test_capacity_needed_from_a_curve_takes_smallest_listed_capacity():
    curve = capacity_curve(STREAM, [2, 4, 8], block_size=BS)
    assert capacity_needed(curve, 0.5, fractions=(0.4, 0.9)) == {0.4: 4 * BS, 0.9: 8 * BS}
    assert capacity_needed(curve[:2], 0.5, fractions=(0.9,)) == {0.9: None}
    with pytest.raises(ValueError):
        capacity_needed(curve, fractions=(0.9,))


def test_capacity_needed_against_a_given_reference_rate_can_be_unreachable():
    profile = lru_profile(STREAM, block_size=BS)
    assert profile.infinite_hit_rate == 0.5
    assert capacity_needed(profile, 0.6, fractions=(0.9,)) == {0.9: None}


def test_infinite_capacity_matches_infinite_ttl_without_concurrency():
    (infinite_ttl,) = sweep_ttl(STREAM, (None,), block_size=BS)
    assert lru_profile(STREAM, block_size=BS).infinite_hit_rate == infinite_ttl.hit_rate


# --- properties ---

@FAST
@given(chained_events())
def test_lru_and_opt_match_per_block_references(events):
    profile = lru_profile(events, block_size=4)
    curve = capacity_curve(events, list(range(0, 10)), block_size=4)
    for capacity, point in enumerate(curve):
        assert profile.hit_blocks(capacity) == reference_lru(events, capacity)
        assert point.opt_hit_rate == (4 * reference_opt(events, capacity) / profile.total_tokens if profile.total_tokens else 0.0)


@FAST
@given(chained_events())
def test_hit_rate_never_falls_with_capacity_and_lru_never_beats_opt(events):
    curve = capacity_curve(events, list(range(0, 16)), block_size=4)
    lru = [p.lru_hit_rate for p in curve]
    opt = [p.opt_hit_rate for p in curve]
    assert lru == sorted(lru)
    assert opt == sorted(opt)
    assert all(lru_rate <= opt_rate for lru_rate, opt_rate in zip(lru, opt))
