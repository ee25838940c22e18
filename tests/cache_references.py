"""Slow, obviously-correct per-block simulators and a chained-id event strategy for the cache tests."""
from __future__ import annotations

import bisect
import heapq
import math
from collections import OrderedDict
from typing import Optional, Sequence

from hypothesis import strategies as st

from lib.cache.ttl_model import CacheEvent


def schedule(events: Sequence[CacheEvent]) -> list[tuple[str, int, float]]:
    """("read"|"write", event index, time): reads in start order, due writes first."""
    order = sorted(range(len(events)), key=lambda i: events[i].start_s)
    pending: list[tuple[float, int, int]] = []
    ops = []
    for sequence, index in enumerate(order):
        event = events[index]
        while pending and pending[0][0] <= event.start_s:
            ready, _, done = heapq.heappop(pending)
            ops.append(("write", done, ready))
        ops.append(("read", index, event.start_s))
        heapq.heappush(pending, (max(event.ready_s, event.start_s), sequence, index))
    ops.extend(("write", done, ready) for ready, _, done in sorted(pending))
    return ops


def reference_ttl(events: Sequence[CacheEvent], ttl: Optional[float]) -> tuple[list[int], list[int], dict[int, int]]:
    """Per-request hit blocks, alive blocks at each read, prefills per block."""
    limit = math.inf if ttl is None else ttl
    last_access: dict[int, float] = {}
    hits = [0] * len(events)
    working: list[int] = []
    prefills: dict[int, int] = {}
    for kind, index, now in schedule(events):
        ids = events[index].ids
        if kind == "write":
            last_access.update(dict.fromkeys(ids, now))
            continue
        count = 0
        for block in ids:
            if block not in last_access or now - last_access[block] > limit:
                break
            count += 1
        hits[index] = count
        for block in ids[count:]:
            prefills[block] = prefills.get(block, 0) + 1
        working.append(sum(1 for seen in last_access.values() if now - seen <= limit))
    return hits, working, prefills


def _atomic(events: Sequence[CacheEvent]) -> list[tuple[str, int, float]]:
    """The capacity models' schedule: every write right after its own read."""
    return schedule([CacheEvent(e.start_s, e.start_s, e.ids, e.token_count) for e in events])


def reference_lru(events: Sequence[CacheEvent], capacity: int) -> int:
    """Hit blocks of an LRU cache of `capacity` blocks, ancestors kept more recent."""
    cache: OrderedDict[int, None] = OrderedDict()
    hits = 0
    for kind, index, _ in _atomic(events):
        ids = events[index].ids
        if kind == "read":
            hits += _leading(ids, cache)
            continue
        for block in reversed(ids):
            cache[block] = None
            cache.move_to_end(block)
        while len(cache) > capacity:
            cache.popitem(last=False)
    return hits


def reference_opt(events: Sequence[CacheEvent], capacity: int) -> int:
    """Hit blocks of Belady's cache: evict the block read again last (deepest on ties)."""
    ops = _atomic(events)
    reads = [index for kind, index, _ in ops if kind == "read"]
    uses: dict[int, list[int]] = {}
    depth: dict[int, int] = {}
    for number, index in enumerate(reads):
        for position, block in enumerate(events[index].ids):
            uses.setdefault(block, []).append(number)
            depth[block] = position
    cache: set[int] = set()
    hits = 0
    reads_done = 0

    def next_use(block: int) -> float:
        found = bisect.bisect_left(uses[block], reads_done)
        return uses[block][found] if found < len(uses[block]) else math.inf

    for kind, index, _ in ops:
        ids = events[index].ids
        if kind == "read":
            hits += _leading(ids, cache)
            reads_done += 1
            continue
        cache.update(ids)
        while len(cache) > capacity:
            cache.remove(max(cache, key=lambda block: (next_use(block), depth[block])))
    return hits


def _leading(ids: Sequence[int], cache) -> int:
    """Leading ids present in `cache`."""
    count = 0
    for block in ids:
        if block not in cache:
            break
        count += 1
    return count


@st.composite
def chained_events(draw, max_streams: int = 4, max_turns: int = 5) -> list[CacheEvent]:
    """Streams of requests over a 3-symbol block alphabet; ids are interned prefixes, so chained."""
    interned: dict[tuple[int, ...], int] = {}
    events = []
    for stream in range(draw(st.integers(1, max_streams))):
        symbols: list[int] = []
        now = draw(st.integers(0, 20))
        for _ in range(draw(st.integers(1, max_turns))):
            if symbols and draw(st.booleans()) and draw(st.booleans()):
                symbols = symbols[: draw(st.integers(0, len(symbols)))]  # a reset keeps a shorter prefix
            symbols = symbols + draw(st.lists(st.integers(0, 2), max_size=4))
            ids = [interned.setdefault(tuple(symbols[: i + 1]), len(interned) + 1) for i in range(len(symbols))]
            ready = now + draw(st.integers(0, 6))
            events.append(CacheEvent(now, ready, ids, len(ids) * 4 + draw(st.integers(0, 3)), str(stream)))
            now = ready + draw(st.integers(0, 30))
    return events
