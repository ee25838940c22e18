"""Anthropic API prompt-cache model: predict each request's cache_read / cache_creation / input (docs/cache-models.md#anthropic-api-model).

Rules, in the units the API reports (tokens):
- Entries live at `cache_control` breakpoints (≤ 4 per request; token end offsets the caller
  derives from the body). A breakpoint is *eligible* when its prefix is at least the model family's
  minimum cacheable length (`MIN_CACHEABLE_TOKENS`); shorter prefixes are never read or written.
- Read (at `start_s`): for each eligible breakpoint, the API checks the breakpoint and up to
  `lookback_blocks` (20) earlier block boundaries for a live entry; the read is the longest prefix
  found over all breakpoints, and refreshes that entry's TTL.
- Usage: cache_read = the read prefix; cache_creation = from the end of the read to the last
  eligible breakpoint; input = everything after it (all of it when no breakpoint is eligible).
  The three always add up to `token_count`.
- Write: the request writes (or refreshes) an entry at every eligible breakpoint; the entries
  become readable at `ready_s` (response start), so requests in flight together never read each
  other's entries (the seed's four simultaneous sub-agents all got 0 %).
- An entry expires `ttl_s` after its last write or read (300 s; 3600 s for 1-hour requests); it
  is alive at exactly `ttl_s` (strict expiry). A 1-hour entry read by a 5-minute request keeps the
  later of the two expiry times.
- The cache is shared by every request of the capture (tools+system warm across sessions) but
  not across models: entries are keyed by the exact model name.

Approximations: the API's lookback counts content blocks. A request that carries `boundaries`
(token positions where content blocks end; the hasher gives message ends, a little coarser than the
API's blocks) is looked back over those; without them the lookback counts blocks of `block_size`
tokens, which misses any turn that added more than `lookback_blocks` × block_size tokens. A prefix is
identified by the chained id of its last full block (docs/hashing.md#chained-block-keys), so a
breakpoint at token position p is rounded down to block p // block_size and cache_read is a
whole number of blocks; the < block_size tokens past the boundary count as creation.
`warm_first_breakpoint` marks the first eligible breakpoint of each stream's first request as
already cached (tools+system kept warm by other sessions the capture does not contain).
"""
from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from dataclasses import dataclass
from typing import Mapping, Sequence

from lib.cache.replay import BlockIds, start_order

DEFAULT_TTL_S = 300.0
LOOKBACK_BLOCKS = 20
# Minimum cacheable prompt length per model family (Anthropic prompt-caching docs); unknown → 1024.
MIN_CACHEABLE_TOKENS: Mapping[str, int] = {"opus": 1024, "sonnet": 1024, "haiku": 2048}
DEFAULT_MIN_CACHEABLE_TOKENS = 1024

_Key = tuple[str, int]


@dataclass(frozen=True)
class ApiRequest:
    """One request as the API cache sees it: timing, model, full-block ids and breakpoints."""

    start_s: float
    ready_s: float
    model: str
    ids: BlockIds
    token_count: int
    breakpoints: Sequence[int]
    ttl_s: float = DEFAULT_TTL_S
    stream: str = ""
    boundaries: Sequence[int] = ()  # sorted content-block end positions (tokens), for the lookback


@dataclass(frozen=True)
class PredictedUsage:
    """The model's prediction of the API's three input-token numbers for one request."""

    cache_read: int
    cache_creation: int
    input: int


def model_family(model: str) -> str:
    """'opus', 'sonnet' or 'haiku' from a model name; '' when none matches."""
    lowered = model.lower()
    return next((family for family in MIN_CACHEABLE_TOKENS if family in lowered), "")


def min_cacheable_tokens(model: str, table: Mapping[str, int] = MIN_CACHEABLE_TOKENS) -> int:
    """The shortest prefix the model's family caches."""
    return table.get(model_family(model), DEFAULT_MIN_CACHEABLE_TOKENS)


def predict_usage(
    requests: Sequence[ApiRequest],
    *,
    block_size: int,
    lookback_blocks: int = LOOKBACK_BLOCKS,
    min_tokens_table: Mapping[str, int] = MIN_CACHEABLE_TOKENS,
    warm_first_breakpoint: bool = False,
) -> list[PredictedUsage]:
    """Predicted usage per request, in input order, replaying the requests in start order."""
    expiry: dict[_Key, float] = {}  # readable entries → time they expire
    pending: list[tuple[float, int, list[_Key], float]] = []
    warmed_streams: set[str] = set()
    predictions: dict[int, PredictedUsage] = {}
    for sequence, index in enumerate(start_order(requests)):
        request = requests[index]
        now = request.start_s
        while pending and pending[0][0] <= now:
            ready_s, _, keys, ttl_s = heapq.heappop(pending)
            for key in keys:
                _touch(expiry, key, ready_s + ttl_s)
        blocks = _eligible_blocks(request, block_size, min_cacheable_tokens(request.model, min_tokens_table))
        keys = [(request.model, request.ids[block - 1]) for block, _ in blocks]
        if warm_first_breakpoint and request.stream not in warmed_streams:
            warmed_streams.add(request.stream)
            if keys:
                _touch(expiry, keys[0], now + request.ttl_s)
        read_blocks = _longest_read(request, blocks, expiry, lookback_blocks, block_size)
        if read_blocks:
            _touch(expiry, (request.model, request.ids[read_blocks - 1]), now + request.ttl_s)
        predictions[index] = _usage(request, blocks, read_blocks * block_size)
        heapq.heappush(pending, (max(request.ready_s, now), sequence, keys, request.ttl_s))
    return [predictions[index] for index in range(len(requests))]


def _touch(expiry: dict[_Key, float], key: _Key, expires_s: float) -> None:
    """Write or refresh an entry, keeping the later expiry."""
    expiry[key] = max(expiry.get(key, -math.inf), expires_s)


def _eligible_blocks(request: ApiRequest, block_size: int, min_tokens: int) -> list[tuple[int, int]]:
    """(block count, token position) per breakpoint long enough to cache, in position order."""
    eligible = []
    for breakpoint in sorted(set(request.breakpoints)):
        position = min(breakpoint, request.token_count)
        block = min(position // block_size, len(request.ids))
        if position >= min_tokens and block >= 1:
            eligible.append((block, position))
    return eligible


def _lookback(request: ApiRequest, block: int, position: int, lookback_blocks: int, block_size: int) -> list[int]:
    """Block counts a read checks for one breakpoint, longest first: the breakpoint, then earlier boundaries."""
    if not request.boundaries:
        return list(range(block, max(block - lookback_blocks, 1) - 1, -1))
    end = bisect_left(request.boundaries, position)
    earlier = request.boundaries[max(0, end - lookback_blocks):end]
    candidates = {block} | {min(p // block_size, len(request.ids)) for p in earlier}
    return sorted((c for c in candidates if c >= 1), reverse=True)


def _longest_read(
    request: ApiRequest, blocks: list[tuple[int, int]], expiry: dict[_Key, float], lookback_blocks: int,
    block_size: int,
) -> int:
    """Blocks in the longest live prefix found at a breakpoint or ≤ lookback_blocks boundaries before it."""
    best = 0
    for block, position in blocks:
        for candidate in _lookback(request, block, position, lookback_blocks, block_size):
            if candidate <= best:
                break
            if expiry.get((request.model, request.ids[candidate - 1]), -math.inf) >= request.start_s:
                best = candidate
                break
    return best


def _usage(request: ApiRequest, blocks: list[tuple[int, int]], read_tokens: int) -> PredictedUsage:
    """Split the prompt into read, creation (up to the last eligible breakpoint) and input."""
    if not blocks:
        return PredictedUsage(0, 0, request.token_count)
    last_position = max(blocks[-1][1], read_tokens)
    return PredictedUsage(read_tokens, last_position - read_tokens, request.token_count - last_position)
