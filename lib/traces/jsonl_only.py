"""build_minimal_traces without a proxy DB: every request rebuilt from the JSONL logs (docs/jsonl.md).

A call's prompt is its `parentUuid` chain (lib/hashing/jsonl_requests.py) and its size is the API's:
`in` = input + cache read + cache creation from the turn's usage. Blocks are laid out in API token
positions (lib/hashing/jsonl_layout.py): first the tools + system prefix the logs never show, one
stable block chain per (agent kind, model family) sized from the usage, then the chain's lines, each
holding the tokens the usage says it added the first time a call sent it. Two calls therefore share
exactly the blocks of the prompt lines they share, as their prompts share a prefix on the API. Times
come from the lines' millisecond timestamps; the logs hold no request timing, so `api_time` and
`ttft` are left out.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Optional

from lib.capture.jsonl_conversations import Conversation
from lib.hashing.jsonl_layout import BlockLayout, prefix_sizes
from lib.hashing.jsonl_requests import RebuiltCall, requests_from_logs
from lib.errors import InputError
from lib.hashing.tokenizer import load_encoder
from lib.traces.options import ROUTE_JSONL_ONLY, TraceOptions, TraceSummary
from lib.traces.plan import TracePlan, plan_traces
from lib.traces.writer import Calibration, Hashed, TraceWriter


def build_traces_from_jsonl(jsonl_dir: Optional[str], output_dir: str, options: TraceOptions, *,
                            progress: Callable[[Iterable, int], Iterable] = lambda items, _total: items
                            ) -> TraceSummary:
    """Run the JSONL-only route and return its summary; outputs as build_traces writes them."""
    from lib.traces.build import finish_run, previous_manifest_files  # the shared tail of a run

    started = time.perf_counter()
    target = Path(output_dir)
    summary = TraceSummary(output_dir=str(target), route=ROUTE_JSONL_ONLY)
    logs = requests_from_logs(jsonl_dir, summary.problems)
    conversations, calls = logs.conversations, logs.calls
    wanted = options.plan.conversation_id
    if wanted and wanted not in conversations:
        raise InputError(f"--conversation-id {wanted}: no such conversation in the JSONL logs ({len(conversations)} found)")
    plans, plan_summary = plan_traces(conversations, {message_id: message_id for message_id in logs.requests},
                                      logs.requests, options.plan)
    summary.problems.merge(plan_summary.problems)
    summary.conversations = plan_summary.conversations
    summary.count_routes(dict.fromkeys(plan.conversation_id for plan in plans))
    summary.dropped_min_requests = plan_summary.dropped_min_requests
    # `in` is the API's prompt size here: recorded as such, never rescaled (no tokenizer calibration).
    options = replace(options, token_count="api")
    target.mkdir(parents=True, exist_ok=True)
    previous_files = previous_manifest_files(target)
    layout = BlockLayout(options.block_size, prefix_sizes(conversations, calls, load_encoder(options.tokenizer), options.block_size))
    calibration = Calibration()
    writer = TraceWriter(target, options, summary, calibration, {}, None)
    for plan in progress(plans, len(plans)):
        writer.write(plan, _hashed(layout, plan, conversations[plan.conversation_id], calls))
    return finish_run(target, plans, writer, options, summary, calibration, previous_files, started)


def _hashed(layout: BlockLayout, plan: TracePlan, conversation: Conversation, calls: dict[str, RebuiltCall]) -> Hashed:
    hashed: Hashed = {}
    for lane in (plan.parent, *(sub.requests for sub in plan.subagents)):
        for request in lane:
            hashed[request.request_id] = layout.request(calls[request.request_id], conversation)
    return hashed
