"""Everything one dashboard shows, as typed records, independent of how the numbers were computed.

The analyses (cache models, stats) fill a `ReportModel`; `lib/report/dashboard.py` renders it.
Rates are fractions in [0, 1], times are seconds
from the first request of the report (`t_s`), sizes are tokens; the renderer formats them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from lib.hashing.block_hashes import DEFAULT_BLOCK_SIZE


from lib.cache.eviction_time import EvictionTime
from lib.cache.tiers import TierHits

LANE_PARENT = "parent"
LANE_UNLINKED = "unlinked"
# Fraction of the infinite-cache hit rate the capacity targets aim for (docs/cache-models.md#capacity-simulation).
CAPACITY_TARGET_SHARES = (0.90, 0.95, 0.99)


@dataclass(frozen=True, slots=True)
class SummaryCard:
    """One headline figure; `is_key` cards are repeated on the batch index page."""

    label: str
    value: str
    hint: str = ""
    is_key: bool = False


@dataclass(frozen=True, slots=True)
class CacheSplit:
    """A request's prompt tokens split into cache read, cache creation and new (uncached) tokens."""

    _DERIVED: ClassVar[tuple[str, ...]] = ("prompt_tokens", "hit_rate")

    cache_read_tokens: int
    cache_creation_tokens: int
    new_tokens: int

    @property
    def prompt_tokens(self) -> int:
        """All prompt tokens of the request."""
        return self.cache_read_tokens + self.cache_creation_tokens + self.new_tokens

    @property
    def hit_rate(self) -> float:
        """Share of the prompt read from the cache (0 for an empty prompt)."""
        total = self.prompt_tokens
        return self.cache_read_tokens / total if total else 0.0


@dataclass(frozen=True, slots=True)
class RequestPoint:
    """One request of the report: its lane, the simulated and the API cache split, size and timing.

    `lane` is LANE_PARENT, a sub-agent id, or LANE_UNLINKED (no conversation found); the page colours
    those two names specially. `api` is None when the row has no usable usage (missing response,
    error row). `growth_tokens` is the context added since the lane's previous request.
    """

    index: int
    t_s: float
    lane: str
    model: str
    simulated: CacheSplit
    api: Optional[CacheSplit]
    context_tokens: int
    growth_tokens: int
    output_tokens: int = 0
    api_time_s: Optional[float] = None
    ttft_s: Optional[float] = None
    think_time_s: Optional[float] = None


@dataclass(frozen=True, slots=True)
class TtlRow:
    """One TTL of the sweep (docs/cache-models.md#ttl-simulation); `ttl_s` None means an infinite TTL."""

    ttl_label: str
    ttl_s: Optional[float]
    hit_rate: float
    peak_working_set_tokens: int
    prefills_per_block: float
    stable_share: float


@dataclass(frozen=True, slots=True)
class WorkingSetPoint:
    """Tokens alive in the TTL cache at one moment."""

    t_s: float
    tokens: int


@dataclass(frozen=True, slots=True)
class CapacityPoint:
    """Hit rate of a cache of `capacity_tokens` under LRU and under Belady/OPT (docs/cache-models.md#capacity-simulation)."""

    capacity_tokens: int
    lru_hit_rate: float
    opt_hit_rate: float


@dataclass(frozen=True, slots=True)
class CapacityTarget:
    """Smallest capacity reaching `share` of the infinite-cache hit rate; None when never reached."""

    share: float
    lru_capacity_tokens: Optional[int]
    opt_capacity_tokens: Optional[int]


@dataclass(frozen=True, slots=True)
class CapacityCurve:
    """The hit-rate-vs-capacity curve and the capacities needed for the target shares."""

    points: tuple[CapacityPoint, ...]
    infinite_hit_rate: float
    targets: tuple[CapacityTarget, ...] = ()


@dataclass(frozen=True, slots=True)
class SizeInBytes:
    """One capacity figure in tokens and in GiB of the report's KV model; None when never reached."""

    label: str
    tokens: Optional[int]
    gib: Optional[float]


@dataclass(frozen=True, slots=True)
class PresetCapacity:
    """LRU capacity for each target share (CAPACITY_TARGET_SHARES order) in GiB on one model preset."""

    model: str
    bytes_per_token: int
    lru_gib: tuple[Optional[float], ...]


@dataclass(frozen=True, slots=True)
class KvCapacity:
    """Capacities in bytes of one KV model (docs/cache-models.md), other presets, and the tier view."""

    model: str
    geometry: str
    source: str
    bytes_per_token: int
    working_set: tuple[SizeInBytes, ...]  # peak working set per TTL of the sweep
    lru: tuple[SizeInBytes, ...]  # per target share
    opt: tuple[SizeInBytes, ...]
    presets: tuple[PresetCapacity, ...]
    tiers: tuple[TierHits, ...]
    infinite_hit_rate: float


@dataclass(frozen=True, slots=True)
class TimingDistribution:
    """Raw samples of one timing metric (api_time, ttft, think time) in seconds."""

    name: str
    label: str
    values_s: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class SubagentLane:
    """One sub-agent: when it was spawned, when its last request finished, how many it made."""

    agent_id: str
    subagent_type: str
    spawn_s: float
    finish_s: float
    requests: int


@dataclass(frozen=True, slots=True)
class ConcurrencyPoint:
    """Number of requests (or agents) in flight from `t_s` until the next point."""

    t_s: float
    active: int


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """Requests and tokens of one model."""

    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int


@dataclass(frozen=True, slots=True)
class QualityCount:
    """One counted data-quality problem with its first examples (docs/reliability.md#bad-input)."""

    label: str
    count: int
    examples: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RequestMissCauses:
    """Why one request missed: missed tokens by cause (lib/cache/miss_causes.py), simulated and billed.

    `simulated` adds up to the TTL model's cache creation + new tokens of the request, `billed` to the
    API's (None without API usage); both in API tokens where the API reported usage.
    """

    simulated: dict[str, int]
    billed: Optional[dict[str, int]]


@dataclass(frozen=True, slots=True)
class ReportModel:
    """Everything one dashboard shows (docs/visualizer.md); empty sections are rendered as a short note."""

    title: str
    subtitle: str
    source: str
    cards: tuple[SummaryCard, ...]
    requests: tuple[RequestPoint, ...]
    ttl_sweep: tuple[TtlRow, ...] = ()
    cache_ttl_s: float = 300.0
    block_size: int = DEFAULT_BLOCK_SIZE
    working_set: tuple[WorkingSetPoint, ...] = ()
    capacity: Optional[CapacityCurve] = None
    timings: tuple[TimingDistribution, ...] = ()
    subagents: tuple[SubagentLane, ...] = ()
    concurrency: tuple[ConcurrencyPoint, ...] = ()
    models: tuple[ModelUsage, ...] = ()
    quality: tuple[QualityCount, ...] = ()
    notes: tuple[str, ...] = ()
    generated_at: str = ""
    miss_causes: tuple[RequestMissCauses, ...] = ()
    kv_capacity: Optional[KvCapacity] = None
    eviction: Optional[EvictionTime] = None
    # Without a DB (docs/jsonl.md#the-dashboard): the route, the simulation the per-request bars show,
    # and why api_time and ttft are missing.
    route_note: str = ""
    simulation: str = "API model"
    timing_note: str = ""

    @property
    def lanes(self) -> tuple[str, ...]:
        """Lane names in order of first appearance, the parent first."""
        seen = dict.fromkeys(point.lane for point in self.requests)
        ordered = [lane for lane in (LANE_PARENT,) if lane in seen]
        return tuple(ordered + [lane for lane in seen if lane != LANE_PARENT])

@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One row of the batch index page: a report file and its key figures."""

    title: str
    href: str
    subtitle: str
    request_count: int
    figures: tuple[SummaryCard, ...] = ()

    @classmethod
    def from_report(cls, model: ReportModel, href: str) -> "IndexEntry":
        """The entry for `model` written at `href` (relative to the index); key cards, else the first four."""
        figures = tuple(card for card in model.cards if card.is_key) or model.cards[:4]
        return cls(model.title, href, model.subtitle, len(model.requests), figures)


