"""Tokens and chained block hashes of request prefixes: the hashing contract of docs/hashing.md.

A request is a list of *segments* (the `tools` list, the `system` list, then each message), each
normalized to compact ASCII JSON (docs/hashing.md#normalization). Its tokens are the concatenation of its segments'
tokens, cut into blocks of `block_size`; only full blocks get keys (docs/hashing.md#blocks). Block i's key is

    key_i = xxh3_128(key_{i-1} || i as uint64 LE || token ids of block i as uint32, seed)

with `key_{-1}` = xxh3_128("kv-trace root" || salt) and `seed` = xxh3_64(salt), so the salt
reaches every key twice: through the chain root (all 128 bits of it) and the 64-bit seed (docs/hashing.md#chained-block-keys).
Because each key covers its whole prefix, equal keys ⇔ equal token prefixes (up to collisions).

Performance (docs/hashing.md#work-grows-with-unique-content): `SegmentTokenizer` tokenizes each distinct segment once; `PrefixHasher`
keeps the chain state after every hashed segment prefix, so the next request of a conversation
resumes from its longest already-hashed prefix and only tokenizes and hashes its new segments.
Both memos are LRU-bounded; an evicted entry is simply recomputed, with identical results.
Pure core: no files, clock or randomness (except `make_salt` without a text).
"""
from __future__ import annotations

import codecs
import hashlib
import json
import math
import os
import struct
from array import array
from collections import OrderedDict
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Hashable, Optional, Sequence, cast

import orjson
import xxhash

if TYPE_CHECKING:
    from lib.hashing.tokenizer import Encoder

DEFAULT_BLOCK_SIZE = 64
DROPPED_KEYS = frozenset({"cache_control", "signature"})
SALT_BYTES = 16
# 16M cached tokens ≈ 64 MB of packed ids; the chain memo below holds what a conversation needs next.
DEFAULT_MAX_CACHED_TOKENS = 16_000_000
# Bound on (block keys + chain nodes) reachable from stored states, ~100 B each: <= ~200 MB, and
# far less in practice because the states of one conversation share their chain.
DEFAULT_MAX_STATE_WEIGHT = 2_000_000

# Token ids are packed as 4-byte unsigned ints in native (little-endian on x86/ARM) order: one
# C-level copy per segment instead of a per-token Python loop.
_TOKEN_TYPECODE = "I"
_TOKEN_BYTES = array(_TOKEN_TYPECODE).itemsize
_pack_index = struct.Struct("<Q").pack
_digest = xxhash.xxh3_128_digest

# --- normalization (docs/hashing.md#normalization) ------------------------------------------------------------------

# orjson is 2-3x faster than json.dumps but differs from it in three ways: it writes non-ASCII as
# UTF-8 and DEL raw (fixed afterwards by `_ascii_escape`), it formats floats its own way ("1e-7"
# vs "1e-07") and writes NaN/Infinity as null. The walk that drops keys therefore also replaces
# each float by an orjson.Fragment holding json.dumps' own text for it.
_ESCAPE_HANDLER = "kv_trace_json_ascii"


def _json_ascii_errors(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: escape a run of non-ASCII characters exactly as json.dumps does."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    # The run holds no quote or backslash (those are ASCII), so stripping the added quotes is exact.
    return json.encoder.encode_basestring_ascii(error.object[error.start : error.end])[1:-1], error.end


codecs.register_error(_ESCAPE_HANDLER, _json_ascii_errors)


def _ascii_escape(raw: bytes) -> bytes:
    """Turn orjson's UTF-8 output into json.dumps(ensure_ascii=True) output."""
    if not raw.isascii():
        raw = raw.decode("utf-8").encode("ascii", _ESCAPE_HANDLER)
    # DEL is ASCII but json.dumps escapes it; orjson emits it only inside strings.
    return raw.replace(b"\x7f", b"\\u007f") if b"\x7f" in raw else raw


def _strip(value: Any, *, floats_as_fragments: bool = True) -> Any:
    """Copy of `value` without `cache_control`/`signature` keys at any depth (docs/hashing.md#normalization)."""
    if isinstance(value, dict):
        return {key: _strip(item, floats_as_fragments=floats_as_fragments)
                for key, item in value.items() if key not in DROPPED_KEYS}
    if isinstance(value, (list, tuple)):
        return [_strip(item, floats_as_fragments=floats_as_fragments) for item in value]
    if floats_as_fragments and isinstance(value, float):
        return orjson.Fragment(json.dumps(value))
    return value


def normalize_section(value: Any) -> bytes:
    """Compact ASCII JSON of `value` without cache_control/signature keys (docs/hashing.md#normalization).

    Byte-identical to json.dumps(value, separators=(",", ":"), ensure_ascii=True) after the drop.
    """
    try:
        return _ascii_escape(orjson.dumps(_strip(value)))
    except orjson.JSONEncodeError:
        # Lone surrogates, non-string keys, >64-bit ints, very deep nesting: json.dumps handles them.
        return json.dumps(_strip(value, floats_as_fragments=False), separators=(",", ":")).encode("ascii")


def segment_digest(segment: bytes) -> bytes:
    """128-bit content hash of a normalized segment: the key of the token memo."""
    return _digest(segment)


# --- salt, ids, re-bucketing -------------------------------------------------------------------


def make_salt(text: Optional[str] = None) -> bytes:
    """The run's salt: derived from `text` (reproducible `--salt`) or random; never written out."""
    if text is None:
        return os.urandom(SALT_BYTES)
    return hashlib.sha256(text.encode("utf-8")).digest()[:SALT_BYTES]


class IdAllocator:
    """Dense integer ids from 1 in first-appearance order, one allocator per scope (docs/hashing.md#integer-ids-and-scopes).

    Ids depend only on the order keys appear in, never on their values, so two runs with
    different salts produce identical integer ids.
    """

    __slots__ = ("_ids", "_last_keys", "_last_ids")

    def __init__(self) -> None:
        self._ids: dict[bytes, int] = {}
        self._last_keys: dict[Hashable, Sequence[bytes]] = {}
        self._last_ids: dict[Hashable, list[int]] = {}

    def ids(self, block_keys: Sequence[bytes], context: Hashable = None, *, chained: bool = False) -> list[int]:
        """Ids of `block_keys`, allocating the next integers to keys not seen before.

        `context` names the stream the request belongs to (e.g. a conversation lane) when the
        caller interleaves streams; it only makes the call faster, never changes the ids.
        `chained`: the keys are a PrefixHasher's block keys, as were the context's previous ones.
        """
        last_ids = self._last_ids.get(context, [])
        shared, tail = self.new_ids(block_keys, context, chained=chained)
        ids = last_ids[:shared]
        ids += tail
        self._last_ids[context] = ids
        return ids

    def new_ids(self, block_keys: Sequence[bytes], context: Hashable = None, *, chained: bool = False
                ) -> tuple[int, list[int]]:
        """(n, ids of block_keys[n:]): the first n keys are those of `context`'s previous request
        through this method, whose ids the caller has. Use either this or `ids` for one context.
        """
        # A request repeats its stream's previous request's keys as a prefix: those keys were all
        # allocated then, only the rest is looked up.
        previous = self._last_keys.get(context, ())
        shared = chained_prefix(previous, block_keys) if chained else common_prefix(previous, block_keys)
        table = self._ids
        tail = list(map(table.get, block_keys[shared:]))
        if None in tail:
            for position in range(tail.index(None), len(tail)):
                if tail[position] is None:
                    # len(table) + 1 is evaluated before the insert, so new ids stay dense; a key
                    # repeated within `block_keys` gets the id its first occurrence allocated.
                    tail[position] = table.setdefault(block_keys[shared + position], len(table) + 1)
        self._last_keys[context] = block_keys
        return shared, cast("list[int]", tail)  # every None was filled above

    def __len__(self) -> int:
        return len(self._ids)


def common_prefix(previous: Sequence[bytes], keys: Sequence[bytes]) -> int:
    """Length of the longest common prefix of two key lists (0 when they differ at once)."""
    low = chained_prefix(previous, keys)
    # The slice comparison (C speed, identical objects compare by pointer) confirms the binary
    # search for any keys (scaled keys need not be chained), since a wrong length would change ids.
    return low if previous[:low] == keys[:low] else 0


def chained_prefix(previous: Sequence[bytes], keys: Sequence[bytes]) -> int:
    """`common_prefix` of two lists of chained keys (PrefixHasher's block keys), in O(log n).

    A chained key is equal at a position only when the keys before it are equal too, so a binary
    search finds where the lists part; for other keys its answer can be too long.
    """
    low, high = 0, min(len(previous), len(keys))
    if not high or previous[0] != keys[0]:
        return 0
    while low < high:
        middle = (low + high + 1) // 2
        if previous[middle - 1] == keys[middle - 1]:
            low = middle
        else:
            high = middle - 1
    return low


def rebucket(block_keys: Sequence[bytes], factor: int) -> list[bytes]:
    """Keys of blocks `factor` times larger: every factor-th key (docs/traces.md#mooncake-jsonl).

    Exact because keys are chained: key i identifies all tokens of blocks 0..i, so key
    (j+1)·factor−1 identifies the first j+1 large blocks, and two requests share it exactly
    when they share that prefix; floor(n / factor) keys remain, i.e. tokens // large block.
    """
    if factor < 1:
        raise ValueError(f"rebucket factor must be >= 1, got {factor}")
    return list(block_keys[factor - 1 :: factor])


@dataclass(frozen=True, slots=True)
class RequestHashes:
    """Token count and full-block keys of one request; `tail_key` identifies its partial tail."""

    token_count: int
    block_keys: list[bytes]
    tail_key: Optional[bytes] = None


def ceil_keys(hashes: RequestHashes, factor: int = 1) -> list[bytes]:
    """Keys under the ceil convention (Mooncake, docs/traces.md#mooncake-jsonl): the partial tail block gets a key.

    With `factor` > 1 a partial large block made only of full small blocks is identified by the
    last small key; it cannot collide with a full large block's key (different block index).
    """
    keys = rebucket(hashes.block_keys, factor)
    if hashes.tail_key is not None:
        keys.append(hashes.tail_key)
    elif len(hashes.block_keys) % factor:
        keys.append(hashes.block_keys[-1])
    return keys


# --- memoized tokenization and chained hashing (performance rule of
# docs/hashing.md#work-grows-with-unique-content)


@dataclass(slots=True)
class HashStats:
    """Work counters; tokens_tokenized / tokens_requested is the share the memos could not spare."""

    requests: int = 0
    segments_seen: int = 0
    segments_tokenized: int = 0
    tokens_requested: int = 0
    tokens_tokenized: int = 0
    blocks_hashed: int = 0

class SegmentTokenizer:
    """Token ids of normalized segments, memoized by content digest in an LRU bounded by tokens.

    Lookups are counted by `PrefixHasher` (its chain memo skips most of them entirely); this
    class counts only the segments and tokens it actually encodes.
    """

    def __init__(self, encoder: Encoder, *, max_cached_tokens: int = DEFAULT_MAX_CACHED_TOKENS,
                 stats: Optional[HashStats] = None) -> None:
        self._encoder = encoder
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._cached_tokens = 0
        self.max_cached_tokens = max_cached_tokens
        self.stats = stats if stats is not None else HashStats()

    def token_bytes(self, segment: bytes, digest: Optional[bytes] = None) -> bytes:
        """Token ids of `segment` packed as uint32 (the block-hash input); `digest` saves a hash."""
        key = digest if digest is not None else _digest(segment)
        packed = self._cache.get(key)
        if packed is not None:
            self._cache.move_to_end(key)
            return packed
        packed = array(_TOKEN_TYPECODE, self._encoder.encode(segment.decode("utf-8"))).tobytes()
        count = len(packed) // _TOKEN_BYTES
        self.stats.segments_tokenized += 1
        self.stats.tokens_tokenized += count
        cost = max(count, 1)  # empty results still cost an entry
        if cost <= self.max_cached_tokens:
            self._cache[key] = packed
            self._cached_tokens += cost
            while self._cached_tokens > self.max_cached_tokens:
                _, evicted = self._cache.popitem(last=False)
                self._cached_tokens -= max(len(evicted) // _TOKEN_BYTES, 1)
        return packed

    def tokens(self, segment: bytes) -> list[int]:
        """Token ids of `segment` as a list."""
        ids = array(_TOKEN_TYPECODE)
        ids.frombytes(self.token_bytes(segment))
        return ids.tolist()


class _ChainState:
    """The hash chain after a prefix of segments; shares its earlier keys through `parent`."""

    __slots__ = ("parent", "new_keys", "n_keys", "last_key", "tail", "token_count", "depth")

    def __init__(self, parent: Optional[_ChainState], new_keys: list[bytes], n_keys: int,
                 last_key: bytes, tail: bytes, token_count: int, depth: int) -> None:
        self.parent = parent
        self.new_keys = new_keys  # keys of the blocks completed by this state's last segment
        self.n_keys = n_keys
        self.last_key = last_key  # chain input for the next block (the root before any block)
        self.tail = tail  # packed tokens of the partial block, < block_size of them
        self.token_count = token_count
        self.depth = depth

    def all_keys(self) -> list[bytes]:
        """Every block key from the root to this state, in order."""
        parts = []
        state: Optional[_ChainState] = self
        while state is not None and state.n_keys:
            if state.new_keys:
                parts.append(state.new_keys)
            state = state.parent
        return list(itertools.chain.from_iterable(reversed(parts)))


class PrefixHasher:
    """Chained block keys of requests, resuming from the longest already-hashed segment prefix.

    The memo maps a chained digest of the segment digests (so it identifies the whole prefix of
    segments) to the `_ChainState` after it. A state's weight is its reachable keys plus chain
    nodes, so the LRU budget `max_state_weight` bounds the memory of everything it keeps alive.
    """

    def __init__(self, tokenizer: SegmentTokenizer, *, salt: bytes, block_size: int = DEFAULT_BLOCK_SIZE,
                 max_state_weight: int = DEFAULT_MAX_STATE_WEIGHT) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.tokenizer = tokenizer
        self.stats = tokenizer.stats
        self.block_size = block_size
        self.max_state_weight = max_state_weight
        self._block_bytes = block_size * _TOKEN_BYTES
        self._seed = xxhash.xxh3_64_intdigest(salt)
        self._root = _digest(b"kv-trace root" + salt)
        self._empty = _ChainState(None, [], 0, self._root, b"", 0, 0)
        self._states: OrderedDict[bytes, _ChainState] = OrderedDict()
        self._state_weight = 0

    @property
    def root(self) -> bytes:
        """The chain digest of the empty segment prefix (first item of a `chain` list)."""
        return self._root

    def hash_request(self, segments: Sequence[bytes], digests: Optional[Sequence[bytes]] = None,
                     chain: Optional[list[bytes]] = None) -> RequestHashes:
        """Token count, full-block keys and tail key of the concatenated `segments` (docs/hashing.md#blocks,
        docs/hashing.md#chained-block-keys).

        `digests` are the segments' `segment_digest`s if known. `chain` holds the chain digests
        of a leading run of the segments (the root first), e.g. kept from an earlier request with
        the same leading segments; it is completed in place, one digest per segment prefix.
        """
        if digests is None:
            digests = [_digest(segment) for segment in segments]
        if chain is None:
            chain = [self._root]
        seed = self._seed
        for digest in digests[len(chain) - 1 :]:
            chain.append(_digest(chain[-1] + digest, seed))
        state, start = self._empty, 0
        for end in range(len(segments), 0, -1):
            found = self._states.get(chain[end])
            if found is not None:
                self._states.move_to_end(chain[end])
                state, start = found, end
                break
        for index in range(start, len(segments)):
            state = self._extend(state, self.tokenizer.token_bytes(segments[index], digests[index]))
            self._remember(chain[index + 1], state)
        stats = self.stats
        stats.requests += 1
        stats.segments_seen += len(segments)
        stats.tokens_requested += state.token_count
        tail_key = None
        if state.tail:
            # Shorter input than any full block, so it never equals a full-block key (ceil convention of docs/traces.md#mooncake-jsonl).
            tail_key = _digest(state.last_key + _pack_index(state.n_keys) + state.tail, self._seed)
        return RequestHashes(state.token_count, state.all_keys(), tail_key)

    def _extend(self, state: _ChainState, packed: bytes) -> _ChainState:
        """The chain state after appending one segment's packed tokens to `state`."""
        buffer = state.tail + packed if state.tail else packed
        block_bytes = self._block_bytes
        full_bytes = len(buffer) - len(buffer) % block_bytes
        previous, index, seed = state.last_key, state.n_keys, self._seed
        new_keys = []
        for offset in range(0, full_bytes, block_bytes):
            previous = _digest(previous + _pack_index(index) + buffer[offset : offset + block_bytes], seed)
            new_keys.append(previous)
            index += 1
        self.stats.blocks_hashed += len(new_keys)
        return _ChainState(state, new_keys, index, previous, buffer[full_bytes:],
                           state.token_count + len(packed) // _TOKEN_BYTES, state.depth + 1)

    def _remember(self, chain_digest: bytes, state: _ChainState) -> None:
        """Store `state` in the LRU memo, evicting the least recently used beyond the budget."""
        weight = state.n_keys + state.depth
        if weight > self.max_state_weight:
            return
        self._states[chain_digest] = state
        self._state_weight += weight
        while self._state_weight > self.max_state_weight:
            _, evicted = self._states.popitem(last=False)
            self._state_weight -= evicted.n_keys + evicted.depth

    def scale_positions(self, hashes: RequestHashes, *, api_token_count: int, factor: float) -> RequestHashes:
        """Keys in API token positions for `--token-count api` (docs/hashing.md#calibrated-counts).

        `factor` = API tokens per tokenizer token, one constant per run and model family, so block
        boundaries map identically in every request and shared prefixes keep sharing keys. Scaled
        block j ends at tokenizer position (j+1)·block/factor and is keyed on the source block
        holding that position, so it covers at least the content it spans. Blocks reaching past the
        last full tokenizer block are padding keyed on the request's whole content (tail included):
        distinct from every real key, shared only by requests with identical content. The result has
        `token_count` = `api_token_count` and exactly api_token_count // block_size keys.
        """
        if not math.isfinite(factor) or factor <= 0:
            raise ValueError(f"scale factor must be a positive number, got {factor}")
        keys, seed = hashes.block_keys, self._seed
        end_anchor = hashes.tail_key or (keys[-1] if keys else self._root)
        scaled = []
        for block in range(api_token_count // self.block_size):
            source = math.ceil((block + 1) / factor) - 1
            if source < len(keys):
                scaled.append(_digest(keys[source] + _pack_index(block) + b"scale", seed))
            else:
                scaled.append(_digest(end_anchor + _pack_index(block) + b"pad", seed))
        tail_key = None
        if api_token_count % self.block_size:
            tail_key = _digest(end_anchor + _pack_index(len(scaled)) + b"ptail", seed)
        return RequestHashes(api_token_count, scaled, tail_key)
