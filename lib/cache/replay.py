"""Requests as cache events, replayed in time order: the engine under the TTL and capacity models.

Time (docs/cache-models.md#time-and-concurrency): a request *reads* the cache at `start_s`; the blocks it
*writes* become readable at `ready_s` (response start = start + ttft where known, else completion;
a `ready_s` before `start_s` is treated as `start_s`). Reads happen in start order, ties keeping
input order. Before each read, every write with `ready_s <= start_s` is applied, in ready order
(ties: start order). So requests in flight together never see each other's blocks. With
`is_write_delayed=False` each write lands right after its own read (the capacity models'
atomic replay, see `lib/cache/capacity_model.py`).

Touches: a write touches *every* block of its request, the prefix it hit and the blocks it
added alike, at `ready_s`. Hits are thus refreshed when the request's response starts (the server
holds them while the request runs); the models never need a separate refresh at `start_s`.

Runs: block ids are chained (docs/hashing.md#chained-block-keys: equal id ⇒ equal whole prefix, and a block sits at the
same position in every request that contains it). Every write touching a block also touches all
its ancestors, so along a request the *last writer* of each block (the index of the write that
touched it last, -1 if none yet) never increases. A request therefore splits into a few runs
`(writer, start, end)` of positions sharing one last writer, and the blocks of writer w still
last-touched by w are exactly positions `[retouched[w], length[w])` of w's request: later writes
re-touch a prefix of it. The models work on runs instead of single blocks; that is what keeps a
100K-request × 2K-block replay to a few numpy operations per request. Ids that are not chained
break these invariants and give meaningless (but finite) results.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Iterator, NamedTuple, Optional, Protocol, Sequence, Union

import numpy as np

# A request's full-block ids: a list, or the visualizer's numpy array.
BlockIds = Union[Sequence[int], np.ndarray]

NEVER_WRITTEN = -1
# Ids below this bound plus the number of block references index arrays directly: per docs/hashing.md#integer-ids-and-scopes, the
# dense ids never exceed the number of references, so they never pay for a dict. Larger ids
# (e.g. raw 64-bit hashes) go through one dict instead of allocating arrays as large as the ids.
_DIRECT_ID_SLACK = 1 << 20


@dataclass(frozen=True)
class CacheEvent:
    """One request seen by the cache: its full-block ids, token count, timing and lane."""

    start_s: float
    ready_s: float
    ids: BlockIds
    token_count: int
    stream: str = ""
    model: str = ""


class Run(NamedTuple):
    """Positions [start, end) of a request whose blocks share one last writer."""

    writer: int
    start: int
    end: int


class Op(NamedTuple):
    """One step of the replay: a read (writer -1) or a write, with the runs before it applies."""

    is_write: bool
    event: int
    time_s: float
    runs: list[Run]
    dense: np.ndarray
    writer: int


class DenseIds:
    """Maps block ids to dense array indices, growing the per-block arrays it owns."""

    def __init__(self, reference_count: int) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self._fills: dict[str, object] = {}
        self._size = 0
        self._direct_bound = _DIRECT_ID_SLACK + reference_count
        self._index: Optional[dict[int, int]] = None
        self._first_dict_index = 0

    def add_array(self, name: str, fill: object, dtype: type) -> None:
        """Register a per-block array, kept as long as the index space."""
        self.arrays[name] = np.full(self._size, fill, dtype=dtype)
        self._fills[name] = fill

    def map(self, ids: BlockIds) -> np.ndarray:
        """Dense indices of `ids` (int64), registering new ids."""
        array = np.asarray(ids, dtype=np.int64)
        if array.size == 0:
            return array
        if self._index is None:
            if int(array.min()) >= 0 and int(array.max()) < self._direct_bound:
                self._grow(int(array.max()) + 1)
                return array
            self._index = self._identity_index()
        return self._map_with_dict(array, self._index)

    def _identity_index(self) -> dict[int, int]:
        """Keep the indices handed out so far (identity); new ids are numbered after them."""
        known = self.arrays.get("known")
        seen = np.flatnonzero(known) if known is not None else np.arange(self._size)
        self._first_dict_index = self._size - seen.size
        return {int(i): int(i) for i in seen}

    def _map_with_dict(self, array: np.ndarray, index: dict[int, int]) -> np.ndarray:
        """Slow path for large or negative ids: one dict lookup per id."""
        base = self._first_dict_index  # index handed to the n-th dict entry: base + n
        setdefault = index.setdefault
        dense = np.fromiter(
            (setdefault(i, base + len(index)) for i in array.tolist()), dtype=np.int64, count=array.size
        )
        self._grow(base + len(index))
        return dense

    def _grow(self, size: int) -> None:
        """Extend every registered array to `size` (doubling, so growth is amortized)."""
        if size <= self._size:
            return
        new_size = max(size, 2 * self._size)
        for name, old in self.arrays.items():
            grown = np.full(new_size, self._fills[name], dtype=old.dtype)
            grown[: old.size] = old
            self.arrays[name] = grown
        self._size = new_size


def runs_of(writers: np.ndarray) -> list[Run]:
    """Split a request's last-writer array into runs of equal values."""
    if writers.size == 0:
        return []
    cuts = (np.flatnonzero(writers[1:] != writers[:-1]) + 1).tolist()
    bounds = [0, *cuts, int(writers.size)]
    values = writers[bounds[:-1]].tolist()
    return [Run(value, bounds[k], bounds[k + 1]) for k, value in enumerate(values)]


class Started(Protocol):
    """Anything with a start time: cache events, the API model's requests."""

    @property
    def start_s(self) -> float: ...


def start_order(events: Sequence[Started]) -> list[int]:
    """Event indices by start time; `sorted` is stable, so ties keep input order."""
    return sorted(range(len(events)), key=lambda i: events[i].start_s)


class Replay:
    """Walks the events as reads and writes in time order, tracking each block's last writer."""

    def __init__(self, events: Sequence[CacheEvent], *, is_write_delayed: bool = True) -> None:
        self.events = events
        self.is_write_delayed = is_write_delayed
        self.order = start_order(events)
        self.ids = DenseIds(sum(len(event.ids) for event in events))
        self.ids.add_array("writer", NEVER_WRITTEN, np.int64)
        self.ids.add_array("known", False, np.bool_)
        count = len(events)
        self.write_ready_s = np.zeros(count)
        self.write_length = [0] * count
        self.write_reads = [0] * count  # reads done before each write applied
        self.reads_done = 0
        self.retouched = [0] * count
        self.write_count = 0

    def ops(self) -> Iterator[Op]:
        """Yield every read and write; state updates apply when the consumer asks for the next op."""
        pending: list[tuple[float, int, int, np.ndarray]] = []
        for sequence, index in enumerate(self.order):
            event = self.events[index]
            while pending and pending[0][0] <= event.start_s:
                yield from self._write(heapq.heappop(pending))
            dense = self.ids.map(event.ids)
            runs = runs_of(self.ids.arrays["writer"][dense])
            yield Op(False, index, event.start_s, runs, dense, NEVER_WRITTEN)
            self.ids.arrays["known"][dense] = True
            self.reads_done += 1
            ready_s = max(event.ready_s, event.start_s) if self.is_write_delayed else event.start_s
            heapq.heappush(pending, (ready_s, sequence, index, dense))
        while pending:
            yield from self._write(heapq.heappop(pending))

    def _write(self, item: tuple[float, int, int, np.ndarray]) -> Iterator[Op]:
        """Yield one write, then make its request the last writer of all its blocks."""
        ready_s, _, index, dense = item
        writer = self.write_count
        writers = self.ids.arrays["writer"]
        runs = runs_of(writers[dense])
        yield Op(True, index, ready_s, runs, dense, writer)
        for run in runs:
            if run.writer != NEVER_WRITTEN:
                self.retouched[run.writer] = max(self.retouched[run.writer], run.end)
        self.ids.arrays["writer"][dense] = writer
        self.write_ready_s[writer] = ready_s
        self.write_length[writer] = int(dense.size)
        self.write_reads[writer] = self.reads_done
        self.write_count += 1


@dataclass(frozen=True)
class RunLog:
    """The replay reduced to its runs, for models that need no per-block state (LRU, OPT)."""

    ops: tuple[tuple[bool, int, int, tuple[Run, ...]], ...]  # (is_write, event, writer, runs)
    write_lengths: tuple[int, ...]
    read_order: tuple[int, ...]


def record_runs(events: Sequence[CacheEvent], *, is_write_delayed: bool = True) -> tuple[RunLog, Replay]:
    """Replay once and keep only the runs; the Replay is returned for its id mapping."""
    replay = Replay(events, is_write_delayed=is_write_delayed)
    ops = [(op.is_write, op.event, op.writer, tuple(op.runs)) for op in replay.ops()]
    log = RunLog(tuple(ops), tuple(replay.write_length[: replay.write_count]), tuple(replay.order))
    return log, replay
