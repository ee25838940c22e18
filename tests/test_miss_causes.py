"""Why each miss (lib/cache/miss_causes.py): hand-computed cases and properties against brute force."""
from __future__ import annotations

import math
from typing import Optional, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from lib.cache.miss_causes import (
    CAUSES, RequestMisses, MissSpan, attribute_billed, attribute_simulated, ordered_totals, split_tokens,
)
from lib.cache.ttl_model import CacheEvent, sweep_ttl
from tests.cache_references import chained_events, schedule

FAST = settings(derandomize=True, max_examples=200, deadline=None)


def event(start_s: float, ids: list[int], tokens: int, stream: str = "a", model: str = "m",
          ready_s: Optional[float] = None) -> CacheEvent:
    return CacheEvent(start_s, start_s + 1 if ready_s is None else ready_s, ids, tokens, stream, model)


def causes(result: RequestMisses) -> dict[str, int]:
    return result.by_cause()


def test_growth_is_first_use_and_the_tail_a_partial_block():
    results = attribute_simulated([event(0, [1, 2], 10), event(5, [1, 2, 3], 14)], 300, block_size=4)
    assert [causes(r) for r in results] == [{"first_use": 8, "partial_block": 2}, {"first_use": 4, "partial_block": 2}]
    assert results[1].hit_tokens == 8


def test_a_pause_longer_than_the_ttl_is_expiry_and_only_for_what_was_cached():
    results = attribute_simulated([event(0, [1, 2], 8), event(316, [1, 2, 3], 12)], 300, block_size=4)
    assert causes(results[1]) == {"ttl_expiry": 8, "first_use": 4}
    assert causes(attribute_simulated([event(0, [1, 2], 8), event(316, [1, 2, 3], 12)], 3600, block_size=4)[1]) == {
        "first_use": 4}


def test_prefix_changes_by_where_the_prompts_part():
    # tools = 4 tokens (block 0), system = 4 tokens (block 1), messages after.
    first = event(0, [1, 2, 3], 12)
    sections = [(4, 4), (4, 4)]
    tools = attribute_simulated([first, event(5, [7, 8, 9, 10], 16)], 300, block_size=4, sections=sections)
    system = attribute_simulated([first, event(5, [1, 8, 9, 10], 16)], 300, block_size=4, sections=sections)
    edited = attribute_simulated([first, event(5, [1, 2, 9, 10], 16)], 300, block_size=4, sections=sections)
    assert causes(tools[1]) == {"tools_changed": 12, "first_use": 4}
    assert causes(system[1]) == {"system_changed": 8, "first_use": 4}
    assert causes(edited[1]) == {"message_edited": 4, "first_use": 4}


def test_model_switch_and_compaction():
    switched = attribute_simulated([event(0, [1, 2, 3], 12), event(5, [11, 12, 13, 14], 16, model="other")], 300,
                                   block_size=4)
    compacted = attribute_simulated([event(0, [1, 2, 3], 12), event(5, [1, 5], 8)], 300, block_size=4)
    assert causes(switched[1]) == {"model_switch": 12, "first_use": 4}
    assert causes(compacted[1]) == {"compaction": 4}
    assert compacted[1].hit_tokens == 4


def test_concurrent_readers_of_one_prefix_miss_it_in_flight():
    # The second request starts before the first one's response: its blocks are not written yet.
    results = attribute_simulated([event(0, [1, 2], 8, "a", ready_s=3), event(1, [1, 2, 3], 12, "b")], 300,
                                  block_size=4)
    assert causes(results[1]) == {"in_flight": 8, "first_use": 4}


def test_capacity_eviction_beyond_the_lru_capacity():
    events = [event(0, [1, 2], 8, "a"), event(5, [5, 6], 8, "b"), event(10, [1, 2, 3], 12, "a")]
    results = attribute_simulated(events, None, block_size=4, capacity_blocks=3)
    # At t=10 the recency order is 5, 6 (newest write), then 1, 2: block 2 is the 4th, evicted.
    assert causes(results[2]) == {"capacity_eviction": 4, "first_use": 4}
    assert results[2].hit_tokens == 4


def test_billed_misses_take_our_causes_and_the_rest_is_server_side():
    ours = RequestMisses(hit_tokens=80, total_tokens=100, spans=(MissSpan("first_use", 80, 100),))
    # The API read only 50 of 125 API tokens (= 40 of our 100): 40..80 we had cached, 80..100 new.
    assert attribute_billed(ours, 50, 125) == {"server_side": 50, "first_use": 25}
    assert attribute_billed(ours, 125, 125) == {}
    assert sum(attribute_billed(ours, 110, 125).values()) == 15


def test_split_tokens_is_exact():
    assert split_tokens({"a": 1, "b": 1, "c": 1}, 10) == {"a": 4, "b": 3, "c": 3}
    assert ordered_totals([{"ttl_expiry": 3}, {"first_use": 2, "ttl_expiry": 1}]) == {"first_use": 2, "ttl_expiry": 4}


def reference_hits(events: Sequence[CacheEvent], ttl: Optional[float], capacity: int) -> list[int]:
    """TTL + LRU by brute force: a block is cached if written, alive, and among the C most recent alive."""
    limit = math.inf if ttl is None else ttl
    touched: dict[int, tuple[float, int, int]] = {}  # block → (time, write number, -position)
    hits = [0] * len(events)
    for number, (kind, index, now) in enumerate(schedule(events)):
        ids = events[index].ids
        if kind == "write":
            touched.update({block: (now, number, -position) for position, block in enumerate(ids)})
            continue
        alive = sorted((key[1:], block) for block, key in touched.items() if now - key[0] <= limit)
        cached = {block for _, block in alive[max(len(alive) - capacity, 0):]}
        count = 0
        for block in ids:
            if block not in cached:
                break
            count += 1
        hits[index] = count
    return hits


@FAST
@given(chained_events(), st.sampled_from([None, 5, 20]), st.one_of(st.none(), st.integers(1, 12)))
def test_causes_sum_to_the_misses_of_every_request(events, ttl, capacity):
    results = attribute_simulated(events, ttl, block_size=4, capacity_blocks=capacity)
    assert len(results) == len(events)
    for result, item in zip(results, events):
        assert result.total_tokens == max(item.token_count, len(item.ids) * 4)
        assert sum(result.by_cause().values()) == result.miss_tokens
        assert set(result.by_cause()) <= set(CAUSES)
        assert all(a.end <= b.start for a, b in zip(result.spans, result.spans[1:]))
        assert not result.spans or result.spans[0].start == result.hit_tokens
    expected = (list(sweep_ttl(events, (ttl,), block_size=4)[0].request_hit_blocks) if capacity is None
                else reference_hits(events, ttl, capacity))
    assert [r.hit_tokens // 4 for r in results] == expected


@FAST
@given(chained_events(), st.data())
def test_billed_causes_sum_to_the_billed_misses(events, data):
    for result in attribute_simulated(events, 20, block_size=4):
        prompt = data.draw(st.integers(0, 500))
        read = data.draw(st.integers(0, prompt))
        assert sum(attribute_billed(result, read, prompt).values()) == prompt - read


@FAST
@given(st.dictionaries(st.sampled_from(CAUSES), st.floats(0.001, 1e6), min_size=1), st.integers(0, 10**7))
def test_scaling_causes_to_api_tokens_keeps_the_sum(weights, tokens):
    shares = split_tokens(weights, tokens)
    assert sum(shares.values()) == tokens
    assert set(shares) <= set(weights) and all(value > 0 for value in shares.values())
