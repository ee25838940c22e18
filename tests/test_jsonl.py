"""lib/capture/jsonl_conversations.py: discovery, streaming, dedupe and sub-agent links, on the real fixture and hand-made logs."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from jsonl_builders import (OTHER_SESSION, SESSION, agent_progress, agent_result, assistant, tool_result,
                            user_prompt, write_jsonl)
from lib.errors import InputError
from lib.capture.jsonl_conversations import Conversation, read_conversations
from lib.capture.jsonl_files import discover_logs
from lib.problems import ProblemCounter

FIXTURE_SESSION = "aece16d6-730c-4020-ab76-fd7ec747f412"


def read(path: Path) -> tuple[dict[str, Conversation], ProblemCounter]:
    problems = ProblemCounter()
    return read_conversations(discover_logs(path, problems), problems), problems


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


@pytest.fixture
def manifest(fixture_dir: Path) -> dict:
    return json.loads((fixture_dir / "manifest.json").read_text())


def test_fixture_parent_turns_are_the_twelve_api_calls_not_progress_copies(fixture_dir: Path, manifest: dict) -> None:
    conversations, problems = read(fixture_dir / "jsonl")
    conversation = conversations[FIXTURE_SESSION]
    assert [t.message_id for t in conversation.turns] == [t["msg_id"] for t in manifest["parent_turns"]]
    assert [t.jsonl_request_id for t in conversation.turns] == [t["request_id"] for t in manifest["parent_turns"]]
    assert [t.stop_reason for t in conversation.turns] == [t["stop_reason"] for t in manifest["parent_turns"]]
    assert conversation.turns[0].content_types == ("thinking", "text", "tool_use")
    assert conversation.turns[0].output_tokens == 227
    assert problems.as_dict() == {}


def test_fixture_subagent_turns_match_the_manifest(fixture_dir: Path, manifest: dict) -> None:
    conversation = read(fixture_dir / "jsonl")[0][FIXTURE_SESSION]
    for agent in manifest["agents"]:
        turns = conversation.subagents[agent["agentId"]]
        assert [t.message_id for t in turns] == [t["msg_id"] for t in agent["turns"]]
        assert [t.jsonl_request_id for t in turns] == [t["request_id"] for t in agent["turns"]]
        assert {t.model for t in turns} == {"claude-haiku-4-5-20251001"}


def test_fixture_links_carry_type_times_and_totals(fixture_dir: Path) -> None:
    links = read(fixture_dir / "jsonl")[0][FIXTURE_SESSION].links
    got = {(link.agent_id, link.tool_use_id, link.subagent_type, link.description, link.duration_ms,
            link.total_tokens, link.tool_use_count, link.status, link.has_log) for link in links}
    assert got == {
        ("a0c19174b948a6397", "toolu_016OzdPBi2YyQpBrdJTxOvRC", "Explore", "Survey existing tests",
         7758, 5292, 6, "completed", True),
        ("a3a42969eb2a3945f", "toolu_01uJB990tWxPufitizDBqQwh", "Explore", "Find related call sites",
         9573, 5650, 7, "completed", True),
        ("a096565023a673e7b", "toolu_01U3f2MZ7QJl3QE5CGOe1rEv", "Explore", "Explore csv_importer internals",
         11970, 6040, 9, "completed", True),
    }
    # All three were issued by one assistant line; each completes at its own tool_result line.
    assert {link.spawn_time for link in links} == {utc("2026-11-30T03:20:54.926+00:00")}
    completions = {link.agent_id: link.completion_time for link in links}
    assert completions["a0c19174b948a6397"] == utc("2026-11-30T03:21:02.695+00:00")
    assert completions["a096565023a673e7b"] == utc("2026-11-30T03:21:06.897+00:00")
    assert all(link.spawn_time < link.completion_time for link in links)


def test_truncated_final_line_is_counted_and_earlier_lines_kept(tmp_path: Path) -> None:
    write_jsonl(tmp_path / f"{SESSION}.jsonl",
                [assistant("msg_a", "2026-01-01T10:00:00.000Z"), assistant("msg_b", "2026-01-01T10:00:05.000Z")],
                tail='{"type": "assistant", "message": {"id": "msg_c"')
    conversations, problems = read(tmp_path)
    assert [t.message_id for t in conversations[SESSION].turns] == ["msg_a", "msg_b"]
    assert problems.as_dict() == {"truncated_jsonl_line": {"count": 1, "examples": [f"{SESSION}.jsonl:3"]}}


def test_broken_line_in_the_middle_is_counted_as_unparsable(tmp_path: Path) -> None:
    path = tmp_path / f"{SESSION}.jsonl"
    path.write_text(json.dumps(assistant("msg_a", "2026-01-01T10:00:00Z")) + "\n{not json\n"
                    + json.dumps(assistant("msg_b", "2026-01-01T10:00:01Z")) + "\n")
    conversations, problems = read(path)
    assert len(conversations[SESSION].turns) == 2
    assert problems.count("unparsable_jsonl_line") == 1


def test_split_lines_sharing_one_id_merge_types_and_keep_the_largest_output(tmp_path: Path) -> None:
    write_jsonl(tmp_path / f"{SESSION}.jsonl", [
        assistant("msg_split", "2026-01-01T10:00:01.500Z", types=("thinking",), output_tokens=4, stop_reason=None),
        assistant("msg_split", "2026-01-01T10:00:01.200Z", types=("text",), output_tokens=4, stop_reason=None,
                  request_id="req_split"),
        assistant("msg_split", "2026-01-01T10:00:02.000Z", types=("tool_use", "text"), output_tokens=87,
                  stop_reason="tool_use"),
    ])
    (turn,) = read(tmp_path)[0][SESSION].turns
    assert turn.content_types == ("thinking", "text", "tool_use")
    assert (turn.output_tokens, turn.stop_reason, turn.usage.output_tokens) == (87, "tool_use", 87)
    assert turn.timestamp == utc("2026-01-01T10:00:01.200+00:00")
    assert (turn.jsonl_request_id, turn.line_number) == ("req_split", 1)


def test_older_task_tool_links_through_tool_use_result(tmp_path: Path) -> None:
    write_jsonl(tmp_path / f"{SESSION}.jsonl", [
        assistant("msg_p1", "2026-01-01T10:00:00Z", agent_calls=[("toolu_t", "Task", "general-purpose", "Dig")],
                  stop_reason="tool_use"),
        tool_result("toolu_t", "2026-01-01T10:01:00Z", agent_result("abc", duration_ms=60000, status=None)),
        assistant("msg_p2", "2026-01-01T10:01:03Z"),
    ])
    write_jsonl(tmp_path / "agent-abc.jsonl", [user_prompt("2026-01-01T10:00:01Z", agent_id="abc"),
                                             assistant("msg_s1", "2026-01-01T10:00:05Z", agent_id="abc")])
    conversation = read(tmp_path)[0][SESSION]
    (link,) = conversation.links
    assert (link.agent_id, link.subagent_type, link.description, link.status, link.has_log) == (
        "abc", "general-purpose", "Dig", "completed", True)
    assert (link.spawn_time, link.completion_time) == (utc("2026-01-01T10:00:00+00:00"),
                                                       utc("2026-01-01T10:01:00+00:00"))
    assert link.duration_ms == 60000
    assert [t.message_id for t in conversation.subagents["abc"]] == ["msg_s1"]


def test_agent_progress_links_when_the_result_lacks_an_agent_id(tmp_path: Path) -> None:
    write_jsonl(tmp_path / f"{SESSION}.jsonl", [
        assistant("msg_p1", "2026-01-01T10:00:00Z", agent_calls=[("toolu_a", "Agent", "Explore", "Look"),
                                                               ("toolu_b", "Agent", "Explore", "Lost")]),
        agent_progress("agx", "toolu_a", "2026-01-01T10:00:00.500Z"),
        tool_result("toolu_a", "2026-01-01T10:00:30Z", agent_result(None)),
    ])
    write_jsonl(tmp_path / "agent-agx.jsonl", [assistant("msg_x1", "2026-01-01T10:00:02Z", agent_id="agx")])
    conversations, problems = read(tmp_path)
    links = {link.tool_use_id: link for link in conversations[SESSION].links}
    assert links["toolu_a"].agent_id == "agx" and links["toolu_a"].has_log
    assert (links["toolu_b"].agent_id, links["toolu_b"].status, links["toolu_b"].completion_time) == (
        "", "unfinished", None)
    assert problems.as_dict() == {"unlinked_agent_tool_use": {"count": 1, "examples": ["toolu_b"]}}
    assert [t.message_id for t in conversations[SESSION].turns] == ["msg_p1"]


def test_newer_subagents_layout_is_found_from_the_directory_and_from_the_single_file(tmp_path: Path) -> None:
    project = tmp_path / "projects" / "-home-dev-acme"
    parent = write_jsonl(project / f"{SESSION}.jsonl", [
        assistant("msg_p1", "2026-01-01T10:00:00Z", agent_calls=[("toolu_n", "Agent", "Explore", "New")]),
        tool_result("toolu_n", "2026-01-01T10:00:09Z", agent_result("new1")),
    ])
    write_jsonl(project / SESSION / "subagents" / "agent-new1.jsonl",
                [assistant("msg_n1", "2026-01-01T10:00:03Z", agent_id="new1")])
    write_jsonl(project / f"{OTHER_SESSION}.jsonl", [assistant("msg_o1", "2026-01-02T10:00:00Z", session=OTHER_SESSION)])
    from_dir, _ = read(tmp_path / "projects")
    from_file, _ = read(parent)
    assert sorted(from_dir) == sorted([SESSION, OTHER_SESSION])
    assert list(from_file) == [SESSION]
    for conversations in (from_dir, from_file):
        assert [t.message_id for t in conversations[SESSION].subagents["new1"]] == ["msg_n1"]
        assert conversations[SESSION].links[0].has_log


def test_single_parent_file_ignores_other_sessions_agent_files_beside_it(tmp_path: Path) -> None:
    parent = write_jsonl(tmp_path / f"{SESSION}.jsonl", [assistant("msg_p1", "2026-01-01T10:00:00Z")])
    write_jsonl(tmp_path / "agent-mine.jsonl", [assistant("msg_m1", "2026-01-01T10:00:01Z", agent_id="mine")])
    write_jsonl(tmp_path / "agent-theirs.jsonl",
                [assistant("msg_t1", "2026-01-01T10:00:01Z", agent_id="theirs", session=OTHER_SESSION)])
    assert [log.agent_id for log in discover_logs(parent)] == ["", "mine"]


def test_default_location_honours_claude_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_jsonl(tmp_path / "cfg" / "projects" / "p" / f"{SESSION}.jsonl", [assistant("msg_a", "2026-01-01T10:00:00Z")])
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "cfg"))
    assert [log.conversation_id for log in discover_logs(None)] == [SESSION]


def test_missing_path_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or directory"):
        discover_logs(tmp_path / "absent")


def test_unknown_entry_types_are_counted_per_type_and_synthetic_lines_skipped(tmp_path: Path) -> None:
    write_jsonl(tmp_path / f"{SESSION}.jsonl", [
        {"type": "future-record", "operation": "enqueue"},
        {"type": "future-record", "operation": "dequeue"},
        {"type": "other-future-record", "title": "x"},
        {"type": "summary", "summary": "known type", "leafUuid": "u"},
        assistant("msg_real", "2026-01-01T10:00:00Z", types=("text",)),
        assistant("msg_fake", "2026-01-01T10:00:01Z", model="<synthetic>"),
    ])
    conversations, problems = read(tmp_path)
    assert [t.message_id for t in conversations[SESSION].turns] == ["msg_real"]
    assert {reason: entry["count"] for reason, entry in problems.as_dict().items()} == {
        "unknown_entry_type:future-record": 2, "unknown_entry_type:other-future-record": 1, "synthetic_assistant_line": 1}


def test_mixed_time_zone_offsets_order_turns_by_instant(tmp_path: Path) -> None:
    write_jsonl(tmp_path / f"{SESSION}.jsonl", [
        assistant("msg_late", "2026-01-01T06:00:30-04:00"),   # 10:00:30 UTC
        assistant("msg_early", "2026-01-01T10:00:10Z"),
        assistant("msg_mid", "2026-01-01T11:00:20+01:00"),    # 10:00:20 UTC
    ])
    assert [t.message_id for t in read(tmp_path)[0][SESSION].turns] == ["msg_early", "msg_mid", "msg_late"]


def test_duplicate_message_ids_are_counted_within_and_across_conversations(tmp_path: Path) -> None:
    write_jsonl(tmp_path / f"{SESSION}.jsonl", [assistant("msg_a", "2026-01-01T10:00:00Z"),
                                                assistant("msg_shared", "2026-01-01T10:00:01Z")])
    write_jsonl(tmp_path / "agent-dup.jsonl", [assistant("msg_a", "2026-01-01T10:00:02Z", agent_id="dup"),
                                               assistant("msg_d1", "2026-01-01T10:00:03Z", agent_id="dup")])
    write_jsonl(tmp_path / f"{OTHER_SESSION}.jsonl",
                [assistant("msg_shared", "2026-01-01T10:00:01Z", session=OTHER_SESSION)])
    conversations, problems = read(tmp_path)
    assert [t.message_id for t in conversations[SESSION].subagents["dup"]] == ["msg_d1"]
    assert [t.message_id for t in conversations[OTHER_SESSION].turns] == ["msg_shared"]
    assert problems.as_dict()["duplicate_message_id"] == {
        "count": 1, "examples": [f"msg_a ({SESSION}.jsonl, agent-dup.jsonl)"]}
    assert problems.as_dict()["duplicate_message_id_across_conversations"] == {"count": 1, "examples": ["msg_shared"]}


def test_subagent_without_log_file_has_no_log(tmp_path: Path) -> None:
    write_jsonl(tmp_path / f"{SESSION}.jsonl", [
        assistant("msg_p1", "2026-01-01T10:00:00Z", agent_calls=[("toolu_g", "Agent", "Explore", "Gone")]),
        tool_result("toolu_g", "2026-01-01T10:00:40Z", agent_result("ghost", duration_ms=39000)),
    ])
    conversations, problems = read(tmp_path)
    (link,) = conversations[SESSION].links
    assert (link.agent_id, link.has_log, link.duration_ms) == ("ghost", False, 39000)
    assert conversations[SESSION].subagents == {}
    assert problems.as_dict() == {"subagent_log_missing": {"count": 1, "examples": ["ghost"]}}
