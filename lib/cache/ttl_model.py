"""Trace prefix model and TTL simulation over block-id requests (docs/cache-models.md#trace-prefix-model,
docs/cache-models.md#ttl-simulation).

Prefix model (docs/cache-models.md#trace-prefix-model, the replay tester's definition): a request's hits are its leading ids that
also occur anywhere in the previous request of the same (sub)conversation — positions i = 0, 1, …
while `ids[i] in set(previous)`, stopping at the first miss. The first request is all misses,
except for an optional warm prefix of `warm_prefix_blocks` (see `warm_prefix_blocks()`).

TTL simulation (docs/cache-models.md#ttl-simulation): one cache of block ids shared by every event. A request reads at
`start_s`; it hits its leading blocks that are readable and alive, stopping at the first miss
(prefix matching), and prefills everything from there on. An entry is alive while
`now − last_access <= ttl` (strict expiry: alive at exactly `ttl`, gone just after). Every block
of a request, hit or newly written, gets `last_access = ready_s` when the request's writes land
(see `lib/cache/replay.py`): the refresh on hit happens when the response starts. Since that
makes the cache state independent of the TTL, one replay yields every TTL of a sweep.

Reported per TTL: per-request hit blocks and tokens; hit rate in tokens (hit tokens = hit blocks ×
block_size; a request's total is max(token_count, len(ids) × block_size), so the partial tail
block is always a miss); the working set (tokens of alive entries) as a step series over every
write and every expiry, and its peak; prefills (misses, in blocks) per unique block; and the share
of unique blocks prefilled exactly once ("stable": every access after the first hit).
"""
from __future__ import annotations

import math
import sys
from bisect import bisect_right
from dataclasses import dataclass
from typing import Container, Optional, Sequence

import numpy as np

from lib.cache.replay import NEVER_WRITTEN, CacheEvent, Op, Replay

__all__ = [
    "CacheEvent", "HitRate", "TTLResult", "DEFAULT_TTLS_S", "prefix_hits", "conversation_hit_rate",
    "warm_prefix_blocks", "sweep_ttl",
]

# docs/cache-models.md#ttl-simulation: 1m, 2m, 3m, 4m, 5m, 10m, 15m, 30m, 1h, 2h, 4h, 8h, 24h, and None = infinite.
DEFAULT_TTLS_S: tuple[Optional[float], ...] = (
    60, 120, 180, 240, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400, None,
)

# An infinite TTL as the largest finite float: a gap of math.inf (never readable) still misses.
_NO_EXPIRY = sys.float_info.max
# Blocks after the common prefix that prefix_hits looks up by scanning the previous list, not a set.
_SCAN_LIMIT = 8


@dataclass(frozen=True)
class HitRate:
    """Hits out of a total, in the unit the producing function names (blocks or tokens)."""

    hits: int
    total: int

    @property
    def rate(self) -> float:
        """hits / total, 0 when nothing was requested."""
        return self.hits / self.total if self.total else 0.0


def prefix_hits(previous_ids: Sequence[int], ids: Sequence[int]) -> int:
    """Leading ids of `ids` found anywhere in `previous_ids`, up to the first miss (docs/cache-models.md#trace-prefix-model)."""
    # Chained ids of a growing conversation repeat the previous list as a prefix: compare that
    # part in C (the validator runs this over ~90M ids), then walk only what follows it.
    shared = min(len(previous_ids), len(ids))
    hits = shared if list(ids[:shared]) == list(previous_ids[:shared]) else 0
    rest = ids[hits:]
    # Most walks stop at the request's first new block: a few C-level list scans are cheaper than
    # building a set of the previous ids every time; long walks get the set.
    previous: Container[int] = previous_ids if len(rest) <= _SCAN_LIMIT else set(previous_ids)
    for block in rest:
        if block not in previous:
            break
        hits += 1
    return hits


def warm_prefix_blocks(tool_tokens: int, system_tokens: int, share: float, block_size: int) -> int:
    """floor(share · (tool_tokens + system_tokens)) // block_size: the first request's warm credit."""
    return math.floor(share * (tool_tokens + system_tokens)) // block_size


def conversation_hit_rate(requests: Sequence[Sequence[int]], *, warm_prefix_blocks: int = 0) -> HitRate:
    """Prefix-model hit rate in blocks over one (sub)conversation's requests, in order (docs/cache-models.md#trace-prefix-model)."""
    hits = 0
    total = 0
    previous: Sequence[int] = ()
    for position, ids in enumerate(requests):
        total += len(ids)
        hits += min(len(ids), max(warm_prefix_blocks, 0)) if position == 0 else prefix_hits(previous, ids)
        previous = ids
    return HitRate(hits, total)


@dataclass(frozen=True)
class TTLResult:
    """The TTL simulation for one TTL (None = infinite); per-request tuples follow input order."""

    ttl_s: Optional[float]
    block_size: int
    request_hit_blocks: tuple[int, ...]
    hit_tokens: int
    total_tokens: int
    peak_working_set_tokens: int
    unique_blocks: int
    prefilled_blocks: int
    stable_blocks: int
    working_set_times_s: tuple[float, ...]
    working_set_tokens: tuple[int, ...]

    @property
    def hit_rate(self) -> float:
        """Hit tokens / total tokens."""
        return self.hit_tokens / self.total_tokens if self.total_tokens else 0.0

    @property
    def mean_prefills_per_block(self) -> float:
        """Prefilled blocks (misses) per unique block; 1.0 means every block was computed once."""
        return self.prefilled_blocks / self.unique_blocks if self.unique_blocks else 0.0

    @property
    def stable_share(self) -> float:
        """Share of unique blocks prefilled exactly once."""
        return self.stable_blocks / self.unique_blocks if self.unique_blocks else 0.0


def sweep_ttl(
    events: Sequence[CacheEvent],
    ttls: Sequence[Optional[float]] = DEFAULT_TTLS_S,
    *,
    block_size: int,
) -> list[TTLResult]:
    """TTL simulation for every TTL in `ttls` from one replay, in the order given."""
    limits = [_NO_EXPIRY if ttl is None else float(ttl) for ttl in ttls]
    replay = Replay(events)
    replay.ids.add_array("max_gap", -math.inf, np.float64)
    hit_blocks = np.zeros((len(events), len(limits)), dtype=np.int64)
    intervals: list[tuple[float, float, int]] = []
    for op in replay.ops():
        if op.is_write:
            _end_intervals(op, replay, intervals)
        else:
            hit_blocks[op.event] = _read_hits(op, replay, limits)
    _open_intervals(replay, intervals)
    shared = _SweepTotals(
        block_count=sum(len(event.ids) for event in events),
        total_tokens=sum(max(event.token_count, len(event.ids) * block_size) for event in events),
        intervals=np.asarray(intervals, dtype=np.float64).reshape(-1, 3),
    )
    return [
        _ttl_result(ttl, limit, hit_blocks[:, column], replay, shared, block_size)
        for column, (ttl, limit) in enumerate(zip(ttls, limits))
    ]


def _read_hits(op: Op, replay: Replay, limits: list[float]) -> list[int]:
    """Hit blocks of one read under every TTL; records each block's largest re-access gap."""
    max_gap = replay.ids.arrays["max_gap"]
    known = replay.ids.arrays["known"]
    running_gaps: list[float] = []
    run_ends: list[int] = [0]
    running = -math.inf
    for run in op.runs:
        blocks = op.dense[run.start:run.end]
        if run.writer == NEVER_WRITTEN:
            gap = math.inf
            # Read before by a request still in flight: a second prefill under any TTL.
            max_gap[blocks[known[blocks]]] = math.inf
        else:
            gap = op.time_s - float(replay.write_ready_s[run.writer])
            max_gap[blocks] = np.maximum(max_gap[blocks], gap)
        running = max(running, gap)  # prefix matching: a miss ends the hit run for good
        running_gaps.append(running)
        run_ends.append(run.end)
    return [run_ends[bisect_right(running_gaps, limit)] for limit in limits]


def _end_intervals(op: Op, replay: Replay, intervals: list[tuple[float, float, int]]) -> None:
    """Blocks this write re-touches stop counting under their previous writer at this write's time."""
    for run in op.runs:
        if run.writer != NEVER_WRITTEN:
            moved = run.end - max(run.start, replay.retouched[run.writer])
            if moved > 0:
                intervals.append((float(replay.write_ready_s[run.writer]), float(op.time_s), moved))


def _open_intervals(replay: Replay, intervals: list[tuple[float, float, int]]) -> None:
    """Blocks whose last touch is the final one stay alive (up to the TTL) after the last event."""
    for writer in range(replay.write_count):
        live = replay.write_length[writer] - replay.retouched[writer]
        if live > 0:
            intervals.append((float(replay.write_ready_s[writer]), math.inf, live))


def _working_set_steps(intervals: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Blocks alive as a step series: (times, blocks alive from each time until the next one).

    An interval is (touch time, re-touch time or inf, blocks). Its blocks count from the touch until
    the re-touch (where the next interval takes them over) or, if earlier, the expiry: alive at
    exactly touch + ttl, gone just after. At a time with expiries the series holds two points, the
    value at that time and the one right after, so a chart drops where entries expire instead of at
    the next request.
    """
    if intervals.size == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    touched, retouched, counts = intervals[:, 0], intervals[:, 1], intervals[:, 2]
    expires = touched + limit if limit < _NO_EXPIRY else np.full(touched.size, math.inf)
    expiring = expires < retouched
    # (time, phase, delta): touches and re-touches change the count at their time (phase 0), expiries
    # right after it (phase 1).
    ends = np.where(expiring, expires, retouched)
    finite = np.isfinite(ends)
    times = np.concatenate((touched, ends[finite]))
    phases = np.concatenate((np.zeros(touched.size), expiring[finite].astype(np.float64)))
    deltas = np.concatenate((counts, -counts[finite]))
    order = np.lexsort((phases, times))
    times, phases, deltas = times[order], phases[order], deltas[order]
    values = np.rint(np.cumsum(deltas)).astype(np.int64)
    # One point per (time, phase): the count after the group's last change.
    last = np.ones(times.size, dtype=bool)
    last[:-1] = (times[1:] != times[:-1]) | (phases[1:] != phases[:-1])
    return times[last], values[last]


@dataclass(frozen=True)
class _SweepTotals:
    """What every TTL of a sweep shares."""

    block_count: int
    total_tokens: int
    intervals: np.ndarray


def _ttl_result(
    ttl: Optional[float], limit: float, hits: np.ndarray, replay: Replay, shared: _SweepTotals, block_size: int
) -> TTLResult:
    """Assemble one TTL's figures from the shared replay."""
    known = replay.ids.arrays["known"]
    max_gap = replay.ids.arrays["max_gap"][known]
    times, working = _working_set_steps(shared.intervals, limit)
    return TTLResult(
        ttl_s=ttl,
        block_size=block_size,
        request_hit_blocks=tuple(hits.tolist()),
        hit_tokens=int(hits.sum()) * block_size,
        total_tokens=shared.total_tokens,
        peak_working_set_tokens=int(working.max(initial=0)) * block_size,
        unique_blocks=int(known.sum()),
        prefilled_blocks=shared.block_count - int(hits.sum()),
        stable_blocks=int(np.count_nonzero(max_gap <= limit)),
        working_set_times_s=tuple(times.tolist()),
        working_set_tokens=tuple((working * block_size).tolist()),
    )
