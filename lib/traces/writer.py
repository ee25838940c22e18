"""Writing one trace plan: ids in file order, the native file, its sidecar rows and Mooncake rows.

Split from lib/traces/build.py (the run): this module turns hashed requests into the docs/traces.md outputs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import orjson

from lib.atomic import write_atomic
from lib.hashing.block_hashes import IdAllocator, PrefixHasher, RequestHashes
from lib.traces.mooncake import MooncakeCollector
from lib.records import ProxyRequest
from lib.hashing.request_hashing import HashedRequest
from lib.hashing.tokenizer import model_family
from lib.traces.native_format import RequestFacts, SubagentFacts, native_trace
from lib.traces.options import TraceOptions, TraceSummary
from lib.traces.plan import TracePlan

SIDECAR_DIR = "_sidecar"
Hashed = dict[str, Optional[HashedRequest]]


def sidecar_file(trace_id: str) -> str:
    """Where a trace's sidecar rows go, relative to the trace directory."""
    return f"{SIDECAR_DIR}/{trace_id}.jsonl"


# --- facts and ids ------------------------------------------------------------------------------


def _facts(request: ProxyRequest, hashed: HashedRequest, hashes: RequestHashes, ids: list[int],
           previous_end_s: Optional[float], timing_recorded: bool = True) -> RequestFacts:
    usage = request.usage
    # A lane sends one request at a time: it never starts before the previous one ended (lib/capture/turn_timing.py).
    start_s = request.timestamp.timestamp()
    if previous_end_s is not None:
        start_s = max(start_s, previous_end_s)
    end_s = request.completed_at.timestamp() if request.completed_at else None
    if request.api_time_s is not None:
        end_s = start_s + request.api_time_s
    return RequestFacts(
        start_s=start_s,
        end_s=end_s,
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
        timing_recorded=timing_recorded,
    )


class Calibration:
    """Per model family: tokenizer tokens vs the API's prompt tokens (docs/hashing.md#calibrated-counts)."""

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


class TraceWriter:
    """Allocates ids in file order and writes one plan's native file, sidecar and Mooncake rows."""

    def __init__(self, output_dir: Path, options: TraceOptions, summary: TraceSummary,
                 calibration: Calibration, twins: dict[str, str], scaler: Optional[PrefixHasher]) -> None:
        self.output_dir = output_dir
        self.scaler = scaler
        # Request and message id → trace position (`trace_0001/parent#3`), to name problems under --anonymize.
        self.positions: dict[str, str] = {}
        self.options = options
        self.summary = summary
        self.calibration = calibration
        self.twins = twins
        # Raw block keys are chained; scaled ones (--token-count api) need not be across model families.
        self.chained_keys = options.token_count != "api"
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
            # and sub-agents (docs/hashing.md#integer-ids-and-scopes); plans of one conversation are consecutive.
            self.current_conversation, self.local_ids = conversation_id, IdAllocator()
        return self.local_ids

    def _hashes(self, request: ProxyRequest, hashed: HashedRequest) -> RequestHashes:
        if self.options.token_count != "api" or not request.usage or not request.usage.prompt_tokens:
            return hashed.hashes
        factor = self.calibration.factor(request.model)
        if factor is None or self.scaler is None:  # uncalibrated, or already in API positions (JSONL-only)
            return hashed.hashes
        return self.scaler.scale_positions(hashed.hashes, api_token_count=request.usage.prompt_tokens, factor=factor)

    def session_answer_length(self, model: str, output_tokens: int) -> int:
        """An answer's size in the unit of `in`, for the Mooncake session arithmetic (docs/traces.md).

        With `--token-count api` both are API tokens. Otherwise `in` counts cl100k tokens, so the
        API's output count is scaled by the family's calibrated ratio (final once all plans are written).
        """
        factor = self.calibration.factor(model) if self.options.token_count != "api" else None
        if factor is None or not output_tokens:
            return output_tokens
        return max(1, round(output_tokens / factor))

    def _lane_facts(self, requests: list[ProxyRequest], hashed: Hashed, ids: IdAllocator, lane: str,
                    sidecar: list[dict[str, Any]], trace_id: str, earlier: Sequence[RequestFacts] = ()
                    ) -> tuple[list[RequestFacts], list[HashedRequest]]:
        """Facts of one lane's requests; `earlier` are the lane's facts before a cut by sub-agent markers."""
        facts: list[RequestFacts] = []
        used: list[HashedRequest] = []
        previous_end = _end(earlier[-1]) if earlier else None
        for request in requests:
            prompt = hashed.get(request.request_id)
            if prompt is None:
                continue
            hashes = self._hashes(request, prompt)
            request_facts = _facts(request, prompt, hashes, ids.ids(hashes.block_keys, lane, chained=self.chained_keys),
                                   previous_end, timing_recorded=self.summary.requests_from_db)
            if self.mooncake is not None:
                session = trace_id if lane == "parent" else f"{trace_id}/{lane}"
                self.mooncake.add(session=session, start_s=request_facts.start_s, previous_end_s=previous_end,
                                  hashes=hashes, output_length=request_facts.output_tokens, model=request.model)
            previous_end = _end(request_facts)
            index = len(earlier) + len(facts)
            sidecar.append(self._sidecar_row(trace_id, lane, index, request, prompt, hashes))
            # A degraded row (broken chunk, missing usage...) is written, so name it here too (docs/reliability.md#bad-input).
            position = f"{trace_id}/{lane}#{index}"
            self.positions[request.request_id] = position
            if request.message_id:
                self.positions[request.message_id] = position
            example = position if self.options.plan.anonymize else request.request_id
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
            # JSONL-only prompts are laid out in API tokens: no tokenizer count exists.
            "tokenizer_tokens": prompt.token_count if self.summary.requests_from_db else None,
            "api_prompt_tokens": usage.prompt_tokens if usage else None,
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
            aiperf_clock=self.options.subagent_clock == "aiperf",
        )
        # `--format mooncake` asks for the Mooncake file only; the sidecar still maps its sessions.
        file_name = f"{plan.trace_id}.json" if "kv" in self.options.formats else None
        if file_name is not None:
            write_atomic(self.output_dir / file_name, orjson.dumps(document))
        write_atomic(self.output_dir / sidecar_file(plan.trace_id),
                     b"".join(orjson.dumps(row) + b"\n" for row in sidecar))
        self.summary.traces_written += 1
        self.summary.requests_written += len(parent_facts)
        self.summary.subagents_written += len(subagents)
        self.summary.subagent_requests_written += sum(len(sub.requests) for sub in subagents)
        listing: dict[str, Any] = {
            "id": plan.trace_id, "file": file_name, "sidecar": sidecar_file(plan.trace_id),
            "requests": len(parent_facts), "subagents": len(subagents),
            "subagent_requests": sum(len(sub.requests) for sub in subagents), "segment": plan.segment + 1,
        }
        if not self.options.plan.anonymize:
            listing["conversation_id"] = plan.conversation_id
        self.manifest_entries.append(listing)


def _end(facts: RequestFacts) -> float:
    """When a request finished (its start when the proxy recorded no completion)."""
    return facts.end_s if facts.end_s is not None else facts.start_s


def _generation(request: ProxyRequest, twins: dict[str, str]) -> str:
    """Which proxy wrote this turn (docs/inputs.md#old-proxy-twins): a twin pair means the old proxy, a lone stream the fixed one."""
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
