"""Sub-agents whose log is missing: their requests found in the DB by the parent's link (docs/reliability.md).

Shared by the trace builder and the visualizer, so both put the same rows in the sub-agent's lane.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Iterable

from lib.capture.proxy_reader import UNKNOWN_TIME
from lib.problems import ProblemCounter
from lib.records import ProxyRequest, SubagentLink

# The proxy stores whole seconds, the JSONL milliseconds: a sub-agent's first request can carry a
# proxy time just before its spawn line.
PROXY_TIME_SLACK = timedelta(seconds=1)


def unlogged_subagent_requests(conversations: Iterable[Any], message_ids: dict[str, str],
                               requests: dict[str, ProxyRequest], problems: ProblemCounter
                               ) -> dict[tuple[str, str], list[ProxyRequest]]:
    """(conversation id, agent id) → the DB requests of a sub-agent whose log is missing, in arrival order.

    `conversations` are JSONL `Conversation`s or the index's `IndexedConversation`s (both have
    turns with message ids, sub-agents by agent id and links).

    The parent's link still names the sub-agent and its spawn and completion times; its requests
    are the answered rows inside that window that no JSONL turn names (nor their old-proxy twins,
    which share the prompt key). A row inside the windows of two such sub-agents cannot be told
    apart and is counted, as is a sub-agent none of whose requests could be found.
    """
    conversations = list(conversations)
    # A resumed session's copy links sub-agents logged under the original session: those are not missing.
    logged = {agent_id for conversation in conversations for agent_id in conversation.subagents}
    unique: dict[str, SubagentLink] = {}
    for link in (link for conversation in conversations for link in conversation.links):
        if not link.has_log and link.agent_id and link.agent_id not in logged:
            # Linked again by a resumed session's copy: still one sub-agent (the plan moves it with its turn).
            unique.setdefault(link.agent_id, link)
    missing = list(unique.values())
    if not missing:
        return {}
    named = {message_ids[turn.message_id] for conversation in conversations
             for turns in (conversation.turns, *conversation.subagents.values()) for turn in turns
             if turn.message_id in message_ids}
    named_keys = {requests[r].prompt_key for r in named if r in requests and requests[r].prompt_key}
    candidates = [r for r in requests.values() if r.request_id not in named and r.kind == "ok"
                  and r.timestamp != UNKNOWN_TIME and r.prompt_key not in named_keys]
    found: dict[tuple[str, str], list[ProxyRequest]] = {}
    shared: set[tuple[str, str]] = set()
    for request in candidates:
        windows = [(link.conversation_id, link.agent_id) for link in missing if link.completion_time is not None
                   and link.spawn_time - PROXY_TIME_SLACK <= request.timestamp <= link.completion_time + PROXY_TIME_SLACK]
        if len(windows) == 1:
            found.setdefault(windows[0], []).append(request)
        elif windows:
            shared.update(windows)
            problems.add("subagent_request_ambiguous", request.request_id)
    for key in shared & set(found):
        # Some of its rows could be another's: a partial sub-agent would replay wrongly, so none is kept.
        for request in found.pop(key):
            problems.add("subagent_request_ambiguous", request.request_id)
    for link in missing:
        key = (link.conversation_id, link.agent_id)
        if key in found:
            found[key].sort(key=lambda r: (r.timestamp, r.row_id))
            problems.add("subagent_requests_from_db", link.agent_id)
        else:
            problems.add("subagent_lost", link.agent_id)
    return found
