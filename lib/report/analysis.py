"""Run the cache models over one report's requests and collect every figure the dashboard and stats show.

Per request, two simulations are set against the API's own usage (docs/cache-models.md): the Anthropic API
model (`predict_usage`: read / creation / new at `cache_control` breakpoints) and the TTL model
at `--cache-ttl` (prefix hits in a block cache refreshed on every hit). Both run on cl100k_base
tokens while the API counts Claude tokens (~15–20 % more); as in the validator, each simulated
split is scaled to the request's API prompt size (the size is known, the models predict its
split), so bars and totals compare directly. Blocks of different models never share an id: a KV
cache cannot reuse another model's tensors.

The API model runs as the validator runs it: one stream per conversation with its first
breakpoint warm (Claude Code's main prompt stays cached from the user's other sessions; the
sub-agents share the stream, so they start cold, as the seed's four did). Its 20-step lookback
walks back over section and message ends, like the API's content-block lookback.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Mapping, Optional, Sequence

import numpy as np

from lib.cache.api_model import DEFAULT_TTL_S, ApiRequest, predict_usage
from lib.cache.miss_causes import RequestMisses, attribute_billed, attribute_simulated, split_tokens
from lib.cache.ttl_model import DEFAULT_TTLS_S, CacheEvent, TTLResult, sweep_ttl
from lib.cache.capacity_model import CapacityPoint as CurvePoint
from lib.report.dashboard import format_ttl
from lib.report.forked import ForkedCall
from lib.cache.capacity_model import capacity_curve, capacity_needed, lru_profile
from lib.cache.api_model import model_family
from lib.cache.eviction_time import EVICTION_TTLS_S, BilledRequest, EvictionTime, effective_eviction_time
from lib.cache.kv_bytes import DEFAULT_PRESET, PRESETS, KVGeometry
from lib.cache.tiers import DEFAULT_TIERS_GIB, TierHits, tier_split
from lib.hashing.block_hashes import DEFAULT_BLOCK_SIZE, IdAllocator
from lib.records import ProxyRequest, Usage
from lib.report.model import (
    CAPACITY_TARGET_SHARES, LANE_PARENT, LANE_UNLINKED, CacheSplit, CapacityCurve, CapacityPoint,
    CapacityTarget, ConcurrencyPoint, ModelUsage, QualityCount, RequestMissCauses, RequestPoint, SubagentLane,
    TimingDistribution, TtlRow, WorkingSetPoint,
)
from lib.hashing.request_hashing import HashedRequest
from lib.report.jsonl_capture import API_MODEL, CALIBRATION
from lib.report.selection import QUALITY_LABELS, SelectedRequest, Selection
from lib.capture.turn_timing import without_twin_write

ONE_HOUR_S = 3600.0
# Belady needs one full pass per capacity (~0.2 ms per request each); past this many requests
# only LRU is computed, which needs a single pass for every capacity.
OPT_MAX_REQUESTS = 1_500
CURVE_POINTS = 20
# OPT capacity targets: two refinement rounds of 8 capacities per bracket (~1 % resolution).
OPT_REFINE_ROUNDS = 2
OPT_GRID = 8
# Series longer than this are thinned (keeping each bucket's maximum) so the page stays small.
MAX_SERIES_POINTS = 2_000


@dataclass(frozen=True)
class AnalysisOptions:
    """Block size, the TTL of the main simulation, the sweep and the cost limits."""

    block_size: int = DEFAULT_BLOCK_SIZE
    cache_ttl_s: float = 300.0
    ttls_s: tuple[Optional[float], ...] = DEFAULT_TTLS_S
    opt_max_requests: int = OPT_MAX_REQUESTS
    max_series_points: int = MAX_SERIES_POINTS
    kv_model: KVGeometry = PRESETS[DEFAULT_PRESET]
    tiers_gib: tuple[tuple[str, float], ...] = DEFAULT_TIERS_GIB
    eviction_ttls_s: tuple[Optional[float], ...] = EVICTION_TTLS_S


@dataclass(frozen=True)
class Turn:
    """A selected request with its hashed prompt, its block ids and its times relative to the report start."""

    item: SelectedRequest
    hashed: HashedRequest
    ids: np.ndarray
    start_s: float
    ready_s: float
    end_s: float

    @property
    def request(self) -> ProxyRequest:
        """The proxy row."""
        return self.item.request


@dataclass(frozen=True)
class Analysis:
    """Every computed figure of one report; `points[i].simulated` is the API model, `ttl_splits[i]` the TTL model."""

    selection: Selection
    options: AnalysisOptions
    points: tuple[RequestPoint, ...]
    ttl_splits: tuple[CacheSplit, ...]
    ttl_rows: tuple[TtlRow, ...]
    working_set: tuple[WorkingSetPoint, ...]
    capacity: Optional[CapacityCurve]
    timings: tuple[TimingDistribution, ...]
    gaps_s: tuple[float, ...]
    subagents: tuple[SubagentLane, ...]
    concurrency: tuple[ConcurrencyPoint, ...]
    models: tuple[ModelUsage, ...]
    quality: tuple[QualityCount, ...]
    token_ratio: Optional[float]
    duration_s: float
    # Why each request missed, per request (API tokens): under the main TTL model and as billed.
    miss_causes: tuple[RequestMissCauses, ...] = ()
    tiers: tuple[TierHits, ...] = ()
    eviction: Optional[EvictionTime] = None


def analyze(selection: Selection, hashed: Mapping[str, HashedRequest], options: AnalysisOptions, *,
            parallel: bool = False) -> Analysis:
    """Simulate the selection's turns (those with a usable body) and gather every dashboard figure.

    With `parallel` the TTL sweep and the capacity curve run in forked children (which inherit the
    block ids instead of receiving them) while this process runs the API model; same results.
    """
    turns = build_turns(selection.requests, hashed, block_size=options.block_size)
    events = [CacheEvent(t.start_s, t.ready_s, t.ids, t.hashed.token_count, t.item.lane, t.request.model)
              for t in turns]
    ttls = _sweep_ttls(options)
    run = ForkedCall if parallel and events else ForkedCall.here
    capacity = run(_capacity, events, options) if events else None
    sweeping = run(sweep_ttl, events, ttls, block_size=options.block_size)
    tiering = run(_tiers, events, options) if events else None
    # Fitted to the billed usage beside the API model; on a cleaned old-proxy capture to the estimate,
    # which needs the API model's reads: never to stored reads that include the deleted twins' writes
    # (lib/capture/turn_timing.py).
    fit_after_api_model = selection.cleaned_old_proxy
    fitting = run(effective_eviction_time, events, _billed(turns, [t.request.usage for t in turns]),
                  block_size=options.block_size, ttls=options.eviction_ttls_s) if events and not fit_after_api_model else None
    api_model = API_MODEL not in selection.unavailable
    if api_model:
        predictions = predict_usage(_api_requests(turns), block_size=options.block_size, warm_first_breakpoint=True)
        simulated: Sequence[CacheSplit] = [_scaled(CacheSplit(p.cache_read, p.cache_creation, p.input), t)
                                           for t, p in zip(turns, predictions)]
    else:
        # No cache_control breakpoints (the logs): the per-request simulation is the main TTL model's.
        simulated = _main_ttl_splits(turns, sweeping.result(), ttls.index(options.cache_ttl_s), options.block_size)
    points = _points(turns, simulated, cleaned_old_proxy=selection.cleaned_old_proxy)
    # The API usage the figures compare with: the points' (on a cleaned capture, the estimate).
    api_usages = [Usage(input_tokens=p.api.new_tokens, cache_read_input_tokens=p.api.cache_read_tokens,
                        cache_creation_input_tokens=p.api.cache_creation_tokens) if p.api else None for p in points]
    if events and fit_after_api_model:
        fitting = run(effective_eviction_time, events, _billed(turns, api_usages), block_size=options.block_size,
                      ttls=options.eviction_ttls_s)
    sweep = sweeping.result()
    main = sweep[ttls.index(options.cache_ttl_s)]
    return Analysis(
        selection=selection,
        options=options,
        points=points,
        ttl_splits=_main_ttl_splits(turns, sweep, ttls.index(options.cache_ttl_s), options.block_size),
        ttl_rows=tuple(_ttl_row(result, turns) for result in sweep),
        working_set=_thin(main, options.max_series_points),
        capacity=capacity.result() if capacity else None,
        timings=_timings(points),
        gaps_s=tuple(b.start_s - a.start_s for a, b in zip(turns, turns[1:])),
        subagents=_subagent_lanes(selection, turns),
        concurrency=_concurrency(turns),
        models=_models(turns, points),
        quality=tuple(QualityCount(QUALITY_LABELS.get(reason, reason.replace("_", " ")), entry["count"],
                                   tuple(entry["examples"]))
                      for reason, entry in _ordered(selection.problems.as_dict())),
        token_ratio=None if CALIBRATION in selection.unavailable else _token_ratio(turns),
        duration_s=max((t.end_s for t in turns), default=0.0),
        miss_causes=_miss_causes(turns, events, options, api_usages, breakpoints_known=api_model),
        tiers=tiering.result() if tiering else (),
        eviction=fitting.result() if fitting else None,
    )


def build_turns(items: Sequence[SelectedRequest], hashed: Mapping[str, HashedRequest], *,
                block_size: int) -> list[Turn]:
    """Turns in arrival order with dense block ids, one id namespace per model (docs/hashing.md#integer-ids-and-scopes)."""
    usable = [item for item in items if item.request.request_id in hashed]
    if not usable:
        return []
    origin = usable[0].request.timestamp
    models = sorted({item.request.model for item in usable})
    allocators = {model: IdAllocator() for model in models}
    previous: dict[tuple, np.ndarray] = {}
    turns = []
    for item in usable:
        request = item.request
        prompt = hashed[request.request_id]
        keys = prompt.hashes.block_keys
        lane = (item.conversation_id, item.lane, request.model)
        # A lane's request repeats its previous request's keys as a prefix: only the ids after it
        # are looked up and converted.
        shared, new_ids = allocators[request.model].new_ids(keys, lane)
        # Interleave the per-model namespaces: ids stay small (dense within a factor of #models).
        tail = (np.asarray(new_ids, dtype=np.int64) - 1) * len(models) + models.index(request.model) + 1
        ids = np.concatenate((previous[lane][:shared], tail)) if shared else tail
        previous[lane] = ids
        start_s = (request.timestamp - origin).total_seconds()
        turns.append(Turn(item, prompt, ids, start_s, _ready_s(request, start_s, origin), _end_s(request, start_s, origin)))
    return turns


def _ready_s(request: ProxyRequest, start_s: float, origin: datetime) -> float:
    """When the request's blocks become readable: first token, else completion (docs/cache-models.md#time-and-concurrency)."""
    if request.ttft_s is not None:
        return start_s + request.ttft_s
    return _end_s(request, start_s, origin)


def _end_s(request: ProxyRequest, start_s: float, origin: datetime) -> float:
    """When the response ended: start + api_time (ms precision), else completedAt (whole seconds), else start."""
    if request.api_time_s is not None:
        return start_s + request.api_time_s
    if request.completed_at is not None:
        return max(start_s, (request.completed_at - origin).total_seconds())
    return start_s


def _sweep_ttls(options: AnalysisOptions) -> list[Optional[float]]:
    """The sweep's TTLs plus the main simulation's, each once, shortest first, infinite last."""
    finite = {float(ttl) for ttl in options.ttls_s if ttl is not None} | {float(options.cache_ttl_s)}
    return [*sorted(finite), *([None] if None in options.ttls_s else [])]


def _api_requests(turns: Sequence[Turn]) -> list[ApiRequest]:
    """The API model's view; a lane whose API usage shows 1-hour writes asked for the 1 h TTL.

    The proxy drops `cache_control.ttl` from stored bodies (docs/inputs.md#stored-request-body), so the API's 1 h creation
    counts are the only trace of the request's TTL (Claude Code asks for it on the main thread).
    """
    one_hour_lanes = {t.item.lane for t in turns if t.request.usage and t.request.usage.cache_creation_1h_tokens}
    return [
        ApiRequest(t.start_s, t.ready_s, t.request.model, t.ids, t.hashed.token_count, t.hashed.breakpoints,
                   ttl_s=ONE_HOUR_S if t.item.lane in one_hour_lanes else DEFAULT_TTL_S,
                   stream=t.item.conversation_id or LANE_UNLINKED, boundaries=t.hashed.boundaries)
        for t in turns
    ]


def _scaled(split: CacheSplit, turn: Turn) -> CacheSplit:
    """A split in tokenizer tokens scaled to the API's prompt size; new tokens take the rounding remainder."""
    usage = turn.request.usage
    if usage is None or not usage.prompt_tokens or not turn.hashed.token_count:
        return split
    factor = usage.prompt_tokens / turn.hashed.token_count
    read = round(split.cache_read_tokens * factor)
    creation = min(round(split.cache_creation_tokens * factor), usage.prompt_tokens - read)
    return CacheSplit(read, creation, usage.prompt_tokens - read - creation)


def _points(turns: Sequence[Turn], simulations: Sequence[CacheSplit], *,
            cleaned_old_proxy: bool = False) -> tuple[RequestPoint, ...]:
    """One RequestPoint per turn; context and growth in API tokens where the API reported usage.

    On a cleaned old-proxy capture a linked turn's usage (any turn's, without links) has its deleted
    twin's write taken back.
    """
    points = []
    previous_context: dict[str, int] = {}
    previous_end: dict[str, float] = {}
    linked = any(turn.item.conversation_id is not None for turn in turns)
    for index, (turn, simulated) in enumerate(zip(turns, simulations)):
        request, lane = turn.request, turn.item.lane
        usage = request.usage
        if cleaned_old_proxy and usage and (turn.item.conversation_id is not None or not linked):
            usage = without_twin_write(usage, simulated.cache_read_tokens)
        context = usage.prompt_tokens if usage else turn.hashed.token_count
        think = previous_end.get(lane)
        points.append(RequestPoint(
            index=index, t_s=turn.start_s, lane=lane, model=request.model,
            simulated=simulated,
            api=CacheSplit(usage.cache_read_input_tokens, usage.cache_creation_input_tokens, usage.input_tokens)
            if usage else None,
            context_tokens=context, growth_tokens=context - previous_context.get(lane, context),
            output_tokens=usage.output_tokens if usage else 0,
            api_time_s=request.api_time_s, ttft_s=request.ttft_s,
            think_time_s=None if think is None else max(0.0, turn.start_s - think),
        ))
        previous_context[lane] = context
        previous_end[lane] = turn.end_s
    return tuple(points)


def _main_ttl_splits(turns: Sequence[Turn], sweep: Sequence[TTLResult], main: int, block_size: int) -> tuple[CacheSplit, ...]:
    """The main TTL model's split of each turn, scaled to its API prompt size."""
    return tuple(_scaled(_ttl_split(t, hits, block_size), t) for t, hits in zip(turns, sweep[main].request_hit_blocks))


def _ttl_split(turn: Turn, hit_blocks: int, block_size: int) -> CacheSplit:
    """TTL model: hits are read, missed full blocks are prefilled (created), the partial tail is new."""
    full = len(turn.ids)
    return CacheSplit(hit_blocks * block_size, (full - hit_blocks) * block_size,
                      max(turn.hashed.token_count - full * block_size, 0))


def _ttl_row(result: TTLResult, turns: Sequence[Turn]) -> TtlRow:
    """One row of the sweep table, labelled as the page labels TTLs (1m, 5m, 1h, ∞).

    The hit rate is measured as the cards measure the TTL model: each request's split scaled to its
    API prompt size, over the requests with API usage (all requests, in tokenizer tokens, without
    usage), so the chosen TTL's row and its card show one number.
    """
    return TtlRow(format_ttl(result.ttl_s), None if result.ttl_s is None else float(result.ttl_s),
                  _comparable_hit_rate(result, turns), result.peak_working_set_tokens,
                  result.mean_prefills_per_block, result.stable_share)


def _comparable_hit_rate(result: TTLResult, turns: Sequence[Turn]) -> float:
    """Hit rate of one TTL in API tokens over the requests with API usage (as `figures.compare`)."""
    splits = [_scaled(_ttl_split(turn, hits, result.block_size), turn)
              for turn, hits in zip(turns, result.request_hit_blocks) if turn.request.usage is not None]
    prompt = sum(split.prompt_tokens for split in splits)
    return sum(split.cache_read_tokens for split in splits) / prompt if prompt else result.hit_rate


def _miss_causes(turns: Sequence[Turn], events: Sequence[CacheEvent], options: AnalysisOptions,
                 api_usages: Sequence[Optional[Usage]], *, breakpoints_known: bool = True) -> tuple[RequestMissCauses, ...]:
    """Each request's misses by cause: the main TTL model's, and the API's billed ones (see lib/cache/miss_causes.py).

    Both in API tokens where the API reported usage: the simulated causes are scaled to the misses
    of the request's scaled split (so they add up to its creation + new bars). Billed misses are
    placed against a replay at the API's own TTLs (1 h for lanes whose usage shows 1-hour writes,
    else 5 minutes), so a pause the API's cache survived is not called an expiry.
    """
    if not turns:
        return ()
    sections = [(t.hashed.tool_tokens, t.hashed.system_tokens) for t in turns]
    block_size = options.block_size
    simulated = attribute_simulated(events, options.cache_ttl_s, block_size=block_size, sections=sections)
    api_ttls = [request.ttl_s for request in _api_requests(turns)]
    same = all(ttl == options.cache_ttl_s for ttl in api_ttls)
    billed_replay = simulated if same else attribute_simulated(events, api_ttls, block_size=block_size,
                                                               sections=sections)
    written_end: dict[str, int] = {}  # per lane: the previous request's last breakpoint
    causes = []
    for turn, ours, billed, usage in zip(turns, simulated, billed_replay, api_usages):
        causes.append(_request_causes(turn, ours, billed, usage, block_size, written_end.get(turn.item.lane)))
        if breakpoints_known:  # else nothing is called beyond a breakpoint (docs/jsonl.md#the-dashboard)
            written_end[turn.item.lane] = max(turn.hashed.breakpoints, default=0)
    return tuple(causes)


def _request_causes(turn: Turn, ours: RequestMisses, billed: RequestMisses, usage: Optional[Usage], block_size: int,
                    written_end: Optional[int]) -> RequestMissCauses:
    """One request's causes, scaled like its simulated split; billed None without API usage."""
    split = _scaled(_ttl_split(turn, ours.hit_tokens // block_size, block_size), turn)
    misses = split.cache_creation_tokens + split.new_tokens
    return RequestMissCauses(
        simulated=split_tokens(ours.by_cause(), misses),
        billed=attribute_billed(billed, usage.cache_read_input_tokens, usage.prompt_tokens, written_end=written_end)
        if usage else None,
    )


def _thin(result: TTLResult, limit: int) -> tuple[WorkingSetPoint, ...]:
    """The working-set series, thinned to at most `limit` points keeping each bucket's peak."""
    times, tokens = result.working_set_times_s, result.working_set_tokens
    if len(times) <= limit:
        return tuple(WorkingSetPoint(t, n) for t, n in zip(times, tokens))
    edges = np.linspace(0, len(times), limit + 1).astype(int)
    values = np.asarray(tokens)
    picks = [start + int(np.argmax(values[start:end])) for start, end in zip(edges, edges[1:]) if end > start]
    return tuple(WorkingSetPoint(times[i], tokens[i]) for i in picks)


def _capacity(events: Sequence[CacheEvent], options: AnalysisOptions) -> CapacityCurve:
    """LRU (and, when affordable, OPT) hit rate per capacity, and the capacity for 90/95/99 % of infinite."""
    block_size = options.block_size
    profile = lru_profile(events, block_size=block_size)
    # 20 log-spaced capacities up to "nothing evicted", as capacity_curve picks them.
    largest = max(profile.cumulative_hits.size - 1, 1)
    capacities = np.unique(np.geomspace(1, largest, CURVE_POINTS).round().astype(int)).tolist()
    with_opt = len(events) <= options.opt_max_requests
    if with_opt:
        curve = capacity_curve(events, capacities, block_size=block_size, with_opt=True)
    else:
        # One LRU replay answers every capacity; capacity_curve would replay again.
        curve = [CurvePoint(c, c * block_size, profile.hit_rate(c), None) for c in capacities]
    infinite = profile.infinite_hit_rate
    lru_needed = capacity_needed(profile, fractions=CAPACITY_TARGET_SHARES)
    rates = [share * infinite for share in CAPACITY_TARGET_SHARES]
    opt_needed = _opt_capacities(events, rates, curve, block_size) if with_opt else [None] * len(rates)
    targets = tuple(CapacityTarget(share, lru_needed[share], opt)
                    for share, opt in zip(CAPACITY_TARGET_SHARES, opt_needed))
    points = tuple(CapacityPoint(p.capacity_tokens, p.lru_hit_rate, math.nan if p.opt_hit_rate is None else p.opt_hit_rate)
                   for p in curve)
    return CapacityCurve(points, infinite, targets)


def _tiers(events: Sequence[CacheEvent], options: AnalysisOptions) -> tuple[TierHits, ...]:
    """Hit rate per HBM / DRAM / SSD tier of the chosen model's KV bytes (LRU stack distances)."""
    profile = lru_profile(events, block_size=options.block_size)
    return tier_split(profile, options.tiers_gib, options.kv_model.bytes_per_token)


def _billed(turns: Sequence[Turn], usages: Sequence[Optional[Usage]]) -> list[BilledRequest]:
    """Each turn's model family and billed usage, for the effective-eviction-time fit."""
    return [BilledRequest(model_family(t.request.model) or t.request.model or "unknown",
                          usage.prompt_tokens if usage else None, usage.cache_read_input_tokens if usage else None, t.end_s)
            for t, usage in zip(turns, usages)]


def _opt_capacities(events: Sequence[CacheEvent], rates: Sequence[float], curve: Sequence[CurvePoint],
                    block_size: int) -> list[Optional[int]]:
    """Smallest OPT capacity (tokens) reaching each rate, to within ~1 %.

    Each rate is bracketed by two points of the curve, then the brackets are refined on grids of
    OPT_GRID capacities; every grid goes through one capacity_curve call, because the replay log
    it builds costs ten Belady passes (a probe per capacity would rebuild it each time).
    """
    known = {p.capacity_blocks: p.opt_hit_rate for p in curve if p.opt_hit_rate is not None}
    for _ in range(OPT_REFINE_ROUNDS):
        brackets = [_bracket(known, rate) for rate in rates]
        grid = sorted({low + (high - low) * k // (OPT_GRID + 1) for low, high in filter(None, brackets)
                       for k in range(1, OPT_GRID + 1)} - set(known) - {0})
        if not grid:
            break
        known.update((p.capacity_blocks, p.opt_hit_rate) for p in
                     capacity_curve(events, grid, block_size=block_size, with_opt=True) if p.opt_hit_rate is not None)
    return [None if b is None else b[1] * block_size for b in (_bracket(known, rate) for rate in rates)]


def _bracket(known: Mapping[int, float], rate: float) -> Optional[tuple[int, int]]:
    """(largest capacity below the answer, smallest known capacity reaching `rate`); None if none does."""
    reached = [capacity for capacity, hit_rate in known.items() if hit_rate >= rate - 1e-12]
    if not reached:
        return None
    high = min(reached)
    return max((capacity for capacity in known if capacity < high), default=0), high


def _timings(points: Sequence[RequestPoint]) -> tuple[TimingDistribution, ...]:
    """api_time, ttft and think time samples (seconds) of the requests that have them."""
    columns = (("api_time", "api_time", "api_time_s"), ("ttft", "ttft", "ttft_s"), ("think_time", "think time", "think_time_s"))
    return tuple(
        TimingDistribution(name, label, tuple(v for p in points if (v := getattr(p, attribute)) is not None))
        for name, label, attribute in columns
    )


def _subagent_lanes(selection: Selection, turns: Sequence[Turn]) -> tuple[SubagentLane, ...]:
    """Each sub-agent's spawn (the Agent tool call, docs/inputs.md#sub-agents) to finish (its tool_result, else its last response)."""
    if not turns:
        return ()
    origin = turns[0].request.timestamp
    by_lane: dict[str, list[Turn]] = {}
    for turn in turns:
        if turn.item.lane != LANE_UNLINKED and not turn.item.lane.startswith(LANE_PARENT):
            by_lane.setdefault(turn.item.lane, []).append(turn)
    links = {link.agent_id: link for link in selection.links}
    lanes = []
    for agent_id, mine in by_lane.items():
        link = links.get(agent_id)
        spawn = (link.spawn_time - origin).total_seconds() if link else mine[0].start_s
        finish = max(t.end_s for t in mine)
        if link and link.completion_time is not None:
            finish = (link.completion_time - origin).total_seconds()
        lanes.append(SubagentLane(agent_id, link.subagent_type if link else "", spawn, finish, len(mine)))
    return tuple(sorted(lanes, key=lambda lane: (lane.spawn_s, lane.agent_id)))


def _concurrency(turns: Sequence[Turn]) -> tuple[ConcurrencyPoint, ...]:
    """Requests in flight (start to end of response) as a step series."""
    steps = sorted([(t.start_s, 1) for t in turns] + [(t.end_s, -1) for t in turns], key=lambda s: (s[0], s[1]))
    series: list[ConcurrencyPoint] = []
    active = 0
    for time_s, delta in steps:
        active += delta
        if series and series[-1].t_s == time_s:
            series[-1] = ConcurrencyPoint(time_s, active)
        else:
            series.append(ConcurrencyPoint(time_s, active))
    return tuple(series)


def _models(turns: Sequence[Turn], points: Sequence[RequestPoint]) -> tuple[ModelUsage, ...]:
    """Requests and API tokens per model (the points' API split, estimated where it is), most requests first."""
    totals: dict[str, list[int]] = {}
    for turn, point in zip(turns, points):
        usage = turn.request.usage
        row = totals.setdefault(turn.request.model or "unknown", [0, 0, 0, 0, 0])
        row[0] += 1
        if usage and point.api:
            row[1] += usage.input_tokens
            row[2] += usage.output_tokens
            row[3] += point.api.cache_read_tokens
            row[4] += point.api.cache_creation_tokens
    ordered = sorted(totals.items(), key=lambda item: (-item[1][0], item[0]))
    return tuple(ModelUsage(model, *values) for model, values in ordered)


def _token_ratio(turns: Sequence[Turn]) -> Optional[float]:
    """cl100k_base prompt tokens / the API's prompt tokens over requests with usage (~0.85 for Claude)."""
    pairs = [(t.hashed.token_count, t.request.usage.prompt_tokens) for t in turns if t.request.usage]
    api = sum(b for _, b in pairs)
    return sum(a for a, _ in pairs) / api if api else None


def _ordered(problems: dict[str, dict]) -> list[tuple[str, dict]]:
    """Problems in QUALITY_LABELS order, unknown reasons last."""
    order = list(QUALITY_LABELS)
    return sorted(problems.items(), key=lambda item: (order.index(item[0]) if item[0] in order else len(order), item[0]))
