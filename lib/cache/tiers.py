"""Hit rate per cache tier (HBM / DRAM / SSD) from LRU stack distances (docs/cache-models.md#tiers-hbm--dram--ssd).

The tiers act as one LRU cache of their summed size: a block evicted from HBM drops to DRAM, from
DRAM to SSD, and a hit anywhere moves it back to the top (vLLM + LMCache style offloading with no
copy kept above). Tier i then holds stack depths (size of the tiers above, + its own size], so its
hits are the LRU hits at the cumulative size minus those at the size above it — one replay, any
sizes (`LRUProfile`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from lib.cache.capacity_model import LRUProfile
from lib.cache.kv_bytes import gib_to_blocks

DEFAULT_TIERS_GIB: tuple[tuple[str, float], ...] = (("HBM", 40.0), ("DRAM", 256.0), ("SSD", 2048.0))


@dataclass(frozen=True, slots=True)
class TierHits:
    """One tier: its size, the blocks it holds, and the hit tokens served from it."""

    name: str
    size_gib: float
    capacity_blocks: int
    capacity_tokens: int
    hit_tokens: int
    hit_rate: float


def tier_split(profile: LRUProfile, tiers_gib: Sequence[tuple[str, float]], bytes_per_token: int) -> tuple[TierHits, ...]:
    """Hit tokens and rate (of all prompt tokens) served by each tier, top tier first."""
    results = []
    above_blocks = 0
    for name, size_gib in tiers_gib:
        blocks = gib_to_blocks(size_gib, bytes_per_token, profile.block_size)
        hits = profile.hit_blocks(above_blocks + blocks) - profile.hit_blocks(above_blocks)
        hit_tokens = hits * profile.block_size
        rate = hit_tokens / profile.total_tokens if profile.total_tokens else 0.0
        results.append(TierHits(name, size_gib, blocks, blocks * profile.block_size, hit_tokens, rate))
        above_blocks += blocks
    return tuple(results)


def parse_tiers(text: str) -> tuple[tuple[str, float], ...]:
    """`40,256,2048` (GiB of HBM, DRAM, SSD) or `HBM=40,DRAM=256`; ValueError if malformed."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ValueError("give at least one tier size in GiB")
    tiers = []
    for position, part in enumerate(parts):
        name, sep, value = part.rpartition("=")
        if not sep:
            if position >= len(DEFAULT_TIERS_GIB):
                raise ValueError(f"name tier {position + 1} (NAME=GiB): only HBM, DRAM, SSD are implied")
            name = DEFAULT_TIERS_GIB[position][0]
        try:
            size = float(value)
        except ValueError:
            raise ValueError(f"tier size must be a number of GiB, got {value!r}") from None
        if not size >= 0 or size == float("inf"):
            raise ValueError(f"tier size must be a finite number >= 0, got {value!r}")
        tiers.append((name.strip() or DEFAULT_TIERS_GIB[min(position, 2)][0], size))
    return tuple(tiers)
