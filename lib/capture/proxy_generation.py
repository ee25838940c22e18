"""Which proxy generation wrote a capture: old-proxy twin pairs (docs/inputs.md#old-proxy-twins).

The old proxy hid the stream from Claude Code, which re-sent each turn without streaming a few
seconds later: the same prompt twice, opposite `stream` flags, `max_tokens` lowered. The
streaming half is an artifact; the JSONL points at the non-streaming half. Counting both would
double-count turns, so every pair is found and reported.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Iterable, Sequence

TWIN_WINDOW_S = 30.0
GENERATION_OLD = "old"
GENERATION_FIXED = "fixed"
GENERATION_UNKNOWN = "cleaned/unknown"


@dataclass(frozen=True)
class TwinCandidate:
    """The few facts twin detection needs about one request."""

    request_id: str
    ts_epoch: float
    row_id: int
    is_streaming: bool
    prompt_key: str


@dataclass(frozen=True)
class TwinPair:
    """One old-proxy pair: the streaming artifact and its non-streaming replay."""

    streaming_request_id: str
    replay_request_id: str
    gap_s: float


@dataclass(frozen=True)
class GenerationReport:
    """Per-capture verdict: generation, pair count and the artifacts' request ids."""

    generation: str
    pairs: int
    artifact_request_ids: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return {"generation": self.generation, "pairs": self.pairs, "artifact_request_ids": list(self.artifact_request_ids)}


def find_twin_pairs(candidates: Iterable[TwinCandidate], *, window_s: float = TWIN_WINDOW_S) -> list[TwinPair]:
    """Pair requests with the same prompt_key, opposite stream flags, at most `window_s` apart.

    Within one prompt key, each streaming request takes the nearest-in-time unpaired
    non-streaming request (the replay follows within 0–30 s, often in the same second);
    ties go to the earlier row. A request belongs to at most one pair.
    """
    ordered = sorted(candidates, key=lambda c: (c.prompt_key, c.ts_epoch, c.row_id))
    pairs: list[TwinPair] = []
    for _, group in itertools.groupby(ordered, key=lambda c: c.prompt_key):
        pairs.extend(_pair_group(list(group), window_s))
    return sorted(pairs, key=lambda pair: pair.streaming_request_id)


def _pair_group(group: Sequence[TwinCandidate], window_s: float) -> list[TwinPair]:
    """Greedy nearest matching inside one prompt key (groups are tiny: a turn and its replay)."""
    replays = [c for c in group if not c.is_streaming]
    used: set[str] = set()
    pairs = []
    for stream in (c for c in group if c.is_streaming):
        options = [
            (abs(replay.ts_epoch - stream.ts_epoch), replay.row_id, replay)
            for replay in replays
            if replay.request_id not in used and abs(replay.ts_epoch - stream.ts_epoch) <= window_s
        ]
        if not options:
            continue
        gap, _, replay = min(options, key=lambda option: option[:2])
        used.add(replay.request_id)
        pairs.append(TwinPair(stream.request_id, replay.request_id, gap))
    return pairs


def classify_generation(pairs: Sequence[TwinPair], *, has_streaming_turns: bool) -> GenerationReport:
    """Old when pairs exist; fixed when turns stream without pairs; else cleaned/unknown (docs/inputs.md#old-proxy-twins)."""
    if pairs:
        generation = GENERATION_OLD
    elif has_streaming_turns:
        generation = GENERATION_FIXED
    else:
        # Only non-streaming rows: a cleaned old-proxy capture (the user's example) or no turns at all.
        generation = GENERATION_UNKNOWN
    return GenerationReport(generation, len(pairs), tuple(pair.streaming_request_id for pair in pairs))
