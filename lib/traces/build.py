"""build_minimal_traces: from DB + JSONL to native traces, sidecars, Mooncake rows and a manifest.

The run is a pipeline over trace plans (lib/traces/plan.py): hash each plan's prompts (in worker
processes with --workers > 1; results come back in plan order so output is identical), then let
lib/traces/writer.py allocate integer ids in file order and write each file atomically. Only one
plan's keys are held at a time, except the compact Mooncake rows, which are the Mooncake file itself.
"""
from __future__ import annotations

import itertools
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import orjson

from lib import __version__
from lib.atomic import atomic_writer, write_atomic
from lib.hashing.billing_header import BillingHeaderTally
from lib.db import open_databases
from lib.errors import InputError
from lib.hashing.hash_pool import HashPool, HashSettings, run_salt
from lib.capture.jsonl_conversations import merge_conversations, read_log_group
from lib.capture.jsonl_files import default_projects_dir, discover_logs, group_logs
from lib.capture.message_index import ensure_message_index, iter_indexed_requests, load_message_ids
from lib.problems import ProblemCounter
from lib.records import ProxyRequest
from lib.traces.db_conversations import DbRoute, conversations_from_db
from lib.traces.options import ROUTE_DB_JSONL, ROUTE_DB_ONLY, TraceOptions, TraceSummary
from lib.traces.plan import TracePlan, plan_traces
from lib.traces.writer import SIDECAR_DIR, Calibration, Hashed, TraceWriter
from lib.capture.unlogged_subagents import PROXY_TIME_SLACK, unlogged_subagent_requests
from lib.capture.turn_timing import answers_logged_at, first_sends, iter_turns, load_replay_twins

# Beside the sidecars, not the traces: replay tools load every *.json of the trace directory.
MANIFEST = f"{SIDECAR_DIR}/manifest.json"
MOONCAKE_FILE = "mooncake_trace.jsonl"
MOONCAKE_SESSIONS_FILE = "mooncake_sessions.jsonl"


# --- hashing, in this process or in workers -----------------------------------------------------



def _plan_requests(plan: TracePlan) -> list[ProxyRequest]:
    return list(plan.parent) + [r for sub in plan.subagents for r in sub.requests]


def _hashed_plans(plans: list[TracePlan], pool: HashPool, problems: ProblemCounter, *, last_pass: bool = False
                  ) -> Iterator[tuple[TracePlan, Hashed]]:
    """Each plan with its hashed prompts, in plan order whatever the number of workers.

    All plans' requests go to the pool as one sequence (a long conversation is spread over
    workers in chunks); a plan's hashing problems are counted when its results are consumed.
    On the `last_pass`, the workers are let go once the last results are in, so they exit
    while the last plan is written.
    """
    requests = [request for plan in plans for request in _plan_requests(plan)]
    conversation = {request.request_id: plan.conversation_id for plan in plans for request in _plan_requests(plan)}
    results = pool.hash_requests(requests, problems, group=lambda request: conversation[request.request_id])
    for number, plan in enumerate(plans, 1):
        hashed = {request.request_id: prompt for request, prompt in itertools.islice(results, len(_plan_requests(plan)))}
        if last_pass and number == len(plans):
            pool.release()
        yield plan, hashed


# --- the run ------------------------------------------------------------------------------------


def _load_inputs(db_path: str, jsonl_dir: Optional[str], index_db: Optional[str], options: TraceOptions,
                 say: Callable[[str], None], summary: TraceSummary, db_only: bool
                 ) -> tuple[list[TracePlan], Any, dict[str, str]]:
    """Plans of the run (conversations from the JSONL, or from the DB alone) and old-proxy twins.

    With workers, this process reads both while they load their tokenizers.
    """
    problems = summary.problems
    no_default_logs = jsonl_dir is None and not default_projects_dir().is_dir()
    found = [] if db_only or no_default_logs else discover_logs(jsonl_dir, problems)
    if not found and jsonl_dir is not None and not db_only:
        # Found first: a folder without logs must fail (exit 2) before an index is written, as in the conversation index.
        raise InputError(f"{jsonl_dir}: no Claude Code JSONL logs found")
    with open_databases(db_path, index_db) as (proxy, index):
        ensure_message_index(proxy, index, say=say)
        logged = merge_conversations(map(read_log_group, group_logs(found).values()), problems) if found else None
        capture = capture_conversations(proxy, index, logged, problems)
        if found and not capture.logs_name_rows:
            say(f"None of the {len(logged or {})} logged conversation(s) names a request of {db_path}: "
                "conversations rebuilt from the DB alone (docs/routes.md#db-only).")
        elif not found and not db_only:
            say(f"No Claude Code logs at {default_projects_dir()}: conversations rebuilt from {db_path} alone "
                "(docs/routes.md#db-only).")
        summary.db_route = capture.db_route.as_dict()
        summary.route_of.update(capture.route_of)
        conversations, message_ids, requests, twins = capture.conversations, capture.message_ids, capture.requests, capture.twins
        wanted = options.plan.conversation_id
        if wanted and wanted not in conversations:
            # An empty output with exit 0 would hide a typo in the id.
            raise InputError(f"--conversation-id {wanted}: no such conversation in the JSONL logs or the DB"
                             f" ({len(conversations)} found)")
    plans, plan_summary = plan_traces(conversations, message_ids, requests, options.plan)
    problems.merge(plan_summary.problems)
    return plans, plan_summary, twins


@dataclass
class CaptureConversations:
    """Every conversation of a capture, each on its route, with what planning needs."""

    conversations: dict[str, Any]  # JSONL `Conversation`s, then those rebuilt from the DB alone
    message_ids: dict[str, str]  # turn message id → request id (a DB-only turn's message id is its request id)
    requests: dict[str, ProxyRequest]
    twins: dict[str, str]
    route_of: dict[str, str]
    db_route: DbRoute
    logs_name_rows: bool


def capture_conversations(proxy: sqlite3.Connection, index: sqlite3.Connection, logged: Optional[dict[str, Any]],
                          problems: ProblemCounter) -> CaptureConversations:
    """The logged conversations (None: no logs) with their DB rows, plus the conversations of the rows no log
    names, rebuilt from the DB alone (docs/routes.md). Shared by the builder and the validator's plans."""
    twins = dict(index.execute("SELECT request_id, twin_of FROM message_index WHERE twin_of IS NOT NULL"))
    replay_twins = load_replay_twins(index)
    indexed = {r.request_id: r for r in iter_indexed_requests(index)}
    message_ids = load_message_ids(index) if logged is not None else {}

    def in_db(turns: Any) -> bool:
        return any(message_ids.get(turn.message_id) in indexed for turn in turns)

    # A logged conversation whose parent turns name no row (the parent's log pruned, or its rows) gives no
    # trace: its sub-agents' rows are rebuilt on the DB-only route, with the parent's if any, rather than lost.
    conversations: dict[str, Any] = {}
    for conversation_id, conversation in (logged or {}).items():
        if in_db(conversation.turns) or not any(in_db(turns) for turns in conversation.subagents.values()):
            conversations[conversation_id] = conversation
        else:
            problems.add("conversation_without_db_requests", conversation_id)
    named = [(message_ids.get(turn.message_id), turn.timestamp) for turn in iter_turns(conversations.values())]
    # Sub-second starts, and each old-proxy turn as its first send (lib/capture/turn_timing.py).
    requests = first_sends(indexed, replay_twins, answers_logged_at(named))
    unnamed = _once_per_api_call(_rows_no_log_names(requests, conversations, message_ids, twins),
                                 [request_id for request_id, _ in named], requests, set(replay_twins.values()), problems)
    # Logs that name no row (another project's, another machine's) hold no turn a row could continue: a
    # capture that starts mid-session is then read as without logs, not left out as continuing them.
    logs_name_rows = any(request_id in indexed for request_id, _ in named)
    from_db, db_route = conversations_from_db(proxy, unnamed, set(replay_twins.values()), beside_logs=logs_name_rows,
                                              subagent_windows=_unlogged_subagent_windows(conversations),
                                              logged_ids=conversations)
    problems.merge(db_route.problems)
    route_of = {**{conversation_id: ROUTE_DB_JSONL for conversation_id in conversations},
                **{conversation_id: ROUTE_DB_ONLY for conversation_id in from_db}}
    conversations.update(from_db)
    message_ids.update({request_id: request_id for request_id in unnamed})
    return CaptureConversations(conversations, message_ids, requests, twins, route_of, db_route, logs_name_rows)


def _once_per_api_call(unnamed: dict[str, ProxyRequest], named: list[Optional[str]], requests: dict[str, ProxyRequest],
                       artifacts: set[str], problems: ProblemCounter) -> dict[str, ProxyRequest]:
    """Without the rows whose answer's message id a logged turn's row or an earlier row already has: one API
    call stored twice (two DBs merged) is traced once (docs/reliability.md#one-request-one-trace)."""
    seen = {requests[request_id].message_id for request_id in named if request_id in requests}
    repeats = set()
    for request in sorted(unnamed.values(), key=lambda r: r.row_id):
        if request.kind != "ok" or not request.message_id or request.request_id in artifacts:
            continue
        if request.message_id in seen:
            repeats.add(request.request_id)
            problems.add("row_repeats_an_api_call", request.request_id)
        seen.add(request.message_id)
    return {request_id: request for request_id, request in unnamed.items() if request_id not in repeats}


def _unlogged_subagent_windows(conversations: dict[str, Any]) -> list[tuple[datetime, datetime]]:
    return [(link.spawn_time - PROXY_TIME_SLACK, link.completion_time + PROXY_TIME_SLACK)
            for conversation in conversations.values() for link in conversation.links
            if not link.has_log and link.completion_time is not None]


def _rows_no_log_names(requests: dict[str, ProxyRequest], conversations: dict[str, Any], message_ids: dict[str, str],
                       twins: dict[str, str]) -> dict[str, ProxyRequest]:
    """Rows for the DB-only route: those no logged turn names, nor their old-proxy twins, nor the rows
    found for a logged sub-agent whose own log is missing (lib/capture/unlogged_subagents.py)."""
    if not conversations:
        return requests
    named = {message_ids[turn.message_id] for turn in iter_turns(conversations.values()) if turn.message_id in message_ids}
    named |= {twins[request_id] for request_id in named if request_id in twins}
    found = unlogged_subagent_requests(conversations.values(), message_ids, requests, ProblemCounter())
    named |= {request.request_id for rows in found.values() for request in rows}
    return {request_id: request for request_id, request in requests.items() if request_id not in named}


def previous_manifest_files(output_dir: Path) -> set[str]:
    """The files the last run's manifest listed (removed at the end when this run does not rewrite them)."""
    try:
        manifest = orjson.loads((output_dir / MANIFEST).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return set()
    files = set(manifest.get("mooncake", [])) if isinstance(manifest, dict) else set()
    for entry in manifest.get("traces", []) if isinstance(manifest, dict) else []:
        if isinstance(entry, dict):
            files.update(str(entry[key]) for key in ("file", "sidecar") if entry.get(key))
    return files


def _remove_stale(output_dir: Path, previous: set[str], current: set[str]) -> int:
    """Delete files the previous run's manifest listed that this run did not write again."""
    removed = 0
    for name in sorted(previous - current):
        target = (output_dir / name).resolve()
        if output_dir.resolve() in target.parents and target.is_file():
            target.unlink()
            removed += 1
    return removed


def build_traces(db_path: str, jsonl_dir: Optional[str], output_dir: str, options: TraceOptions, *,
                 index_db: Optional[str] = None, db_only: bool = False, say: Callable[[str], None] = lambda _: None,
                 progress: Callable[[Iterable, int], Iterable] = lambda items, _total: items) -> TraceSummary:
    """Run the whole pipeline and return its summary (docs/traces.md#options)."""
    started = time.perf_counter()
    target = Path(output_dir)
    summary = TraceSummary(output_dir=str(target))
    # One salt for the whole run: worker processes drawing their own random salts would give
    # equal prefixes different keys, and so different ids, across chunks hashed in other workers.
    settings = HashSettings(salt=run_salt(options.salt), block_size=options.block_size, tokenizer=options.tokenizer)
    # Started before the inputs are read, so that the workers load their tokenizers meanwhile.
    # (Loading it here once, for the workers to inherit, and having them read the JSONL instead
    # left the second core idle during the load: 3 % slower with 2 workers, round 5 of bench/README.md.)
    with HashPool(db_path, settings, workers=options.workers) as pool:
        plans, plan_summary, twins = _load_inputs(db_path, jsonl_dir, index_db, options, say, summary, db_only)
        summary.conversations = plan_summary.conversations
        summary.count_routes(dict.fromkeys(plan.conversation_id for plan in plans))
        summary.dropped_min_requests = plan_summary.dropped_min_requests
        target.mkdir(parents=True, exist_ok=True)
        previous_files = previous_manifest_files(target)
        calibration = Calibration()
        if options.token_count == "api":
            # A first pass fixes one tokenizer→API factor per model family before any id is written,
            # so every request of a family is scaled alike and shared prefixes keep matching.
            for plan, hashed in _hashed_plans(plans, pool, ProblemCounter()):
                _calibrate(calibration, plan, hashed)
            # The memo makes the second pass nearly free: the real tokenizing work is counted here.
            summary.tokens_tokenized += pool.tokens_tokenized
        requested_before, tokenized_before = pool.tokens_requested, pool.tokens_tokenized
        writer = TraceWriter(target, options, summary, calibration, twins, pool.hasher.hasher)
        for plan, hashed in progress(_hashed_plans(plans, pool, summary.problems, last_pass=True), len(plans)):
            if options.token_count != "api":
                _calibrate(calibration, plan, hashed)
            writer.write(plan, hashed)
            _count_billing_headers(summary.billing_header, plan, hashed)
        summary.tokens_requested += pool.tokens_requested - requested_before
        summary.tokens_tokenized += pool.tokens_tokenized - tokenized_before
    return finish_run(target, plans, writer, options, summary, calibration, previous_files, started)


def finish_run(target: Path, plans: list[TracePlan], writer: TraceWriter, options: TraceOptions, summary: TraceSummary,
               calibration: Calibration, previous_files: set[str], started: float) -> TraceSummary:
    """After the traces: the Mooncake files, the manifest, stale files removed, the summary's totals."""
    if options.plan.anonymize:
        summary.problems = _anonymized_problems(summary.problems, _anonymous_names(plans, writer.positions))
    route_of = {plan.trace_id: summary.route_of.get(plan.conversation_id, summary.route) for plan in plans}
    for entry in writer.manifest_entries:
        entry["route"] = route_of.get(entry["id"], summary.route)
    current = {entry[key] for entry in writer.manifest_entries for key in ("file", "sidecar") if entry[key]}
    mooncake_files = _write_mooncake(target, writer, options, summary)
    current.update(mooncake_files)
    manifest = {
        "tool": "build_minimal_traces.py", "version": __version__, "format": "kv-cache-tester native trace",
        # Which requests the traces name (DB rows, or log calls by message id): the validator matches by it.
        "route": summary.route, "conversations_by_route": summary.as_dict()["conversations_by_route"],
        "options": options.for_manifest(), "traces": writer.manifest_entries, "mooncake": mooncake_files,
        "dropped_min_requests": summary.dropped_min_requests,
        "tokenizer_to_api_ratio": calibration.ratios(),
    }
    if options.mooncake_sessions and writer.mooncake is not None:
        stats = writer.mooncake.session_stats
        manifest["mooncake_sessions"] = {"sessions": stats.sessions, "restarts": stats.restarts,
                                         "one_token_rows": len(stats.carried_rows)}
    write_atomic(target / MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    summary.stale_removed = _remove_stale(target, previous_files, current)
    summary.files = sorted(current)
    summary.tokenizer_to_api_ratio = calibration.ratios()
    summary.elapsed_s = round(time.perf_counter() - started, 3)
    return summary


def _anonymous_names(plans: list[TracePlan], positions: dict[str, str]) -> dict[str, str]:
    """Every id the run knows a written name for: requests and messages (trace positions), conversations
    (trace ids) and sub-agents (`trace_0001/agent_001`)."""
    names = dict(positions)
    for plan in plans:
        base = plan.trace_id.removesuffix(f"_s{plan.segment + 1}")
        names.setdefault(plan.conversation_id, base)
        for sub in plan.subagents:
            names.setdefault(sub.agent_id, f"{base}/{sub.label}")
    return names


def _anonymized_problems(problems: ProblemCounter, names: dict[str, str]) -> ProblemCounter:
    """The same counts, each example replaced by its anonymous name or left out: under --anonymize the
    summary and --json name no row, message, session or agent id and no path (README, Anonymization)."""
    written = set(names.values())
    result = ProblemCounter()
    for reason, entry in problems.as_dict().items():
        result.add(reason, count=entry["count"])
        for example in entry["examples"]:
            name = example if example in written else names.get(example)
            if name:
                result.add(reason, name, count=0)
    return result


def _calibrate(calibration: Calibration, plan: TracePlan, hashed: Hashed) -> None:
    for request in list(plan.parent) + [r for sub in plan.subagents for r in sub.requests]:
        prompt = hashed.get(request.request_id)
        if prompt is not None:
            calibration.add(request, prompt)


def _count_billing_headers(tally: BillingHeaderTally, plan: TracePlan, hashed: Hashed) -> None:
    lanes = [("", plan.parent)] + [(sub.label, sub.requests) for sub in plan.subagents]
    for label, requests in lanes:
        for request in requests:
            prompt = hashed.get(request.request_id)
            if prompt is not None:
                tally.add(prompt.billing_header, (plan.trace_id, label))


def _write_mooncake(target: Path, writer: TraceWriter, options: TraceOptions, summary: TraceSummary) -> list[str]:
    collector = writer.mooncake
    if collector is None:
        return []
    with atomic_writer(target / MOONCAKE_FILE, "wb") as stream:
        stream.writelines(collector.flat_lines())
    files = [MOONCAKE_FILE]
    if options.mooncake_sessions:
        with atomic_writer(target / MOONCAKE_SESSIONS_FILE, "wb") as stream:
            stream.writelines(collector.session_lines(writer.session_answer_length))
        files.append(MOONCAKE_SESSIONS_FILE)
        # A turn smaller than its replayed history is sent as one token: the replay runs ahead (docs/traces.md).
        for example in collector.session_stats.carried_rows:
            summary.problems.add("mooncake_session_turn_carried", example)
    summary.mooncake_rows = len(collector)
    return files
