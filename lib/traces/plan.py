"""Which requests go into which trace: selection, ordering, splitting and naming (docs/inputs.md#rows-that-are-not-turns,
docs/traces.md#the-native-trace-file).

Planning needs only the JSONL conversations and the message index, never a request body, so the
validator can re-derive the same plan to match anonymized traces back to their DB rows.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Optional

from lib.capture.jsonl_conversations import Conversation
from lib.problems import ProblemCounter
from lib.capture.proxy_reader import UNKNOWN_TIME
from lib.capture.db_conversations import unlogged_subagent_requests
from lib.records import AssistantTurn, ProxyRequest, SubagentLink


@dataclass(frozen=True)
class PlanOptions:
    """The selection options of build_minimal_traces.py."""

    include_subagents: bool = False
    anonymize: bool = False
    split_at_gap_s: Optional[float] = None
    min_requests: int = 1
    conversation_id: Optional[str] = None
    since: Optional[datetime] = None
    until: Optional[datetime] = None


@dataclass
class PlannedSubagent:
    """A sub-agent marker to place: its link (None when the log had no Agent/Task call) and requests."""

    agent_id: str
    label: str
    link: Optional[SubagentLink]
    requests: list[ProxyRequest]
    call_order: int = 0  # the link's place among the parent's Agent/Task calls

    @property
    def order_key(self) -> tuple[float, int, str]:
        """Spawn time, then the order of the parent's calls: agents spawned by one answer keep the order of its
        calls, which the logs and the DB both show (their ids, random, only break what remains)."""
        return self.spawn_s, self.call_order, self.agent_id

    @property
    def spawn_s(self) -> float:
        if self.link is not None:
            return self.link.spawn_time.timestamp()
        return self.requests[0].timestamp.timestamp()


@dataclass
class TracePlan:
    """One trace to write: a parent conversation (or one gap-split segment of it)."""

    trace_id: str
    conversation_id: str
    segment: int
    parent: list[ProxyRequest]
    subagents: list[PlannedSubagent] = field(default_factory=list)


@dataclass
class PlanSummary:
    """What planning kept and skipped, with reasons."""

    conversations: int = 0
    traces: int = 0
    dropped_min_requests: int = 0
    problems: ProblemCounter = field(default_factory=ProblemCounter)


def _resolve(turns: Iterable[AssistantTurn], message_ids: dict[str, str], requests: dict[str, ProxyRequest],
             options: PlanOptions, problems: ProblemCounter) -> list[ProxyRequest]:
    """The DB requests of a list of turns: matched, answered, inside --since/--until, in arrival order."""
    resolved = []
    for turn in turns:
        request_id = message_ids.get(turn.message_id)
        request = requests.get(request_id) if request_id else None
        if request is None:
            problems.add("turn_not_in_db", turn.message_id)
            continue
        if request.kind != "ok":
            problems.add(f"turn_row_{request.kind}", request.request_id)
            continue
        if request.timestamp == UNKNOWN_TIME:
            # No time of the row's own is usable: the JSONL's time of this turn keeps it in place.
            request = dataclasses.replace(request, timestamp=turn.timestamp)
            problems.add("timestamp_from_jsonl", request.request_id)
        if options.since and request.timestamp < options.since or options.until and request.timestamp > options.until:
            continue
        resolved.append(request)
    resolved.sort(key=lambda r: (r.timestamp, r.row_id))
    return resolved


def _split(parent: list[ProxyRequest], gap_s: Optional[float]) -> list[list[ProxyRequest]]:
    if not gap_s or not parent:
        return [parent]
    segments = [[parent[0]]]
    for previous, request in zip(parent, parent[1:]):
        end = previous.completed_at or previous.timestamp
        if (request.timestamp - end).total_seconds() > gap_s:
            segments.append([])
        segments[-1].append(request)
    return segments


def plan_traces(conversations: dict[str, Conversation], message_ids: dict[str, str],
                requests: dict[str, ProxyRequest], options: PlanOptions) -> tuple[list[TracePlan], PlanSummary]:
    """Plan every trace: conversations in order of their first request, segments, sub-agents, ids."""
    summary = PlanSummary()
    drafts = []
    unlogged = (unlogged_subagent_requests(conversations.values(), message_ids, requests, summary.problems)
                if options.include_subagents else {})
    for conversation in conversations.values():
        if options.conversation_id and conversation.conversation_id != options.conversation_id:
            continue
        parent = _resolve(conversation.turns, message_ids, requests, options, summary.problems)
        if not parent:
            in_db = any(message_ids.get(turn.message_id) in requests for turn in conversation.turns)
            reason = ("conversation_outside_time_window" if in_db and (options.since or options.until)
                      else "conversation_without_db_requests")
            summary.problems.add(reason, conversation.conversation_id)
            continue
        links = {link.agent_id: link for link in conversation.links}
        call_order = {link.agent_id: number for number, link in enumerate(conversation.links)}
        subagents = []
        if options.include_subagents:
            for agent_id, turns in conversation.subagents.items():
                agent_requests = _resolve(turns, message_ids, requests, options, summary.problems)
                if agent_requests:
                    subagents.append(PlannedSubagent(agent_id, agent_id, links.get(agent_id), agent_requests,
                                                     call_order.get(agent_id, len(call_order))))
            for link in conversation.links:
                found = unlogged.get((conversation.conversation_id, link.agent_id))
                if found:
                    found = [r for r in found if not (options.since and r.timestamp < options.since
                                                      or options.until and r.timestamp > options.until)]
                if found:
                    subagents.append(PlannedSubagent(link.agent_id, link.agent_id, link, found, call_order[link.agent_id]))
            subagents.sort(key=lambda sub: sub.order_key)
        drafts.append((conversation.conversation_id, parent, subagents))
    drafts.sort(key=lambda draft: (draft[1][0].timestamp, draft[0]))
    drafts = _without_repeats(drafts, summary.problems)
    summary.conversations = len(drafts)

    plans: list[TracePlan] = []
    for conversation_id, parent, subagents in drafts:
        segments = _split(parent, options.split_at_gap_s)
        for number, segment in enumerate(segments):
            start = segment[0].timestamp.timestamp()
            end = segments[number + 1][0].timestamp.timestamp() if number + 1 < len(segments) else float("inf")
            mine = [sub for sub in subagents if (start <= sub.spawn_s < end) or (number == 0 and sub.spawn_s < start)]
            if len(segment) < options.min_requests:
                summary.dropped_min_requests += 1
                continue
            suffix = f"_s{number + 1}" if len(segments) > 1 else ""
            plans.append(TracePlan(conversation_id + suffix, conversation_id, number, segment, mine))
    if options.anonymize:
        _anonymize_names(plans)
    summary.traces = len(plans)
    return plans, summary


Draft = tuple[str, list[ProxyRequest], list[PlannedSubagent]]
def _without_repeats(drafts: list[Draft], problems: ProblemCounter) -> list[Draft]:
    """Each request in one trace only: conversations claim their requests earliest-first (docs/reliability.md#one-request-one-trace).

    A resumed session repeats earlier turns in a new JSONL file under a new sessionId; tracing
    them in both conversations would replay those API calls twice. On equal start times the
    conversation with more parent requests (the resumed, complete one) claims first.
    """
    owner: dict[str, str] = {}
    for conversation_id, parent, subagents in sorted(drafts, key=lambda d: (d[1][0].timestamp, -len(d[1]), d[0])):
        for request in [*parent, *(r for sub in subagents for r in sub.requests)]:
            owner.setdefault(request.request_id, conversation_id)
    kept_parents: dict[str, list[ProxyRequest]] = {}
    hosted: dict[str, list[PlannedSubagent]] = {}
    for conversation_id, parent, subagents in drafts:
        kept_parents[conversation_id] = _owned(parent, owner, conversation_id, problems)
        for sub in subagents:
            sub.requests = _owned(sub.requests, owner, conversation_id, problems)
            if not sub.requests:
                continue
            # A sub-agent goes with the parent turn that spawned it: when a resumed session's copy
            # claims that turn, the original's sub-agents (logged only there) move with it, not vanish.
            spawner = ([r for r in parent if r.timestamp.timestamp() <= sub.spawn_s] or parent)[-1]
            host = owner[spawner.request_id]
            if host != conversation_id:
                problems.add("subagent_moved_with_its_parent_turn", sub.agent_id)
            hosted.setdefault(host, []).append(sub)
    kept: list[Draft] = []
    for conversation_id, _, _ in drafts:
        if not kept_parents[conversation_id]:
            problems.add("conversation_without_db_requests", conversation_id)
            continue
        subagents, agent_ids = [], set()
        for sub in hosted.get(conversation_id, []):
            if sub.agent_id not in agent_ids:
                agent_ids.add(sub.agent_id)
                subagents.append(sub)
        subagents.sort(key=lambda sub: sub.order_key)
        kept.append((conversation_id, kept_parents[conversation_id], subagents))
    return kept


def _owned(requests: list[ProxyRequest], owner: dict[str, str], conversation_id: str,
           problems: ProblemCounter) -> list[ProxyRequest]:
    """The requests `conversation_id` owns; the others are counted as repeats."""
    kept = []
    for request in requests:
        if owner[request.request_id] == conversation_id:
            kept.append(request)
        else:
            problems.add("request_in_two_conversations", request.request_id)
    return kept


def _anonymize_names(plans: list[TracePlan]) -> None:
    """trace_0001… in plan order; agent_001… numbered per parent conversation (docs/traces.md#the-native-trace-file)."""
    agent_numbers: dict[tuple[str, str], int] = {}
    conversation_traces: dict[str, str] = {}
    for plan in plans:
        base = conversation_traces.setdefault(plan.conversation_id, f"trace_{len(conversation_traces) + 1:04d}")
        plan.trace_id = base + (f"_s{plan.segment + 1}" if plan.trace_id != plan.conversation_id else "")
        for sub in plan.subagents:
            key = (plan.conversation_id, sub.agent_id)
            if key not in agent_numbers:
                agent_numbers[key] = 1 + sum(1 for other in agent_numbers if other[0] == plan.conversation_id)
            sub.label = f"agent_{agent_numbers[key]:03d}"
