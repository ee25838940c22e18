"""Mooncake JSONL export (SPEC §5.2): flat rows for Mooncake, SGLang bench_serving, Dynamo, AIPerf.

Ids follow the ceil convention: `len(hash_ids) == ceil(input_length / block)`, the partial tail
block getting its own id. Because 64-token keys are chained, every k-th one identifies its whole
prefix, so re-bucketing to a k-times larger block is exact; the tail is identified by the key of
the whole prompt (the last full key chained with the leftover tokens).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Optional, Sequence


@dataclass(frozen=True)
class MooncakeRequest:
    """One request as the Mooncake export needs it: absolute start, sizes and chained keys."""

    session: str
    start_s: float
    end_s: Optional[float]
    input_length: int
    output_length: int
    block_keys: Sequence[Hashable]
    tail_key: Optional[Hashable]


class GlobalIds:
    """Dense ids over the whole file, so different conversations never share an id by accident."""

    def __init__(self) -> None:
        self._ids: dict[Hashable, int] = {}

    def id_of(self, key: Hashable) -> int:
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(self._ids) + 1
        return found


def ceil_keys(request: MooncakeRequest, *, ratio: int, block_size: int) -> list[Hashable]:
    """Keys of the ceil(input_length / block_size) blocks of a request, partial tail included.

    `ratio` base keys make one block. The tail block is named by `tail_key` (the whole prompt's
    identity) when the prompt ends inside a base block, else by the last base key.
    """
    keys = list(request.block_keys[ratio - 1 :: ratio])
    wanted = math.ceil(request.input_length / block_size)
    if len(keys) < wanted:
        tail = request.tail_key if request.tail_key is not None else (request.block_keys[-1] if request.block_keys else None)
        if tail is not None:
            keys.append(tail)
    return keys[:wanted]


class MooncakeExport:
    """Builds Mooncake rows (flat) and AIPerf session rows from requests of many conversations."""

    def __init__(self, *, base_block_size: int, block_size: int) -> None:
        if block_size % base_block_size:
            raise ValueError(f"--mooncake-block-size {block_size} is not a multiple of --block-size {base_block_size}")
        self.ratio = block_size // base_block_size
        self.block_size = block_size
        self.ids = GlobalIds()

    def _keys(self, request: MooncakeRequest) -> list[int]:
        return [self.ids.id_of(key) for key in ceil_keys(request, ratio=self.ratio, block_size=self.block_size)]

    def flat_rows(self, requests: Iterable[MooncakeRequest]) -> list[dict[str, Any]]:
        """One row per request sorted by start time; `timestamp` is ms since the first request."""
        ordered = sorted(requests, key=lambda r: (r.start_s, r.session))
        if not ordered:
            return []
        origin = ordered[0].start_s
        rows = []
        for request in ordered:
            rows.append({
                "timestamp": int(round((request.start_s - origin) * 1000)),
                "input_length": request.input_length,
                "output_length": request.output_length,
                "hash_ids": self._keys(request),
            })
        return rows

    def session_rows(self, requests: Iterable[MooncakeRequest]) -> list[dict[str, Any]]:
        """AIPerf's session flavour: per-turn deltas, `timestamp` on a session's first turn, `delay` after."""
        by_session: dict[str, list[MooncakeRequest]] = {}
        for request in requests:
            by_session.setdefault(request.session, []).append(request)
        if not by_session:
            return []
        origin = min(r.start_s for rs in by_session.values() for r in rs)
        rows = []
        for session in sorted(by_session, key=lambda s: (min(r.start_s for r in by_session[s]), s)):
            previous_ids: list[int] = []
            previous: Optional[MooncakeRequest] = None
            for request in sorted(by_session[session], key=lambda r: r.start_s):
                ids = self._keys(request)
                row: dict[str, Any] = {"session_id": session}
                if previous is None:
                    row["timestamp"] = int(round((request.start_s - origin) * 1000))
                else:
                    since = previous.end_s if previous.end_s is not None else previous.start_s
                    row["delay"] = max(0, int(round((request.start_s - since) * 1000)))
                shared = _shared_prefix(previous_ids, ids)
                # A full (not delta) prompt when the context was rewritten instead of extended.
                if previous is not None and shared == len(previous_ids):
                    row["input_length"] = max(0, request.input_length - previous.input_length)
                    row["hash_ids"] = ids[shared:]
                else:
                    row["input_length"] = request.input_length
                    row["hash_ids"] = ids
                row["output_length"] = request.output_length
                rows.append(row)
                previous_ids, previous = ids, request
        return rows


def _shared_prefix(first: Sequence[int], second: Sequence[int]) -> int:
    count = 0
    for a, b in zip(first, second):
        if a != b:
            break
        count += 1
    return count
