"""The example generator's background agents (`--background-agents`, docs/example.md#regenerating): launch
acknowledgements, then each agent's `<task-notification>` in a later parent prompt, read on every route
(docs/inputs.md#sub-agents, docs/jsonl.md, docs/routes.md)."""
from __future__ import annotations

import json
import re
import shutil
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from build_conversation_index import main as conversation_index_main
from build_minimal_traces import main as traces_main
from lib.db import open_databases
from lib.problems import ProblemCounter
from lib.synthetic.example import generate_example
from lib.capture.db_conversations import capture_conversations

SMALL = 0.05
SALT = "background"
TOTALS = re.compile(r"<status>(\w+)</status>.*<usage>total_tokens: (\d+)\ntool_uses: (\d+)\nduration_ms: (\d+)</usage>",
                    re.DOTALL)
# name → (variant, client headers)
CAPTURES = {"fixed": ("fixed", False), "cleaned": ("cleaned", False), "old": ("old", False), "headers": ("fixed", True)}
# Per capture, in the order the notifications reach the parent: how (a prompt while the parent is idle, or an
# attachment after a tool result while it is busy) and when, in seconds after the spawn (the Agent calls' line).
DELIVERIES = {
    "fixed": [("user", 58.114), ("user", 81.632), ("user", 88.011), ("attachment", 91.788)],
    "cleaned": [("user", 72.194), ("user", 113.646), ("user", 128.506), ("user", 144.092)],
}


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    made = {}
    for name, (variant, headers) in CAPTURES.items():
        folder = tmp_path_factory.mktemp(name)
        generate_example(folder, variant=variant, seed=7, scale=SMALL, client_headers=headers, background_agents=True)
        made[name] = folder
    return made


def _time(line: dict) -> datetime:
    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))


def _parent_log(folder: Path) -> list[dict]:
    (path,) = [path for path in (folder / "jsonl").glob("*.jsonl") if not path.name.startswith("agent-")]
    return [json.loads(text) for text in path.read_text().splitlines()]


def _notice_text(line: dict) -> str:
    if line["type"] == "attachment":
        return line["attachment"]["prompt"]
    if line["type"] == "queue-operation":
        return line.get("content", "")
    content = line["message"]["content"] if line["type"] == "user" else ""
    return content if isinstance(content, str) else ""


def _agent_of(text: str) -> str:
    found = re.search(r"<task-id>(\w+)</task-id>", text)
    return found.group(1) if found else ""


def _story(folder: Path) -> dict[str, Any]:
    """The parent log's facts: spawn time, each agent's launch acknowledgement, enqueue and delivery."""
    lines = _parent_log(folder)
    (launcher,) = [line for line in lines if line["type"] == "assistant"
                   and any(block.get("name") == "Agent" for block in line["message"]["content"])]
    acks = {line["toolUseResult"]["agentId"]: line for line in lines
            if isinstance(line.get("toolUseResult"), dict) and line["toolUseResult"].get("isAsync")}
    enqueued = {_agent_of(line["content"]): _time(line) for line in lines
                if line["type"] == "queue-operation" and line["operation"] == "enqueue"}
    delivered = {_agent_of(_notice_text(line)): line for line in lines
                 if line["type"] in ("user", "attachment") and "<task-notification>" in _notice_text(line)}
    return {"lines": lines, "launcher": launcher, "spawn": _time(launcher), "acks": acks, "enqueued": enqueued,
            "delivered": delivered}


def _notified_totals(folder: Path) -> dict[str, tuple[int, int, int, str]]:
    """agent id → (duration_ms, total_tokens, tool uses, status) as its notification says."""
    totals = {}
    for agent_id, line in _story(folder)["delivered"].items():
        found = TOTALS.search(_notice_text(line))
        assert found is not None
        status, tokens, tool_uses, duration = found.groups()
        totals[agent_id] = (int(duration), int(tokens), int(tool_uses), status)
    return totals


@pytest.mark.parametrize("name", ["fixed", "cleaned"])
def test_the_parent_is_acknowledged_at_launch_and_notified_later(captures: dict[str, Path], name: str) -> None:
    story = _story(captures[name])
    agent_calls = [block for block in story["launcher"]["message"]["content"] if block.get("name") == "Agent"]
    assert len(agent_calls) == 4 and all(block["input"]["run_in_background"] is True for block in agent_calls)
    assert len(story["acks"]) == 4
    for agent_id, ack in story["acks"].items():
        result = ack["toolUseResult"]
        assert (result["status"], result["agentId"]) == ("async_launched", agent_id)
        (text,) = [block["text"] for block in ack["message"]["content"][0]["content"]]
        assert text.startswith(f"Async agent launched successfully.\nagentId: {agent_id} (") and "<usage>" not in text
        assert round((_time(ack) - story["spawn"]).total_seconds(), 3) == {"fixed": 0.444, "cleaned": 0.327}[name]
    order = sorted(story["delivered"].items(), key=lambda item: _time(item[1]))
    assert [(line["type"], round((_time(line) - story["spawn"]).total_seconds(), 3))
            for _, line in order] == DELIVERIES[name]
    # Each notification is queued when the agent ends, and delivered then (idle) or when the parent's
    # current request or turn is over (busy).
    assert all(story["enqueued"][agent_id] <= _time(line) for agent_id, line in order)
    assert sum(story["enqueued"][agent_id] < _time(line) for agent_id, line in order) == {"fixed": 2, "cleaned": 1}[name]
    kinds = [line["type"] for line in story["lines"]]
    assert "progress" not in kinds  # a background agent's messages are in its own file only
    assert kinds.count("queue-operation") == 4 + sum(kind == "user" for kind, _ in DELIVERIES[name])
    assert sum(line["type"] == "assistant" for line in story["lines"]) == {"fixed": 13, "cleaned": 14}[name]


@pytest.mark.parametrize("name", ["fixed", "cleaned", "old"])
def test_the_db_bodies_carry_the_same_acknowledgements_and_notifications(captures: dict[str, Path], name: str) -> None:
    """The first parent row sending each notification is the request the log's delivery opened."""
    folder = captures[name]
    story = _story(folder)
    with sqlite3.connect(folder / "requests.db") as connection:
        bodies = [json.loads(body) for (body,) in connection.execute("SELECT body FROM requests ORDER BY rowid")]
    parent = [body for body in bodies if any(tool["name"] == "Agent" for tool in body.get("tools", []))]
    first_sent: dict[str, int] = {}
    for number, body in enumerate(parent):
        for block in body["messages"][-1]["content"]:
            if block.get("type") == "text" and "<task-notification>" in block["text"]:
                first_sent.setdefault(_agent_of(block["text"]), number)
                assert block["text"] == _notice_text(story["delivered"][_agent_of(block["text"])])
            if block.get("type") == "tool_result" and "Async agent launched" in str(block["content"]):
                assert "<usage>" not in str(block["content"])
    # The request after the delivery line: as many parent requests before it as answers logged before it
    # (old stores each turn twice, its streaming twin then the replay, with one body).
    per_turn = 2 if name == "old" else 1
    answers_before = {agent_id: per_turn * sum(line["type"] == "assistant" for line in story["lines"][:story["lines"].index(delivery)])
                      for agent_id, delivery in story["delivered"].items()}
    assert first_sent == answers_before
    assert sorted(first_sent.values()) == {"fixed": [5, 7, 9, 10], "cleaned": [5, 7, 9, 11], "old": [10, 14, 18, 22]}[name]


def _conversation_index(capture: Path, tmp_path: Path) -> list[tuple]:
    db = tmp_path / "indexed.db"
    shutil.copyfile(capture / "requests.db", db)
    result = CliRunner().invoke(conversation_index_main, [str(db), "--projects-path", str(capture / "jsonl"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["problems"] == {}
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT agent_id, spawn_epoch, completion_epoch, duration_ms, total_tokens, "
                                  "tool_use_count, status FROM subagent_links ORDER BY completion_epoch").fetchall()


@pytest.mark.parametrize("name", ["fixed", "cleaned"])
def test_jsonl_links_end_when_the_parent_receives_the_notification(captures: dict[str, Path], name: str,
                                                                   tmp_path: Path) -> None:
    story = _story(captures[name])
    links = _conversation_index(captures[name], tmp_path)
    assert [(round(end - spawn, 3)) for _, spawn, end, *_ in links] == [offset for _, offset in DELIVERIES[name]]
    totals = _notified_totals(captures[name])
    for agent_id, spawn, end, duration, tokens, tool_uses, status in links:
        assert spawn == story["spawn"].timestamp()
        assert end == _time(story["delivered"][agent_id]).timestamp()  # not the launch acknowledgement
        assert end >= story["enqueued"][agent_id].timestamp()
        assert (duration, tokens, tool_uses, status) == totals[agent_id]


def _traces(db: Path | None, jsonl: Path | None, out: Path, *extra: str) -> dict:
    arguments = [*([str(db)] if db else []), *(["--jsonl-dir", str(jsonl)] if jsonl else []), *extra,
                 "--output-dir", str(out), "--include-subagents", "--salt", SALT, "--anonymize", "-q"]
    result = CliRunner().invoke(traces_main, arguments)
    assert result.exit_code == 0, result.output
    (path,) = out.glob("*.json")
    return json.loads(path.read_text())


def _requests(document: dict) -> list[tuple]:
    """Every request in file order: lane, `in`, hash ids; a marker with its agent, type and facts."""
    rows: list[tuple] = []
    for entry in document["requests"]:
        if entry["type"] == "subagent":
            rows.append(("marker", entry["agent_id"], entry["subagent_type"], entry["duration_ms"],
                         entry["total_tokens"], entry["tool_use_count"], entry["status"]))
            rows += [(entry["agent_id"], r["in"], tuple(r["hash_ids"])) for r in entry["requests"]]
        else:
            rows.append(("parent", entry["in"], tuple(entry["hash_ids"])))
    return rows


def _markers(document: dict) -> list[tuple]:
    return [(entry["duration_ms"], entry["total_tokens"], entry["tool_use_count"], entry["status"])
            for entry in document["requests"] if entry["type"] == "subagent"]


@pytest.mark.parametrize("name", list(CAPTURES))
def test_db_only_traces_match_the_full_run(captures: dict[str, Path], name: str, tmp_path: Path) -> None:
    capture = captures[name]
    db = Path(shutil.copyfile(capture / "requests.db", tmp_path / "requests.db"))
    full = _traces(db, capture / "jsonl", tmp_path / "full")
    db_only = _traces(db, None, tmp_path / "db_only", "--db-only")
    assert _requests(db_only) == _requests(full)
    assert len(_requests(full)) == {"fixed": 101, "cleaned": 102, "old": 102, "headers": 101}[name]
    # Markers in the parent's call order, each with the totals and status its notification gave.
    notified = _notified_totals(capture)
    story = _story(capture)
    call_order = [block["id"] for block in story["launcher"]["message"]["content"] if block.get("name") == "Agent"]
    agent_of_call = {ack["message"]["content"][0]["tool_use_id"]: agent_id for agent_id, ack in story["acks"].items()}
    assert _markers(full) == _markers(db_only) == [notified[agent_of_call[call]] for call in call_order]


@pytest.mark.parametrize("name", ["fixed", "cleaned"])
def test_jsonl_only_traces_have_the_full_runs_requests_and_lanes(captures: dict[str, Path], name: str,
                                                                  tmp_path: Path) -> None:
    capture = captures[name]
    db = Path(shutil.copyfile(capture / "requests.db", tmp_path / "requests.db"))
    full = _traces(db, capture / "jsonl", tmp_path / "full")
    logs_only = _traces(None, capture / "jsonl", tmp_path / "logs_only")

    def lanes(document: dict) -> list[tuple]:
        return [row if row[0] == "marker" else (row[0],) for row in _requests(document)]

    assert lanes(logs_only) == lanes(full)
    sidecar = [json.loads(row) for path in sorted((tmp_path / "logs_only" / "_sidecar").glob("*.jsonl"))
               for row in path.read_text().splitlines()]
    assert len(sidecar) == {"fixed": 97, "cleaned": 98}[name]
    assert all(row["in"] == row["api_prompt_tokens"] for row in sidecar)


def test_db_only_links_end_at_the_row_carrying_the_notification(captures: dict[str, Path], tmp_path: Path) -> None:
    """Without logs the spawn is the calling row's end and the end the first row sending the notification:
    on the fixed capture 0.4-0.6 s after the logs' times (the proxy's whole-second completion, the request
    sent 80 ms after the delivery line)."""
    db = Path(shutil.copyfile(captures["fixed"] / "requests.db", tmp_path / "requests.db"))
    assert CliRunner().invoke(traces_main, [str(db), "--db-only", "--output-dir", str(tmp_path / "t"), "-q"]).exit_code == 0
    with open_databases(db) as (proxy, index):
        (conversation,) = capture_conversations(proxy, index, None, ProblemCounter()).conversations.values()
    ends = sorted((link.completion_time - link.spawn_time).total_seconds() for link in conversation.links)
    assert [round(end, 3) for end in ends] == [58.679, 82.0, 88.432, 92.395]
    assert {link.status for link in conversation.links} == {"completed"}


def test_the_cli_says_background_agents(tmp_path: Path) -> None:
    from examples.generate_example import main as generate_main

    result = CliRunner().invoke(generate_main, ["--background-agents", "--scale", str(SMALL), "--omit", "db",
                                                "--output-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["background_agents"] is True and summary["requests"]["parent"] == 14
    text = CliRunner().invoke(generate_main, ["--background-agents", "--scale", str(SMALL), "--variant", "fixed",
                                              "--output-dir", str(tmp_path)])
    assert "(2.5 MB, variant fixed, constant billing header, background agents)" in text.stdout
