"""Effective eviction time: the TTL whose simulation best reproduces the API's billed hit rate.

Two TTL models run over a fine grid of TTLs (`EVICTION_TTLS_S`, docs/cache-models.md#effective-eviction-time):
- *refresh*: `lib/cache/ttl_model.py`'s cache, where every use restarts an entry's clock;
- *no refresh*: an entry lives `ttl` from the write that created it; hits do not extend it, and a
  use after expiry creates it again (same replay and read/write timing as the refresh model).
Each request's simulated hit tokens are scaled to its API prompt size (the models count cl100k
tokens, the API Claude tokens); per model family, the best TTL minimizes the per-request mismatch
with the billed cache reads (`best_fit`), and its range is every neighbouring grid TTL within
`FIT_TOLERANCE` of that mismatch (a workload without re-use gaps near the true TTL cannot tell the
TTLs of a range apart). The error reported is simulated − billed hit rate at the best TTL.

Per TTL also: the idle KV ratio (refresh model) = block-seconds an entry sits cached but unused
(between uses, at most `ttl`; after its last use, up to `ttl` or the end of the capture) over the
block-seconds it is in use (start to end of the requests containing it, overlaps merged); and the
prefill amplification = prefilled blocks / unique blocks (both models).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from lib.cache.replay import CacheEvent, DenseIds, Replay, start_order
from lib.cache.ttl_model import sweep_ttl

_NO_EXPIRY = np.finfo(np.float64).max  # an infinite TTL that still leaves never-created entries dead

# 30 s steps to 10 min, 1 min steps to 30 min, then the coarse TTLs of the standard sweep; None = ∞.
EVICTION_TTLS_S: tuple[Optional[float], ...] = (
    *range(30, 601, 30), *range(660, 1801, 60), 2700, 3600, 7200, 14400, 28800, 86400, None,
)
# Grid TTLs whose |error| is within this of the best one count as equally good fits.
FIT_TOLERANCE = 0.001
# The no-refresh model keeps one creation time per block and TTL: past this many block × TTL
# cells (~1.5 s per 2.5·10^7 on the 2-core bench machine) it is skipped, only the refresh model fitted.
NO_REFRESH_MAX_CELLS = 200_000_000
_CHUNK_CELLS = 8_000_000  # creation-time cells (8 bytes each) held at once


@dataclass(frozen=True)
class BilledRequest:
    """A request's model family, billed prompt / cache-read tokens (None: no usage) and response end."""

    family: str
    api_prompt_tokens: Optional[int]
    api_read_tokens: Optional[int]
    end_s: float


@dataclass(frozen=True, slots=True)
class EvictionRow:
    """One TTL of the grid: simulated hit rates over the billed requests, idle ratio, amplification."""

    ttl_s: Optional[float]
    refresh_hit_rate: float
    no_refresh_hit_rate: Optional[float]
    idle_kv_ratio: float
    prefill_amplification: float
    no_refresh_prefill_amplification: Optional[float]


@dataclass(frozen=True, slots=True)
class TtlFit:
    """The best TTL of one model for one family: the TTL, its error, and every TTL as good."""

    ttl_s: Optional[float]
    simulated_hit_rate: float
    error: float  # simulated − billed hit rate, as a fraction
    mismatch: float  # Σ per-request |simulated − billed read| / Σ prompt tokens
    range_low_s: Optional[float]
    range_high_s: Optional[float]


@dataclass(frozen=True, slots=True)
class FamilyFit:
    """The effective eviction time of one model family."""

    family: str
    requests: int
    billed_hit_rate: float
    refresh: TtlFit
    no_refresh: Optional[TtlFit]


@dataclass(frozen=True, slots=True)
class EvictionTime:
    """The sweep and its fits: one row per grid TTL, one fit per family (then `all` if several)."""

    rows: tuple[EvictionRow, ...]
    fits: tuple[FamilyFit, ...]


def effective_eviction_time(events: Sequence[CacheEvent], billed: Sequence[BilledRequest], *, block_size: int,
                            ttls: Sequence[Optional[float]] = EVICTION_TTLS_S,
                            max_no_refresh_cells: int = NO_REFRESH_MAX_CELLS) -> Optional[EvictionTime]:
    """Sweep both TTL models and fit them per family; None when no request has billed usage."""
    usable = [i for i, b in enumerate(billed) if b.api_prompt_tokens and b.api_read_tokens is not None]
    if not usable:
        return None
    sweep = sweep_ttl(events, ttls, block_size=block_size)
    refresh_hits = np.array([result.request_hit_blocks for result in sweep], dtype=np.int64).T
    references = sum(len(event.ids) for event in events)
    no_refresh_hits = (no_refresh_hit_blocks(events, ttls) if references * len(ttls) <= max_no_refresh_cells
                       else None)
    scale = np.zeros(len(events))  # API prompt tokens per tokenizer token
    for i in usable:
        if events[i].token_count:
            scale[i] = (billed[i].api_prompt_tokens or 0) / events[i].token_count
    idle = idle_kv_ratios(events, [b.end_s for b in billed], ttls)
    unique = sweep[0].unique_blocks if sweep else 0
    rows = tuple(
        EvictionRow(ttl, _rate(refresh_hits[:, k], block_size, scale, billed, usable),
                    None if no_refresh_hits is None else _rate(no_refresh_hits[:, k], block_size, scale, billed, usable),
                    idle[k], sweep[k].mean_prefills_per_block,
                    None if no_refresh_hits is None or not unique
                    else (references - int(no_refresh_hits[:, k].sum())) / unique)
        for k, ttl in enumerate(ttls))
    families = sorted({billed[i].family for i in usable})
    groups = [(family, [i for i in usable if billed[i].family == family]) for family in families]
    if len(groups) > 1:
        groups.append(("all", usable))
    fits = []
    for family, members in groups:
        prompt = np.array([billed[i].api_prompt_tokens or 0 for i in members], dtype=np.float64)
        read = np.array([billed[i].api_read_tokens or 0 for i in members], dtype=np.float64)
        refresh = best_fit(ttls, _simulated_reads(refresh_hits, block_size, scale, members, prompt), read, prompt)
        no_refresh = (None if no_refresh_hits is None
                      else best_fit(ttls, _simulated_reads(no_refresh_hits, block_size, scale, members, prompt), read, prompt))
        fits.append(FamilyFit(family, len(members), float(read.sum() / prompt.sum()), refresh, no_refresh))
    return EvictionTime(rows, tuple(fits))


def api_read_tokens(hit_blocks: np.ndarray, block_size: int, scale: np.ndarray) -> np.ndarray:
    """Simulated hit tokens in API tokens: hit blocks × block_size × the request's API/tokenizer ratio.

    Rounded half to even per request, as the report scales each split to its API prompt size, so
    a grid row's hit rate is the TTL sweep's row and card figure (docs/visualizer.md#dashboard-sections).
    """
    return np.rint(hit_blocks * block_size * scale)


def _simulated_reads(hit_blocks: np.ndarray, block_size: int, scale: np.ndarray, members: Sequence[int],
                     prompt: np.ndarray) -> np.ndarray:
    """Simulated read tokens of each member request (rows) per TTL (columns), scaled and capped at its prompt."""
    return np.minimum(api_read_tokens(hit_blocks[members, :], block_size, scale[members, None]), prompt[:, None])


def _rate(hit_blocks: np.ndarray, block_size: int, scale: np.ndarray, billed: Sequence[BilledRequest],
          members: Sequence[int]) -> float:
    """Simulated hit tokens (scaled to the API's prompt size, capped at it) / billed prompt tokens."""
    prompt = np.array([billed[i].api_prompt_tokens or 0 for i in members], dtype=np.float64)
    total = prompt.sum()
    reads = api_read_tokens(hit_blocks[members], block_size, scale[members])
    return float(np.minimum(reads, prompt).sum() / total) if total else 0.0


def best_fit(ttls: Sequence[Optional[float]], simulated: np.ndarray, read: np.ndarray, prompt: np.ndarray) -> TtlFit:
    """The grid TTL whose per-request reads are closest to the billed ones (the shortest on ties).

    Closeness is the token-weighted mismatch Σ|simulated − billed read| / Σ prompt: a request that
    the API served from cache and the model did not (or back) counts wherever it sits, so offsets
    both TTLs share (a prefix warm from other sessions, breakpoint rounding) do not move the fit,
    as they would when matching the total hit rate alone.
    """
    total = prompt.sum()
    mismatch = np.abs(simulated - read[:, None]).sum(axis=0) / total
    rates = simulated.sum(axis=0) / total
    best = int(np.argmin(mismatch))  # first minimum: the shortest TTL
    good = mismatch <= mismatch[best] + FIT_TOLERANCE
    low = high = best
    while low > 0 and good[low - 1]:
        low -= 1
    while high + 1 < len(ttls) and good[high + 1]:
        high += 1
    billed_rate = read.sum() / total
    return TtlFit(ttls[best], float(rates[best]), float(rates[best] - billed_rate), float(mismatch[best]),
                  ttls[low], ttls[high])


def no_refresh_hit_blocks(events: Sequence[CacheEvent], ttls: Sequence[Optional[float]]) -> np.ndarray:
    """Hit blocks per event (rows, input order) and TTL (columns) when hits do not refresh entries."""
    limits = np.array([_NO_EXPIRY if ttl is None else float(ttl) for ttl in ttls])
    references = max(sum(len(event.ids) for event in events), 1)
    chunk = max(1, _CHUNK_CELLS // references)
    hits = np.zeros((len(events), len(limits)), dtype=np.int64)
    for first in range(0, len(limits), chunk):
        hits[:, first:first + chunk] = _no_refresh_chunk(events, limits[first:first + chunk])
    return hits


def _no_refresh_chunk(events: Sequence[CacheEvent], limits: np.ndarray) -> np.ndarray:
    """One replay for a few TTLs: `created[ttl, block]` = when the live entry was (re)created."""
    hits = np.zeros((len(events), limits.size), dtype=np.int64)
    created = np.full((limits.size, 0), -np.inf)
    rows = np.arange(limits.size)
    thresholds = np.empty((limits.size, 1))
    replay = Replay(events)
    for op in replay.ops():
        size = replay.ids.arrays["known"].size
        if created.shape[1] < size:
            grown = np.full((limits.size, size), -np.inf)
            grown[:, : created.shape[1]] = created
            created = grown
        if op.dense.size == 0:
            continue
        # Alive: created at or after now − ttl (alive at exactly ttl, as in the refresh model). The
        # infinite TTL is the largest finite float, so a never-created entry (−inf) stays dead.
        entries = np.take(created, op.dense, axis=1)
        np.subtract(op.time_s, limits[:, None], out=thresholds)
        alive = entries >= thresholds
        if op.is_write:
            dead = ~alive
            changed = dead.any(axis=0)  # most blocks of a write were just hit: leave those alone
            entries[dead] = op.time_s
            created[:, op.dense[changed]] = entries[:, changed]
        else:
            first_dead = np.argmin(alive, axis=1)  # 0 when all are alive, told apart below
            hits[op.event] = np.where(alive[rows, first_dead], op.dense.size, first_dead)
    return hits


def idle_kv_ratios(events: Sequence[CacheEvent], end_s: Sequence[float], ttls: Sequence[Optional[float]]) -> list[float]:
    """Per TTL: idle block-seconds (cached, unused) / in-use block-seconds; 0 when nothing is used."""
    dense_ids = DenseIds(sum(len(event.ids) for event in events))
    dense_ids.add_array("last_end", np.nan, np.float64)  # NaN: never used yet
    used = 0.0
    gap_values: list[np.ndarray] = []
    gap_counts: list[np.ndarray] = []
    trace_end = max((max(e, event.start_s) for e, event in zip(end_s, events)), default=0.0)
    for i in start_order(events):
        event = events[i]
        start, end = event.start_s, max(end_s[i], event.start_s)
        dense = np.unique(dense_ids.map(event.ids))
        last_end = dense_ids.arrays["last_end"]
        previous = last_end[dense]
        seen = ~np.isnan(previous)
        gaps = start - previous[seen]
        positive = gaps[gaps > 0]
        if positive.size:
            values, counts = np.unique(positive, return_counts=True)
            gap_values.append(values)
            gap_counts.append(counts)
        # In use from start to end, minus what an overlapping earlier request already counted.
        busy_from = np.where(seen, np.maximum(previous, start), start)
        used += float(np.clip(end - busy_from, 0.0, None).sum())
        last_end[dense] = np.where(seen, np.maximum(previous, end), end)
    ends = dense_ids.arrays["last_end"]
    tails = trace_end - ends[~np.isnan(ends)]
    gaps_all = np.concatenate(gap_values) if gap_values else np.zeros(0)
    counts_all = np.concatenate(gap_counts) if gap_counts else np.zeros(0)
    ratios = []
    for ttl in ttls:
        limit = np.inf if ttl is None else float(ttl)
        idle = float((np.minimum(gaps_all, limit) * counts_all).sum() + np.minimum(tails, limit).sum())
        ratios.append(idle / used if used else 0.0)
    return ratios
