"""build_minimal_traces: from DB + JSONL to native traces, sidecars, Mooncake rows and a manifest.

The run is a pipeline over trace plans (lib/trace_plan.py): hash each plan's prompts (in worker
processes with --workers > 1; results come back in plan order so output is identical), allocate
integer ids in file order, then write each file atomically. Only one plan's keys are held at a
time, except the compact Mooncake rows, which are the Mooncake file itself.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import orjson

from . import __version__
from .atomic import atomic_writer, write_atomic
from .db import open_index_db, open_proxy_db
from .errors import InputError
from .hash_pool import HashPool, HashSettings, run_salt
from .hashing import IdAllocator, PrefixHasher, RequestHashes
from .jsonl import read_conversations
from .log_files import discover_logs
from .message_index import ensure_message_index, iter_indexed_requests, load_message_ids
from .mooncake import MooncakeCollector
from .problems import ProblemCounter
from .records import ProxyRequest
from .request_hashing import HashedRequest
from .trace_format import RequestFacts, SubagentFacts, native_trace
from .trace_plan import PlanOptions, TracePlan, plan_traces

SIDECAR_DIR = "_sidecar"
# Beside the sidecars, not the traces: replay tools load every *.json of the trace directory.
MANIFEST = f"{SIDECAR_DIR}/manifest.json"
MOONCAKE_FILE = "mooncake_trace.jsonl"
MOONCAKE_SESSIONS_FILE = "mooncake_sessions.jsonl"


@dataclass(frozen=True)
class TraceOptions:
    """Every option of build_minimal_traces.py that shapes the output."""

    plan: PlanOptions = field(default_factory=PlanOptions)
    block_size: int = 64
    hash_id_scope: str = "local"
    salt: Optional[str] = None
    formats: tuple[str, ...] = ("kv",)
    mooncake_block_size: int = 512
    mooncake_sessions: bool = False
    workers: int = 1
    token_count: str = "tokenizer"
    tokenizer: str = "cl100k_base"

    def for_manifest(self) -> dict[str, Any]:
        """The options as recorded in manifest.json: never the salt, no ids when anonymized."""
        plan = asdict(self.plan)
        plan["since"] = self.plan.since.isoformat() if self.plan.since and not self.plan.anonymize else None
        plan["until"] = self.plan.until.isoformat() if self.plan.until and not self.plan.anonymize else None
        if self.plan.anonymize:
            plan["conversation_id"] = None
        options = asdict(self)
        options["plan"] = plan
        options["salt"] = "given" if self.salt is not None else "random"
        options["formats"] = list(self.formats)
        # Worker count changes speed, never output: leaving it out keeps runs byte-identical.
        del options["workers"]
        return options


@dataclass
class TraceSummary:
    """What a run wrote and skipped."""

    output_dir: str
    traces_written: int = 0
    requests_written: int = 0
    subagents_written: int = 0
    subagent_requests_written: int = 0
    conversations: int = 0
    dropped_min_requests: int = 0
    mooncake_rows: int = 0
    files: list[str] = field(default_factory=list)
    stale_removed: int = 0
    tokens_requested: int = 0
    tokens_tokenized: int = 0
    tokenizer_to_api_ratio: dict[str, float] = field(default_factory=dict)
    problems: ProblemCounter = field(default_factory=ProblemCounter)
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["problems"] = self.problems.as_dict()
        data["memo_ratio"] = round(self.tokens_tokenized / self.tokens_requested, 4) if self.tokens_requested else 0.0
        return data

    def describe(self) -> str:
        memo = self.tokens_tokenized / self.tokens_requested if self.tokens_requested else 0.0
        text = (
            f"Wrote {self.traces_written} trace(s) to {self.output_dir}: {self.requests_written} parent requests, "
            f"{self.subagents_written} sub-agents with {self.subagent_requests_written} requests"
            f"{f', {self.mooncake_rows} Mooncake rows' if self.mooncake_rows else ''}. "
            f"{self.conversations} conversation(s) with DB requests; dropped {self.dropped_min_requests} "
            f"under --min-requests. Tokenized {self.tokens_tokenized:,} of {self.tokens_requested:,} prompt tokens "
            f"({memo:.1%}). {self.elapsed_s:.2f} s."
        )
        ratios = ", ".join(f"{family} {ratio:.2f}" for family, ratio in sorted(self.tokenizer_to_api_ratio.items()))
        if ratios:
            text += f" Tokenizer/API token ratio: {ratios}."
        if self.problems:
            text += f" Skipped or degraded: {self.problems.describe()}."
        return text


def model_family(model: str) -> str:
    """`claude-opus-4-6` → `opus`: the unit of the calibrated token ratio (SPEC §4)."""
    for family in ("opus", "sonnet", "haiku"):
        if family in model:
            return family
    return model or "unknown"


# --- hashing, in this process or in workers -----------------------------------------------------

Hashed = dict[str, Optional[HashedRequest]]


def _plan_requests(plan: TracePlan) -> list[ProxyRequest]:
    return list(plan.parent) + [r for sub in plan.subagents for r in sub.requests]


def _hashed_plans(plans: list[TracePlan], pool: HashPool, problems: ProblemCounter) -> Iterator[tuple[TracePlan, Hashed]]:
    """Each plan with its hashed prompts, in plan order whatever the number of workers.

    All plans' requests go to the pool as one sequence (a long conversation is spread over
    workers in chunks); a plan's hashing problems are counted when its results are consumed.
    """
    requests = [request for plan in plans for request in _plan_requests(plan)]
    conversation = {request.request_id: plan.conversation_id for plan in plans for request in _plan_requests(plan)}
    results = pool.hash_requests(requests, problems, group=lambda request: conversation[request.request_id])
    for plan in plans:
        yield plan, {request.request_id: prompt for request, prompt in itertools.islice(results, len(_plan_requests(plan)))}


# --- facts and ids ------------------------------------------------------------------------------


def _facts(request: ProxyRequest, hashed: HashedRequest, hashes: RequestHashes, ids: list[int]) -> RequestFacts:
    usage = request.usage
    return RequestFacts(
        start_s=request.timestamp.timestamp(),
        end_s=request.completed_at.timestamp() if request.completed_at else None,
        is_streaming=request.is_streaming,
        model=request.model,
        token_count=hashes.token_count,
        hash_ids=ids,
        output_tokens=usage.output_tokens if usage else 0,
        stop_reason=request.stop_reason or "",
        output_types=request.output_types,
        api_time_s=request.api_time_s,
        ttft_s=request.ttft_s,
        last_message_types=hashed.last_message_types,
        all_message_types=hashed.all_message_types,
    )


class _Calibration:
    """Per model family: tokenizer tokens vs the API's prompt tokens (SPEC §4, calibrated counts)."""

    def __init__(self) -> None:
        self.tokenizer: dict[str, int] = {}
        self.api: dict[str, int] = {}

    def add(self, request: ProxyRequest, hashed: HashedRequest) -> None:
        if request.usage and request.usage.prompt_tokens:
            family = model_family(request.model)
            self.tokenizer[family] = self.tokenizer.get(family, 0) + hashed.token_count
            self.api[family] = self.api.get(family, 0) + request.usage.prompt_tokens

    def ratios(self) -> dict[str, float]:
        """Tokenizer tokens per API token, per family."""
        return {f: round(self.tokenizer[f] / self.api[f], 4) for f in self.tokenizer if self.api.get(f)}

    def factor(self, model: str) -> Optional[float]:
        """API tokens per tokenizer token for `model`'s family."""
        family = model_family(model)
        if self.tokenizer.get(family) and self.api.get(family):
            return self.api[family] / self.tokenizer[family]
        return None


# --- writing --------------------------------------------------------------------------------------


class _TraceWriter:
    """Allocates ids in file order and writes one plan's native file, sidecar and Mooncake rows."""

    def __init__(self, output_dir: Path, options: TraceOptions, summary: TraceSummary,
                 calibration: _Calibration, twins: dict[str, str], scaler: PrefixHasher) -> None:
        self.output_dir = output_dir
        self.scaler = scaler
        self.options = options
        self.summary = summary
        self.calibration = calibration
        self.twins = twins
        self.global_ids = IdAllocator()
        self.local_ids = IdAllocator()
        self.current_conversation: Optional[str] = None
        self.mooncake = (MooncakeCollector(base_block_size=options.block_size, block_size=options.mooncake_block_size)
                         if "mooncake" in options.formats else None)
        self.manifest_entries: list[dict[str, Any]] = []

    def _ids(self, conversation_id: str) -> IdAllocator:
        if self.options.hash_id_scope == "global":
            return self.global_ids
        if conversation_id != self.current_conversation:
            # Local scope: one namespace per parent conversation, shared by its split segments
            # and sub-agents (SPEC §4.7); plans of one conversation are consecutive.
            self.current_conversation, self.local_ids = conversation_id, IdAllocator()
        return self.local_ids

    def _hashes(self, request: ProxyRequest, hashed: HashedRequest) -> RequestHashes:
        if self.options.token_count != "api" or not request.usage or not request.usage.prompt_tokens:
            return hashed.hashes
        factor = self.calibration.factor(request.model)
        if factor is None:
            return hashed.hashes
        return self.scaler.scale_positions(hashed.hashes, api_token_count=request.usage.prompt_tokens, factor=factor)

    def _lane_facts(self, requests: list[ProxyRequest], hashed: Hashed, ids: IdAllocator, lane: str,
                    sidecar: list[dict[str, Any]], trace_id: str, earlier: Sequence[RequestFacts] = ()
                    ) -> tuple[list[RequestFacts], list[HashedRequest]]:
        """Facts of one lane's requests; `earlier` are the lane's facts before a cut by sub-agent markers."""
        facts, used = [], []
        previous_end = _end(earlier[-1]) if earlier else None
        for request in requests:
            prompt = hashed.get(request.request_id)
            if prompt is None:
                continue
            hashes = self._hashes(request, prompt)
            request_facts = _facts(request, prompt, hashes, ids.ids(hashes.block_keys, lane))
            if self.mooncake is not None:
                session = trace_id if lane == "parent" else f"{trace_id}/{lane}"
                self.mooncake.add(session=session, start_s=request_facts.start_s, previous_end_s=previous_end,
                                  hashes=hashes, output_length=request_facts.output_tokens)
            previous_end = _end(request_facts)
            index = len(earlier) + len(facts)
            sidecar.append(self._sidecar_row(trace_id, lane, index, request, prompt, hashes))
            # A degraded row (broken chunk, missing usage...) is written, so name it here too (SPEC §9).
            example = f"{trace_id}/{lane}#{index}" if self.options.plan.anonymize else request.request_id
            for reason in request.problems:
                self.summary.problems.add(reason, example)
            facts.append(request_facts)
            used.append(prompt)
        return facts, used

    def _sidecar_row(self, trace_id: str, lane: str, index: int, request: ProxyRequest,
                     prompt: HashedRequest, hashes: RequestHashes) -> dict[str, Any]:
        usage = request.usage
        row: dict[str, Any] = {
            "trace_id": trace_id, "lane": lane, "request_index": index, "model": request.model,
            "type": "s" if request.is_streaming else "n", "in": hashes.token_count,
            "tokenizer_tokens": prompt.token_count, "api_prompt_tokens": usage.prompt_tokens if usage else None,
            "usage": None if usage is None else {
                "input_tokens": usage.input_tokens, "cache_read_input_tokens": usage.cache_read_input_tokens,
                "cache_creation_input_tokens": usage.cache_creation_input_tokens,
                "cache_creation_5m_tokens": usage.cache_creation_5m_tokens,
                "cache_creation_1h_tokens": usage.cache_creation_1h_tokens, "output_tokens": usage.output_tokens,
            },
            "breakpoints": list(prompt.breakpoints), "has_old_proxy_twin": request.request_id in self.twins,
            "proxy_generation": _generation(request, self.twins),
        }
        if not self.options.plan.anonymize:
            row.update(
                request_id=request.request_id, row_id=request.row_id, message_id=request.message_id,
                anthropic_request_id=request.anthropic_request_id, timestamp=request.timestamp.isoformat(),
                completed_at=request.completed_at.isoformat() if request.completed_at else None,
            )
        return row

    def write(self, plan: TracePlan, hashed: Hashed) -> None:
        """Write one plan: native JSON, sidecar JSONL, and its Mooncake rows."""
        ids = self._ids(plan.conversation_id)
        sidecar: list[dict[str, Any]] = []
        origin = plan.parent[0].timestamp.timestamp()
        order: list[tuple[float, int, Any]] = [(r.timestamp.timestamp(), 0, r) for r in plan.parent]
        order += [(max(sub.spawn_s, origin), 1, sub) for sub in plan.subagents]
        order.sort(key=lambda entry: (entry[0], entry[1]))
        parent_facts: list[RequestFacts] = []
        parent_prompts: list[HashedRequest] = []
        subagents: list[SubagentFacts] = []
        # Ids are allocated in file order: parent requests and sub-agents interleaved by time.
        pending_parent: list[ProxyRequest] = []
        for _, kind, entry in order:
            if kind == 0:
                pending_parent.append(entry)
                continue
            facts, prompts = self._lane_facts(pending_parent, hashed, ids, "parent", sidecar, plan.trace_id, parent_facts)
            parent_facts += facts
            parent_prompts += prompts
            pending_parent = []
            sub_facts, sub_prompts = self._lane_facts(entry.requests, hashed, ids, entry.label, sidecar, plan.trace_id)
            if sub_facts:
                subagents.append(_subagent_facts(entry, sub_facts, sub_prompts))
        facts, prompts = self._lane_facts(pending_parent, hashed, ids, "parent", sidecar, plan.trace_id, parent_facts)
        parent_facts += facts
        parent_prompts += prompts
        if not parent_facts:
            self.summary.problems.add("trace_without_usable_requests", plan.trace_id)
            return
        document = native_trace(
            trace_id=plan.trace_id, block_size=self.options.block_size, hash_id_scope=self.options.hash_id_scope,
            tool_tokens=parent_prompts[0].tool_tokens, system_tokens=parent_prompts[0].system_tokens,
            parent=parent_facts, subagents=subagents, include_subagents=self.options.plan.include_subagents,
        )
        # `--format mooncake` asks for the Mooncake file only; the sidecar still maps its sessions.
        file_name = f"{plan.trace_id}.json" if "kv" in self.options.formats else None
        if file_name is not None:
            write_atomic(self.output_dir / file_name, orjson.dumps(document))
        write_atomic(self.output_dir / SIDECAR_DIR / f"{plan.trace_id}.jsonl",
                     b"".join(orjson.dumps(row) + b"\n" for row in sidecar))
        self.summary.traces_written += 1
        self.summary.requests_written += len(parent_facts)
        self.summary.subagents_written += len(subagents)
        self.summary.subagent_requests_written += sum(len(sub.requests) for sub in subagents)
        entry: dict[str, Any] = {
            "id": plan.trace_id, "file": file_name, "sidecar": f"{SIDECAR_DIR}/{plan.trace_id}.jsonl",
            "requests": len(parent_facts), "subagents": len(subagents),
            "subagent_requests": sum(len(sub.requests) for sub in subagents), "segment": plan.segment + 1,
        }
        if not self.options.plan.anonymize:
            entry["conversation_id"] = plan.conversation_id
        self.manifest_entries.append(entry)


def _end(facts: RequestFacts) -> float:
    """When a request finished (its start when the proxy recorded no completion)."""
    return facts.end_s if facts.end_s is not None else facts.start_s


def _generation(request: ProxyRequest, twins: dict[str, str]) -> str:
    """Which proxy wrote this turn (SPEC §1.4): a twin pair means the old proxy, a lone stream the fixed one."""
    if request.request_id in twins:
        return "old"
    return "fixed" if request.is_streaming else "unknown"


def _subagent_facts(sub: Any, facts: list[RequestFacts], prompts: list[HashedRequest]) -> SubagentFacts:
    link = sub.link
    return SubagentFacts(
        spawn_s=sub.spawn_s, agent_label=sub.label,
        subagent_type=link.subagent_type if link else "", duration_ms=link.duration_ms if link else None,
        total_tokens=link.total_tokens if link else None, tool_use_count=link.tool_use_count if link else None,
        status=link.status if link else "unknown", tool_tokens=prompts[0].tool_tokens,
        system_tokens=prompts[0].system_tokens, requests=facts,
    )


# --- the run ------------------------------------------------------------------------------------


def _load_inputs(db_path: str, jsonl_dir: Optional[str], index_db: Optional[str], options: TraceOptions,
                 say: Callable[[str], None], problems: ProblemCounter) -> tuple[list[TracePlan], Any, dict[str, str]]:
    """Plans of the run (conversations from the JSONL, requests from the message index) and twins."""
    proxy = open_proxy_db(db_path)
    index = open_index_db(db_path, index_db)
    try:
        ensure_message_index(proxy, index, say=say)
        conversations = read_conversations(discover_logs(jsonl_dir, problems), problems)
        wanted = options.plan.conversation_id
        if wanted and wanted not in conversations:
            # An empty output with exit 0 would hide a typo in the id.
            raise InputError(f"--conversation-id {wanted}: no such conversation in the JSONL logs ({len(conversations)} found)")
        message_ids = load_message_ids(index)
        requests = {r.request_id: r for r in iter_indexed_requests(proxy, index)}
        twins = dict(index.execute("SELECT request_id, twin_of FROM message_index WHERE twin_of IS NOT NULL"))
    finally:
        index.close()
        proxy.close()
    plans, plan_summary = plan_traces(conversations, message_ids, requests, options.plan)
    problems.merge(plan_summary.problems)
    return plans, plan_summary, twins


def _previous_manifest_files(output_dir: Path) -> set[str]:
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
                 index_db: Optional[str] = None, say: Callable[[str], None] = lambda _: None,
                 progress: Callable[[Iterable, int], Iterable] = lambda items, _total: items) -> TraceSummary:
    """Run the whole pipeline and return its summary (SPEC §3 item 3, §5)."""
    started = time.perf_counter()
    target = Path(output_dir)
    summary = TraceSummary(output_dir=str(target))
    # One salt for the whole run: worker processes drawing their own random salts would give
    # equal prefixes different keys, and so different ids, across chunks hashed in other workers.
    settings = HashSettings(salt=run_salt(options.salt), block_size=options.block_size, tokenizer=options.tokenizer)
    # Started before the inputs are read, so the workers load the tokenizer meanwhile.
    with HashPool(db_path, settings, workers=options.workers) as pool:
        plans, plan_summary, twins = _load_inputs(db_path, jsonl_dir, index_db, options, say, summary.problems)
        summary.conversations = plan_summary.conversations
        summary.dropped_min_requests = plan_summary.dropped_min_requests
        target.mkdir(parents=True, exist_ok=True)
        previous_files = _previous_manifest_files(target)
        calibration = _Calibration()
        if options.token_count == "api":
            # A first pass fixes one tokenizer→API factor per model family before any id is written,
            # so every request of a family is scaled alike and shared prefixes keep matching.
            for plan, hashed in _hashed_plans(plans, pool, ProblemCounter()):
                _calibrate(calibration, plan, hashed)
            # The memo makes the second pass nearly free: the real tokenizing work is counted here.
            summary.tokens_tokenized += pool.tokens_tokenized
        requested_before, tokenized_before = pool.tokens_requested, pool.tokens_tokenized
        writer = _TraceWriter(target, options, summary, calibration, twins, pool.hasher.hasher)
        for plan, hashed in progress(_hashed_plans(plans, pool, summary.problems), len(plans)):
            if options.token_count != "api":
                _calibrate(calibration, plan, hashed)
            writer.write(plan, hashed)
        summary.tokens_requested += pool.tokens_requested - requested_before
        summary.tokens_tokenized += pool.tokens_tokenized - tokenized_before

    current = {entry[key] for entry in writer.manifest_entries for key in ("file", "sidecar") if entry[key]}
    mooncake_files = _write_mooncake(target, writer.mooncake, options, summary)
    current.update(mooncake_files)
    manifest = {
        "tool": "build_minimal_traces.py", "version": __version__, "format": "kv-cache-tester native trace",
        "options": options.for_manifest(), "traces": writer.manifest_entries, "mooncake": mooncake_files,
        "dropped_min_requests": summary.dropped_min_requests,
        "tokenizer_to_api_ratio": calibration.ratios(),
    }
    write_atomic(target / MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    summary.stale_removed = _remove_stale(target, previous_files, current)
    summary.files = sorted(current)
    summary.tokenizer_to_api_ratio = calibration.ratios()
    summary.elapsed_s = round(time.perf_counter() - started, 3)
    return summary


def _calibrate(calibration: _Calibration, plan: TracePlan, hashed: Hashed) -> None:
    for request in list(plan.parent) + [r for sub in plan.subagents for r in sub.requests]:
        prompt = hashed.get(request.request_id)
        if prompt is not None:
            calibration.add(request, prompt)


def _write_mooncake(target: Path, collector: Optional[MooncakeCollector], options: TraceOptions,
                    summary: TraceSummary) -> list[str]:
    if collector is None:
        return []
    with atomic_writer(target / MOONCAKE_FILE, "wb") as stream:
        stream.writelines(collector.flat_lines())
    files = [MOONCAKE_FILE]
    if options.mooncake_sessions:
        with atomic_writer(target / MOONCAKE_SESSIONS_FILE, "wb") as stream:
            stream.writelines(collector.session_lines())
        files.append(MOONCAKE_SESSIONS_FILE)
    summary.mooncake_rows = len(collector)
    return files
