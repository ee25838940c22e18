"""Hand-made captures for the trace-builder tests: small bodies whose token counts are pinned.

`hand_capture` writes a fixed-proxy DB and JSONL with two conversations sharing their tools and
system prompt: A (4 parent turns, the last one after a compaction, plus one sub-agent) and B (one
turn). `twin_capture` writes an old-proxy turn stored twice (streaming twin + non-streaming replay).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from tests.jsonl_builders import OTHER_SESSION, SESSION, agent_result, assistant, tool_result, user_prompt, write_jsonl
from tests.proxy_builders import make_proxy_db, message_response, proxy_row, request_headers, streaming_response

AGENT_ID = "a1b2c3d4e5f6a7b8c"
AGENT_TOOL_USE = "toolu_01AgentCall"
HAIKU = "claude-haiku-4-5-20251001"

TOOLS = [{"name": "Read", "description": "Read a file from the repository.",
          "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}]
SYSTEM = [{"text": "You are a terse coding assistant.", "type": "text", "cache_control": {"type": "ephemeral"}}]
SUB_SYSTEM = [{"text": "You explore code and report briefly.", "type": "text"}]


def _user(text: str, *, cached: bool = False) -> dict[str, Any]:
    block: dict[str, Any] = {"text": text, "type": "text"}
    if cached:
        block["cache_control"] = {"type": "ephemeral"}
    return {"role": "user", "content": [block]}


ASK = _user("List the files in src and read main.py.")
# Sent back with its thinking signature: normalization drops `signature` (docs/hashing.md#normalization).
TOOL_CALL = {"role": "assistant", "content": [
    {"signature": "EoSig1", "thinking": "I should read it.", "type": "thinking"},
    {"id": "toolu_01Read", "input": {"path": "src/main.py"}, "name": "Read", "type": "tool_use"}]}
TOOL_RESULT = {"role": "user", "content": [
    {"content": "print('hello')", "tool_use_id": "toolu_01Read", "type": "tool_result"}]}
ANSWER = {"role": "assistant", "content": [{"text": "main.py prints hello.", "type": "text"}]}
FOLLOW_UP = _user("Thanks. Now add a docstring.", cached=True)
COMPACTED = _user("Summary of the earlier conversation: main.py prints hello; add a docstring.", cached=True)
OTHER_ASK = _user("What does the Makefile do?", cached=True)
SUB_ASK = _user("Find where main.py is imported.")
SUB_CALL = {"role": "assistant", "content": [
    {"id": "toolu_01Grep", "input": {"path": "src"}, "name": "Read", "type": "tool_use"}]}
SUB_RESULT = {"role": "user", "content": [{"content": "no imports", "tool_use_id": "toolu_01Grep", "type": "tool_result"}]}


def _body(messages: list, *, system: list = SYSTEM, model: str = "claude-opus-4-6", stream: bool = True,
          max_tokens: int = 32000) -> str:
    """A stored body in the proxy's key order (docs/inputs.md#stored-request-body): model, messages, max_tokens, system, stream, tools."""
    body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens, "system": system}
    if stream:
        body["stream"] = True
    body["tools"] = TOOLS
    return json.dumps(body, separators=(",", ":"))


def _row(request_id: str, local_time: str, end_time: str, message_id: str, messages: list, *,
         stop: str, types: tuple[str, ...], system: list = SYSTEM, model: str = "claude-opus-4-6") -> dict[str, Any]:
    response = streaming_response(message_id, request_id=f"req_{request_id}", completed_at=end_time,
                                  response_ms=1500, server_timing_ms=700, block_types=types, stop_reason=stop)
    return proxy_row(request_id, local_time, response=response, body=_body(messages, system=system, model=model),
                     model=model)


# (row id, start, end, message id, messages, stop reason, output types): conversation A, then B.
PARENT_TURNS = [
    ("a000000000000001", "2026-11-29T10:00:00-08:00", "2026-11-29T10:00:02-08:00", "msg_A1", [ASK], "tool_use", ("thinking", "tool_use")),
    ("a000000000000003", "2026-11-29T10:00:10-08:00", "2026-11-29T10:00:12-08:00", "msg_A2",
     [ASK, TOOL_CALL, TOOL_RESULT], "end_turn", ("text",)),
    ("a000000000000004", "2026-11-29T10:01:00-08:00", "2026-11-29T10:01:02-08:00", "msg_A3",
     [ASK, TOOL_CALL, TOOL_RESULT, ANSWER, FOLLOW_UP], "tool_use", ("text", "tool_use")),
    ("a000000000000005", "2026-11-29T10:20:00-08:00", "2026-11-29T10:20:02-08:00", "msg_A4", [COMPACTED], "end_turn", ("text",)),
]
SUB_TURNS = [
    ("a000000000000002", "2026-11-29T10:00:04-08:00", "2026-11-29T10:00:05-08:00", "msg_S1", [SUB_ASK], "tool_use", ("tool_use",)),
    ("a000000000000006", "2026-11-29T10:00:06-08:00", "2026-11-29T10:00:07-08:00", "msg_S2",
     [SUB_ASK, SUB_CALL, SUB_RESULT], "end_turn", ("text",)),
]
OTHER_TURN = ("b000000000000001", "2026-11-29T11:00:00-08:00", "2026-11-29T11:00:02-08:00", "msg_B1", [OTHER_ASK], "end_turn", ("text",))


def hand_capture(root: Path) -> tuple[Path, Path]:
    """Write `root/requests.db` and `root/jsonl/` for conversations A (with a sub-agent) and B."""
    rows = [_row(*turn[:5], stop=turn[5], types=turn[6]) for turn in PARENT_TURNS]
    rows += [_row(*turn[:5], stop=turn[5], types=turn[6], system=SUB_SYSTEM, model=HAIKU) for turn in SUB_TURNS]
    rows.append(_row(*OTHER_TURN[:5], stop=OTHER_TURN[5], types=OTHER_TURN[6]))
    rows.sort(key=lambda row: row["timestamp"])
    root.mkdir(parents=True, exist_ok=True)
    db = make_proxy_db(root / "requests.db", rows)
    jsonl = root / "jsonl"
    parent = [user_prompt("2026-11-29T18:00:00.000Z")]
    utc = {"msg_A1": "18:00:01.900", "msg_A2": "18:00:11.900", "msg_A3": "18:01:01.900", "msg_A4": "18:20:01.900"}
    for turn in PARENT_TURNS:
        calls = [(AGENT_TOOL_USE, "Agent", "Explore", "Find imports")] if turn[3] == "msg_A1" else []
        parent.append(assistant(turn[3], f"2026-11-29T{utc[turn[3]]}Z", types=turn[6], stop_reason=turn[5],
                                agent_calls=calls))
        if turn[3] == "msg_A1":
            parent.append(tool_result(AGENT_TOOL_USE, "2026-11-29T18:00:08.000Z",
                                      agent_result(AGENT_ID, duration_ms=6000, tokens=900, tool_uses=1)))
    write_jsonl(jsonl / f"{SESSION}.jsonl", parent)
    sub = [assistant(turn[3], f"2026-11-29T18:00:0{5 + 2 * i}.500Z", types=turn[6], stop_reason=turn[5],
                     agent_id=AGENT_ID, model=HAIKU) for i, turn in enumerate(SUB_TURNS)]
    write_jsonl(jsonl / f"agent-{AGENT_ID}.jsonl", [user_prompt("2026-11-29T18:00:04.000Z", agent_id=AGENT_ID), *sub])
    write_jsonl(jsonl / f"{OTHER_SESSION}.jsonl", [
        user_prompt("2026-11-29T19:00:00.000Z", session=OTHER_SESSION),
        assistant("msg_B1", "2026-11-29T19:00:01.900Z", session=OTHER_SESSION)])
    return db, jsonl


def twin_capture(root: Path, *, replay_message: str = "msg_Replay", stream_message: str = "msg_Stream",
                 jsonl_message: Optional[str] = None) -> tuple[Path, Path]:
    """One old-proxy turn: a streaming twin, then its non-streaming replay 2 s later (docs/inputs.md#old-proxy-twins)."""
    streaming = proxy_row("c000000000000001", "2026-11-29T09:00:00-08:00", body=_body([ASK]),
                          headers=request_headers(),
                          response=streaming_response(stream_message, completed_at="2026-11-29T09:00:01-08:00",
                                                      block_types=("text",), stop_reason="end_turn"))
    replay = proxy_row("c000000000000002", "2026-11-29T09:00:02-08:00", body=_body([ASK], stream=False, max_tokens=21333),
                       response=message_response(replay_message, content_types=("thinking", "tool_use"),
                                                 stop_reason="tool_use", completed_at="2026-11-29T09:00:06-08:00"))
    db = make_proxy_db(root / "requests.db", [streaming, replay])
    jsonl = root / "jsonl"
    write_jsonl(jsonl / f"{SESSION}.jsonl", [
        user_prompt("2026-11-29T17:00:00.000Z"),
        assistant(jsonl_message or replay_message, "2026-11-29T17:00:06.500Z", types=("thinking", "tool_use"),
                  stop_reason="tool_use")])
    return db, jsonl
