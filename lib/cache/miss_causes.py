"""Why each miss: every missed token of a simulated or billed request attributed to one cause.

Simulated misses (`attribute_simulated`) come from the TTL model's replay (`lib/cache/replay.py`,
the same hits as `lib/cache/ttl_model.py`), optionally with a capacity limit of C blocks (LRU by
last touch, the order the replay keeps). A missed full block is, by its state at the read:
- `ttl_expiry`: written before, last touched more than the TTL ago;
- `capacity_eviction`: alive, but C or more alive blocks were touched more recently (LRU);
- `in_flight`: an earlier request read it but has not written it yet (its response has not
  started), e.g. concurrent sub-agents with one prompt;
- never seen anywhere: compared with the lane's previous request, a block past that request's end
  is `first_use` (new content); a block inside it, after the point where the two prompts part, is
  re-prefilled because the prefix changed: `model_switch` (other model, whose blocks never match),
  `compaction` (the context shrank), else by where they part: `tools_changed`,
  `system_changed` or `message_edited`. A lane's first request is all `first_use`.
The tokens past the last full block are `partial_block`: a block cache never stores them.

Chained ids (docs/hashing.md#chained-block-keys) make this consistent with prefix matching: a block's ancestors are touched
whenever it is, so every block after the first miss is itself missing for a cause no better than
the first one's; each block's own state is reported.

Billed misses (`attribute_billed`): the API's prompt minus its cache_read, placed at the end of
the prompt (the API reads a prefix). Where that range overlaps our simulated misses it takes
their causes; where our simulation had the prefix cached (unchanged and alive) the miss is
`beyond_breakpoint` past the lane's previous request's last `cache_control` breakpoint (the API
writes only up to breakpoints; our block cache keeps every block), else `server_side`.

The billing header is no cause: hashing drops it before the blocks are made (it changes per agent
and per version while the API's own cache ignores it), so it can change neither our prefix nor, as
far as billing shows, the API's.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from lib.cache.replay import NEVER_WRITTEN, CacheEvent, Op, Replay, Run

FIRST_USE = "first_use"
TTL_EXPIRY = "ttl_expiry"
CAPACITY_EVICTION = "capacity_eviction"
IN_FLIGHT = "in_flight"
TOOLS_CHANGED = "tools_changed"
SYSTEM_CHANGED = "system_changed"
MODEL_SWITCH = "model_switch"
MESSAGE_EDITED = "message_edited"
COMPACTION = "compaction"
PARTIAL_BLOCK = "partial_block"
BEYOND_BREAKPOINT = "beyond_breakpoint"
SERVER_SIDE = "server_side"
# Display order and labels (the dashboard, the stats text and --json share them).
CAUSE_LABELS: Mapping[str, str] = {
    FIRST_USE: "first use (new content)",
    TTL_EXPIRY: "TTL expiry",
    CAPACITY_EVICTION: "capacity eviction",
    IN_FLIGHT: "in flight (written by a request not yet answered)",
    TOOLS_CHANGED: "prefix change: tools",
    SYSTEM_CHANGED: "prefix change: system",
    MODEL_SWITCH: "prefix change: model switch",
    MESSAGE_EDITED: "prefix change: a message edited",
    COMPACTION: "compaction (context shrank)",
    PARTIAL_BLOCK: "partial last block",
    BEYOND_BREAKPOINT: "billed: past the previous request's last cache_control breakpoint",
    SERVER_SIDE: "server-side miss (our prefix unchanged and alive)",
}
CAUSES: tuple[str, ...] = tuple(CAUSE_LABELS)

_NO_EXPIRY = sys.float_info.max
TTL = Optional[float]


@dataclass(frozen=True)
class MissSpan:
    """Tokens [start, end) of a request's prompt that missed for `cause`."""

    cause: str
    start: int
    end: int


@dataclass(frozen=True)
class RequestMisses:
    """One request: hit tokens, total tokens and its missed spans in prompt order (tokenizer tokens)."""

    hit_tokens: int
    total_tokens: int
    spans: tuple[MissSpan, ...]

    @property
    def miss_tokens(self) -> int:
        """total − hits; always the sum of the spans."""
        return self.total_tokens - self.hit_tokens

    def by_cause(self) -> dict[str, int]:
        """Missed tokens per cause (causes without misses left out)."""
        totals: dict[str, int] = {}
        for span in self.spans:
            totals[span.cause] = totals.get(span.cause, 0) + span.end - span.start
        return totals


class _Fenwick:
    """Prefix sums over writer indices: blocks each write is still the last toucher of."""

    def __init__(self, size: int) -> None:
        self.tree = [0] * (size + 1)
        self.total = 0

    def add(self, index: int, delta: int) -> None:
        self.total += delta
        index += 1
        while index < len(self.tree):
            self.tree[index] += delta
            index += index & -index

    def after(self, index: int) -> int:
        """Sum over indices > `index`."""
        prefix = 0
        position = index + 1
        while position > 0:
            prefix += self.tree[position]
            position -= position & -position
        return self.total - prefix


def attribute_simulated(
    events: Sequence[CacheEvent],
    ttl_s: Union[TTL, Sequence[TTL]],
    *,
    block_size: int,
    capacity_blocks: Optional[int] = None,
    sections: Optional[Sequence[tuple[int, int]]] = None,
) -> list[RequestMisses]:
    """Hits and missed spans per request (input order) of a TTL cache, optionally limited to C blocks.

    `ttl_s`: one TTL for every reader or one per event (None = never expires). `sections`: per
    event (tool tokens, system tokens), to tell a tools change from a system change or an edit.
    """
    limits = _limits(ttl_s, len(events))
    replay = Replay(events)
    live = _Fenwick(len(events)) if capacity_blocks is not None else None
    previous_in_lane: dict[str, int] = {}
    results: list[Optional[RequestMisses]] = [None] * len(events)
    for op in replay.ops():
        if op.is_write:
            if live is not None:
                for run in op.runs:
                    if run.writer != NEVER_WRITTEN:
                        moved = max(run.end, replay.retouched[run.writer]) - replay.retouched[run.writer]
                        if moved:
                            live.add(run.writer, -moved)
                live.add(op.writer, len(op.dense))
            continue
        event = events[op.event]
        block_causes: list[tuple[str, int, int]] = []  # (cause, first block, end block)
        hit_blocks = 0
        missed = False
        for run in op.runs:
            states = _run_states(op, run, replay, limits[op.event], live, capacity_blocks)
            for cause, start, end in states:
                if cause == "" and not missed:
                    hit_blocks = end
                    continue
                missed = True
                block_causes.append((cause or _first_cause(block_causes), start, end))
        previous = previous_in_lane.get(event.stream)
        spans = _resolve_new(block_causes, event, events[previous] if previous is not None else None,
                             sections[op.event] if sections else None, block_size)
        total = max(event.token_count, len(event.ids) * block_size)
        tail = len(event.ids) * block_size
        if total > tail:
            spans.append(MissSpan(PARTIAL_BLOCK, tail, total))
        results[op.event] = RequestMisses(hit_blocks * block_size, total, tuple(_merged(spans)))
        previous_in_lane[event.stream] = op.event
    return [result for result in results if result is not None]


def _limits(ttl_s: Union[TTL, Sequence[TTL]], count: int) -> list[float]:
    if ttl_s is None or isinstance(ttl_s, (int, float)):
        return [_NO_EXPIRY if ttl_s is None else float(ttl_s)] * count
    return [_NO_EXPIRY if ttl is None else float(ttl) for ttl in ttl_s]


def _first_cause(block_causes: list[tuple[str, int, int]]) -> str:
    return block_causes[0][0] if block_causes else FIRST_USE


def _run_states(op: Op, run: Run, replay: Replay, limit: float, live: Optional[_Fenwick],
                capacity_blocks: Optional[int]) -> list[tuple[str, int, int]]:
    """(cause or "" for cached, start, end) pieces of one run; "new" marks never-seen blocks."""
    if run.writer == NEVER_WRITTEN:
        # Looked up per read: the replay replaces its arrays when they grow.
        seen = replay.ids.arrays["known"][op.dense[run.start:run.end]]
        pieces = []
        start = run.start
        for flag, group in _groups(seen):
            pieces.append((IN_FLIGHT if flag else "new", start, start + group))
            start += group
        return pieces
    age = op.time_s - float(replay.write_ready_s[run.writer])
    if age > limit:
        return [(TTL_EXPIRY, run.start, run.end)]
    if live is None or capacity_blocks is None:
        return [("", run.start, run.end)]
    # Rank of position p among alive blocks = blocks of later writes + blocks of this write before p.
    # Later writes are more recent, hence alive too (writes apply in ready order).
    resident_end = capacity_blocks - live.after(run.writer) + replay.retouched[run.writer]
    cut = min(max(resident_end, run.start), run.end)
    return [piece for piece in (("", run.start, cut), (CAPACITY_EVICTION, cut, run.end)) if piece[2] > piece[1]]


def _groups(flags: np.ndarray) -> list[tuple[bool, int]]:
    """Run lengths of equal values."""
    if flags.size == 0:
        return []
    cuts = np.flatnonzero(flags[1:] != flags[:-1]) + 1
    bounds = [0, *cuts.tolist(), int(flags.size)]
    return [(bool(flags[a]), b - a) for a, b in zip(bounds, bounds[1:])]


def _resolve_new(block_causes: list[tuple[str, int, int]], event: CacheEvent, previous: Optional[CacheEvent],
                 section: Optional[tuple[int, int]], block_size: int) -> list[MissSpan]:
    """Spans in tokens; never-seen blocks split by the lane's previous request."""
    spans = []
    for cause, start, end in block_causes:
        if cause != "new":
            spans.append(MissSpan(cause, start * block_size, end * block_size))
            continue
        for new_cause, a, b in _new_block_causes(start, end, event, previous, section, block_size):
            spans.append(MissSpan(new_cause, a * block_size, b * block_size))
    return spans


def _new_block_causes(start: int, end: int, event: CacheEvent, previous: Optional[CacheEvent],
                      section: Optional[tuple[int, int]], block_size: int) -> list[tuple[str, int, int]]:
    if previous is None:
        return [(FIRST_USE, start, end)]
    old = np.asarray(previous.ids, dtype=np.int64)
    new = np.asarray(event.ids, dtype=np.int64)
    shared = min(old.size, new.size)
    differ = np.flatnonzero(old[:shared] != new[:shared])
    parted = int(differ[0]) if differ.size else shared
    changed_end = max(min(end, old.size), start)
    pieces = [(_change_cause(parted, event, previous, section, block_size), start, changed_end),
              (FIRST_USE, changed_end, end)]
    return [piece for piece in pieces if piece[2] > piece[1]]


def _change_cause(parted: int, event: CacheEvent, previous: CacheEvent, section: Optional[tuple[int, int]],
                  block_size: int) -> str:
    """Why blocks the lane's previous request had are new now: where and how the prompts parted."""
    if event.model != previous.model:
        return MODEL_SWITCH
    if event.token_count < previous.token_count:
        return COMPACTION
    if section is not None:
        position = parted * block_size
        tools, system = section
        if position < tools:
            return TOOLS_CHANGED
        if position < tools + system:
            return SYSTEM_CHANGED
    return MESSAGE_EDITED


def _merged(spans: list[MissSpan]) -> list[MissSpan]:
    """Adjacent spans of one cause joined."""
    merged: list[MissSpan] = []
    for span in spans:
        if span.end <= span.start:
            continue
        if merged and merged[-1].cause == span.cause and merged[-1].end == span.start:
            merged[-1] = MissSpan(span.cause, merged[-1].start, span.end)
        else:
            merged.append(span)
    return merged


def attribute_billed(simulated: RequestMisses, billed_read_tokens: int, api_prompt_tokens: int, *,
                     written_end: Optional[int] = None) -> dict[str, int]:
    """The API's billed misses (prompt − cache_read, API tokens) of one request by cause.

    The billed miss is the prompt's end from the API's read on; positions are mapped to our
    tokenizer's by the request's size ratio. Overlap with our missed spans takes their cause; the
    part our simulation had cached is `beyond_breakpoint` past `written_end` (tokenizer tokens: the
    end of what the API could have written, the lane's previous last breakpoint), else
    `server_side`. Sums exactly to the billed miss.
    """
    billed_miss = max(api_prompt_tokens - billed_read_tokens, 0)
    if billed_miss == 0:
        return {}
    total = simulated.total_tokens
    start = total * billed_read_tokens / api_prompt_tokens if api_prompt_tokens else 0.0
    weights: dict[str, float] = {}
    cached_end = float(simulated.hit_tokens)
    written = cached_end if written_end is None else min(max(float(written_end), start), cached_end)
    if written > start:
        weights[SERVER_SIDE] = written - start
    if cached_end > max(start, written):
        weights[BEYOND_BREAKPOINT] = cached_end - max(start, written)
    for span in simulated.spans:
        overlap = span.end - max(span.start, start)
        if overlap > 0:
            weights[span.cause] = weights.get(span.cause, 0.0) + min(overlap, span.end - span.start)
    return split_tokens(weights or {SERVER_SIDE: 1.0}, billed_miss)


def split_tokens(weights: Mapping[str, float], tokens: int) -> dict[str, int]:
    """`tokens` divided in proportion to `weights` (largest remainder), summing exactly to `tokens`."""
    total = sum(weights.values())
    if tokens <= 0 or total <= 0:
        return {}
    exact = {cause: tokens * weight / total for cause, weight in weights.items()}
    shares = {cause: math.floor(value) for cause, value in exact.items()}
    left = tokens - sum(shares.values())
    for cause in sorted(exact, key=lambda c: (shares[c] - exact[c], CAUSES.index(c) if c in CAUSES else 99))[:left]:
        shares[cause] += 1
    return {cause: value for cause, value in shares.items() if value}


def ordered_totals(per_request: Sequence[Mapping[str, int]]) -> dict[str, int]:
    """Per-cause sums over requests, in CAUSES order, zero causes left out."""
    totals = {cause: 0 for cause in CAUSES}
    for causes in per_request:
        for cause, tokens in causes.items():
            totals[cause] = totals.get(cause, 0) + tokens
    return {cause: tokens for cause, tokens in totals.items() if tokens}
