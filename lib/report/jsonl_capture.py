"""The visualizer without a proxy DB: a capture read from the Claude Code logs alone (docs/jsonl.md#the-dashboard).

Each API call is rebuilt from its log and its blocks laid out in API token positions exactly as the
JSONL-only trace route does (lib/hashing/jsonl_requests.py, lib/hashing/jsonl_layout.py). The calls
become the `Capture` the DB route selects from (request id = message id), so `combined`, one
conversation, `all` and `--newest` select the same way. What only the proxy records is named, not
invented: `UNAVAILABLE` says why each such figure is missing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Optional

from lib.capture.conversation_index import IndexedConversation, IndexedTurn
from lib.capture.jsonl_conversations import Conversation
from lib.capture.jsonl_files import default_projects_dir
from lib.hashing.jsonl_layout import BlockLayout, prefix_sizes
from lib.hashing.jsonl_requests import requests_from_logs
from lib.hashing.request_hashing import HashedRequest
from lib.hashing.tokenizer import DEFAULT_TOKENIZER, load_encoder
from lib.problems import ProblemCounter
from lib.capture.db_conversations import ROUTE_JSONL_ONLY
from lib.records import AssistantTurn, ProxyRequest
from lib.report.selection import COMBINED, Capture, Selection

# What the logs do not hold, keyed by the figure that needs it.
API_MODEL = "API model"
REQUEST_TIMING = "api_time and ttft"
CALIBRATION = "tokenizer calibration"
PROXY_ROWS = "proxy rows and their data quality"
UNAVAILABLE: dict[str, str] = {
    API_MODEL: "it caches at the request bodies' cache_control breakpoints, which the logs do not record",
    REQUEST_TIMING: "the logs record no request timing; a call's blocks become readable at its last logged line",
    CALIBRATION: "blocks sit in the API's token positions from the logs' usage, so no tokenizer/API ratio is measured "
                 "(only each lane's first prompt is counted, to size the unseen tools + system prefix, docs/jsonl.md)",
    PROXY_ROWS: "the logs hold only the answered calls, not the proxy's rows (streaming, error and pending rows, "
                "old-proxy twins, the proxy generation)",
}
# The closing paragraph's line, as the trace builder says its route.
ROUTE_SUMMARY = (f"Route {ROUTE_JSONL_ONLY}: the API figures are the usage the logs record, blocks lie in its token "
                 "positions (the unseen tools + system prefix is one block chain per agent kind and model family); "
                 f"not available: {', '.join(UNAVAILABLE)} (see each report's data-quality notes).")
ROUTE_NOTE = ("Route JSONL-only: every request rebuilt from the Claude Code logs, the API figures are the usage "
              "they record (docs/jsonl.md#the-dashboard).")


def unavailable_line(what: str) -> str:
    """`api_time and ttft: not available on the JSONL-only route: <why>`."""
    return f"{what}: not available on the {ROUTE_JSONL_ONLY} route: {UNAVAILABLE[what]}"


@dataclass
class LogCapture:
    """What a JSONL-only run selects from: the capture, every call's blocks, and the problems found reading the
    logs (`""`: of no one conversation) and rebuilding the calls (per conversation)."""

    capture: Capture
    hashed: dict[str, HashedRequest]
    problems: dict[str, ProblemCounter] = field(default_factory=dict)


def load_log_capture(jsonl_dir: Optional[str], *, block_size: int, since: Optional[datetime],
                     until: Optional[datetime]) -> LogCapture:
    """Read every conversation under `jsonl_dir` (default ~/.claude/projects); InputError when it holds no log."""
    problems = {"": ProblemCounter()}
    logs = requests_from_logs(jsonl_dir, problems[""])
    layout = BlockLayout(block_size, prefix_sizes(logs.conversations, logs.calls, load_encoder(DEFAULT_TOKENIZER), block_size))
    hashed: dict[str, HashedRequest] = {}
    for conversation in logs.conversations.values():
        found = problems.setdefault(conversation.conversation_id, ProblemCounter())
        for turns in _lanes(conversation):
            for turn in turns:
                if turn.message_id not in logs.requests:
                    found.add("turn_not_rebuilt", turn.message_id)
            # Each lane in time order, as the trace route lays out a plan: a line's share of the
            # tokens is fixed by the first call that sends it.
            for request in sorted((logs.requests[t.message_id] for t in turns if t.message_id in logs.requests),
                                  key=lambda r: (r.timestamp, r.row_id)):
                if request.usage is not None:
                    hashed[request.request_id] = layout.request(logs.calls[request.request_id], conversation)
    requests = tuple(sorted((r for r in logs.requests.values() if _in_window(r, since, until)),
                            key=lambda r: (r.timestamp, r.row_id)))
    conversations = sorted(map(_indexed, logs.conversations.values()),
                           key=lambda c: (c.start is None, c.start or datetime.min, c.conversation_id))
    source = str(jsonl_dir or default_projects_dir())
    return LogCapture(Capture(source, requests, {}, tuple(conversations), generation=""), hashed, problems)


def mark_jsonl_only(selection: Selection, capture: LogCapture) -> None:
    """Label a selection as JSONL-only, with the problems of its conversation (`combined`: of every log)."""
    selection.route = ROUTE_JSONL_ONLY
    selection.unavailable = tuple(UNAVAILABLE)
    selection.notes.insert(0, ROUTE_NOTE)
    for conversation_id, found in capture.problems.items():
        if selection.name == COMBINED or conversation_id == selection.name:
            selection.problems.merge(found)


def _lanes(conversation: Conversation) -> Iterable[tuple[AssistantTurn, ...]]:
    return (conversation.turns, *conversation.subagents.values())


def _in_window(request: ProxyRequest, since: Optional[datetime], until: Optional[datetime]) -> bool:
    return not (since and request.timestamp < since or until and request.timestamp > until)


def _indexed(conversation: Conversation) -> IndexedConversation:
    """The conversation as the index would hold it, each turn's request its own message id (a call outside
    --since/--until is then left out as the DB route leaves out its row)."""
    def turns(items: tuple[AssistantTurn, ...]) -> tuple[IndexedTurn, ...]:
        return tuple(IndexedTurn(t.conversation_id, t.agent_id, number, t.message_id,
                                 t.message_id, t.timestamp, t.model, t.stop_reason,
                                 t.content_types, t.output_tokens, t.jsonl_request_id, t.source_file)
                     for number, t in enumerate(items, start=1))

    return IndexedConversation(conversation.conversation_id, turns(conversation.turns),
                               {agent: turns(items) for agent, items in sorted(conversation.subagents.items())},
                               conversation.links)
