"""lib/capture/jsonl_conversations.py on logs shaped like each Claude Code version (1.0.x inline
sidechains, 2.1.x background agents, `.meta.json`, current entry types, logs stored by other tools)."""
from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from jsonl_builders import (OTHER_SESSION, SESSION, agent_result, assistant, async_launch, sidechain_prompt,
                            task_notification, task_output_call, task_output_result, tool_result, user_prompt,
                            write_jsonl, write_meta)
from lib.capture.conversation_index import update_conversation_index
from lib.capture.jsonl_conversations import IGNORED_ENTRY_TYPES, Conversation, read_conversations
from lib.capture.jsonl_files import discover_logs
from lib.db import open_index_db, open_proxy_db
from lib.problems import ProblemCounter


def read(path: Path) -> tuple[dict[str, Conversation], ProblemCounter]:
    problems = ProblemCounter()
    return read_conversations(discover_logs(path, problems), problems), problems


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def sidechain_turn(message_id: str, timestamp: str, uuid: str, parent: str, **kwargs) -> dict:
    return assistant(message_id, timestamp, sidechain=True, uuid=uuid, parent_uuid=parent,
                     model="claude-3-5-haiku-20241022", **kwargs)


def inline_session(path: Path) -> Path:
    """A 1.0.x parent with two parallel Task sub-agents logged inline, their lines interleaved; one
    sub-agent turn is split over two lines (thinking, then text) as Claude Code writes it."""
    return write_jsonl(path / f"{SESSION}.jsonl", [
        user_prompt("2026-01-01T10:00:00Z"),
        assistant("msg_p1", "2026-01-01T10:00:01Z", stop_reason="tool_use", prompt="find the tests",
                  agent_calls=[("toolu_1", "Task", "general-purpose", "Find tests")]),
        assistant("msg_p1", "2026-01-01T10:00:01.100Z", types=(), stop_reason="tool_use", prompt="read the docs",
                  agent_calls=[("toolu_2", "Task", "general-purpose", "Read docs")]),
        sidechain_prompt("root-b", "2026-01-01T10:00:02Z", "read the docs"),
        sidechain_prompt("root-a", "2026-01-01T10:00:02.010Z", "find the tests"),
        sidechain_turn("msg_a1", "2026-01-01T10:00:04Z", "a1", "root-a", types=("thinking",), output_tokens=1,
                       stop_reason=None),
        sidechain_turn("msg_b1", "2026-01-01T10:00:04.500Z", "b1", "root-b"),
        sidechain_turn("msg_a1", "2026-01-01T10:00:05Z", "a1-text", "a1", output_tokens=40),
        sidechain_turn("msg_a2", "2026-01-01T10:00:08Z", "a2", "a1-text"),
        tool_result("toolu_2", "2026-01-01T10:00:09Z", agent_result(None, duration_ms=7000, status=None)),
        tool_result("toolu_1", "2026-01-01T10:00:10Z", agent_result(None, duration_ms=8000, status=None)),
        assistant("msg_p2", "2026-01-01T10:00:12Z"),
    ])


def test_inline_sidechains_are_sub_agents_linked_to_their_task_calls(tmp_path: Path) -> None:
    inline_session(tmp_path)
    conversations, problems = read(tmp_path)
    conversation = conversations[SESSION]
    assert problems.as_dict() == {}
    assert [t.message_id for t in conversation.turns] == ["msg_p1", "msg_p2"]
    assert {agent: [t.message_id for t in turns] for agent, turns in conversation.subagents.items()} == {
        "sidechain-root-a": ["msg_a1", "msg_a2"], "sidechain-root-b": ["msg_b1"]}
    (split,) = [t for t in conversation.subagents["sidechain-root-a"] if t.message_id == "msg_a1"]
    assert (split.content_types, split.output_tokens, split.agent_id) == (("thinking", "text"), 40,
                                                                          "sidechain-root-a")
    got = {(link.tool_use_id, link.agent_id, link.has_log, link.status, link.completion_time)
           for link in conversation.links}
    assert got == {("toolu_1", "sidechain-root-a", True, "completed", utc("2026-01-01T10:00:10Z")),
                   ("toolu_2", "sidechain-root-b", True, "completed", utc("2026-01-01T10:00:09Z"))}


def test_inline_sidechain_without_the_prompt_links_to_the_next_call_by_time(tmp_path: Path) -> None:
    write_jsonl(tmp_path / f"{SESSION}.jsonl", [
        assistant("msg_p1", "2026-01-01T10:00:01Z", stop_reason="tool_use", prompt="the call's prompt",
                  agent_calls=[("toolu_1", "Task", "general-purpose", "Find tests")]),
        sidechain_prompt("root", "2026-01-01T10:00:02Z", "a prompt Claude Code rewrote"),
        sidechain_turn("msg_s1", "2026-01-01T10:00:04Z", "s1", "root"),
        tool_result("toolu_1", "2026-01-01T10:00:10Z", agent_result(None, status=None)),
    ])
    conversation = read(tmp_path)[0][SESSION]
    assert [(link.tool_use_id, link.agent_id) for link in conversation.links] == [("toolu_1", "sidechain-root")]


def test_every_inline_api_call_is_indexed_once(tmp_path: Path) -> None:
    inline_session(tmp_path / "logs")
    db = tmp_path / "requests.db"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE requests (id TEXT PRIMARY KEY, timestamp DATETIME, method TEXT NOT NULL,"
                           " endpoint TEXT NOT NULL, headers TEXT NOT NULL, body TEXT NOT NULL, user_agent TEXT,"
                           " content_type TEXT, prompt_grade TEXT, response TEXT, model TEXT, original_model TEXT,"
                           " routed_model TEXT, created_at DATETIME)")
    proxy, index = open_proxy_db(db), open_index_db(db, None)
    try:
        summary = update_conversation_index(proxy, index, tmp_path / "logs")
        rows = sorted(index.execute("SELECT agent_id, message_id FROM conversation_index"))
        links = sorted(index.execute("SELECT tool_use_id, agent_id, has_log FROM subagent_links"))
    finally:
        index.close()
        proxy.close()
    assert rows == [("", "msg_p1"), ("", "msg_p2"), ("sidechain-root-a", "msg_a1"), ("sidechain-root-a", "msg_a2"),
                    ("sidechain-root-b", "msg_b1")]
    assert links == [("toolu_1", "sidechain-root-a", 1), ("toolu_2", "sidechain-root-b", 1)]
    assert (summary.parent_turns, summary.subagents, summary.subagent_turns, summary.links) == (2, 2, 3, 2)
    assert summary.problems.as_dict() == {}


def background_session(path: Path, *ending: dict) -> None:
    """A 2.1.x parent launching a background agent, working on, then told (by `ending`) that it ended."""
    write_jsonl(path / f"{SESSION}.jsonl", [
        assistant("msg_p1", "2026-01-01T10:00:00Z", stop_reason="tool_use",
                  agent_calls=[("toolu_bg", "Agent", "Explore", "Survey in background")]),
        tool_result("toolu_bg", "2026-01-01T10:00:00.400Z", async_launch("abg")),
        assistant("msg_p2", "2026-01-01T10:00:03Z"),
        *ending,
        assistant("msg_p3", "2026-01-01T10:05:01Z"),
    ])
    write_jsonl(path / SESSION / "subagents" / "agent-abg.jsonl", [
        user_prompt("2026-01-01T10:00:00.300Z", agent_id="abg"),
        assistant("msg_s1", "2026-01-01T10:00:02Z", agent_id="abg"),
        assistant("msg_s2", "2026-01-01T10:04:50Z", agent_id="abg"),
    ])


@pytest.mark.parametrize("ending, end_time, status", [
    ([task_notification("abg", "toolu_bg", "2026-01-01T10:05:00Z")], "2026-01-01T10:05:00Z", "completed"),
    ([task_notification("abg", "toolu_bg", "2026-01-01T10:04:55Z", via="queue"),
      task_notification("abg", "toolu_bg", "2026-01-01T10:05:00Z", via="attachment")],
     "2026-01-01T10:05:00Z", "completed"),
    ([task_notification("abg", "toolu_bg", "2026-01-01T10:04:55Z", via="queue", status="failed")],
     "2026-01-01T10:04:55Z", "failed"),
    ([assistant("msg_wait", "2026-01-01T10:00:04Z", types=(), stop_reason="tool_use",
                extra_blocks=[task_output_call("toolu_wait", "abg")]),
      tool_result("toolu_wait", "2026-01-01T10:04:58Z", task_output_result("abg"))],
     "2026-01-01T10:04:58Z", "completed"),
], ids=["user-line", "attachment-over-queue", "queued-only", "task-output"])
def test_background_agent_ends_at_its_notification_not_its_launch(tmp_path: Path, ending: list, end_time: str,
                                                                  status: str) -> None:
    background_session(tmp_path, *ending)
    conversations, problems = read(tmp_path)
    (link,) = conversations[SESSION].links
    assert (link.agent_id, link.spawn_time, link.completion_time, link.status, link.subagent_type) == (
        "abg", utc("2026-01-01T10:00:00Z"), utc(end_time), status, "Explore")
    assert problems.as_dict() == {}


def test_background_agent_without_notification_is_unfinished_and_a_timed_out_wait_does_not_end_it(
        tmp_path: Path) -> None:
    background_session(tmp_path,
                       assistant("msg_wait", "2026-01-01T10:00:04Z", types=(), stop_reason="tool_use",
                                 extra_blocks=[task_output_call("toolu_wait", "abg")]),
                       tool_result("toolu_wait", "2026-01-01T10:01:04Z",
                                   task_output_result("abg", status="running", retrieval="timeout")))
    (link,) = read(tmp_path)[0][SESSION].links
    assert (link.completion_time, link.status) == (None, "unfinished")


def test_conversation_id_is_the_lines_session_id_not_the_file_name(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "1f0a" / "full.jsonl", [assistant("msg_a", "2026-01-01T10:00:00Z"),
                                                   {"type": "future-record"}])
    write_jsonl(tmp_path / "9b2c" / "full.jsonl", [assistant("msg_b", "2026-01-01T11:00:00Z", session=OTHER_SESSION)])
    conversations, problems = read(tmp_path)
    assert {cid: [t.message_id for t in c.turns] for cid, c in conversations.items()} == {
        SESSION: ["msg_a"], OTHER_SESSION: ["msg_b"]}
    # Examples name the file relative to the logs folder: `full.jsonl:2` would not say which.
    assert problems.as_dict() == {"unknown_entry_type:future-record": {"count": 1, "examples": ["1f0a/full.jsonl:2"]}}


def test_a_claude_code_file_keeps_its_own_name_when_its_first_lines_were_copied_from_another_session(
        tmp_path: Path) -> None:
    write_jsonl(tmp_path / f"{OTHER_SESSION}.jsonl", [assistant("msg_old", "2026-01-01T10:00:00Z"),
                                                      assistant("msg_new", "2026-01-01T11:00:00Z",
                                                                session=OTHER_SESSION)])
    assert list(read(tmp_path)[0]) == [OTHER_SESSION]


def test_every_entry_type_current_versions_write_is_known(tmp_path: Path) -> None:
    envelope = {"sessionId": SESSION, "timestamp": "2026-01-01T10:00:00Z"}
    write_jsonl(tmp_path / f"{SESSION}.jsonl", [
        *({"type": kind, **envelope} for kind in sorted(IGNORED_ENTRY_TYPES)),
        {"type": "attachment", "attachment": {"type": "hook_additional_context", "content": ["x"]}, **envelope},
        {"type": "attachment", "attachment": {"type": "queued_command", "prompt": "and also this"}, **envelope},
        {"type": "queue-operation", "operation": "dequeue", **envelope},
        {"type": "system", "subtype": "compact_boundary", "content": "Conversation compacted", **envelope},
        {"type": "progress", "data": {"type": "hook_progress"}, **envelope},
        assistant("msg_a", "2026-01-01T10:00:01Z"),
    ])
    conversations, problems = read(tmp_path)
    assert [t.message_id for t in conversations[SESSION].turns] == ["msg_a"]
    assert problems.as_dict() == {}
    assert {"attachment", "queue-operation", "last-prompt", "permission-mode", "mode", "ai-title", "bridge-session",
            "pr-link", "file-history-delta", "summary", "file-history-snapshot"} <= IGNORED_ENTRY_TYPES | {
        "attachment", "queue-operation"}


def test_a_failed_agent_launch_is_counted_not_linked(tmp_path: Path) -> None:
    write_jsonl(tmp_path / f"{SESSION}.jsonl", [
        assistant("msg_p1", "2026-01-01T10:00:00Z", stop_reason="tool_use",
                  agent_calls=[("toolu_bad", "Agent", "no-such-agent", "Typo")]),
        tool_result("toolu_bad", "2026-01-01T10:00:00.100Z", is_error=True),
        assistant("msg_p2", "2026-01-01T10:00:02Z"),
    ])
    conversations, problems = read(tmp_path)
    assert conversations[SESSION].links == ()
    assert problems.as_dict() == {"failed_agent_launch": {"count": 1, "examples": ["toolu_bad"]}}


def test_meta_json_gives_the_agent_type_and_links_an_agent_the_result_does_not_name(tmp_path: Path) -> None:
    write_jsonl(tmp_path / f"{SESSION}.jsonl", [
        assistant("msg_p1", "2026-01-01T10:00:00Z", stop_reason="tool_use",
                  agent_calls=[("toolu_a", "Agent", "", "Untyped"), ("toolu_k", "Agent", "Plan", "Killed")]),
        tool_result("toolu_a", "2026-01-01T10:00:30Z", agent_result("aun")),
    ])
    subagents = tmp_path / SESSION / "subagents"
    for agent_id in ("aun", "akill"):
        write_jsonl(subagents / f"agent-{agent_id}.jsonl",
                    [assistant(f"msg_{agent_id}", "2026-01-01T10:00:02Z", agent_id=agent_id)])
    write_meta(subagents / "agent-aun.jsonl", agent_type="general-purpose", tool_use_id="toolu_a")
    write_meta(subagents / "agent-akill.jsonl", agent_type="Plan", tool_use_id="toolu_k")
    conversations, problems = read(tmp_path)
    got = {(link.tool_use_id, link.agent_id, link.subagent_type, link.status) for link in conversations[SESSION].links}
    assert got == {("toolu_a", "aun", "general-purpose", "completed"), ("toolu_k", "akill", "Plan", "unfinished")}
    assert problems.as_dict() == {}


def test_a_broken_meta_json_is_counted_by_its_relative_path(tmp_path: Path) -> None:
    write_jsonl(tmp_path / f"{SESSION}.jsonl", [
        assistant("msg_p1", "2026-01-01T10:00:00Z", agent_calls=[("toolu_a", "Agent", "Explore", "Look")]),
        tool_result("toolu_a", "2026-01-01T10:00:30Z", agent_result("ax")),
    ])
    log = write_jsonl(tmp_path / SESSION / "subagents" / "agent-ax.jsonl",
                      [assistant("msg_x", "2026-01-01T10:00:02Z", agent_id="ax")])
    log.with_name("agent-ax.meta.json").write_text("{broken")
    conversations, problems = read(tmp_path)
    assert conversations[SESSION].links[0].subagent_type == "Explore"
    assert problems.as_dict() == {"unparsable_agent_meta": {"count": 1,
                                                            "examples": [f"{SESSION}/subagents/agent-ax.jsonl"]}}


def test_a_sidechain_line_naming_its_agent_is_filed_under_that_agent_not_linked_as_inline(tmp_path: Path) -> None:
    write_jsonl(tmp_path / f"{SESSION}.jsonl", [
        assistant("msg_p1", "2026-01-01T10:00:00Z", agent_calls=[("toolu_a", "Agent", "Explore", "Look"),
                                                               ("toolu_b", "Agent", "Explore", "Lost")]),
        {"type": "progress", "isSidechain": True, "agentId": "ax", "sessionId": SESSION,
         "timestamp": "2026-01-01T10:00:01Z", "uuid": "hp", "data": {"type": "hook_progress"}},
        tool_result("toolu_a", "2026-01-01T10:00:30Z", agent_result("ax")),
    ])
    write_jsonl(tmp_path / "agent-ax.jsonl", [assistant("msg_x", "2026-01-01T10:00:02Z", agent_id="ax")])
    conversations, problems = read(tmp_path)
    assert [(link.tool_use_id, link.agent_id) for link in conversations[SESSION].links] == [
        ("toolu_a", "ax"), ("toolu_b", "")]
    assert list(conversations[SESSION].subagents) == ["ax"]
    assert problems.as_dict() == {"unlinked_agent_tool_use": {"count": 1, "examples": ["toolu_b"]}}
