"""Capacity simulation: LRU and Belady/OPT caches of C blocks over the interleaved stream (docs/cache-models.md#capacity-simulation).

All events share one cache. Each request is applied atomically at `start_s`, in start order
(ties: input order): it hits its leading cached blocks, stopping at the first miss, then puts every
block of its request into the cache and evicts down to C blocks. Unlike the TTL and API models
there is no write delay (`ready_s` is ignored): that is the setting in which Belady is the exact
optimum and so a true upper bound on LRU. With delayed writes the farthest-next-use rule stops
being optimal (a block kept for one early read can lose to one serving two reads in flight) and
"OPT" could fall below LRU. The price: requests in flight together (the seed's four concurrent
sub-agents) see each other here, so at infinite capacity this model can slightly exceed the
infinite-TTL hit rate.

LRU: a write moves its request's blocks to the most-recent end, ancestors above descendants (as
vLLM frees a request's blocks tail first), so a prefix is never evicted before its extension.
LRU is a stack algorithm (Mattson et al., 1970): the cache of C blocks is the top C of one
recency stack, so one replay yields the stack depth of every block read, and the hits for every C
(`LRUProfile`). Depths come per run: the blocks last touched by write w sit below every block of a
later write and, within w, in path order — a Fenwick tree over writes counts the blocks above.

OPT (Belady): a write evicts the blocks whose next read comes last (never-read-again first;
ties: deepest first), possibly including the blocks just written. Next reads are found by one
backward pass; blocks of one write's run share their next read, so the heap holds runs, not
blocks. OPT needs one pass per capacity and is the upper bound on LRU's hit rate.

Hit tokens = hit blocks × block_size; a request's total is max(token_count, len(ids) × block_size).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union, cast

import numpy as np

from lib.cache.replay import NEVER_WRITTEN, CacheEvent, Replay, Run, RunLog, record_runs, runs_of

DEFAULT_FRACTIONS = (0.9, 0.95, 0.99)
_CURVE_POINTS = 20
_NO_NEXT_READ = np.iinfo(np.int64).max


@dataclass(frozen=True)
class CapacityPoint:
    """Hit rates (tokens) of an LRU and an OPT cache of one capacity; OPT None when skipped."""

    capacity_blocks: int
    capacity_tokens: int
    lru_hit_rate: float
    opt_hit_rate: Optional[float]


@dataclass(frozen=True)
class LRUProfile:
    """LRU hits for every capacity: `cumulative_hits[c]` = hit blocks with c blocks of cache."""

    block_size: int
    total_tokens: int
    cumulative_hits: np.ndarray = field(compare=False, repr=False)

    def hit_blocks(self, capacity_blocks: int) -> int:
        """Hit blocks of an LRU cache of `capacity_blocks`."""
        if capacity_blocks <= 0 or self.cumulative_hits.size == 0:
            return 0
        return int(self.cumulative_hits[min(capacity_blocks, self.cumulative_hits.size - 1)])

    def hit_rate(self, capacity_blocks: int) -> float:
        """Hit tokens / total tokens of an LRU cache of `capacity_blocks`."""
        return _rate(self.hit_blocks(capacity_blocks) * self.block_size, self.total_tokens)

    @property
    def infinite_hit_rate(self) -> float:
        """The hit rate once nothing is ever evicted."""
        return self.hit_rate(self.cumulative_hits.size)

    def capacity_for(self, hit_rate: float) -> Optional[int]:
        """Smallest capacity in blocks whose LRU hit rate reaches `hit_rate`; None if none does."""
        target_blocks = hit_rate * self.total_tokens / self.block_size
        tolerance = 1e-9 * max(1.0, target_blocks)  # 0.9 × rate × total is rarely an exact integer
        capacity = int(np.searchsorted(self.cumulative_hits, target_blocks - tolerance, side="left"))
        return capacity if capacity < self.cumulative_hits.size else None


def _rate(hits: int, total: int) -> float:
    """hits / total, 0 for an empty stream."""
    return hits / total if total else 0.0


def _total_tokens(events: Sequence[CacheEvent], block_size: int) -> int:
    """Sum over requests of max(token_count, full blocks × block_size)."""
    return sum(max(event.token_count, len(event.ids) * block_size) for event in events)


class _Fenwick:
    """Prefix sums over write indices with point updates, O(log n) each."""

    def __init__(self, size: int) -> None:
        self._tree = [0] * (size + 1)

    def add(self, index: int, delta: int) -> None:
        """Add `delta` to entry `index`."""
        position = index + 1
        while position < len(self._tree):
            self._tree[position] += delta
            position += position & -position

    def prefix(self, index: int) -> int:
        """Sum of entries 0..index."""
        total = 0
        position = index + 1
        while position > 0:
            total += self._tree[position]
            position -= position & -position
        return total


def lru_profile(events: Sequence[CacheEvent], *, block_size: int) -> LRUProfile:
    """LRU hits at every capacity from one replay (Mattson stack depths)."""
    log, _ = record_runs(events, is_write_delayed=False)
    return _profile_from_log(log, _total_tokens(events, block_size), block_size)


def _profile_from_log(log: RunLog, total_tokens: int, block_size: int) -> LRUProfile:
    """Stack depths of every block read, accumulated as ranges, then summed per capacity."""
    tree = _Fenwick(len(log.write_lengths))
    retouched = [0] * len(log.write_lengths)
    live = 0  # distinct blocks written so far = size of the recency stack
    first_depths: list[int] = []
    end_depths: list[int] = []
    for is_write, _, writer, runs in log.ops:
        if is_write:
            for run in runs:
                if run.writer != NEVER_WRITTEN:
                    moved = run.end - max(run.start, retouched[run.writer])
                    if moved > 0:
                        tree.add(run.writer, -moved)
                        live -= moved
                    retouched[run.writer] = max(retouched[run.writer], run.end)
            tree.add(writer, log.write_lengths[writer])
            live += log.write_lengths[writer]
            continue
        floor = 1
        for run in runs:
            if run.writer == NEVER_WRITTEN:
                break
            above = live - tree.prefix(run.writer)
            # Prefix matching: a block is a hit only if all before it are, so depths never decrease.
            first = max(above + run.start - retouched[run.writer] + 1, floor)
            floor = first + run.end - run.start
            first_depths.append(first)
            end_depths.append(floor)
    size = max(end_depths, default=1) + 1
    starts = np.bincount(np.asarray(first_depths, dtype=np.int64), minlength=size)
    ends = np.bincount(np.asarray(end_depths, dtype=np.int64), minlength=size)
    return LRUProfile(block_size, total_tokens, np.cumsum(np.cumsum(starts - ends)))


def _next_read_runs(log: RunLog, replay: Replay, events: Sequence[CacheEvent]) -> list[list[Run]]:
    """Per write, runs of 'number of the block's next read' (one backward pass)."""
    replay.ids.add_array("next_read", _NO_NEXT_READ, np.int64)
    read_number = {event: number for number, event in enumerate(log.read_order)}
    after_write: list[list[Run]] = [[] for _ in log.write_lengths]
    for is_write, event, writer, _ in reversed(log.ops):
        dense = replay.ids.map(events[event].ids)  # every id is known: the mapping is unchanged
        next_read = replay.ids.arrays["next_read"]
        if is_write:
            after_write[writer] = runs_of(next_read[dense])
        else:
            next_read[dense] = read_number[event]
    return after_write


class _Belady:
    """A Belady cache of whole write runs; write w holds positions [retouched[w], cached_end[w])."""

    def __init__(self, log: RunLog, capacity_blocks: int) -> None:
        self.capacity = capacity_blocks
        self.lengths = log.write_lengths
        self.cached_end = [0] * len(log.write_lengths)
        self.retouched = [0] * len(log.write_lengths)
        # Entries (-next read, -end, writer, start, end): farthest next read first, then deepest.
        self.heap: list[tuple[int, int, int, int, int]] = []
        self.cached = 0

    def write(self, writer: int, runs: Sequence[Run], next_reads: Sequence[Run]) -> None:
        """Insert every block of the write, then evict down to capacity."""
        for run in runs:
            if run.writer != NEVER_WRITTEN:
                low = max(run.start, self.retouched[run.writer])
                self.cached -= max(0, min(run.end, self.cached_end[run.writer]) - low)
                self.retouched[run.writer] = max(self.retouched[run.writer], run.end)
        self.cached_end[writer] = self.lengths[writer]
        self.cached += self.lengths[writer]
        for group in next_reads:
            heapq.heappush(self.heap, (-group.writer, -group.end, writer, group.start, group.end))
        self._evict()

    def _evict(self) -> None:
        """Drop the blocks whose next read is farthest (deepest first) until capacity is met."""
        while self.cached > self.capacity and self.heap:
            _, _, writer, start, end = self.heap[0]
            low = max(start, self.retouched[writer])
            top = min(end, self.cached_end[writer])
            if top <= low:
                heapq.heappop(self.heap)  # stale: re-touched by a later write, or already evicted
                continue
            evicted = min(top - low, self.cached - self.capacity)
            self.cached_end[writer] = top - evicted
            self.cached -= evicted
            if evicted == top - low:
                heapq.heappop(self.heap)


def _opt_hit_blocks(log: RunLog, after_write: list[list[Run]], capacity_blocks: int) -> int:
    """Belady with prefix matching: total hit blocks at one capacity."""
    cache = _Belady(log, capacity_blocks)
    hits = 0
    for is_write, _, writer, runs in log.ops:
        if is_write:
            cache.write(writer, runs, after_write[writer])
        else:
            hits += _cached_prefix(runs, cache.cached_end)
    return hits


def _cached_prefix(runs: Sequence[Run], cached_end: list[int]) -> int:
    """Leading positions of a read that are cached, up to the first miss."""
    hits = 0
    for run in runs:
        if run.writer == NEVER_WRITTEN:
            break
        top = min(run.end, cached_end[run.writer])
        if top < run.end:
            return max(hits, top)
        hits = run.end
    return hits


def capacity_curve(
    events: Sequence[CacheEvent],
    capacities_blocks: Optional[Sequence[int]] = None,
    *,
    block_size: int,
    with_opt: bool = True,
) -> list[CapacityPoint]:
    """LRU (and OPT) hit rate per capacity; default: 20 log-spaced capacities up to no eviction."""
    log, replay = record_runs(events, is_write_delayed=False)
    total_tokens = _total_tokens(events, block_size)
    profile = _profile_from_log(log, total_tokens, block_size)
    if capacities_blocks is None:
        largest = max(profile.cumulative_hits.size - 1, 1)
        capacities_blocks = np.unique(np.geomspace(1, largest, _CURVE_POINTS).round().astype(int)).tolist()
    next_reads = _next_read_runs(log, replay, events) if with_opt else []
    points = []
    for capacity in capacities_blocks:
        opt = _rate(_opt_hit_blocks(log, next_reads, capacity) * block_size, total_tokens) if with_opt else None
        points.append(CapacityPoint(capacity, capacity * block_size, profile.hit_rate(capacity), opt))
    return points


CapacitySource = Union[LRUProfile, Sequence[CapacityPoint], Sequence[CacheEvent]]


def capacity_needed(
    source: CapacitySource,
    infinite_hit_rate: Optional[float] = None,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    block_size: Optional[int] = None,
) -> dict[float, Optional[int]]:
    """Smallest LRU capacity (tokens) reaching each fraction of the infinite-cache hit rate.

    Exact when given an `LRUProfile` or events (needs `block_size`); from a curve, the smallest
    listed capacity that reaches it. None where no capacity does. `infinite_hit_rate` defaults
    to the profile's own; a curve needs it given.
    """
    if isinstance(source, LRUProfile) or not source or isinstance(source[0], CacheEvent):
        profile = source if isinstance(source, LRUProfile) else _profile_for(cast("Sequence[CacheEvent]", source), block_size)
        reference = profile.infinite_hit_rate if infinite_hit_rate is None else infinite_hit_rate
        blocks = {fraction: profile.capacity_for(fraction * reference) for fraction in fractions}
        return {fraction: None if b is None else b * profile.block_size for fraction, b in blocks.items()}
    if infinite_hit_rate is None:
        raise ValueError("capacity_needed from a curve needs infinite_hit_rate")
    curve = cast("Sequence[CapacityPoint]", source)
    return {
        fraction: min(
            (p.capacity_tokens for p in curve if p.lru_hit_rate >= fraction * infinite_hit_rate - 1e-12),
            default=None,
        )
        for fraction in fractions
    }


def _profile_for(events: Sequence[CacheEvent], block_size: Optional[int]) -> LRUProfile:
    """The LRU profile of raw events; their block size must be given."""
    if block_size is None:
        raise ValueError("capacity_needed from events needs block_size")
    return lru_profile(events, block_size=block_size)
