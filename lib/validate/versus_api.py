"""Traces versus the API (docs/validate.md#simulated-vs-api-per-trace): simulated vs real hit rate, and the API model's per-request error.

Simulated: the trace prefix model (docs/cache-models.md#trace-prefix-model) over the trace's own `hash_ids`, parent and
sub-agent requests alike, each lane against its own previous request, no warm prefix. API:
cache_read / (input + cache_read + cache_creation) from the DB row. Both sums run over the same
requests, the matched ones. Accuracy = 1 − |sim − api| / api (undefined when api is 0).

API model (docs/cache-models.md#anthropic-api-model): `predict_usage` over every matched request of the capture in start order
in one shared cache (across traces), ids from our own block keys (one salt, so equal prefixes
share ids across conversations), breakpoints and the lookback's content-block boundaries (message
ends) recomputed from the bodies, a request's writes
readable at start + ttft (else at completion), a 1-hour TTL for lanes whose API usage shows 1-hour
cache writes (the proxy drops `cache_control.ttl` from stored bodies, docs/inputs.md#stored-request-body).
`warm_first_breakpoint=True`, one stream per trace: the first request of each trace finds its
first breakpoint (tools + system) cached, as the seed's first request did (83.6 %: Claude Code's
main prompt stays warm from the user's other sessions); sub-agents share their trace's stream, so
they start cold, as the seed's four concurrent Explore agents did (0 %). Predictions are in
tokenizer tokens; each is scaled by the request's API / tokenizer prompt-size ratio (the prompt
size is known, the model predicts its split), input taking the remainder so the three add up.
Errors are absolute, in tokens and in % of the request's API prompt size.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence, cast

from lib.cache.api_model import DEFAULT_TTL_S, ApiRequest, PredictedUsage, predict_usage
from lib.cache.miss_causes import attribute_billed, attribute_simulated, ordered_totals
from lib.cache.replay import CacheEvent
from lib.capture.billing_header import BillingHeaderTally
from lib.hashing.block_hashes import DEFAULT_BLOCK_SIZE, IdAllocator
from lib.problems import ProblemCounter
from lib.records import ProxyRequest, Usage
from lib.hashing.request_hashing import HashedRequest
from lib.cache.percentiles import percentile
from lib.validate.matching import MatchResult, TraceLanes
from lib.capture.turn_timing import is_cleaned_old_proxy, without_twin_write

USAGE_FIELDS = ("cache_read", "cache_creation", "input")
API_TRUTH_USAGE = "usage"  # the rows' usage; old-proxy turns that of their first send (lib/capture/turn_timing.py)
API_TRUTH_CLEANED = "cleaned_old_proxy_estimate"
CLEANED_NOTE = ("API figures estimated: a cleaned old-proxy capture (every turn a non-streaming replay, its streaming "
                "twin deleted); each replay read its twin's write, so its cache_read is capped at the API model's read "
                "and the rest counted as creation (docs/validate.md).")
ONE_HOUR_TTL_S = 3600.0
# A field's predicted total is explained when it is this far off its actual total (and not tiny).
REASON_MIN_GAP_SHARE = 0.5
REASON_MIN_TOKENS = 1_000
# Known reasons for a field's totals to differ (the per-request largest gap is added to them).
FIELD_REASONS = {
    "input": ("the model bills as input only the tokens after a request's last cache_control breakpoint, which "
              "hashing places at the end of the message carrying it (docs/validate.md), so it predicts ~0 for Claude "
              "Code's requests; the API bills what follows the marked content block, so a breakpoint on an earlier "
              "block of the last message (Claude Code marking the 2nd of 4 tool results) is input there and cache "
              "creation in the model"),
}


@dataclass(frozen=True)
class Comparison:
    """Simulated blocks vs API tokens over one set of requests."""

    sim_hit_blocks: int = 0
    sim_blocks: int = 0
    api_read_tokens: int = 0
    api_prompt_tokens: int = 0

    def __add__(self, other: "Comparison") -> "Comparison":
        return Comparison(self.sim_hit_blocks + other.sim_hit_blocks, self.sim_blocks + other.sim_blocks,
                          self.api_read_tokens + other.api_read_tokens, self.api_prompt_tokens + other.api_prompt_tokens)

    @property
    def sim_pct(self) -> Optional[float]:
        return 100 * self.sim_hit_blocks / self.sim_blocks if self.sim_blocks else None

    @property
    def api_pct(self) -> Optional[float]:
        return 100 * self.api_read_tokens / self.api_prompt_tokens if self.api_prompt_tokens else None

    @property
    def accuracy_pct(self) -> Optional[float]:
        """1 − |sim − api| / api, in percent; None when either side is undefined or api is 0."""
        sim, api = self.sim_pct, self.api_pct
        if sim is None or not api:
            return None
        return 100 * (1 - abs(sim - api) / api)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sim_pct": self.sim_pct, "api_pct": self.api_pct, "accuracy_pct": self.accuracy_pct}


@dataclass(frozen=True)
class TraceComparison:
    """One trace: how many requests, how many matched and by which route, and the comparison."""

    trace_id: str
    file: str
    requests: int
    matched: int
    route: str
    comparison: Comparison

    def as_dict(self) -> dict[str, Any]:
        return {"trace_id": self.trace_id, "file": self.file, "requests": self.requests, "matched": self.matched,
                "route": self.route, **self.comparison.as_dict()}


@dataclass(frozen=True)
class FieldError:
    """Absolute error of one predicted usage field over the compared requests."""

    field: str
    median_tokens: float
    p90_tokens: float
    median_pct: float
    p90_pct: float
    predicted_tokens: int
    actual_tokens: int


@dataclass
class ApiComparison:
    """Everything the versus-API section reports."""

    traces: list[TraceComparison]
    overall: Comparison
    requests: int
    matched: int
    model_requests: int
    field_errors: list[FieldError]
    problems: ProblemCounter = field(default_factory=ProblemCounter)
    api_truth: str = ""
    source: str = "DB"  # where the API usage came from: "DB", or "JSONL logs" (no bodies: no API model)
    # One sentence per usage field whose predicted total is far from the actual one, with the reason.
    totals_reasons: list[str] = field(default_factory=list)
    # The API's billed misses (creation + input) by cause, API tokens (lib/cache/miss_causes.py).
    billed_miss_causes: dict[str, int] = field(default_factory=dict)
    billing_header: BillingHeaderTally = field(default_factory=BillingHeaderTally)  # of the matched requests

    def error(self, name: str) -> Optional[FieldError]:
        """The FieldError of one usage field, None when nothing was compared."""
        return next((error for error in self.field_errors if error.field == name), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "traces": [trace.as_dict() for trace in self.traces],
            "overall": {"requests": self.requests, "matched": self.matched, **self.overall.as_dict()},
            "api_model": {"requests": self.model_requests, "fields": [asdict(error) for error in self.field_errors],
                          "totals_reasons": self.totals_reasons},
            "api_truth": self.api_truth,
            "billed_miss_causes": self.billed_miss_causes,
            "problems": self.problems.as_dict(),
            "billing_header": self.billing_header.as_dict(),
        }


@dataclass(frozen=True)
class _Compared:
    """One matched request as the API model sees it, with the trace (stream) it belongs to."""

    request: ProxyRequest
    prompt: HashedRequest
    stream: str
    ttl_s: float
    lane: str


def compare_with_api(traces: Sequence[TraceLanes], matches: MatchResult) -> ApiComparison:
    """Per trace and overall simulated vs API hit rate, and the API model's per-request error."""
    problems = ProblemCounter()
    problems.merge(matches.problems)
    compared: dict[str, _Compared] = {}
    lanes_of: list[tuple[TraceLanes, list[tuple[str, list]]]] = []
    billing_header = BillingHeaderTally()
    for trace in traces:
        match = matches.traces[trace.file]
        lanes = []
        for lane, lane_requests in trace.lanes.items():
            matched = match.lanes.get(lane, [])
            for db_request in matched:
                prompt = matches.hashed.get(db_request.request_id) if db_request is not None else None
                if prompt is not None:
                    billing_header.add(prompt.billing_header, (trace.file, lane))
            usable = [(r, m, m.usage) for r, m in zip(lane_requests, matched) if m is not None and m.usage is not None]
            ttl_s = ONE_HOUR_TTL_S if any(usage.cache_creation_1h_tokens for _, _, usage in usable) else DEFAULT_TTL_S
            for _, db_request, usage in usable:
                prompt = matches.hashed.get(db_request.request_id)
                if prompt is not None and usage.prompt_tokens:
                    compared.setdefault(db_request.request_id, _Compared(db_request, prompt, trace.trace_id, ttl_s, lane))
            without_usage = sum(m is not None and m.usage is None for m in matched)
            if without_usage:
                problems.add("matched_without_usage", f"{trace.file} {lane}", without_usage)
            lanes.append((lane, usable))
        lanes_of.append((trace, lanes))
    block_size = _common_block_size(traces)
    items = sorted(compared.values(), key=lambda item: (item.request.timestamp, item.request.row_id))
    api_requests = [_api_request(item, ids) for item, ids in _with_ids(items)]
    predictions = predict_usage(api_requests, block_size=block_size, warm_first_breakpoint=True)
    # A cleaned old-proxy capture: each replay read its deleted twin's write; take it back (lib/capture/turn_timing.py).
    cleaned = is_cleaned_old_proxy((item.request for item in items), matches.replay_twins)
    usages = {item.request.request_id: cast(Usage, item.request.usage) for item in items}  # only requests with usage are compared
    if cleaned:
        for item, predicted in zip(items, predictions):
            stored = usages[item.request.request_id]
            read, _, _ = _scaled(predicted, item.prompt.token_count, stored.prompt_tokens)
            usages[item.request.request_id] = without_twin_write(stored, read)
    rows: list[TraceComparison] = []
    for trace, lanes in lanes_of:
        comparison = Comparison()
        for _, usable in lanes:
            for request, db_request, stored in usable:
                usage = usages.get(db_request.request_id, stored)
                comparison += Comparison(request.hit_blocks, request.blocks, usage.cache_read_input_tokens, usage.prompt_tokens)
        match = matches.traces[trace.file]
        rows.append(TraceComparison(trace.trace_id, trace.file, trace.request_count, match.matched, match.route, comparison))
    overall = sum((row.comparison for row in rows), Comparison())
    return ApiComparison(
        traces=rows, overall=overall, requests=sum(row.requests for row in rows),
        matched=sum(row.matched for row in rows), model_requests=len(items),
        field_errors=_field_errors(items, predictions, usages), problems=problems, source=matches.source,
        billing_header=billing_header, api_truth=API_TRUTH_CLEANED if cleaned else API_TRUTH_USAGE,
        totals_reasons=_totals_reasons(items, predictions, usages),
        billed_miss_causes=_billed_miss_causes(items, api_requests, block_size, usages),
    )


def _common_block_size(traces: Sequence[TraceLanes]) -> int:
    """The traces' block size (the most common one), DEFAULT_BLOCK_SIZE when none is readable."""
    sizes = Counter(trace.block_size for trace in traces if trace.block_size > 0)
    return sizes.most_common(1)[0][0] if sizes else DEFAULT_BLOCK_SIZE


def _with_ids(items: list[_Compared]) -> list[tuple[_Compared, list[int]]]:
    ids = IdAllocator()
    return [(item, ids.ids(item.prompt.hashes.block_keys, (item.stream, item.lane))) for item in items]


def _api_request(item: _Compared, ids: list[int]) -> ApiRequest:
    request = item.request
    start_s = request.timestamp.timestamp()
    if request.ttft_s is not None:
        ready_s = start_s + request.ttft_s
    elif request.completed_at is not None:
        ready_s = request.completed_at.timestamp()
    else:
        ready_s = start_s + (request.api_time_s or 0.0)
    return ApiRequest(start_s=start_s, ready_s=ready_s, model=request.model, ids=ids,
                      token_count=item.prompt.token_count, breakpoints=item.prompt.breakpoints,
                      ttl_s=item.ttl_s, stream=item.stream, boundaries=item.prompt.boundaries)


def _scaled(predicted: PredictedUsage, tokenizer_tokens: int, api_tokens: int) -> tuple[int, int, int]:
    """The prediction in API tokens: read and creation scaled, input the remainder."""
    factor = api_tokens / tokenizer_tokens if tokenizer_tokens else 0.0
    read = round(predicted.cache_read * factor)
    creation = min(round(predicted.cache_creation * factor), api_tokens - read)
    return read, creation, api_tokens - read - creation


def _field_errors(items: list[_Compared], predictions: list[PredictedUsage],
                  usages: dict[str, Usage]) -> list[FieldError]:
    if not items:
        return []
    errors: dict[str, list[float]] = {name: [] for name in USAGE_FIELDS}
    shares: dict[str, list[float]] = {name: [] for name in USAGE_FIELDS}
    totals = {name: [0, 0] for name in USAGE_FIELDS}
    for item, predicted in zip(items, predictions):
        usage = usages[item.request.request_id]
        prompt_tokens = usage.prompt_tokens
        actual = (usage.cache_read_input_tokens, usage.cache_creation_input_tokens, usage.input_tokens)
        for name, guess, real in zip(USAGE_FIELDS, _scaled(predicted, item.prompt.token_count, prompt_tokens), actual):
            errors[name].append(abs(guess - real))
            shares[name].append(100 * abs(guess - real) / prompt_tokens)
            totals[name][0] += guess
            totals[name][1] += real
    return [
        FieldError(name, percentile(errors[name], 50), percentile(errors[name], 90),
                   percentile(shares[name], 50), percentile(shares[name], 90), *totals[name])
        for name in USAGE_FIELDS
    ]


def _totals_reasons(items: list[_Compared], predictions: list[PredictedUsage], usages: dict[str, Usage]) -> list[str]:
    """Why a field's predicted total is far from its actual total: the known reason and the largest request."""
    totals = {name: [0, 0] for name in USAGE_FIELDS}  # predicted, actual
    largest: dict[str, tuple[int, int]] = {}  # field → (actual − predicted, proxy row) of the largest gap
    for item, predicted in zip(items, predictions):
        usage = usages[item.request.request_id]
        actual = (usage.cache_read_input_tokens, usage.cache_creation_input_tokens, usage.input_tokens)
        for name, guess, real in zip(USAGE_FIELDS, _scaled(predicted, item.prompt.token_count, usage.prompt_tokens), actual):
            totals[name][0] += guess
            totals[name][1] += real
            if abs(real - guess) > abs(largest.get(name, (0, 0))[0]):
                largest[name] = (real - guess, item.request.row_id)
    reasons = []
    for name, (predicted_total, actual_total) in totals.items():
        difference = actual_total - predicted_total
        if abs(difference) < max(REASON_MIN_TOKENS, REASON_MIN_GAP_SHARE * max(actual_total, predicted_total)):
            continue
        gap, row_id = largest[name]
        known = FIELD_REASONS.get(name)
        reasons.append(f"{name} is predicted {predicted_total:,} but billed {actual_total:,}: "
                       + (f"{known}. " if known else "")
                       + f"The largest gap is one request (proxy row {row_id}): {gap:+,} of the {difference:+,} tokens.")
    return reasons


def _billed_miss_causes(items: list[_Compared], requests: list[ApiRequest], block_size: int,
                        usages: dict[str, Usage]) -> dict[str, int]:
    """The billed misses of the compared requests by cause, against a replay at the API's TTLs.

    As in the visualizer: one cache of every compared request in time order, ids kept apart per
    model (no KV reuse across models), each lane's previous breakpoint as the end of what the API
    could have written.
    """
    models = sorted({request.model for request in requests})
    events = [CacheEvent(request.start_s, request.ready_s,
                         [block * len(models) + models.index(request.model) for block in request.ids],
                         request.token_count, f"{item.stream}\x00{item.lane}", request.model)
              for item, request in zip(items, requests)]
    results = attribute_simulated(events, [request.ttl_s for request in requests], block_size=block_size,
                                  sections=[(item.prompt.tool_tokens, item.prompt.system_tokens) for item in items])
    written_end: dict[str, int] = {}
    per_request = []
    for item, event, result in zip(items, events, results):
        usage = usages[item.request.request_id]
        per_request.append(attribute_billed(result, usage.cache_read_input_tokens, usage.prompt_tokens,
                                            written_end=written_end.get(event.stream)))
        written_end[event.stream] = max(item.prompt.breakpoints, default=0)
    return ordered_totals(per_request)
