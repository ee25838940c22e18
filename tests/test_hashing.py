"""lib/hashing/block_hashes.py: normalization, the block-hash chain (docs/hashing.md), its memos and the id scopes."""
from __future__ import annotations

import json
import math
import re
import struct
import subprocess
import sys
import zlib
from array import array
from pathlib import Path
from typing import Any

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.hashing.block_hashes import (
    IdAllocator,
    PrefixHasher,
    RequestHashes,
    SegmentTokenizer,
    ceil_keys,
    chained_prefix,
    make_salt,
    normalize_section,
    rebucket,
)

ROOT = Path(__file__).resolve().parent.parent
SALT = make_salt("test")
FAST = settings(max_examples=60, derandomize=True, deadline=None)


class WordTokenizer:
    """One token per word, id = crc32 of the word: deterministic and independent of call order."""

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, text: str) -> list[int]:
        self.calls += 1
        return [zlib.crc32(word.encode()) for word in re.findall(r"\w+", text)]


def seg(text: str) -> bytes:
    return normalize_section(text)


def make_hasher(*, block_size: int = 2, salt: bytes = SALT, **bounds: int) -> PrefixHasher:
    tokenizer_bounds = {k: v for k, v in bounds.items() if k == "max_cached_tokens"}
    state_bounds = {k: v for k, v in bounds.items() if k == "max_state_weight"}
    tokenizer = SegmentTokenizer(WordTokenizer(), **tokenizer_bounds)
    return PrefixHasher(tokenizer, salt=salt, block_size=block_size, **state_bounds)


def reference_hashes(segments: list[bytes], *, block_size: int, salt: bytes = SALT) -> tuple[int, list[bytes]]:
    """docs/hashing.md#chained-block-keys written out naively: whole-request tokens, then the chain, no memo."""
    encoder = WordTokenizer()
    tokens = [token for segment in segments for token in encoder.encode(segment.decode())]
    seed = xxhash.xxh3_64_intdigest(salt)
    previous = xxhash.xxh3_128_digest(b"kv-trace root" + salt)
    keys = []
    for index in range(len(tokens) // block_size):
        block = array("I", tokens[index * block_size : (index + 1) * block_size]).tobytes()
        previous = xxhash.xxh3_128_digest(previous + struct.pack("<Q", index) + block, seed)
        keys.append(previous)
    return len(tokens), keys


def hash_ids(requests: list[list[bytes]], hasher: PrefixHasher) -> list[list[int]]:
    allocator = IdAllocator()
    return [allocator.ids(hasher.hash_request(segments).block_keys) for segments in requests]


def common_prefix(a: list[Any], b: list[Any]) -> int:
    count = 0
    for x, y in zip(a, b):
        if x != y:
            break
        count += 1
    return count


# --- the chain with a stub tokenizer ------------------------------------------------------------


def test_prefix_sharing_requests_get_exact_ids() -> None:
    requests = [[seg("a b"), seg("c d")], [seg("a b"), seg("c e")], [seg("x y"), seg("z w")]]
    assert hash_ids(requests, make_hasher()) == [[1, 2], [1, 3], [4, 5]]


def test_blocks_span_segment_joins_and_the_partial_tail_gets_no_key() -> None:
    hasher = make_hasher()
    first = hasher.hash_request([seg("a b c"), seg("d e")])
    second = hasher.hash_request([seg("a b c"), seg("d f")])
    assert (first.token_count, len(first.block_keys)) == (5, 2)
    assert first.block_keys == second.block_keys
    assert first.tail_key != second.tail_key


def test_a_changed_segment_changes_every_id_from_its_first_block_on() -> None:
    base = [seg("a b c"), seg("d e f"), seg("g h")]
    changed = [seg("a b c"), seg("x e f"), seg("g h")]
    assert hash_ids([base, changed], make_hasher()) == [[1, 2, 3, 4], [1, 5, 6, 7]]


def test_keys_follow_the_documented_chain_formula() -> None:
    segments = [seg("one two three"), seg("four five"), seg("six seven eight nine")]
    result = make_hasher(block_size=3).hash_request(segments)
    assert (result.token_count, result.block_keys) == reference_hashes(segments, block_size=3)


def test_empty_request_has_no_keys() -> None:
    assert make_hasher().hash_request([]) == RequestHashes(0, [], None)


def test_cache_control_and_signature_anywhere_do_not_change_ids() -> None:
    plain = {
        "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
        "system": [{"type": "text", "text": "you are helpful"}],
        "messages": [{"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm"}]}],
    }
    marked = {
        "tools": [{"name": "Bash", "input_schema": {"type": "object", "cache_control": {"type": "ephemeral"}}}],
        "system": [{"type": "text", "text": "you are helpful", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "messages": [{"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "EqA…"}]}],
    }
    hasher = make_hasher()
    def sections(body: dict[str, Any]) -> list[bytes]:
        return [normalize_section(body["tools"]), normalize_section(body["system"]), *map(normalize_section, body["messages"])]

    assert hasher.hash_request(sections(plain)) == hasher.hash_request(sections(marked))


# --- memoization and its bounds -----------------------------------------------------------------


def growing_conversation(turns: int) -> list[list[bytes]]:
    """Each request repeats the previous one's segments and adds an assistant reply and a user turn."""
    tools, system = seg("tool alpha beta gamma delta"), seg("system prompt words here")
    messages = [normalize_section({"role": "user", "content": "start the task please"})]
    requests = [[tools, system, *messages]]
    for turn in range(1, turns):
        messages.append(normalize_section({"role": "assistant", "content": f"reply {turn} " + "word " * (turn % 7)}))
        messages.append(normalize_section({"role": "user", "content": f"result {turn} ok"}))
        requests.append([tools, system, *messages])
    return requests


def test_growing_conversation_tokenizes_each_segment_once_and_matches_from_scratch() -> None:
    requests = growing_conversation(50)
    hasher = make_hasher(block_size=4)
    results = [hasher.hash_request(segments) for segments in requests]
    unique = set(requests[-1])
    encoder = WordTokenizer()
    assert hasher.stats.segments_tokenized == len(unique)
    assert hasher.stats.tokens_tokenized == sum(len(encoder.encode(s.decode())) for s in unique)
    assert hasher.stats.tokens_requested == sum(result.token_count for result in results)
    assert hasher.stats.tokens_tokenized / hasher.stats.tokens_requested < 0.1
    for segments, result in zip(requests, results):
        assert (result.token_count, result.block_keys) == reference_hashes(segments, block_size=4)


def test_tiny_memo_bounds_evict_but_give_identical_results() -> None:
    requests = growing_conversation(30)
    requests += [[seg("tool alpha beta gamma delta"), seg("other system")], *requests[:5]]
    roomy = [make_hasher(block_size=4).hash_request(s) for s in requests]
    tiny_hasher = make_hasher(block_size=4, max_cached_tokens=3, max_state_weight=5)
    tiny = [tiny_hasher.hash_request(s) for s in requests]
    assert tiny == roomy
    assert tiny_hasher.stats.tokens_tokenized > tiny_hasher.stats.tokens_requested * 0.3


def test_sessions_sharing_tools_and_system_reuse_their_tokens() -> None:
    hasher = make_hasher()
    hasher.hash_request([seg("tools here"), seg("system here"), seg("first session")])
    hasher.hash_request([seg("tools here"), seg("system here"), seg("second session")])
    assert hasher.stats.segments_tokenized == 4


def test_segment_tokenizer_encodes_each_distinct_segment_once_within_its_token_budget() -> None:
    encoder = WordTokenizer()
    tokenizer = SegmentTokenizer(encoder, max_cached_tokens=4)
    assert tokenizer.tokens(seg("a b c")) == [zlib.crc32(w.encode()) for w in "abc"]
    tokenizer.tokens(seg("a b c"))
    assert encoder.calls == 1
    tokenizer.tokens(seg("d e"))  # 3 + 2 tokens > 4: the older segment is evicted
    tokenizer.tokens(seg("a b c"))
    assert encoder.calls == 3
    assert (tokenizer.stats.segments_tokenized, tokenizer.stats.tokens_tokenized) == (3, 8)


# --- properties ---------------------------------------------------------------------------------

WORDS = st.lists(st.sampled_from("abcd"), max_size=7).map(" ".join)
SEGMENTS = st.lists(WORDS, max_size=6)


def test_chained_prefix_trusts_the_chain_and_the_id_allocator_does_not() -> None:
    # Not chained: equal again after a difference. The binary search reports 5; ids need the truth.
    first, second = [b"k1", b"x", b"k3", b"k4", b"k5"], [b"k1", b"y", b"k3", b"k4", b"k5"]
    assert chained_prefix(first, second) == 5
    allocator = IdAllocator()
    assert allocator.ids(first) == [1, 2, 3, 4, 5]
    assert allocator.ids(second) == [1, 6, 3, 4, 5]
    trusting = IdAllocator()
    trusting.ids(first, chained=True)
    assert trusting.ids(second, chained=True) == [1, 2, 3, 4, 5]  # wrong: why only chained keys may say so
    assert chained_prefix([b"k1", b"k2"], [b"k1", b"k2", b"k3"]) == 2
    assert chained_prefix([b"k0"], [b"k1"]) == chained_prefix([], [b"k1"]) == 0


@FAST
@given(prefix=SEGMENTS, left=SEGMENTS, right=SEGMENTS, block_size=st.integers(1, 4))
def test_shared_token_prefix_is_exactly_shared_key_prefix(prefix: list[str], left: list[str], right: list[str],
                                                          block_size: int) -> None:
    a = [seg(text) for text in prefix + left]
    b = [seg(text) for text in prefix + right]
    hasher = make_hasher(block_size=block_size)
    hashes_a, hashes_b = hasher.hash_request(a), hasher.hash_request(b)
    tokens_a = [w for text in prefix + left for w in text.split()]
    tokens_b = [w for text in prefix + right for w in text.split()]
    assert len(hashes_a.block_keys) == hashes_a.token_count // block_size == len(tokens_a) // block_size
    shared_tokens = common_prefix(tokens_a, tokens_b)
    assert common_prefix(hashes_a.block_keys, hashes_b.block_keys) == shared_tokens // block_size
    # The same from a hasher that memoized nothing of `a`: equal keys that are not the same objects.
    fresh_b = make_hasher(block_size=block_size).hash_request(b).block_keys
    assert chained_prefix(hashes_a.block_keys, fresh_b) == shared_tokens // block_size
    checked, trusting = IdAllocator(), IdAllocator()
    assert [checked.ids(keys) for keys in (hashes_a.block_keys, fresh_b)] == \
        [trusting.ids(keys, chained=True) for keys in (hashes_a.block_keys, fresh_b)]
    assert (hashes_a.token_count, hashes_a.block_keys) == reference_hashes(a, block_size=block_size)


@FAST
@given(prefix=SEGMENTS, left=SEGMENTS, right=SEGMENTS, factor=st.integers(1, 4))
def test_rebucketed_keys_share_exactly_the_shared_large_blocks(prefix: list[str], left: list[str],
                                                              right: list[str], factor: int) -> None:
    a = [seg(text) for text in prefix + left]
    b = [seg(text) for text in prefix + right]
    hasher = make_hasher(block_size=2)
    hashes_a, hashes_b = hasher.hash_request(a), hasher.hash_request(b)
    large_a, large_b = rebucket(hashes_a.block_keys, factor), rebucket(hashes_b.block_keys, factor)
    assert len(large_a) == hashes_a.token_count // (2 * factor)
    tokens_a = [w for text in prefix + left for w in text.split()]
    tokens_b = [w for text in prefix + right for w in text.split()]
    shared_tokens = common_prefix(tokens_a, tokens_b)
    assert common_prefix(large_a, large_b) == shared_tokens // (2 * factor)
    assert len(ceil_keys(hashes_a, factor)) == math.ceil(hashes_a.token_count / (2 * factor))


def test_rebucket_takes_every_kth_key() -> None:
    assert rebucket([b"1", b"2", b"3", b"4", b"5"], 2) == [b"2", b"4"]
    with pytest.raises(ValueError):
        rebucket([b"1"], 0)


def test_ceil_keys_add_one_key_for_a_partial_tail() -> None:
    hasher = make_hasher()
    odd = hasher.hash_request([seg("a b c")])
    even = hasher.hash_request([seg("a b c d")])
    assert ceil_keys(odd) == [*odd.block_keys, odd.tail_key]
    assert ceil_keys(even) == even.block_keys
    assert ceil_keys(even, 4) == [even.block_keys[-1]]
    assert odd.tail_key not in even.block_keys


# --- salt and id scopes -------------------------------------------------------------------------


def test_same_salt_same_keys_other_salt_other_keys_but_same_ids() -> None:
    requests = growing_conversation(5) + [[seg("x y z")]]
    runs = {salt: [make_hasher(salt=salt).hash_request(s) for s in requests] for salt in (SALT, make_salt("other"))}
    again = [make_hasher(salt=SALT).hash_request(s) for s in requests]
    assert again == runs[SALT]
    first, second = runs.values()
    assert not {k for r in first for k in r.block_keys} & {k for r in second for k in r.block_keys}
    assert hash_ids(requests, make_hasher(salt=SALT)) == hash_ids(requests, make_hasher(salt=make_salt("other")))


def test_make_salt_is_reproducible_from_text_and_random_otherwise() -> None:
    assert make_salt("abc") == make_salt("abc") != make_salt("abd")
    assert len(make_salt(None)) == 16
    assert make_salt(None) != make_salt(None)


def test_id_allocator_is_dense_in_first_appearance_order_per_scope() -> None:
    local_a, shared = IdAllocator(), IdAllocator()
    assert local_a.ids([b"k1", b"k2"]) == [1, 2]
    assert local_a.ids([b"k1", b"k3", b"k3"]) == [1, 3, 3]
    assert shared.ids([b"k3", b"k1"]) == [1, 2]
    assert len(local_a) == 3


# --- --token-count api --------------------------------------------------------------------------


def test_scaled_keys_have_the_api_count_and_keep_shared_prefixes() -> None:
    hasher = make_hasher(block_size=2)
    short = hasher.hash_request([seg("a b c d e f g")])  # 7 tokens, 3 keys
    long = hasher.hash_request([seg("a b c d e f g h i j k l")])  # 12 tokens, 6 keys
    factor = 1.5
    scaled_short = hasher.scale_positions(short, api_token_count=11, factor=factor)
    scaled_long = hasher.scale_positions(long, api_token_count=18, factor=factor)
    assert (scaled_short.token_count, len(scaled_short.block_keys)) == (11, 5)
    assert len(scaled_long.block_keys) == 9
    # Scaled block j is keyed on source block ceil((j+1)/1.5)-1: blocks 0..3 map into the 3 shared
    # source blocks, block 4 of the short request is padding past its content.
    assert common_prefix(scaled_short.block_keys, scaled_long.block_keys) == 4
    assert len(set(scaled_short.block_keys)) == 5
    assert scaled_short.tail_key is not None and scaled_long.tail_key is None


def test_scaling_truncates_and_pads_at_the_tail() -> None:
    hasher = make_hasher(block_size=2)
    hashes = hasher.hash_request([seg("a b c d e f")])
    truncated = hasher.scale_positions(hashes, api_token_count=4, factor=1.0)
    padded = hasher.scale_positions(hashes, api_token_count=12, factor=1.0)
    assert padded.block_keys[:2] == truncated.block_keys
    assert len(set(padded.block_keys)) == 6
    assert not set(padded.block_keys) & set(hashes.block_keys)
    with pytest.raises(ValueError):
        hasher.scale_positions(hashes, api_token_count=4, factor=0.0)


# --- normalization ------------------------------------------------------------------------------

TRICKY: list[Any] = [
    {"b": 1, "a": [1.5, 1e-07, 1e16, 1e22, -0.0, 0.1, 5e-324, 1e300, 12345678901234567890123]},
    {"text": "caf\u00e9 \u4e2d\u6587 \U0001f600 \u2028 \x7f \x00\x1f\t\n\"\\ /", "n": None, "t": True},
    {"nan": float("nan"), "inf": [float("inf"), float("-inf")]},
    {"lone": "\ud800 surrogate"},
    {"deep": [[[{"x": [{"y": "z\u00ff"}]}]]], "e": {}, "l": []},
    "plain string",
    {"quoted": "text mentioning \"cache_control\" and :1.5, [null]"},
    2.5,
]


@pytest.mark.parametrize("value", TRICKY)
def test_normalized_bytes_equal_compact_ascii_json_dumps(value: Any) -> None:
    assert normalize_section(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode()


def test_normalization_drops_cache_control_and_signature_at_any_depth_only_as_keys() -> None:
    value = {"cache_control": 1, "a": [{"signature": "s", "b": {"cache_control": {"x": 1}, "c": "signature"}}]}
    assert normalize_section(value) == b'{"a":[{"b":{"c":"signature"}}]}'


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)


@FAST
@given(value=JSON_VALUES)
def test_normalization_matches_json_dumps_on_arbitrary_json(value: Any) -> None:
    assert normalize_section([value]) == json.dumps([value], separators=(",", ":")).encode()


def test_hashing_module_imports_no_heavy_or_io_dependency() -> None:
    code = "import sys, lib.hashing; print(sorted({'tiktoken', 'sqlite3', 'click', 'jinja2'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
