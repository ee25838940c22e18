"""Mooncake JSONL export (docs/traces.md#mooncake-jsonl): flat rows for Mooncake, SGLang bench_serving, Dynamo, AIPerf.

Ids follow the ceil convention, `len(hash_ids) == ceil(input_length / block)`, through
`hashing.ceil_keys`, and come from one allocator for the whole file, so two conversations share
an id only when they share that whole prefix. Keys become ids as requests are added (conversation
by conversation); rows are kept as compact tuples and sorted by time only when written.

The session flavour follows AIPerf's replay of a Mooncake session (`deltas_without_responses`,
its default for rows with `hash_ids`): turn k is sent as every earlier row's prompt and the live
answer to it, plus row k's prompt. So a row's `input_length` is what is new beyond the previous
prompt *and* the previous answer (docs/traces.md, "Session rows").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import orjson

from lib.hashing.block_hashes import IdAllocator, RequestHashes, ceil_keys
from lib.traces.native_format import MAJOR_RESET_KEPT_SHARE

# A turn whose prompt is smaller than the replayed history plus the previous answer cannot be
# expressed as a delta: it is sent as one new token and the replay runs ahead by the excess. Past
# this share of the turn's prompt (a rewind, cleared tool results) the session restarts instead.
MAX_CARRIED_SHARE = 0.1
FILLER_KEY = b"mooncake-session-filler:"


@dataclass
class _Row:
    session: str
    start_s: float
    previous_end_s: Optional[float]
    model: str
    input_length: int
    output_length: int
    hash_ids: list[int]


@dataclass
class SessionStats:
    """What the last `session_lines` wrote: sessions, restarts of a lane, one-token (carrying) rows."""

    sessions: int = 0
    restarts: int = 0
    carried_rows: list[str] = field(default_factory=list)


@dataclass
class _Lane:
    name: str
    number: int
    replayed: int  # the prompt AIPerf sent for the lane's previous row
    answer: int  # the previous row's output_length
    previous: _Row


@dataclass
class MooncakeCollector:
    """Collects requests of many (sub)conversations and writes flat or session-flavoured rows."""

    base_block_size: int
    block_size: int
    ids: IdAllocator = field(default_factory=IdAllocator)
    _rows: list[_Row] = field(default_factory=list)
    session_stats: SessionStats = field(default_factory=SessionStats)

    def __post_init__(self) -> None:
        if self.block_size % self.base_block_size:
            raise ValueError(f"Mooncake block size {self.block_size} is not a multiple of {self.base_block_size}")
        self.ratio = self.block_size // self.base_block_size

    def add(self, *, session: str, start_s: float, previous_end_s: Optional[float], hashes: RequestHashes,
            output_length: int, model: str = "") -> None:
        """Add one request of `session` (requests of a session must come in time order)."""
        hash_ids = self.ids.ids(ceil_keys(hashes, self.ratio))
        self._rows.append(_Row(session, start_s, previous_end_s, model, hashes.token_count, output_length, hash_ids))

    def __len__(self) -> int:
        return len(self._rows)

    def flat_lines(self) -> Iterator[bytes]:
        """One JSON line per request in time order; `timestamp` is ms since the first request."""
        rows = sorted(self._rows, key=lambda row: row.start_s)
        origin = rows[0].start_s if rows else 0.0
        for row in rows:
            yield orjson.dumps({
                "timestamp": _ms(row.start_s - origin),
                "input_length": row.input_length,
                "output_length": row.output_length,
                "hash_ids": row.hash_ids,
            }) + b"\n"

    def session_lines(self, answer_length: Callable[[str, int], int] = lambda model, out: out) -> Iterator[bytes]:
        """AIPerf's session flavour: `timestamp` on a session's first row, `delay` after, per-turn deltas.

        `answer_length(model, out)` is a row's `output_length` in the unit of `input_length`
        (the answer AIPerf replays becomes part of the next prompt, so both must count alike).
        A lane whose prompt stops extending its history (compaction, /clear, a rewind) goes on
        in a new session `<session>#2`, `#3`… whose first row is the whole prompt.
        """
        stats = self.session_stats = SessionStats()
        origin = min((row.start_s for row in self._rows), default=0.0)
        lanes: dict[str, _Lane] = {}
        lane_rows: dict[str, int] = {}  # rows so far per lane, restarts included
        for row in self._rows:
            answer = answer_length(row.model, row.output_length)
            lane = lanes.get(row.session)
            entry: dict[str, Any]
            new_tokens = row.input_length - lane.replayed - lane.answer if lane else 0
            if lane is None or self._restarts(lane, row, new_tokens):
                number = lane.number + 1 if lane else 1
                name = row.session if number == 1 else f"{row.session}#{number}"
                stats.sessions += 1
                stats.restarts += number > 1
                lane = lanes[row.session] = _Lane(name, number, row.input_length, answer, row)
                entry = {"session_id": name, "timestamp": _ms(row.start_s - origin),
                         "input_length": row.input_length, "output_length": answer, "hash_ids": row.hash_ids}
            else:
                if new_tokens >= 1:
                    # The new tokens are described by this request's last blocks (AIPerf checks the
                    # ceil convention on every row); they never repeat a full block of the previous one.
                    ids = row.hash_ids[len(row.hash_ids) - math.ceil(new_tokens / self.block_size):]
                    replayed = row.input_length
                else:
                    # One token of its own id: an id shared with a longer block would make AIPerf
                    # reuse that block's cached tokens and send more than one.
                    stats.carried_rows.append(f"{row.session}@{lane_rows.get(row.session, 0)}")
                    ids = self.ids.ids([FILLER_KEY + str(len(stats.carried_rows)).encode()])
                    new_tokens, replayed = 1, lane.replayed + lane.answer + 1
                delay = row.start_s - row.previous_end_s if row.previous_end_s is not None else 0.0
                entry = {"session_id": lane.name, "delay": max(0, _ms(delay)), "input_length": new_tokens,
                         "output_length": answer, "hash_ids": ids}
                lane.replayed, lane.answer, lane.previous = replayed, answer, row
            lane_rows[row.session] = lane_rows.get(row.session, 0) + 1
            yield orjson.dumps(entry) + b"\n"

    def _restarts(self, lane: _Lane, row: _Row, new_tokens: int) -> bool:
        """The prompt no longer extends the replayed history: it kept under half of the previous
        prompt's full blocks as its prefix, or it is smaller than the history by over MAX_CARRIED_SHARE."""
        previous = lane.previous
        full = previous.input_length // self.block_size
        kept = 0
        for before, now in zip(previous.hash_ids[:full], row.hash_ids):
            if before != now:
                break
            kept += 1
        if kept < MAJOR_RESET_KEPT_SHARE * full:
            return True
        return 1 - new_tokens > MAX_CARRIED_SHARE * row.input_length


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))
