"""Match each request of a trace directory back to its proxy DB row (docs/validate.md#simulated-vs-api-per-trace).

Three routes, tried per trace in this order:
1. `sidecar`: the sidecar row of (lane, request index) carries the DB request id (traces
   written without --anonymize).
2. `plan`: anonymized sidecars carry no ids, so the build's trace plan is re-derived from the JSONL
   logs and the message index with the options recorded in the manifest (lib/traces/plan.py is
   deterministic: trace_000N is the Nth plan of the same options).
3. `jsonl`: no manifest (or no sidecar) — the same plan with options inferred from the trace itself
   (sub-agent markers → --include-subagents, `trace_NNNN` ids → --anonymize); a gap-split
   segment `<id>_sN` is matched against its whole conversation.
For the plan routes a lane's planned requests are aligned with the trace's: one to one when the
counts and models agree, else in order on (model, token count), either the tokenizer's (the
default) or the API's (--token-count api). The builder drops requests whose body is unusable, and
so does the alignment. --anonymize with --since/--until cannot be re-derived (the manifest keeps no
times); such requests come out unmatched, with the reason counted.

Without a DB (`match_traces_to_logs`), the requests are the logs' calls keyed by message id (their
usage is the API's): sidecar rows match by their `message_id`, anonymized ones by the same plans.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import orjson

from lib.cache.ttl_model import prefix_hits
from lib.db import open_databases
from lib.capture.jsonl_conversations import read_conversations
from lib.capture.jsonl_files import discover_logs
from lib.hashing.jsonl_requests import requests_from_logs
from lib.capture.message_index import ensure_message_index, iter_indexed_requests, load_message_ids
from lib.problems import ProblemCounter
from lib.records import ProxyRequest
from lib.hashing.hash_pool import HashPool, HashSettings
from lib.hashing.request_hashing import HashedRequest
from lib.timestamps import parse_timestamp
from lib.validate.trace_files import iter_jsonl
from lib.traces.plan import PlanOptions, TracePlan, plan_traces
from lib.traces.writer import SIDECAR_DIR, sidecar_file
from lib.capture.turn_timing import first_sends, load_replay_twins

PARENT_LANE = "parent"
MANIFEST_NAMES = (f"{SIDECAR_DIR}/manifest.json", "manifest.json")  # current layout, then the older one
ANONYMIZED_ID = re.compile(r"trace_\d{4,}(_s\d+)?")
SEGMENT_SUFFIX = re.compile(r"_s\d+$")
# Hashing here only has to be internally consistent (ids shared across traces), never equal to the build's.
MATCH_SALT = "validate_trace_cache"


@dataclass(frozen=True, slots=True)
class LaneRequest:
    """What validation keeps of one trace request: model, `in`, and its prefix-model hits."""

    model: str
    token_count: int
    hit_blocks: int
    blocks: int


@dataclass
class TraceLanes:
    """One trace file reduced to its lanes (parent, then sub-agents in file order)."""

    trace_id: str
    file: str
    directory: Path
    block_size: int
    lanes: dict[str, list[LaneRequest]]

    @property
    def request_count(self) -> int:
        return sum(len(requests) for requests in self.lanes.values())


def trace_lanes(file: str, directory: Path, document: dict) -> TraceLanes:
    """Lanes of one parsed native trace; each request's hits against its lane's previous request
    (docs/cache-models.md#trace-prefix-model)."""
    lanes: dict[str, list[LaneRequest]] = {PARENT_LANE: []}
    previous: dict[str, list[int]] = {}
    entries = document.get("requests")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        if entry.get("type") == "subagent":
            label = _unique_label(str(entry.get("agent_id", "")), lanes)
            lanes[label] = []
            for request in found if isinstance(found := entry.get("requests"), list) else []:
                if isinstance(request, dict):
                    _add_request(lanes[label], previous, label, request)
        else:
            _add_request(lanes[PARENT_LANE], previous, PARENT_LANE, entry)
    trace_id = document.get("id")
    block_size = document.get("block_size")
    return TraceLanes(trace_id if isinstance(trace_id, str) else Path(file).stem, file, directory,
                      block_size if isinstance(block_size, int) and block_size > 0 else 0, lanes)


def _unique_label(label: str, lanes: dict[str, Any]) -> str:
    candidate, number = label, 1
    while candidate in lanes:
        number += 1
        candidate = f"{label}#{number}"
    return candidate


def _add_request(lane: list[LaneRequest], previous: dict[str, list[int]], label: str, entry: dict) -> None:
    ids = entry.get("hash_ids")
    ids = ids if isinstance(ids, list) else []
    hits = prefix_hits(previous[label], ids) if label in previous else 0
    previous[label] = ids
    token_count = entry.get("in")
    lane.append(LaneRequest(str(entry.get("model", "")), token_count if isinstance(token_count, int) else -1, hits, len(ids)))


@dataclass
class TraceMatch:
    """Per lane, the DB request of each trace request (None = unmatched), and the route used."""

    route: str
    lanes: dict[str, list[Optional[ProxyRequest]]]

    @property
    def matched(self) -> int:
        return sum(request is not None for requests in self.lanes.values() for request in requests)


@dataclass
class MatchResult:
    """Matches per trace (by file), hashed prompts of every matched request, and problems."""

    traces: dict[str, TraceMatch] = field(default_factory=dict)
    hashed: dict[str, HashedRequest] = field(default_factory=dict)
    problems: ProblemCounter = field(default_factory=ProblemCounter)
    replay_twins: dict[str, str] = field(default_factory=dict)
    source: str = "DB"  # or "JSONL logs": usage from the logs, no request bodies to hash


def match_traces(traces: Sequence[TraceLanes], *, db_path: str, jsonl_dir: Optional[str], index_db: Optional[str],
                 block_size: int, say: Callable[[str], None], workers: int = 1,
                 progress: Optional[Callable[[Iterable, int], Iterable]] = None) -> MatchResult:
    """Match every trace's requests to DB rows and hash the matched prompts (one salt for all, `workers` processes)."""
    result = MatchResult()
    settings = HashSettings(salt=MATCH_SALT, block_size=block_size, keep_boundaries=True)
    # Started first, so the workers load the tokenizer while the index and logs are read.
    with HashPool(db_path, settings, workers=workers) as pool:
        with open_databases(db_path, index_db) as (proxy, index):
            ensure_message_index(proxy, index, say=say)
            # Old-proxy turns carry their first send's usage and start (lib/capture/turn_timing.py).
            result.replay_twins = load_replay_twins(index)
            requests = first_sends({request.request_id: request for request in iter_indexed_requests(index)},
                                   result.replay_twins)
            by_sidecar = {trace.file: _sidecar_lanes(trace, requests, result.problems) for trace in traces}
            needing_plan = [trace for trace in traces if by_sidecar[trace.file] is None]
            plans = _plans_for(needing_plan, jsonl_dir, load_message_ids(index) if needing_plan and jsonl_dir else {},
                               requests, result.problems)
            # Each request with its trace and lane: chunks of hashing work are cut where those change.
            wanted = {r.request_id: (r, (file, lane)) for file, lanes in by_sidecar.items() if lanes
                      for lane, requests_of_lane in lanes.items() for r in requests_of_lane if r}
            for file, (plan, _) in plans.items():
                for lane, requests_of_lane in _plan_lanes(plan).items() if plan else ():
                    for r in requests_of_lane:
                        wanted.setdefault(r.request_id, (r, (file, lane)))
            result.hashed = pool.hash_all([r for r, _ in wanted.values()], result.problems,
                                          group=lambda request: wanted[request.request_id][1], progress=progress)
    for trace in traces:
        lanes = by_sidecar[trace.file]
        if lanes is not None:
            result.traces[trace.file] = TraceMatch("sidecar", lanes)
            continue
        plan, route = plans.get(trace.file, (None, "none"))
        if plan is None:
            result.problems.add("trace_not_matched", f"{trace.file}: {route}")
            result.traces[trace.file] = TraceMatch("none", {lane: [None] * len(rs) for lane, rs in trace.lanes.items()})
        else:
            result.traces[trace.file] = TraceMatch(route, _align_plan(trace, plan, result.hashed, result.problems))
    return result


def _read_sidecar(trace: TraceLanes) -> Optional[list[dict]]:
    manifest = _manifest(trace.directory)
    entries = manifest.get("traces", []) if isinstance(manifest, dict) else []
    named = next((e.get("sidecar") for e in entries if isinstance(e, dict) and e.get("id") == trace.trace_id), None)
    path = trace.directory / (named if isinstance(named, str) else sidecar_file(trace.trace_id))
    if not path.is_file():
        return None
    return [row for _, row in iter_jsonl(path) if isinstance(row, dict)]


def _sidecar_lanes(trace: TraceLanes, requests: dict[str, ProxyRequest],
                   problems: ProblemCounter) -> Optional[dict[str, list[Optional[ProxyRequest]]]]:
    """Lanes matched through sidecar request ids; None when the sidecar is absent or has no ids."""
    rows = _read_sidecar(trace)
    if not rows or not any(isinstance(row.get("request_id"), str) for row in rows):
        return None
    by_position = {(row.get("lane"), row.get("request_index")): row.get("request_id") for row in rows}
    lanes: dict[str, list[Optional[ProxyRequest]]] = {}
    for lane, lane_requests in trace.lanes.items():
        lanes[lane] = []
        for position in range(len(lane_requests)):
            request_id = by_position.get((lane, position))
            request = requests.get(request_id) if isinstance(request_id, str) else None
            if request is None:
                problems.add("sidecar_id_not_in_db" if request_id else "sidecar_row_missing", f"{trace.file} {lane}[{position}]")
            lanes[lane].append(request)
    return lanes


def _manifest(directory: Path) -> Optional[dict]:
    for name in MANIFEST_NAMES:
        path = directory / name
        if path.is_file():
            try:
                document = orjson.loads(path.read_bytes())
            except orjson.JSONDecodeError:
                return None
            return document if isinstance(document, dict) else None
    return None


def _manifest_options(manifest: Optional[dict]) -> Optional[PlanOptions]:
    """The plan options a build recorded, or None when the manifest has none usable."""
    options = manifest.get("options") if manifest else None
    plan = options.get("plan") if isinstance(options, dict) else None
    if not isinstance(plan, dict):
        return None
    known = {f.name for f in fields(PlanOptions)}
    values = {key: value for key, value in plan.items() if key in known}
    for key in ("since", "until"):
        values[key] = parse_timestamp(values[key]) if values.get(key) else None
    try:
        return PlanOptions(**values)
    except TypeError:
        return None


def _inferred_options(trace: TraceLanes) -> PlanOptions:
    return PlanOptions(include_subagents=len(trace.lanes) > 1, anonymize=bool(ANONYMIZED_ID.fullmatch(trace.trace_id)))


def _plans_for(traces: Iterable[TraceLanes], jsonl_dir: Optional[str], message_ids: dict[str, str],
               requests: dict[str, ProxyRequest], problems: ProblemCounter) -> dict[str, tuple[Optional[TracePlan], str]]:
    """(plan, route) per trace file, or (None, reason) when none can be derived."""
    traces = list(traces)
    if not traces:
        return {}
    if jsonl_dir is None:
        return {t.file: (None, "no sidecar request ids; pass --jsonl-dir to match through JSONL message ids") for t in traces}
    conversations = read_conversations(discover_logs(jsonl_dir, problems), problems)
    cache: dict[PlanOptions, dict[str, TracePlan]] = {}
    found: dict[str, tuple[Optional[TracePlan], str]] = {}
    for trace in traces:
        options = _manifest_options(_manifest(trace.directory))
        route = "plan" if options is not None else "jsonl"
        options = options or _inferred_options(trace)
        if options not in cache:
            plans, _ = plan_traces(conversations, message_ids, requests, options)
            cache[options] = {plan.trace_id: plan for plan in plans}
        by_id = cache[options]
        plan = by_id.get(trace.trace_id) or by_id.get(SEGMENT_SUFFIX.sub("", trace.trace_id))
        found[trace.file] = (plan, route) if plan else (None, "no JSONL conversation plans to this trace id")
    return found


def _plan_lanes(plan: TracePlan) -> dict[str, list[ProxyRequest]]:
    return {PARENT_LANE: list(plan.parent), **{sub.label: list(sub.requests) for sub in plan.subagents}}


def _align_plan(trace: TraceLanes, plan: TracePlan, hashed: dict[str, HashedRequest],
                problems: ProblemCounter) -> dict[str, list[Optional[ProxyRequest]]]:
    planned = _plan_lanes(plan)
    lanes = {}
    for lane, lane_requests in trace.lanes.items():
        # The builder leaves out requests whose body it could not hash: so does the alignment.
        candidates = [r for r in planned.get(lane, []) if r.request_id in hashed]
        lanes[lane] = _align(lane_requests, candidates, hashed)
        missing = sum(r is None for r in lanes[lane])
        if missing:
            problems.add("request_not_matched", f"{trace.file} {lane}: {missing} of {len(lane_requests)}", missing)
    return lanes


def _align(lane: list[LaneRequest], candidates: list[ProxyRequest],
           hashed: dict[str, HashedRequest]) -> list[Optional[ProxyRequest]]:
    """One to one when counts and models agree; else in order on model and token count."""
    if len(lane) == len(candidates) and all(a.model == b.model for a, b in zip(lane, candidates)):
        return list(candidates)
    aligned: list[Optional[ProxyRequest]] = []
    start = 0
    for request in lane:
        position = next((k for k in range(start, len(candidates)) if _same(request, candidates[k], hashed)), None)
        aligned.append(None if position is None else candidates[position])
        start = start if position is None else position + 1
    return aligned


def _same(request: LaneRequest, candidate: ProxyRequest, hashed: dict[str, HashedRequest]) -> bool:
    if request.model != candidate.model:
        return False
    api_tokens = candidate.usage.prompt_tokens if candidate.usage else None
    prompt = hashed.get(candidate.request_id)  # none without a DB: the logs' traces hold the API's size
    return request.token_count in (prompt.token_count if prompt else None, api_tokens)


def match_traces_to_logs(traces: Sequence[TraceLanes], *, jsonl_dir: Optional[str]) -> MatchResult:
    """Match every trace's requests to the logs' calls (no DB): by sidecar message id, else by plan."""
    result = MatchResult(source="JSONL logs")
    logs = requests_from_logs(jsonl_dir, result.problems)
    needing_plan = []
    for trace in traces:
        rows = _read_sidecar(trace) or []
        by_position = {(row.get("lane"), row.get("request_index")): row.get("message_id") for row in rows}
        if not any(isinstance(message_id, str) for message_id in by_position.values()):
            needing_plan.append(trace)
            continue
        lanes: dict[str, list[Optional[ProxyRequest]]] = {}
        for lane, lane_requests in trace.lanes.items():
            found = [logs.requests.get(by_position.get((lane, position)) or "") for position in range(len(lane_requests))]
            missing = sum(request is None for request in found)
            if missing:
                result.problems.add("sidecar_message_id_not_in_logs", f"{trace.file} {lane}: {missing} of {len(found)}",
                                    missing)
            lanes[lane] = found
        result.traces[trace.file] = TraceMatch("sidecar", lanes)
    plans = _plans_for(needing_plan, jsonl_dir, {message_id: message_id for message_id in logs.requests},
                       logs.requests, result.problems)
    for trace in needing_plan:
        plan, route = plans[trace.file]
        if plan is None:
            result.problems.add("trace_not_matched", f"{trace.file}: {route}")
            result.traces[trace.file] = TraceMatch("none", {lane: [None] * len(rs) for lane, rs in trace.lanes.items()})
            continue
        planned = _plan_lanes(plan)
        lanes = {lane: _align(lane_requests, planned.get(lane, []), {}) for lane, lane_requests in trace.lanes.items()}
        for lane, found in lanes.items():
            if (missing := sum(request is None for request in found)):
                result.problems.add("request_not_matched", f"{trace.file} {lane}: {missing} of {len(found)}", missing)
        result.traces[trace.file] = TraceMatch(route, lanes)
    return result
