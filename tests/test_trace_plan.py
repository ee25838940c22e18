"""Trace planning (docs/traces.md#the-native-trace-file): request selection and order, gap splits, sub-agent placement, names."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Optional

from lib.capture.jsonl_conversations import Conversation
from lib.records import AssistantTurn, ProxyRequest, SubagentLink
from lib.traces.plan import PlanOptions, plan_traces

UTC = timezone.utc
PACIFIC = timezone(timedelta(hours=-8))
T0 = datetime(2026, 11, 29, 18, 0, 0, tzinfo=UTC)


def at(seconds: float, zone: timezone = UTC) -> datetime:
    return (T0 + timedelta(seconds=seconds)).astimezone(zone)


def make_request(row_id: int, start: float, *, duration: float = 2.0, kind: str = "ok",
                 zone: timezone = UTC) -> ProxyRequest:
    return ProxyRequest(
        row_id=row_id, request_id=f"r{row_id:03d}", timestamp=at(start, zone), completed_at=at(start + duration),
        is_streaming=True, status=200 if kind == "ok" else 529, kind=kind, model="claude-opus-4-6",
        message_id=f"msg_{row_id:03d}", usage=None, stop_reason="end_turn", output_types=("text",), api_time_s=duration,
        ttft_s=0.5, anthropic_request_id=None, session_header=None, max_tokens=32000, retry_count=0, prompt_key=None,
        message_count=1,
    )


def make_turn(message_id: str, conversation: str, seconds: float, agent_id: str = "") -> AssistantTurn:
    return AssistantTurn(message_id=message_id, conversation_id=conversation, agent_id=agent_id, timestamp=at(seconds),
                         model="claude-opus-4-6", stop_reason="end_turn", content_types=("text",), output_tokens=5,
                         usage=None, jsonl_request_id=None, source_file="x.jsonl", line_number=1)


def make_link(conversation: str, agent_id: str, spawn: float) -> SubagentLink:
    return SubagentLink(conversation_id=conversation, agent_id=agent_id, tool_use_id=f"toolu_{agent_id}",
                        subagent_type="Explore", description="look", spawn_time=at(spawn), completion_time=at(spawn + 9),
                        duration_ms=9000, total_tokens=100, tool_use_count=2, status="completed", has_log=True)


class Capture:
    """Requests, message ids and conversations built together."""

    def __init__(self) -> None:
        self.requests: dict[str, ProxyRequest] = {}
        self.message_ids: dict[str, str] = {}
        self.conversations: dict[str, Conversation] = {}

    def turns(self, conversation: str, rows: list[tuple[int, float]], *, agent_id: str = "",
              kind: str = "ok", zone: timezone = UTC) -> tuple[AssistantTurn, ...]:
        made = []
        for row_id, start in rows:
            request = make_request(row_id, start, kind=kind, zone=zone)
            self.requests[request.request_id] = request
            self.message_ids[request.message_id] = request.request_id
            made.append(make_turn(request.message_id, conversation, start + 2, agent_id))
        return tuple(made)

    def add(self, conversation: str, turns: tuple[AssistantTurn, ...],
            subagents: Optional[dict[str, tuple[AssistantTurn, ...]]] = None,
            links: tuple[SubagentLink, ...] = ()) -> None:
        self.conversations[conversation] = Conversation(conversation, f"{conversation}.jsonl", turns, subagents or {}, links)

    def plan(self, **options: object):
        return plan_traces(self.conversations, self.message_ids, self.requests, PlanOptions(**options))


def test_requests_resolved_in_arrival_order_errors_and_unknown_ids_counted():
    capture = Capture()
    # Row 2 is in a -08:00 zone but earlier in absolute time: it must come first.
    turns = capture.turns("conv", [(1, 10.0)]) + capture.turns("conv", [(2, 5.0)], zone=PACIFIC)
    turns += capture.turns("conv", [(3, 20.0)], kind="error")
    turns += (make_turn("msg_missing", "conv", 30.0),)
    capture.add("conv", turns)
    plans, summary = capture.plan()
    (plan,) = plans
    assert [r.row_id for r in plan.parent] == [2, 1]
    assert summary.problems.as_dict()["turn_row_error"]["count"] == 1
    assert summary.problems.as_dict()["turn_not_in_db"]["count"] == 1


def test_conversations_ordered_by_first_request_and_filtered():
    capture = Capture()
    capture.add("late", capture.turns("late", [(1, 100.0)]))
    capture.add("early", capture.turns("early", [(2, 50.0), (3, 60.0)]))
    capture.add("empty", (make_turn("msg_nowhere", "empty", 1.0),))
    plans, summary = capture.plan()
    assert [p.trace_id for p in plans] == ["early", "late"]
    assert summary.conversations == 2
    assert summary.problems.as_dict()["conversation_without_db_requests"]["count"] == 1
    assert [p.trace_id for p in capture.plan(conversation_id="late")[0]] == ["late"]
    window = capture.plan(since=at(55), until=at(100))[0]
    assert [(p.trace_id, [r.row_id for r in p.parent]) for p in window] == [("early", [3]), ("late", [1])]


def test_split_at_gap_measures_from_completion_and_places_subagents_by_spawn():
    capture = Capture()
    # Requests at 0, 10, 100, 103 (2 s each): gaps after completion 8, 88, 1 s.
    parent = capture.turns("conv", [(1, 0.0), (2, 10.0), (3, 100.0), (4, 103.0)])
    early = capture.turns("conv", [(5, 13.0)], agent_id="a_early")
    in_gap = capture.turns("conv", [(6, 60.0)], agent_id="a_gap")
    late = capture.turns("conv", [(7, 101.0)], agent_id="a_late")
    links = (make_link("conv", "a_early", 12.5), make_link("conv", "a_gap", 50.0), make_link("conv", "a_late", 100.5))
    capture.add("conv", parent, {"a_early": early, "a_gap": in_gap, "a_late": late}, links)
    plans, _ = capture.plan(split_at_gap_s=30, include_subagents=True)
    assert [p.trace_id for p in plans] == ["conv_s1", "conv_s2"]
    assert [[r.row_id for r in p.parent] for p in plans] == [[1, 2], [3, 4]]
    # A sub-agent belongs to the segment holding its spawn; one spawned in the gap stays with the earlier one.
    assert [[s.agent_id for s in p.subagents] for p in plans] == [["a_early", "a_gap"], ["a_late"]]
    # A gap of exactly the threshold (88 s) does not split.
    assert len(capture.plan(split_at_gap_s=88)[0]) == 1
    assert len(capture.plan(split_at_gap_s=87.5)[0]) == 2


def test_min_requests_counts_dropped_segments():
    capture = Capture()
    capture.add("conv", capture.turns("conv", [(1, 0.0), (2, 10.0), (3, 500.0)]))
    capture.add("solo", capture.turns("solo", [(4, 1000.0)]))
    plans, summary = capture.plan(split_at_gap_s=60, min_requests=2)
    assert [p.trace_id for p in plans] == ["conv_s1"]
    assert summary.dropped_min_requests == 2 and summary.traces == 1


def test_subagent_without_link_spawns_at_its_first_request_and_needs_the_flag():
    capture = Capture()
    parent = capture.turns("conv", [(1, 0.0), (2, 30.0)])
    orphan = capture.turns("conv", [(3, 12.0), (4, 14.0)], agent_id="a_orphan")
    capture.add("conv", parent, {"a_orphan": orphan})
    assert capture.plan()[0][0].subagents == []
    (plan,), _ = capture.plan(include_subagents=True)
    (sub,) = plan.subagents
    assert (sub.link, sub.spawn_s, [r.row_id for r in sub.requests]) == (None, at(12).timestamp(), [3, 4])


def test_anonymized_names_number_traces_segments_and_agents_per_conversation():
    capture = Capture()
    parent = capture.turns("conv-a", [(1, 0.0), (2, 500.0)])
    subs = {"zz": capture.turns("conv-a", [(3, 5.0)], agent_id="zz"), "aa": capture.turns("conv-a", [(4, 502.0)], agent_id="aa")}
    capture.add("conv-a", parent, subs, (make_link("conv-a", "zz", 4.0), make_link("conv-a", "aa", 501.0)))
    other = capture.turns("conv-b", [(5, 1000.0)])
    capture.add("conv-b", other, {"bb": capture.turns("conv-b", [(6, 1001.0)], agent_id="bb")},
                (make_link("conv-b", "bb", 1000.5),))
    plans, _ = capture.plan(split_at_gap_s=60, include_subagents=True, anonymize=True)
    assert [p.trace_id for p in plans] == ["trace_0001_s1", "trace_0001_s2", "trace_0002"]
    # Numbered by spawn within the conversation, across its segments; restarting per conversation.
    assert [[s.label for s in p.subagents] for p in plans] == [["agent_001"], ["agent_002"], ["agent_001"]]
    assert all(p.conversation_id in ("conv-a", "conv-b") for p in plans)
