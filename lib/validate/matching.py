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
Traces the JSONL-only route wrote (the manifest's `route`) name log calls, not DB rows: with a DB
they are matched as without one, by message id or by the logs' plans, and each call is then taken
to its DB row through the message index.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import orjson

from lib.cache.ttl_model import prefix_hits
from lib.db import open_databases
from lib.errors import InputError
from lib.capture.jsonl_conversations import Conversation, read_conversations
from lib.capture.jsonl_files import discover_logs
from lib.hashing.jsonl_requests import LogRequests, requests_from_logs
from lib.capture.message_index import ensure_message_index, iter_indexed_requests, load_message_ids
from lib.problems import ProblemCounter
from lib.records import ProxyRequest
from lib.hashing.hash_pool import HashPool, HashSettings
from lib.hashing.request_hashing import HashedRequest
from lib.timestamps import parse_timestamp
from lib.validate.trace_files import iter_jsonl
from lib.capture.db_conversations import ROUTE_DB_ONLY, capture_conversations
from lib.traces.options import ROUTE_JSONL_ONLY
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
            message_ids = load_message_ids(index)

            def by_message_id(message_id: str) -> Optional[ProxyRequest]:
                return requests.get(message_ids.get(message_id, ""))

            from_logs = {trace.file for trace in traces if _built_from_logs(trace)}
            by_sidecar = {trace.file: (
                _sidecar_lanes(trace, "message_id", by_message_id, "sidecar_message_id_not_in_db", result.problems)
                if trace.file in from_logs else
                _sidecar_lanes(trace, "request_id", requests.get, "sidecar_id_not_in_db", result.problems))
                for trace in traces}
            needing_plan = [trace for trace in traces if by_sidecar[trace.file] is None]
            needing_log_plan = [trace for trace in needing_plan if trace.file in from_logs]
            # Read whenever given, even if every trace matches by sidecar ids: their bad lines are counted as the builder does.
            logs = _read_logs(jsonl_dir, result.problems, calls=bool(needing_log_plan)) if jsonl_dir else None
            needing_db_plan = [trace for trace in needing_plan if trace.file not in from_logs]
            plans: dict[str, tuple[Optional[TracePlan], str]] = {}
            if needing_db_plan:
                # The builder's conversations: the logged ones and those of the rows no log names (docs/routes.md),
                # on the same request times as the sidecar route.
                # A run that took no conversation from the logs (--db-only) is re-derived without them, as built.
                with_logs = logs is not None and not all(_built_db_only(trace) for trace in needing_db_plan)
                capture = capture_conversations(proxy, index, logs.conversations if logs and with_logs else None,
                                                ProblemCounter())
                plans = _plans_for(needing_db_plan, capture.conversations, capture.message_ids, capture.requests,
                                   from_logs=with_logs, compared=requests)
            log_planned = {file: _on_db_rows(match, file, by_message_id, result.problems)
                           for file, match in _log_plan_matches(needing_log_plan, logs, result.problems).items()}
            # Each request with its trace and lane: chunks of hashing work are cut where those change.
            matched = {**{file: lanes for file, lanes in by_sidecar.items() if lanes},
                       **{file: match.lanes for file, match in log_planned.items()}}
            wanted = {r.request_id: (r, (file, lane)) for file, lanes in matched.items()
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
        if trace.file in log_planned:
            result.traces[trace.file] = log_planned[trace.file]
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


def _sidecar_lanes(trace: TraceLanes, id_field: str, find: Callable[[str], Optional[ProxyRequest]], not_found: str,
                   problems: ProblemCounter) -> Optional[dict[str, list[Optional[ProxyRequest]]]]:
    """Lanes matched through the sidecar rows' `id_field` (a request id, or a message id); None when the
    sidecar is absent or has no ids. An id `find` does not know is counted as `not_found`."""
    rows = _read_sidecar(trace)
    if not rows or not any(isinstance(row.get(id_field), str) for row in rows):
        return None
    by_position = {(row.get("lane"), row.get("request_index")): row.get(id_field) for row in rows}
    lanes: dict[str, list[Optional[ProxyRequest]]] = {}
    for lane, lane_requests in trace.lanes.items():
        lanes[lane] = []
        for position in range(len(lane_requests)):
            found_id = by_position.get((lane, position))
            request = find(found_id) if isinstance(found_id, str) else None
            if request is None:
                problems.add(not_found if found_id else "sidecar_row_missing", f"{trace.file} {lane}[{position}]")
            lanes[lane].append(request)
    return lanes


def _built_from_logs(trace: TraceLanes) -> bool:
    """Written by the JSONL-only route: its requests are log calls named by message id (docs/jsonl.md)."""
    manifest = _manifest(trace.directory)
    return manifest is not None and manifest.get("route") == ROUTE_JSONL_ONLY


def _built_db_only(trace: TraceLanes) -> bool:
    """Written by a run none of whose conversations came from the logs (docs/routes.md#db-only)."""
    manifest = _manifest(trace.directory)
    return manifest is not None and manifest.get("route") == ROUTE_DB_ONLY


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


def _plans_for(traces: Iterable[TraceLanes], conversations: Optional[dict[str, Conversation]], message_ids: dict[str, str],
               requests: dict[str, ProxyRequest], *, from_logs: bool = True,
               compared: Optional[dict[str, ProxyRequest]] = None) -> dict[str, tuple[Optional[TracePlan], str]]:
    """(plan, route) per trace file, or (None, reason) when none can be derived (`conversations` None: no logs given).

    `requests` carry the builder's times, which order the plan (sub-agents that start in one second); the
    plans then hold the `compared` ones, on the times the sidecar route compares.
    """
    traces = list(traces)
    if not traces:
        return {}
    if conversations is None:
        return {t.file: (None, "no sidecar request ids; pass --jsonl-dir to match through JSONL message ids") for t in traces}
    cache: dict[PlanOptions, dict[str, TracePlan]] = {}
    found: dict[str, tuple[Optional[TracePlan], str]] = {}
    for trace in traces:
        options = _manifest_options(_manifest(trace.directory))
        # `db`: re-derived from the DB alone (docs/routes.md#db-only), the builder's options or inferred ones.
        route = ("plan" if options is not None else "jsonl") if from_logs else "db"
        options = options or _inferred_options(trace)
        if options not in cache:
            plans, _ = plan_traces(conversations, message_ids, requests, options)
            if compared is not None:
                _on_compared_times(plans, compared)
            cache[options] = {plan.trace_id: plan for plan in plans}
        by_id = cache[options]
        plan = by_id.get(trace.trace_id) or by_id.get(SEGMENT_SUFFIX.sub("", trace.trace_id))
        found[trace.file] = (plan, route) if plan else (None, "no conversation of the capture plans to this trace id")
    return found


def _on_compared_times(plans: list[TracePlan], compared: dict[str, ProxyRequest]) -> None:
    for planned in plans:
        planned.parent = [compared.get(r.request_id, r) for r in planned.parent]
        for sub in planned.subagents:
            sub.requests = [compared.get(r.request_id, r) for r in sub.requests]


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
        lanes = _sidecar_lanes(trace, "message_id", logs.requests.get, "sidecar_message_id_not_in_logs", result.problems)
        if lanes is None:
            needing_plan.append(trace)
        else:
            result.traces[trace.file] = TraceMatch("sidecar", lanes)
    result.traces.update(_log_plan_matches(needing_plan, logs, result.problems))
    return result


def _read_logs(jsonl_dir: str, problems: ProblemCounter, *, calls: bool) -> LogRequests:
    """The logs' conversations, and with `calls` every call rebuilt as a request; their bad lines counted once."""
    if calls:
        return requests_from_logs(jsonl_dir, problems)
    found = discover_logs(jsonl_dir, problems)
    if not found:
        raise InputError(f"{jsonl_dir}: no Claude Code JSONL logs found")
    return LogRequests(read_conversations(found, problems), {}, {})


def _log_plan_matches(traces: Sequence[TraceLanes], logs: Optional[LogRequests],
                      problems: ProblemCounter) -> dict[str, TraceMatch]:
    """Traces matched to the logs' calls through the plans the JSONL-only route makes of them (message ids as
    request ids), each lane aligned on model and `in`, the API's prompt size on both sides."""
    plans = _plans_for(traces, logs.conversations if logs else None,
                       {message_id: message_id for message_id in logs.requests} if logs else {}, logs.requests if logs else {})
    matches = {}
    for trace in traces:
        plan, route = plans[trace.file]
        if plan is None:
            problems.add("trace_not_matched", f"{trace.file}: {route}")
            matches[trace.file] = TraceMatch("none", {lane: [None] * len(rs) for lane, rs in trace.lanes.items()})
            continue
        planned = _plan_lanes(plan)
        lanes = {lane: _align(lane_requests, planned.get(lane, []), {}) for lane, lane_requests in trace.lanes.items()}
        for lane, found in lanes.items():
            if (missing := sum(request is None for request in found)):
                problems.add("request_not_matched", f"{trace.file} {lane}: {missing} of {len(found)}", missing)
        matches[trace.file] = TraceMatch(route, lanes)
    return matches


def _on_db_rows(match: TraceMatch, file: str, by_message_id: Callable[[str], Optional[ProxyRequest]],
                problems: ProblemCounter) -> TraceMatch:
    """A match to log calls taken to the DB rows of the same message ids (a call without a row is counted)."""
    lanes: dict[str, list[Optional[ProxyRequest]]] = {}
    for lane, calls in match.lanes.items():
        lanes[lane] = [by_message_id(call.request_id) if call else None for call in calls]
        if (missing := sum(call is not None and row is None for call, row in zip(calls, lanes[lane]))):
            problems.add("turn_not_in_db", f"{file} {lane}: {missing} of {len(calls)}", missing)
    return TraceMatch(match.route, lanes)
