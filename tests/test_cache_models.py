"""Prefix model and TTL simulation, hand-computed (docs/cache-models.md#trace-prefix-model,
docs/cache-models.md#ttl-simulation), plus brute-force cross-checks."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings

from lib.cache.ttl_model import (
    CacheEvent, HitRate, TTLResult, conversation_hit_rate, prefix_hits, sweep_ttl, warm_prefix_blocks,
)
from tests.cache_references import chained_events, reference_ttl, schedule

ROOT = Path(__file__).resolve().parent.parent
FAST = settings(derandomize=True, max_examples=150, deadline=None)


def ttl_result(events: list[CacheEvent], ttl_s: float | None, *, block_size: int) -> TTLResult:
    """One TTL's result of the sweep."""
    (result,) = sweep_ttl(events, (ttl_s,), block_size=block_size)
    return result


def event(start_s: float, ready_s: float, ids: list[int], token_count: int, stream: str = "a") -> CacheEvent:
    return CacheEvent(start_s=start_s, ready_s=ready_s, ids=ids, token_count=token_count, stream=stream)


# --- prefix model (docs/cache-models.md#trace-prefix-model) ---

def test_prefix_hits_stop_at_first_id_missing_from_previous_request():
    assert prefix_hits([1, 2, 3], [1, 2, 9, 3]) == 2


def test_prefix_hits_use_membership_not_position():
    assert prefix_hits([3, 2, 1], [1, 2, 4]) == 2
    assert prefix_hits([], [1]) == 0


def test_conversation_hit_rate_first_request_all_misses():
    assert conversation_hit_rate([[1, 2], [1, 2, 3], [1, 2, 3, 4]]) == HitRate(hits=5, total=9)


def test_warm_prefix_credits_only_the_first_request_capped_at_its_length():
    requests = [[1, 2], [1, 2, 3], [1, 2, 3, 4]]
    assert conversation_hit_rate(requests, warm_prefix_blocks=1) == HitRate(6, 9)
    assert conversation_hit_rate(requests, warm_prefix_blocks=5) == HitRate(7, 9)


def test_warm_prefix_blocks_floors_tokens_then_blocks():
    # floor(0.75 * 21000) = 15750 tokens → 15750 // 64 = 246 blocks
    assert warm_prefix_blocks(15000, 6000, 0.75, 64) == 246


def test_hit_rate_of_nothing_is_zero():
    assert HitRate(0, 0).rate == 0.0


# --- TTL simulation (docs/cache-models.md#ttl-simulation), block_size 4 ---

PAUSE = [event(0, 10, [1, 2, 3], 14), event(325, 330, [1, 2, 3, 4], 17)]


def test_pause_longer_than_ttl_misses():
    assert ttl_result(PAUSE, 300, block_size=4).request_hit_blocks == (0, 0)
    assert ttl_result(PAUSE, None, block_size=4).request_hit_blocks == (0, 3)


def test_refresh_inside_pause_keeps_the_refreshed_prefix():
    # Another session touches blocks 1, 2 at 105: at 325 they are 220 s old, block 3 is 315 s old.
    refreshed = [*PAUSE, event(100, 105, [1, 2], 9, "b")]
    # The refresher itself reads blocks 1, 2 written at 10 (90 s old): 2 hits.
    assert ttl_result(refreshed, 300, block_size=4).request_hit_blocks == (0, 2, 2)


def test_expiry_is_strict_entry_alive_at_exactly_ttl():
    at_ttl = [event(0, 10, [1, 2, 3], 14), event(310, 311, [1, 2, 3, 4], 17)]
    just_after = [event(0, 10, [1, 2, 3], 14), event(310.5, 311, [1, 2, 3, 4], 17)]
    assert ttl_result(at_ttl, 300, block_size=4).request_hit_blocks == (0, 3)
    assert ttl_result(just_after, 300, block_size=4).request_hit_blocks == (0, 0)


def test_concurrent_requests_do_not_see_each_other():
    both = [event(0, 5, [1, 2], 8, "a"), event(0, 5, [1, 2], 8, "b")]
    result = ttl_result(both, None, block_size=4)
    assert result.request_hit_blocks == (0, 0)
    assert (result.prefilled_blocks, result.unique_blocks, result.stable_blocks) == (4, 2, 0)


GROWTH = [event(0, 1, [1, 2], 8), event(2, 3, [1, 2, 3], 12), event(100, 101, [1, 2, 3, 4], 16)]


def test_ttl_sweep_figures_by_hand():
    short, exact, infinite = sweep_ttl(GROWTH, (60, 97, None), block_size=4)
    # ttl 60: the 97 s gap before the third request expires everything.
    assert short.request_hit_blocks == (0, 2, 0)
    assert (short.hit_tokens, short.total_tokens) == (8, 36)
    # Alive tokens over time: writes at 1, 3 and 101 s; the second write's blocks expire after 63 s,
    # the third's after 161 s (drawn where they expire, not at the next request).
    assert short.working_set_times_s == (1.0, 3.0, 63.0, 101.0, 161.0)
    assert short.working_set_tokens == (8, 12, 0, 16, 0)
    assert short.peak_working_set_tokens == 16
    # 2 + 1 + 4 misses over 4 unique blocks; only block 4 was computed once.
    assert (short.prefilled_blocks, short.unique_blocks, short.stable_blocks) == (7, 4, 1)
    assert short.mean_prefills_per_block == 1.75
    assert short.stable_share == 0.25
    assert exact.request_hit_blocks == (0, 2, 3)  # gap of exactly 97 s is still alive
    assert infinite.hit_rate == pytest.approx(20 / 36)
    assert infinite.working_set_tokens == (8, 12, 16)
    assert infinite.working_set_times_s == (1.0, 3.0, 101.0)
    assert (infinite.prefilled_blocks, infinite.stable_blocks, infinite.mean_prefills_per_block) == (4, 4, 1.0)


def test_partial_tail_counts_in_total_tokens():
    result = ttl_result([event(0, 1, [1], 6), event(2, 3, [1], 6)], None, block_size=4)
    assert (result.hit_tokens, result.total_tokens) == (4, 12)


def test_sweep_keeps_ttl_order_and_default_covers_one_minute_to_infinite():
    results = sweep_ttl(GROWTH, block_size=4)
    assert [r.ttl_s for r in results][:2] == [60, 120]
    assert results[-1].ttl_s is None
    assert len(results) == 14


def test_empty_stream_gives_zero_figures():
    result = ttl_result([], 300, block_size=4)
    assert (result.hit_rate, result.peak_working_set_tokens, result.unique_blocks) == (0.0, 0, 0)


def test_sparse_and_negative_ids_behave_like_dense_ones():
    sparse = [event(0, 1, [1, 2], 8), event(5, 6, [1, 2, 2**62], 12), event(9, 9, [-7], 4), event(10, 10, [1, 2, 2**62], 12)]
    result = ttl_result(sparse, None, block_size=4)
    assert result.request_hit_blocks == (0, 2, 0, 3)
    assert result.unique_blocks == 4


# --- properties ---

@FAST
@given(chained_events())
def test_ttl_simulation_matches_per_block_reference(events):
    for ttl in (0, 5, 20, None):
        result = ttl_result(events, ttl, block_size=4)
        hits, working, prefills = reference_ttl(events, ttl)
        assert list(result.request_hit_blocks) == hits
        assert_working_set_matches_last_touches(events, ttl, result)
        assert result.prefilled_blocks == sum(prefills.values())
        assert result.stable_blocks == sum(1 for count in prefills.values() if count == 1)
        assert result.unique_blocks == len(prefills)


@FAST
@given(chained_events())
def test_results_do_not_depend_on_id_values(events):
    shifted = [CacheEvent(e.start_s, e.ready_s, [i + 2**40 for i in e.ids], e.token_count) for e in events]
    # Half dense, half huge: the dense ids already handed out must survive the switch to a dict.
    mixed = events[: len(events) // 2] + shifted[len(events) // 2:]
    expected = ttl_result(events, 20, block_size=4)
    for variant in (shifted, mixed):
        result = ttl_result(variant, 20, block_size=4)
        if variant is shifted:
            assert result == expected
        assert list(result.request_hit_blocks) == reference_ttl(variant, 20)[0]


@FAST
@given(chained_events())
def test_hit_rate_never_falls_as_ttl_grows(events):
    rates = [r.hit_rate for r in sweep_ttl(events, (0, 1, 5, 10, 30, 60, None), block_size=4)]
    assert rates == sorted(rates)


def test_importing_the_models_loads_no_io_or_cli_libraries():
    code = (
        "import sys, lib.cache.ttl_model, lib.cache.capacity_model, lib.cache.api_model, lib.cache.percentiles;"
        "print(sorted(m for m in ('sqlite3', 'click', 'jinja2', 'tiktoken') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def assert_working_set_matches_last_touches(events, ttl, result) -> None:
    """At each time of the series: blocks alive at it (first point) and right after it (last point)."""
    limit = math.inf if ttl is None else ttl
    writes = [(now, events[index].ids) for kind, index, now in schedule(events) if kind == "write"]
    times = result.working_set_times_s
    assert set(times) >= {now for now, ids in writes if ids}
    peak = 0
    for position, moment in enumerate(times):
        touched: dict[int, float] = {}
        for now, ids in writes:
            if now <= moment:
                touched.update(dict.fromkeys(ids, now))
        at = sum(1 for seen in touched.values() if moment - seen <= limit)
        after = sum(1 for seen in touched.values() if moment - seen < limit)
        peak = max(peak, at)
        if position + 1 == len(times) or times[position + 1] != moment:
            assert result.working_set_tokens[position] == 4 * after
        if position == 0 or times[position - 1] != moment:
            assert result.working_set_tokens[position] in (4 * at, 4 * after)
    assert result.peak_working_set_tokens == 4 * peak
