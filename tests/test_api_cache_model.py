"""Anthropic API cache model: the seed walkthrough's observations as hand-computed usage (docs/cache-models.md#anthropic-api-model).

block_size 100 keeps the arithmetic readable: a breakpoint at token p sits at block p // 100 and a
read is a whole number of blocks. Ids come from `chain`, so equal segment prefixes share ids.
"""
from __future__ import annotations

from lib.cache.api_model import (
    ApiRequest, PredictedUsage, min_cacheable_tokens, model_family, predict_usage,
)

BS = 100
OPUS = "claude-opus-4-6"
HAIKU = "claude-haiku-4-5-20251001"
_INTERNED: dict[tuple, int] = {}


def chain(*segments: tuple[str, int]) -> list[int]:
    """Chained ids for a prompt made of named segments of n blocks each."""
    labels = [(name, i) for name, count in segments for i in range(count)]
    return [_INTERNED.setdefault(tuple(labels[: k + 1]), len(_INTERNED) + 1) for k in range(len(labels))]


def request(start_s, ready_s, model, ids, token_count, breakpoints, stream="parent", ttl_s=300.0):
    return ApiRequest(start_s, ready_s, model, ids, token_count, breakpoints, ttl_s, stream)


def predict(*requests, **options):
    return predict_usage(list(requests), block_size=BS, **options)


# (a) Phase 1: tools+system (21,250 tokens) are warm from other sessions.
PARENT_FIRST = request(0, 5.8, OPUS, chain(("tools", 212), ("prompt", 42)), 25_407, [21_250, 25_407])


def test_first_request_reads_tools_and_system_warm_from_other_sessions():
    # Read rounds 21,250 down to block 212; the rest up to the last breakpoint is created.
    assert predict(PARENT_FIRST, warm_first_breakpoint=True) == [PredictedUsage(21_200, 4_207, 0)]
    assert predict(PARENT_FIRST) == [PredictedUsage(0, 25_407, 0)]


# (b), (c) Phase 3: four Explore agents (haiku) share 10,000 tokens of tools and start together.
SA_TOKENS = {1: 13_206, 2: 13_249, 3: 13_255, 4: 13_215}
SA_FIRST = {k: chain(("sa-tools", 100), (f"sa{k}", 32)) for k in SA_TOKENS}
FIRST_TURNS = [
    request(100, 100 + ttft, HAIKU, SA_FIRST[k], SA_TOKENS[k], [10_000, SA_TOKENS[k]], f"sa{k}")
    for k, ttft in zip(SA_TOKENS, (1.5, 2.0, 1.4, 1.6))
]


def test_concurrent_first_subagent_requests_all_create():
    assert predict(*FIRST_TURNS) == [PredictedUsage(0, SA_TOKENS[k], 0) for k in SA_TOKENS]


def test_second_turns_hit_own_prefix_or_the_shared_tool_prefix():
    sa1 = request(104, 105, HAIKU, chain(("sa-tools", 100), ("sa1", 32), ("t2", 1)), 13_397, [10_000, 13_397], "sa1")
    sa4 = request(104, 105, HAIKU, chain(("sa-tools", 100), ("sa4", 32), ("t2", 6)), 13_868, [10_000, 13_868], "sa4")
    # sa2 read a big file: its last breakpoint is 26 blocks past its turn-1 entry, beyond the lookback.
    sa2 = request(104, 105, HAIKU, chain(("sa-tools", 100), ("sa2", 32), ("t2", 26)), 15_871, [10_000, 15_871], "sa2")
    # A fifth agent never ran before, but the other four wrote the shared tool prefix.
    sa5 = request(104, 105, HAIKU, chain(("sa-tools", 100), ("sa5", 32)), 13_230, [10_000, 13_230], "sa5")
    usage = predict(*FIRST_TURNS, sa1, sa4, sa2, sa5)[4:]
    assert usage == [
        PredictedUsage(13_200, 197, 0),
        PredictedUsage(13_200, 668, 0),
        PredictedUsage(10_000, 5_871, 0),
        PredictedUsage(10_000, 3_230, 0),
    ]


# (d) Phase 5: the parent resumes with the sub-agents' results injected.
PARENT_BEFORE = chain(("p-tools", 212), ("p-msgs", 46))  # 25,830 tokens
PARENT_RESUME = chain(("p-tools", 212), ("p-msgs", 46), ("results", 59), ("overhead", 129))  # 44,604


def test_parent_resume_reads_old_prefix_and_creates_injected_results():
    assert PARENT_RESUME[:258] == PARENT_BEFORE
    before = request(0, 3, OPUS, PARENT_BEFORE, 25_830, [21_250, 25_830])
    resume = request(250, 370, OPUS, PARENT_RESUME, 44_604, [21_250, 25_830, 31_784])
    summary_ids = chain(("p-tools", 212), ("p-msgs", 46), ("results", 59), ("overhead", 129), ("summary", 63))
    after = request(400, 411, OPUS, summary_ids, 50_916, [21_250, 31_784, 50_916])
    assert predict(before, resume, after) == [
        PredictedUsage(0, 25_830, 0),
        PredictedUsage(25_800, 5_984, 12_820),  # old prefix read, results created, rest uncached
        PredictedUsage(31_700, 19_216, 0),  # next turn: the injected results are cached too
    ]


# (e) Phase 6: a 315 s pause.
X_IDS = chain(("x-sys", 20), ("x-msgs", 30))
Y_IDS = chain(("x-sys", 20), ("x-msgs", 30), ("y", 2))
X = request(0, 5, OPUS, X_IDS, 5_000, [2_000, 5_000])


def test_pause_past_ttl_misses():
    y = request(320, 322, OPUS, Y_IDS, 5_200, [2_000, 5_200])
    assert predict(X, y)[1] == PredictedUsage(0, 5_200, 0)


def test_pause_hits_when_entry_was_refreshed_within_ttl():
    refresher = request(200, 202, OPUS, X_IDS, 5_000, [2_000, 5_000], stream="other")
    y = request(320, 322, OPUS, Y_IDS, 5_200, [2_000, 5_200])
    assert predict(X, refresher, y)[1:] == [PredictedUsage(5_000, 0, 0), PredictedUsage(5_000, 200, 0)]


def test_entry_is_alive_at_exactly_its_ttl():
    at_ttl = request(305, 306, OPUS, Y_IDS, 5_200, [2_000, 5_200])
    assert predict(X, at_ttl)[1] == PredictedUsage(5_000, 200, 0)
    one_hour = request(0, 5, OPUS, X_IDS, 5_000, [2_000, 5_000], ttl_s=3600)
    assert predict(one_hour, request(900, 901, OPUS, Y_IDS, 5_200, [2_000, 5_200]))[1] == PredictedUsage(5_000, 200, 0)


# (f) minimum cacheable length.
def test_prefix_shorter_than_model_minimum_is_never_cached():
    short = chain(("short", 15))
    haiku = [request(t, t + 1, HAIKU, short, 1_500, [1_500]) for t in (0, 10)]
    assert predict(*haiku) == [PredictedUsage(0, 0, 1_500)] * 2
    opus = [request(t, t + 1, OPUS, short, 1_500, [1_500]) for t in (0, 10)]
    assert predict(*opus) == [PredictedUsage(0, 1_500, 0), PredictedUsage(1_500, 0, 0)]


def test_min_cacheable_table_by_family():
    assert model_family(HAIKU) == "haiku"
    assert model_family("claude-sonnet-4-5") == "sonnet"
    assert (min_cacheable_tokens(OPUS), min_cacheable_tokens(HAIKU), min_cacheable_tokens("gpt")) == (1024, 2048, 1024)


# (g) the 20-block lookback.
BASE = request(0, 1, OPUS, chain(("base", 100)), 10_000, [10_000])


def test_breakpoint_more_than_20_blocks_past_the_entry_misses():
    far = request(10, 11, OPUS, chain(("base", 100), ("far", 21)), 12_100, [12_100])
    assert predict(BASE, far)[1] == PredictedUsage(0, 12_100, 0)


def test_breakpoint_20_blocks_past_the_entry_hits():
    near = request(10, 11, OPUS, chain(("base", 100), ("near", 20)), 12_000, [12_000])
    assert predict(BASE, near)[1] == PredictedUsage(10_000, 2_000, 0)


def test_lookback_over_content_boundaries_reaches_a_long_turn_back():
    # With message ends given, the lookback counts them, not 100-token blocks: one long tool
    # result (40 blocks) between the old entry and the new breakpoint still reads the entry.
    ids = chain(("base", 100), ("long-result", 40))
    long_turn = ApiRequest(10, 11, OPUS, ids, 14_000, [14_000], boundaries=(6_000, 10_000, 14_000))
    assert predict(BASE, long_turn)[1] == PredictedUsage(10_000, 4_000, 0)
    # 21 message ends back is past the window, like 21 blocks without boundaries.
    many = ApiRequest(10, 11, OPUS, ids, 14_000, [14_000], boundaries=(10_000, *range(10_100, 14_100, 200)))
    assert predict(BASE, many)[1] == PredictedUsage(0, 14_000, 0)


# Other rules.
def test_tokens_after_last_breakpoint_are_input_and_models_do_not_share():
    ids = chain(("shared", 50))
    first = request(0, 1, OPUS, ids, 5_000, [3_050])
    same_model = request(10, 11, OPUS, ids, 5_000, [3_050])
    other_model = request(10, 11, "claude-sonnet-4-5", ids, 5_000, [3_050])
    # 3,050 rounds down to block 30 for the read: the 50 tokens past it are created again.
    assert predict(first, same_model, other_model) == [
        PredictedUsage(0, 3_050, 1_950),
        PredictedUsage(3_000, 50, 1_950),
        PredictedUsage(0, 3_050, 1_950),
    ]


def test_request_without_breakpoints_is_all_input():
    assert predict(request(0, 1, OPUS, chain(("plain", 30)), 3_000, [])) == [PredictedUsage(0, 0, 3_000)]
