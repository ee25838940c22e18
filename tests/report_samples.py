"""A realistic synthetic ReportModel shaped like the seed walkthrough (a parent, 4 concurrent sub-agents)."""
from __future__ import annotations

import random

from lib.report.model import (
    CAPACITY_TARGET_SHARES, LANE_PARENT, CacheSplit, CapacityCurve, CapacityPoint, CapacityTarget,
    ConcurrencyPoint, ModelUsage, QualityCount, ReportModel, RequestMissCauses, RequestPoint, SubagentLane, SummaryCard,
    TimingDistribution, TtlRow, WorkingSetPoint,
)

OPUS = "claude-opus-4-6"
HAIKU = "claude-haiku-4-5"
# Requests per sub-agent as in the seed walkthrough (SA1..SA4).
SUBAGENT_REQUESTS = {"agent-a1": 21, "agent-a2": 14, "agent-a3": 26, "agent-a4": 23}
TTL_SWEEP_S = (60, 120, 180, 240, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400, None)


def _split(context: int, hit_rate: float, new_tokens: int) -> CacheSplit:
    """A cache split of `context` tokens with roughly `hit_rate` read and `new_tokens` uncached."""
    read = int(context * hit_rate)
    new = min(new_tokens, context - read)
    return CacheSplit(read, context - read - new, new)


def _lane_requests(rng: random.Random) -> list[tuple[float, str, str, int, float]]:
    """(t_s, lane, model, context_tokens, api_time_s) for every request, unsorted."""
    events = []
    context = 25_407
    for turn in range(3):
        events.append((turn * 18.0, LANE_PARENT, OPUS, context, rng.uniform(5, 15)))
        context += rng.randint(200, 400)
    for lane, count in SUBAGENT_REQUESTS.items():
        t_s, sub_context = 62.0, 13_200 + rng.randint(0, 60)
        for _ in range(count):
            events.append((t_s, lane, HAIKU, sub_context, rng.uniform(0.9, 6.0)))
            t_s += rng.uniform(2.0, 8.0)
            sub_context += rng.randint(1_000, 3_500)
    for t_s, context in ((210.0, 44_604), (332.0, 50_916), (660.0, 51_407)):
        events.append((t_s, LANE_PARENT, OPUS, context, rng.uniform(3, 120)))
    return sorted(events)


def build_sample_report(seed: int = 5) -> ReportModel:
    """About 90 requests in 5 lanes with every section of the dashboard filled."""
    rng = random.Random(seed)
    previous: dict[str, int] = {}
    points = []
    for index, (t_s, lane, model, context, api_time_s) in enumerate(_lane_requests(rng)):
        growth = context - previous.get(lane, context)
        first = lane not in previous
        previous[lane] = context
        api_hit = 0.0 if first and lane != LANE_PARENT else rng.uniform(0.88, 0.995)
        sim_hit = 0.0 if first else min(1.0, api_hit + rng.uniform(-0.03, 0.03))
        points.append(RequestPoint(
            index=index, t_s=t_s, lane=lane, model=model,
            simulated=_split(context, sim_hit, rng.randint(20, 300)),
            api=None if index == 40 else _split(context, api_hit, rng.randint(20, 300)),
            context_tokens=context, growth_tokens=growth, output_tokens=rng.randint(80, 900),
            api_time_s=api_time_s, ttft_s=rng.uniform(0.6, 3.5),
            think_time_s=315.0 if t_s > 600 else rng.uniform(0.0, 4.0),
        ))
    ttl_rows = tuple(
        TtlRow(
            ttl_label="∞" if ttl is None else _ttl_label(ttl), ttl_s=None if ttl is None else float(ttl),
            hit_rate=0.62 + 0.3 * (1 - 1 / (1 + (ttl or 10**6) / 200)),
            peak_working_set_tokens=int(150_000 + 20 * (ttl or 100_000)),
            prefills_per_block=1.0 + 3.0 / (1 + (ttl or 10**6) / 60),
            stable_share=0.55 + 0.4 * (1 - 1 / (1 + (ttl or 10**6) / 300)),
        )
        for ttl in TTL_SWEEP_S
    )
    capacities = [2 ** k * 1_000 for k in range(12)]
    infinite = 0.93
    curve = CapacityCurve(
        points=tuple(
            CapacityPoint(c, infinite * min(1.0, (c / 400_000) ** 0.5), infinite * min(1.0, (c / 250_000) ** 0.5))
            for c in capacities
        ),
        infinite_hit_rate=infinite,
        targets=tuple(
            CapacityTarget(share, int(400_000 * share ** 2), int(250_000 * share ** 2))
            for share in CAPACITY_TARGET_SHARES
        ),
    )
    lanes = tuple(
        SubagentLane(
            agent_id=lane, subagent_type="Explore",
            spawn_s=min(p.t_s for p in points if p.lane == lane),
            finish_s=max(p.t_s + (p.api_time_s or 0.0) for p in points if p.lane == lane),
            requests=count,
        )
        for lane, count in SUBAGENT_REQUESTS.items()
    )
    concurrency = tuple(ConcurrencyPoint(float(t), active) for t, active in
                        ((0, 1), (62, 4), (150, 3), (175, 2), (190, 0), (210, 1), (332, 1), (345, 0), (660, 1)))
    working_set = tuple(WorkingSetPoint(p.t_s, 20_000 + 3_000 * i) for i, p in enumerate(points))
    return ReportModel(
        title="combined",
        subtitle="92 requests · 1 conversation · 4 sub-agents · 11.2 min",
        source="examples/requests.db",
        cards=(
            SummaryCard("Requests", str(len(points)), "88 parent+sub-agent turns", is_key=True),
            SummaryCard("API hit rate", "93.1%", "cache_read / prompt tokens", is_key=True),
            SummaryCard("Simulated hit rate", "92.4%", "TTL 5m, block size 64", is_key=True),
            SummaryCard("Accuracy", "99.2%", "1 − |sim − api| / api", is_key=True),
            SummaryCard("Peak working set", "412,800", "tokens alive at TTL 5m"),
            SummaryCard("Capacity for 95 %", "361K", "LRU tokens"),
        ),
        requests=tuple(points),
        ttl_sweep=ttl_rows,
        working_set=working_set,
        capacity=curve,
        timings=(
            TimingDistribution("api_time", "api_time", tuple(p.api_time_s or 0.0 for p in points)),
            TimingDistribution("ttft", "ttft", tuple(p.ttft_s or 0.0 for p in points)),
            TimingDistribution("think_time", "think time", tuple(p.think_time_s or 0.0 for p in points)),
        ),
        subagents=lanes,
        concurrency=concurrency,
        models=(
            ModelUsage(OPUS, 6, 1_200, 9_000, 230_000, 20_000),
            ModelUsage(HAIKU, len(points) - 6, 8_000, 8_500, 3_400_000, 120_000),
        ),
        quality=(
            QualityCount("request without a response", 1, ("row 3f2a9c01d4e5b6a7",)),
            QualityCount("old-proxy duplicate pairs shown once", 2),
        ),
        notes=("Think time of the first request of each lane is unknown.", "<script>alert(1)</script> must be escaped"),
        generated_at="2026-03-25 19:43 UTC",
        miss_causes=tuple(_miss_causes(point) for point in points),
    )


def _miss_causes(point: RequestPoint) -> RequestMissCauses:
    """Each request's misses split between two causes; billed where the API gave usage."""
    simulated = point.simulated.cache_creation_tokens + point.simulated.new_tokens
    billed = None if point.api is None else point.api.cache_creation_tokens + point.api.new_tokens
    causes = "ttl_expiry" if point.index % 7 == 3 else "in_flight" if point.index % 11 == 5 else "first_use"
    return RequestMissCauses({causes: simulated - 3, "partial_block": 3} if simulated > 3 else {causes: simulated},
                             None if billed is None else {causes: billed})


def _ttl_label(ttl_s: int) -> str:
    """1m, 5m, 1h, 24h: the sweep's labels."""
    return f"{ttl_s // 3600}h" if ttl_s >= 3600 else f"{ttl_s // 60}m"
