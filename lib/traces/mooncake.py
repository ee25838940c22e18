"""Mooncake JSONL export (SPEC §5.2): flat rows for Mooncake, SGLang bench_serving, Dynamo, AIPerf.

Ids follow the ceil convention, `len(hash_ids) == ceil(input_length / block)`, through
`hashing.ceil_keys`, and come from one allocator for the whole file, so two conversations share
an id only when they share that whole prefix. Keys become ids as requests are added (conversation
by conversation); rows are kept as compact tuples and sorted by time only when written.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import orjson

from lib.hashing.block_hashes import IdAllocator, RequestHashes, ceil_keys


@dataclass
class _Row:
    session: str
    start_s: float
    delay_from_s: Optional[float]
    input_length: int
    output_length: int
    hash_ids: list[int]
    delta_length: int
    delta_ids: list[int]


@dataclass
class MooncakeCollector:
    """Collects requests of many (sub)conversations and writes flat or session-flavoured rows."""

    base_block_size: int
    block_size: int
    ids: IdAllocator = field(default_factory=IdAllocator)
    _rows: list[_Row] = field(default_factory=list)
    _last: dict[str, _Row] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.block_size % self.base_block_size:
            raise ValueError(f"Mooncake block size {self.block_size} is not a multiple of {self.base_block_size}")
        self.ratio = self.block_size // self.base_block_size

    def add(self, *, session: str, start_s: float, previous_end_s: Optional[float], hashes: RequestHashes,
            output_length: int) -> None:
        """Add one request of `session` (requests of a session must come in time order)."""
        hash_ids = self.ids.ids(ceil_keys(hashes, self.ratio))
        previous = self._last.get(session)
        delta_length, delta_ids = hashes.token_count, hash_ids
        if previous is not None:
            # The previous request's partial tail block changes as soon as the context grows, so
            # "extended" means all its *full* blocks are kept; a rewritten context is sent whole.
            kept_full = previous.input_length // self.block_size
            if hashes.token_count >= previous.input_length and hash_ids[:kept_full] == previous.hash_ids[:kept_full]:
                delta_length = hashes.token_count - previous.input_length
                # AIPerf checks len(hash_ids) == ceil(input_length / block) on every row, deltas too:
                # the new tokens are described by this request's last blocks.
                delta_ids = hash_ids[len(hash_ids) - math.ceil(delta_length / self.block_size):]
        row = _Row(session, start_s, previous_end_s if previous is not None else None, hashes.token_count,
                   output_length, hash_ids, delta_length, delta_ids)
        self._rows.append(row)
        self._last[session] = row

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

    def session_lines(self) -> Iterator[bytes]:
        """AIPerf's session flavour: per-turn deltas, `timestamp` on the first turn, `delay` after."""
        origin = min((row.start_s for row in self._rows), default=0.0)
        for row in self._rows:
            entry: dict[str, Any] = {"session_id": row.session}
            if row.delay_from_s is None:
                entry["timestamp"] = _ms(row.start_s - origin)
            else:
                entry["delay"] = max(0, _ms(row.start_s - row.delay_from_s))
            entry.update(input_length=row.delta_length, output_length=row.output_length, hash_ids=row.delta_ids)
            yield orjson.dumps(entry) + b"\n"


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))
