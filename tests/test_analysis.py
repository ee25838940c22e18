"""The visualizer's analysis layer on a hand-made conversation: TTL sweep and capacity figures computed by hand.

Block size 2 and chained keys written out (a, ab, abc…), so every figure can be checked on paper:

    request  t (s)  lane     blocks               tokens  response ends
    R0         0    parent   a ab abc                  7   1
    R1        10    parent   a … abcd                  8  11
    R2       200    parent   a … abcde                10 201
    R3       215    parent   a … abcdef               12 216
    R4       220    agentX   x xy                      4 221

No ttft, so a request's blocks become readable when its response ends (docs/cache-models.md#time-and-concurrency).
"""
from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta, timezone

import pytest

from lib.report.analysis import AnalysisOptions, analyze
from lib.hashing.block_hashes import RequestHashes
from lib.records import ProxyRequest, SubagentLink, Usage
from lib.hashing.request_hashing import HashedRequest
from lib.report.figures import compare
from lib.report.selection import SelectedRequest, Selection

ORIGIN = datetime(2026, 3, 25, 19, 0, 0, tzinfo=timezone.utc)
OPUS = "claude-opus-4-6"
PARENT_KEYS = [b"a", b"ab", b"abc", b"abcd", b"abcde", b"abcdef"]
# (t_s, lane, blocks of the parent chain or the agent's, token count)
REQUESTS = [(0, "parent", 3, 7), (10, "parent", 4, 8), (200, "parent", 5, 10), (215, "parent", 6, 12),
            (220, "agentX", 2, 4)]
TOTAL_TOKENS = 7 + 8 + 10 + 12 + 4


def _request(number: int, t_s: float, tokens: int, *, model: str = OPUS) -> ProxyRequest:
    start = ORIGIN + timedelta(seconds=t_s)
    return ProxyRequest(
        row_id=number + 1, request_id=f"r{number}", timestamp=start, completed_at=start + timedelta(seconds=1),
        is_streaming=False, status=200, kind="ok", model=model, message_id=f"msg_{number}",
        usage=Usage(input_tokens=tokens, output_tokens=10), stop_reason="tool_use", output_types=("tool_use",),
        api_time_s=1.0, ttft_s=None, anthropic_request_id=None, session_header=None, max_tokens=21333,
        retry_count=0, prompt_key=None, message_count=1,
    )


def _hashed(keys: list[bytes], tokens: int) -> HashedRequest:
    return HashedRequest(RequestHashes(tokens, keys), tool_tokens=0, system_tokens=0, breakpoints=(),
                         last_message_types=(), all_message_types=())


def _selection(requests: list[tuple[int, str, int, int]]) -> tuple[Selection, dict[str, HashedRequest]]:
    items, hashed = [], {}
    for number, (t_s, lane, blocks, tokens) in enumerate(requests):
        keys = PARENT_KEYS[:blocks] if lane == "parent" else [b"x", b"xy"][:blocks]
        request = _request(number, t_s, tokens)
        items.append(SelectedRequest(request, lane, "conv"))
        hashed[request.request_id] = _hashed(keys, tokens)
    link = SubagentLink("conv", "agentX", "toolu_1", "Explore", "look", ORIGIN + timedelta(seconds=212),
                        ORIGIN + timedelta(seconds=230), 18_000, 900, 1, "completed", True)
    return Selection("conv", "conv", "hand", items, links=(link,), conversations=1), hashed


@pytest.fixture(scope="module")
def analysis():
    selection, hashed = _selection(REQUESTS)
    return analyze(selection, hashed, AnalysisOptions(block_size=2, cache_ttl_s=60))


def _row(analysis, label):
    return next(row for row in analysis.ttl_rows if row.ttl_label == label)


def test_ttl_sweep_matches_hand_computed_hit_rates(analysis) -> None:
    # 1m-3m: R1 hits 3 (gap 9 s), R2 misses all (189 s since R1's response), R3 hits 5 (14 s) → 8 blocks.
    # From 4m: R2 hits its 4 cached blocks too → 12 blocks. Tokens = blocks × 2; R4 is new content.
    assert [row.ttl_label for row in analysis.ttl_rows][:5] == ["1m", "2m", "3m", "4m", "5m"]
    assert _row(analysis, "1m").hit_rate == pytest.approx(16 / TOTAL_TOKENS)
    assert _row(analysis, "3m").hit_rate == pytest.approx(16 / TOTAL_TOKENS)
    assert _row(analysis, "4m").hit_rate == pytest.approx(24 / TOTAL_TOKENS)
    assert _row(analysis, "∞").hit_rate == pytest.approx(24 / TOTAL_TOKENS)
    assert _row(analysis, "∞").ttl_s is None


def test_ttl_sweep_prefills_and_stable_share(analysis) -> None:
    # 8 unique blocks. 1m: misses 3 + 1 + 5 + 1 + 2 = 12 → 1.5 per block; prefilled once: abcde, abcdef, x, xy.
    one_minute, infinite = _row(analysis, "1m"), _row(analysis, "∞")
    assert (one_minute.prefills_per_block, one_minute.stable_share) == (pytest.approx(1.5), pytest.approx(0.5))
    assert (infinite.prefills_per_block, infinite.stable_share) == (pytest.approx(1.0), pytest.approx(1.0))
    # Peak: once R4's response lands (221 s) R3's 6 blocks (re-touched at 216 s) and R4's 2 are alive
    # under every TTL: 8 blocks = 16 tokens.
    assert {row.peak_working_set_tokens for row in analysis.ttl_rows} == {16}


def test_working_set_follows_the_main_ttl(analysis) -> None:
    # A step at every write and expiry: R1's blocks (touched at 11 s) expire after 71 s, not at R2's
    # read at 200 s; R3's after 276 s and R4's after 281 s, after the last request.
    assert [(p.t_s, p.tokens) for p in analysis.working_set] == [
        (1, 6), (11, 8), (71, 0), (201, 10), (216, 12), (221, 16), (276, 4), (281, 0)]


def test_miss_causes_by_hand(analysis) -> None:
    # R2 comes 189 s after R1's response under a 60 s TTL: its 4 cached blocks expired, 1 block is new.
    # No request has a cache_control breakpoint, so the API writes nothing: what our cache kept is
    # billed as past the previous request's last breakpoint.
    simulated = [causes.simulated for causes in analysis.miss_causes]
    billed = [causes.billed for causes in analysis.miss_causes]
    assert simulated == [{"first_use": 6, "partial_block": 1}, {"first_use": 2}, {"ttl_expiry": 8, "first_use": 2},
                         {"first_use": 2}, {"first_use": 4}]
    assert billed[2] == {"beyond_breakpoint": 8, "first_use": 2}
    for causes, split, point in zip(analysis.miss_causes, analysis.ttl_splits, analysis.points):
        assert sum(causes.simulated.values()) == split.cache_creation_tokens + split.new_tokens
        assert sum(causes.billed.values()) == point.api.cache_creation_tokens + point.api.new_tokens


def test_selected_ttl_row_and_card_show_one_number(analysis) -> None:
    from lib.report.figures import cards

    row = _row(analysis, "1m")
    card = next(card for card in cards(analysis) if card.label.startswith("TTL-model hit rate"))
    assert card.value == f"{row.hit_rate * 100:.1f}%" == "39.0%"


def test_capacity_targets_match_hand_computed_lru(analysis) -> None:
    # Infinite: 12 hit blocks = 24 tokens. LRU (prefix kept above its tail): 3 blocks → 9 hits (75 %),
    # 4 blocks → R3 finds a…abcd: 11 hits (91.7 %), 5 blocks → all 12.
    curve = analysis.capacity
    assert curve.infinite_hit_rate == pytest.approx(24 / TOTAL_TOKENS)
    targets = {t.share: (t.lru_capacity_tokens, t.opt_capacity_tokens) for t in curve.targets}
    assert targets == {0.9: (8, 8), 0.95: (10, 10), 0.99: (10, 10)}
    by_capacity = {p.capacity_tokens: p.lru_hit_rate for p in curve.points}
    assert by_capacity[6] == pytest.approx(18 / TOTAL_TOKENS)
    assert by_capacity[8] == pytest.approx(22 / TOTAL_TOKENS)
    assert all(p.opt_hit_rate >= p.lru_hit_rate - 1e-12 for p in curve.points)


def test_main_simulation_splits_and_totals(analysis) -> None:
    # TTL model at 60 s: read = hits, creation = missed full blocks, new = the partial tail (R0's 7th token).
    splits = [(s.cache_read_tokens, s.cache_creation_tokens, s.new_tokens) for s in analysis.ttl_splits]
    assert splits == [(0, 6, 1), (6, 2, 0), (0, 10, 0), (10, 2, 0), (0, 4, 0)]
    comparison = compare(analysis)
    assert comparison.api.hit_rate == 0.0 and comparison.ttl_model_accuracy is None
    assert comparison.ttl_model.hit_rate == pytest.approx(16 / TOTAL_TOKENS)


def test_timing_lanes_and_concurrency(analysis) -> None:
    think = next(t for t in analysis.timings if t.name == "think_time")
    assert think.values_s == (9.0, 189.0, 14.0)  # per lane; the sub-agent's first request has none
    assert analysis.gaps_s == (10.0, 190.0, 15.0, 5.0)
    assert [(lane.agent_id, lane.spawn_s, lane.finish_s, lane.requests) for lane in analysis.subagents] == [
        ("agentX", 212.0, 230.0, 1)]
    assert max(point.active for point in analysis.concurrency) == 1
    assert [p.growth_tokens for p in analysis.points] == [0, 1, 2, 2, 0]


def test_models_never_share_blocks() -> None:
    selection, hashed = _selection([(0, "parent", 3, 6), (10, "parent", 3, 6)])
    other = selection.requests[1].request
    selection.requests[1] = SelectedRequest(dataclasses.replace(other, model="claude-haiku-4-5"), "parent", "conv")
    result = analyze(selection, hashed, AnalysisOptions(block_size=2, cache_ttl_s=60))
    assert _row(result, "∞").hit_rate == 0.0


def test_opt_is_skipped_on_large_streams() -> None:
    selection, hashed = _selection(REQUESTS)
    result = analyze(selection, hashed, AnalysisOptions(block_size=2, opt_max_requests=2))
    assert all(math.isnan(p.opt_hit_rate) for p in result.capacity.points)
    assert [t.opt_capacity_tokens for t in result.capacity.targets] == [None, None, None]
    assert [t.lru_capacity_tokens for t in result.capacity.targets] == [8, 10, 10]


def test_empty_selection_gives_an_empty_analysis() -> None:
    result = analyze(Selection("none", "none", "hand", []), {}, AnalysisOptions())
    assert (result.points, result.capacity, result.working_set) == ((), None, ())


def test_card_and_row_agree_when_api_sizes_differ_from_ours() -> None:
    # R0's API prompt is 4x our count and R3 has no usage: the row is measured as the card is
    # (scaled per request, requests with usage only), not in our tokens over every request.
    from lib.report.figures import cards

    selection, hashed = _selection(REQUESTS)
    items = list(selection.requests)
    items[0] = dataclasses.replace(items[0], request=dataclasses.replace(
        items[0].request, usage=Usage(input_tokens=28, output_tokens=10)))
    items[3] = dataclasses.replace(items[3], request=dataclasses.replace(items[3].request, usage=None))
    result = analyze(dataclasses.replace(selection, requests=tuple(items)), hashed,
                     AnalysisOptions(block_size=2, cache_ttl_s=300))
    row = _row(result, "5m")
    card = next(card for card in cards(result) if card.label.startswith("TTL-model hit rate"))
    # Hits with usage: R1 6, R2 8, R4 0 of 28 + 8 + 10 + 4 = 50 API tokens; unscaled it would be 24/41.
    assert row.hit_rate == pytest.approx(14 / 50)
    assert card.value == "28.0%"


def test_eviction_rows_measure_hit_rates_as_the_ttl_sweep_does() -> None:
    # R1's API prompt is 9 for our 8 tokens: its 6 hit tokens scale to 6.75, rounded to 7 as its split
    # is; the eviction grid's 5m row then shows the TTL sweep's 5m figure, 15 of 51 API tokens.
    selection, hashed = _selection(REQUESTS)
    items = list(selection.requests)
    items[0] = dataclasses.replace(items[0], request=dataclasses.replace(
        items[0].request, usage=Usage(input_tokens=28, output_tokens=10)))
    items[1] = dataclasses.replace(items[1], request=dataclasses.replace(
        items[1].request, usage=Usage(input_tokens=9, output_tokens=10)))
    items[3] = dataclasses.replace(items[3], request=dataclasses.replace(items[3].request, usage=None))
    result = analyze(dataclasses.replace(selection, requests=tuple(items)), hashed,
                     AnalysisOptions(block_size=2, cache_ttl_s=300, eviction_ttls_s=(60, 300, None)))
    eviction = {row.ttl_s: row.refresh_hit_rate for row in result.eviction.rows}
    assert _row(result, "5m").hit_rate == eviction[300] == 15 / 51
    assert _row(result, "1m").hit_rate == eviction[60] and _row(result, "∞").hit_rate == eviction[None]
