"""Fault injection: every tool on mutated copies of a capture (docs/reliability.md, issue 7 item 1).

Each fault mutates a copy of a pristine capture (the example generator's streaming "fixed" capture
and its non-streaming "cleaned" one, at --scale 0.05), runs the whole pipeline
with --json, and checks per tool: exit 0 (or 2 and one line when the input is unusable as a
whole), the affected rows counted under a named reason, and every unaffected request still in
the output (index rows and trace requests compared with the unmutated run).
"""
from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from lib.synthetic.proxy_db_writer import CaptureWriter
from lib.synthetic.example import generate_example
from lib.validate.trace_files import check_directory
from tests.test_turn_timing import assert_same_trace_but_agent_times
from tests.tool_runner import TOOLS, Tool, ToolRun, Workspace, run_tool, tool_params

SCALE = 0.05
HUGE_TEXT_BYTES = 5_000_000
BAD_BYTE = b"\xff"
OTHER_SESSION = "dddddddd-0000-4000-8000-000000000001"
UNKNOWN_TYPE = "future-entry"


# --- the pristine captures and what the unmutated pipeline produced -------------------------------


@dataclass(frozen=True)
class Baseline:
    """The unmutated run: index rows, trace requests by lane, and the native files."""

    source: Path
    traces: Path
    index_rows: dict[str, tuple]
    message_requests: dict[str, str]
    conversation_rows: dict[str, Optional[str]]
    trace_requests: dict[str, str]
    parent_ids: list[str]
    agent_ids: dict[str, list[str]]
    native_files: dict[str, bytes]
    runs: dict[str, ToolRun]

    @property
    def parent_file(self) -> Path:
        return next(path for path in (self.source / "jsonl").glob("*.jsonl") if not path.name.startswith("agent-"))

    def request_of(self, message_id: str) -> str:
        return self.message_requests[message_id]

    def message_of(self, request_id: str) -> str:
        return next(m for m, r in self.message_requests.items() if r == request_id)


def _copy_capture(source: Path, target: Path) -> Workspace:
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "requests.db", target / "requests.db")
    shutil.copytree(source / "jsonl", target / "jsonl")
    return Workspace(db=target / "requests.db", jsonl=target / "jsonl", out=target / "out")


def _run_pipeline(workspace: Workspace) -> dict[str, ToolRun]:
    """Every present tool in pipeline order, each with --json."""
    return {tool.name: run_tool(tool, workspace) for tool in TOOLS if tool.is_present}


def _index_rows(db: Path) -> dict[str, tuple]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT request_id, message_id, kind, input_tokens, cache_read_tokens, output_tokens, stop_reason,"
            " output_types FROM message_index").fetchall()
    return {row[0]: row[1:] for row in rows}


def _conversation_rows(db: Path) -> dict[str, Optional[str]]:
    with sqlite3.connect(db) as connection:
        return dict(connection.execute("SELECT message_id, request_id FROM conversation_index"))


def _trace_requests(traces: Path) -> dict[str, str]:
    """request id → lane, from the sidecars (one row per written request)."""
    lanes: dict[str, str] = {}
    for sidecar in sorted((traces / "_sidecar").glob("*.jsonl")):
        for line in sidecar.read_text().splitlines():
            row = json.loads(line)
            assert row["request_id"] not in lanes, f"request {row['request_id']} written twice"
            lanes[row["request_id"]] = row["lane"]
    return lanes


def _sidecar_rows(traces: Path) -> dict[str, dict[str, Any]]:
    return {row["request_id"]: row for sidecar in (traces / "_sidecar").glob("*.jsonl")
            for row in map(json.loads, sidecar.read_text().splitlines())}


def _native_files(traces: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(traces.glob("*.json"))}


def _baseline(source: Path, scratch: Path) -> Baseline:
    workspace = _copy_capture(source, scratch)
    runs = _run_pipeline(workspace)
    for name, run in runs.items():
        assert run.exit_code == 0, f"{name} fails on the pristine capture: {run.describe()}"
    index_rows = _index_rows(workspace.db)
    trace_requests = _trace_requests(workspace.traces)
    parent_ids = [rid for rid, lane in trace_requests.items() if lane == "parent"]
    agent_ids: dict[str, list[str]] = {}
    for rid, lane in trace_requests.items():
        if lane != "parent":
            agent_ids.setdefault(lane, []).append(rid)
    return Baseline(
        source=source, traces=workspace.traces, index_rows=index_rows,
        message_requests={row[0]: rid for rid, row in index_rows.items() if row[0]},
        conversation_rows=_conversation_rows(workspace.db), trace_requests=trace_requests,
        parent_ids=parent_ids, agent_ids=agent_ids, native_files=_native_files(workspace.traces), runs=runs,
    )


@pytest.fixture(scope="session")
def baselines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Baseline]:
    """The pristine captures and their runs: "fixed" (streaming chunks) and "cleaned" (the shipped
    example's non-streaming rows), both from the example generator at --scale 0.05 for speed."""
    root = tmp_path_factory.mktemp("fault-captures")
    result = {}
    for variant in ("fixed", "cleaned"):
        source = root / f"{variant}-source"
        generate_example(source, variant=variant, seed=7, scale=SCALE)
        result[variant] = _baseline(source, root / f"{variant}-baseline")
    return result


# --- mutation helpers -----------------------------------------------------------------------------


def _column(db: Path, request_id: str, column: str) -> Any:
    with sqlite3.connect(db) as connection:
        return connection.execute(f"SELECT {column} FROM requests WHERE id = ?", (request_id,)).fetchone()[0]


def _set_column(db: Path, request_id: str, column: str, value: Any) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute(f"UPDATE requests SET {column} = ? WHERE id = ?", (value, request_id))


def _set_raw_text(db: Path, request_id: str, column: str, raw: bytes) -> None:
    """Store bytes typed TEXT, as a corrupt writer would (sqlite3 would refuse a str with bad bytes)."""
    with sqlite3.connect(db) as connection:
        connection.execute(f"UPDATE requests SET {column} = CAST(? AS TEXT) WHERE id = ?", (raw, request_id))


def _edit_response(db: Path, request_id: str, edit: Callable[[dict], None]) -> None:
    response = json.loads(_column(db, request_id, "response"))
    edit(response)
    _set_column(db, request_id, "response", json.dumps(response, separators=(",", ":")))


def _edit_chunks(db: Path, request_id: str, edit: Callable[[list[dict]], list[dict]]) -> None:
    """Rewrite a streaming response's chunks as parsed events (`data: ` prefix kept)."""
    def apply(response: dict) -> None:
        events = [json.loads(chunk[len("data: "):]) for chunk in response["streamingChunks"]]
        response["streamingChunks"] = ["data: " + json.dumps(event, separators=(",", ":")) for event in edit(events)]
    _edit_response(db, request_id, apply)


def _jsonl_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _write_jsonl(path: Path, entries: list[dict]) -> None:
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries))


def _unlinked(base: Baseline, more: int) -> dict[str, int]:
    """The visualizer's `unlinked` count: the baseline's (quota probe, title) plus rows no log names now."""
    if "visualizer" not in base.runs:
        return {}
    return {"unlinked": base.runs["visualizer"].problems["unlinked"]["count"] + more}


def _is_streaming_capture(base: Baseline, request_id: str) -> bool:
    return "streamingChunks" in json.loads(_column(base.source / "requests.db", request_id, "response"))


# --- the faults -----------------------------------------------------------------------------------


@dataclass
class Effect:
    """What a fault must do to the run.

    `counts`: tool → {reason: exact count} in its --json problems. `dropped`: request ids that
    leave the traces. `touched`: request ids whose index row may differ from the baseline.
    `fatal`: a phrase of the one-line error when every tool must exit 2.
    """

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)
    touched: set[str] = field(default_factory=set)
    fatal: str = ""
    same_traces: bool = False
    check: Optional[Callable[[Workspace, dict[str, ToolRun]], None]] = None


Mutation = Callable[[Workspace, Baseline], Effect]


def _target(base: Baseline) -> str:
    """A parent turn in the middle of the conversation."""
    return base.parent_ids[len(base.parent_ids) // 2]


def _sub_target(base: Baseline) -> str:
    """A sub-agent turn in the middle of the first agent's lane."""
    lane = base.agent_ids[sorted(base.agent_ids)[0]]
    return lane[len(lane) // 2]


def body_invalid_json(ws: Workspace, base: Baseline) -> Effect:
    rid = _target(base)
    body = _column(ws.db, rid, "body")
    _set_column(ws.db, rid, "body", body[: len(body) // 2])
    return Effect(counts={"message_index": {"broken_request_body": 1}, "traces": {"body_unparsable": 1},
                          "visualizer": {"body_unparsable": 1}},
                  dropped={rid}, touched={rid})


def body_without_messages(ws: Workspace, base: Baseline) -> Effect:
    rid = _sub_target(base)
    body = json.loads(_column(ws.db, rid, "body"))
    del body["messages"]
    _set_column(ws.db, rid, "body", json.dumps(body))
    reason = {"body_without_messages": 1}
    return Effect(counts={"message_index": reason, "traces": reason, "visualizer": reason}, dropped={rid}, touched={rid})


def response_invalid_json(ws: Workspace, base: Baseline) -> Effect:
    rid = _target(base)
    response = _column(ws.db, rid, "response")
    _set_column(ws.db, rid, "response", response[: len(response) // 3])
    return _unmatched_turn(base, rid, {"broken_response_json": 1, "unparsable_response": 1}, "unparsable_row")


def _unmatched_turn(base: Baseline, rid: str, index_reasons: dict[str, int], row_reason: str) -> Effect:
    """A row whose message id is lost: the index counts why, the JSONL turn no longer finds its row."""
    message_id = base.message_of(rid)

    def check(ws: Workspace, runs: dict[str, ToolRun]) -> None:
        summary = runs["conversation_index"].summary
        assert summary["total_ids"] - summary["matched_ids"] == 1
        assert summary["unmatched_examples"] == [message_id]

    return Effect(counts={"message_index": index_reasons, "traces": {"turn_not_in_db": 1},
                          "visualizer": {row_reason: 1, "turn_not_in_db": 1}},
                  dropped={rid}, touched={rid}, check=check)


def response_null(ws: Workspace, base: Baseline) -> Effect:
    rid = _sub_target(base)
    _set_column(ws.db, rid, "response", None)
    # Without a response the row has no message id, so the JSONL turn cannot find it.
    return _unmatched_turn(base, rid, {"pending_response": 1}, "pending_row")


def response_empty_string(ws: Workspace, base: Baseline) -> Effect:
    rid = _target(base)
    _set_column(ws.db, rid, "response", "")
    return _unmatched_turn(base, rid, {"broken_response_json": 1, "unparsable_response": 1}, "unparsable_row")


def response_body_text_only(ws: Workspace, base: Baseline) -> Effect:
    """A 200 whose body did not parse: the proxy stores it as `bodyText` (docs/inputs.md#response-column)."""
    rid = _target(base)
    streaming = _is_streaming_capture(base, rid)

    def edit(response: dict) -> None:
        response["bodyText"] = json.dumps(response.pop("body"))[:200]
        response.pop("streamingChunks", None)

    _edit_response(ws.db, rid, edit)
    reason = "no_stream_chunks" if streaming else "no_message_body"
    return _unmatched_turn(base, rid, {reason: 1, "unparsable_response": 1}, "unparsable_row")


def response_error_status(ws: Workspace, base: Baseline) -> Effect:
    """A 529 overloaded: `bodyText` only, not a turn (docs/inputs.md#errors-and-missing-responses)."""
    rid = _sub_target(base)

    def edit(response: dict) -> None:
        response.pop("body")
        response.pop("streamingChunks", None)
        response["statusCode"] = 529
        response["bodyText"] = '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'

    _edit_response(ws.db, rid, edit)
    return _unmatched_turn(base, rid, {"error_response": 1}, "error_row")


def chunk_invalid_json(ws: Workspace, base: Baseline) -> Effect:
    rid = _target(base)

    def edit(response: dict) -> None:
        chunks = response["streamingChunks"]
        delta = next(i for i, chunk in enumerate(chunks) if "content_block_delta" in chunk)
        chunks[delta] = chunks[delta][: len(chunks[delta]) // 2]

    _edit_response(ws.db, rid, edit)

    def check(ws: Workspace, runs: dict[str, ToolRun]) -> None:
        # One broken delta loses nothing else of the row (docs/inputs.md#streaming-answers).
        assert _index_rows(ws.db)[rid] == base.index_rows[rid]

    return Effect(counts={"message_index": {"broken_stream_chunk": 1}, "traces": {"broken_stream_chunk": 1}},
                  touched={rid}, check=check)


def chunks_without_message_start(ws: Workspace, base: Baseline) -> Effect:
    rid = _target(base)
    _edit_chunks(ws.db, rid, lambda events: [e for e in events if e.get("type") != "message_start"])
    return Effect(counts={"message_index": {"missing_message_start": 1}, "traces": {"missing_message_start": 1}},
                  touched={rid})


def chunks_without_message_delta(ws: Workspace, base: Baseline) -> Effect:
    rid = _sub_target(base)
    _edit_chunks(ws.db, rid, lambda events: [e for e in events if e.get("type") != "message_delta"])
    return Effect(counts={"message_index": {"missing_message_delta": 1}, "traces": {"missing_message_delta": 1}},
                  touched={rid})


def _strip_usage(ws: Workspace, rid: str, replace: Callable[[dict], Optional[dict]]) -> None:
    """Apply `replace` to every usage object of the response (None removes it)."""
    def fix(holder: dict) -> None:
        if isinstance(holder.get("usage"), dict):
            usage = replace(holder["usage"])
            if usage is None:
                del holder["usage"]
            else:
                holder["usage"] = usage

    def edit(response: dict) -> None:
        fix(response["body"])
        chunks = response.get("streamingChunks")
        if chunks:
            events = [json.loads(chunk[len("data: "):]) for chunk in chunks]
            for event in events:
                fix(event)
                if isinstance(event.get("message"), dict):
                    fix(event["message"])
            response["streamingChunks"] = ["data: " + json.dumps(e, separators=(",", ":")) for e in events]

    _edit_response(ws.db, rid, edit)


def usage_missing(ws: Workspace, base: Baseline) -> Effect:
    rid = _target(base)
    _strip_usage(ws, rid, lambda usage: None)
    return Effect(counts={"message_index": {"missing_usage": 1}, "traces": {"missing_usage": 1},
                          "validator": {"matched_without_usage": 1}}, touched={rid})


def usage_null(ws: Workspace, base: Baseline) -> Effect:
    rid = _sub_target(base)
    _strip_usage(ws, rid, lambda usage: {key: None for key in usage})
    return Effect(counts={"message_index": {"missing_usage": 1}, "traces": {"missing_usage": 1},
                          "validator": {"matched_without_usage": 1}}, touched={rid})


def huge_message(ws: Workspace, base: Baseline) -> Effect:
    """A 5 MB pasted log in the last parent turn: processed like any other message."""
    rid = base.parent_ids[-1]
    body = json.loads(_column(ws.db, rid, "body"))
    words = ("scheduler", "block", "prefix", "tensor", "page", "worker", "attention", "cache")
    text = " ".join(words[(i * 7) % len(words)] + str(i % 97) for i in range(HUGE_TEXT_BYTES // 8))[:HUGE_TEXT_BYTES]
    body["messages"][-1]["content"].append({"text": text, "type": "text"})
    _set_column(ws.db, rid, "body", json.dumps(body))

    def check(ws: Workspace, runs: dict[str, ToolRun]) -> None:
        assert _sidecar_rows(ws.traces)[rid]["tokenizer_tokens"] > 500_000

    return Effect(touched={rid}, check=check)


def _insert_bad_byte(raw: bytes, anchor: bytes) -> bytes:
    """Put an invalid UTF-8 byte at the start of the string value that `anchor` opens."""
    position = raw.index(anchor) + len(anchor)
    return raw[:position] + BAD_BYTE + raw[position:]


def non_utf8_body(ws: Workspace, base: Baseline) -> Effect:
    rid = _target(base)
    raw = _column(ws.db, rid, "body").encode()
    _set_raw_text(ws.db, rid, "body", _insert_bad_byte(raw, b'"text":"'))
    return Effect(counts={"message_index": {"invalid_utf8_body": 1}, "traces": {"invalid_utf8_body": 1}},
                  touched={rid})


def non_utf8_response(ws: Workspace, base: Baseline) -> Effect:
    rid = _sub_target(base)
    raw = _column(ws.db, rid, "response").encode()
    _set_raw_text(ws.db, rid, "response", _insert_bad_byte(raw, b'"Server":["'))

    def check(ws: Workspace, runs: dict[str, ToolRun]) -> None:
        # The bad byte sits in a header value: every fact of the row survives.
        assert _index_rows(ws.db)[rid] == base.index_rows[rid]

    return Effect(counts={"message_index": {"invalid_utf8_response": 1}, "traces": {"invalid_utf8_response": 1}},
                  touched={rid}, check=check)


def non_utf8_jsonl(ws: Workspace, base: Baseline) -> Effect:
    """A corrupt byte inside an assistant line's text: the line is repaired and kept."""
    rid = _target(base)
    path = ws.jsonl / base.parent_file.name
    message_id = base.message_of(rid).encode()
    lines = path.read_bytes().splitlines(keepends=True)
    number = next(i for i, line in enumerate(lines) if b'"type":"assistant"' in line and message_id in line)
    lines[number] = _insert_bad_byte(lines[number], b'"model":"')
    path.write_bytes(b"".join(lines))
    jsonl_reason = {"invalid_utf8_jsonl_line": 1}
    return Effect(counts={"conversation_index": jsonl_reason, "traces": jsonl_reason})


def truncated_last_jsonl_line(ws: Workspace, base: Baseline) -> Effect:
    """A live session mid-write: the parent's last line is cut off without its newline."""
    path = ws.jsonl / base.parent_file.name
    raw = path.read_bytes().rstrip(b"\n")
    head, _, last = raw.rpartition(b"\n")
    path.write_bytes(head + b"\n" + last[: len(last) // 2])
    entry = json.loads(last)
    dropped: set[str] = set()
    if entry.get("type") == "assistant":
        message_id = entry["message"]["id"]
        if message_id.encode() not in head and message_id in base.message_requests:
            dropped = {base.request_of(message_id)}
    reason = {"truncated_jsonl_line": 1}
    return Effect(counts={"conversation_index": reason, "traces": reason, "visualizer": _unlinked(base, len(dropped))},
                  dropped=dropped)


def unknown_entry_types(ws: Workspace, base: Baseline) -> Effect:
    path = ws.jsonl / base.parent_file.name
    entries = _jsonl_lines(path)
    novel = {"type": UNKNOWN_TYPE, "sessionId": entries[1].get("sessionId"), "timestamp": "2026-03-25T19:42:09.000Z",
             "payload": {"nested": [1, 2, 3]}}
    for position in (len(entries), len(entries) // 2, 1):
        entries.insert(position, novel)
    # Unknown fields on known lines are ignored silently (docs/inputs.md#entries).
    for entry in entries:
        entry["futureField"] = {"x": 1}
    _write_jsonl(path, entries)
    reason = {f"unknown_entry_type:{UNKNOWN_TYPE}": 3}
    return Effect(counts={"conversation_index": reason, "traces": reason}, same_traces=True)


def duplicate_ids_across_conversations(ws: Workspace, base: Baseline) -> Effect:
    """A resumed session: another file repeats the first two parent turns under a new sessionId."""
    copies = []
    for entry in _jsonl_lines(base.parent_file):
        if entry.get("type") == "assistant" and len(copies) < 2:
            entry["sessionId"] = OTHER_SESSION
            copies.append(entry)
    _write_jsonl(ws.jsonl / f"{OTHER_SESSION}.jsonl", copies)
    reason = {"duplicate_message_id_across_conversations": 2}
    # Each request goes into one trace only: no turn is counted twice (docs/inputs.md#old-proxy-twins,
    # docs/reliability.md#one-request-one-trace).
    return Effect(counts={"conversation_index": reason,
                          "traces": {**reason, "request_in_two_conversations": 2,
                                     "conversation_without_db_requests": 1},
                          "visualizer": {"request_in_two_conversations": 2}})


def duplicate_ids_in_subagent_file(ws: Workspace, base: Baseline) -> Effect:
    """A parent turn's line copied into a sub-agent file of the same conversation."""
    line = next(e for e in _jsonl_lines(base.parent_file) if e.get("type") == "assistant")
    agent_file = ws.jsonl / f"agent-{sorted(base.agent_ids)[0]}.jsonl"
    _write_jsonl(agent_file, [*_jsonl_lines(agent_file), line])
    reason = {"duplicate_message_id": 1}
    return Effect(counts={"conversation_index": reason, "traces": reason})


def _same_traces_but_times_of(agent: str, base: Baseline) -> Callable[[Workspace, dict[str, ToolRun]], None]:
    """The baseline's traces, but the agent's starts lose the precision its JSONL log gave them."""
    def check(ws: Workspace, runs: dict[str, ToolRun]) -> None:
        files = _native_files(ws.traces)
        assert files.keys() == base.native_files.keys()
        for name, data in files.items():
            assert_same_trace_but_agent_times(data, base.native_files[name], agent)
    return check


def subagent_file_missing(ws: Workspace, base: Baseline) -> Effect:
    agent = sorted(base.agent_ids)[0]
    (ws.jsonl / f"agent-{agent}.jsonl").unlink()
    # The parent's link still names it: its requests are found in the DB inside the link's window.
    found = {"subagent_requests_from_db": 1}
    return Effect(counts={"conversation_index": {"subagent_log_missing": 1},
                          "traces": {"subagent_log_missing": 1, **found},
                          "visualizer": {**_unlinked(base, 0), **found}}, check=_same_traces_but_times_of(agent, base))


def subagent_file_empty(ws: Workspace, base: Baseline) -> Effect:
    agent = sorted(base.agent_ids)[-1]
    (ws.jsonl / f"agent-{agent}.jsonl").write_bytes(b"")
    reasons = {"subagent_log_without_session": 1, "subagent_log_missing": 1}
    found = {"subagent_requests_from_db": 1}
    return Effect(counts={"conversation_index": reasons, "traces": {**reasons, **found},
                          "visualizer": {**_unlinked(base, 0), **found}}, check=_same_traces_but_times_of(agent, base))


def parent_file_empty(ws: Workspace, base: Baseline) -> Effect:
    """An empty parent log: its sub-agent files still name the session, but no parent turn is left.

    The parent's rows, named by no log now, come back as a DB-only conversation (docs/routes.md#db-only),
    with the sub-agents' rows, matched to the parent's Agent calls as without logs: no row is dropped."""
    (ws.jsonl / base.parent_file.name).write_bytes(b"")
    agents = len(base.agent_ids)
    return Effect(counts={"conversation_index": {"subagent_log_without_link": agents},
                          "traces": {"subagent_log_without_link": agents, "conversation_without_db_requests": 1}})


def _restamp_db(ws: Workspace, stamp: Callable[[int, str], str]) -> None:
    """Rewrite every row's `timestamp` (and its response's `completedAt`) with `stamp(rowid, value)`."""
    with sqlite3.connect(ws.db) as connection:
        rows = connection.execute("SELECT rowid, timestamp, response FROM requests").fetchall()
        for rowid, timestamp, raw in rows:
            response = json.loads(raw)
            response["completedAt"] = stamp(rowid, response["completedAt"])
            connection.execute("UPDATE requests SET timestamp = ?, response = ? WHERE rowid = ?",
                               (stamp(rowid, timestamp), json.dumps(response), rowid))


def _restamp_jsonl(ws: Workspace, stamp: Callable[[int, str], str]) -> None:
    for path in ws.jsonl.glob("*.jsonl"):
        entries = _jsonl_lines(path)
        for number, entry in enumerate(entries):
            if isinstance(entry.get("timestamp"), str):
                entry["timestamp"] = stamp(number, entry["timestamp"])
        _write_jsonl(path, entries)


def _same_instant(number: int, value: str) -> str:
    """The same instant in the original offset, `Z`, or +05:30, by turns."""
    from datetime import timedelta, timezone

    from lib.timestamps import parse_timestamp

    moment = parse_timestamp(value)
    zone = (None, timezone.utc, timezone(timedelta(hours=5, minutes=30)))[number % 3]
    if zone is None:
        return value
    text = moment.astimezone(zone).isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def mixed_offsets(ws: Workspace, base: Baseline) -> Effect:
    """Same instants written with mixed offsets and `Z`: the traces must not change by one byte."""
    _restamp_db(ws, _same_instant)
    _restamp_jsonl(ws, _same_instant)
    return Effect(same_traces=True)


def _with_fraction(number: int, value: str) -> str:
    """Add nanosecond fractions (Go's RFC3339Nano) on every other value."""
    if number % 2 or "." in value:
        return value
    stamp, zone = value[:19], value[19:]
    return f"{stamp}.123456789{zone}"


def fractional_seconds(ws: Workspace, base: Baseline) -> Effect:
    _restamp_db(ws, _with_fraction)
    _restamp_jsonl(ws, _with_fraction)
    return Effect()


def empty_db(ws: Workspace, base: Baseline) -> Effect:
    """A proxy DB with the real schema and no rows: nothing to index, every JSONL turn unmatched."""
    ws.db.unlink()
    CaptureWriter(ws.db).close()
    # Sub-agent turns are not looked up once their parent has no request left.
    turns = len(base.parent_ids)

    def check(ws: Workspace, runs: dict[str, ToolRun]) -> None:
        assert runs["message_index"].summary["rows_total"] == 0
        assert runs["conversation_index"].summary["matched_ids"] == 0
        assert runs["traces"].summary["traces_written"] == 0

    return Effect(counts={"traces": {"turn_not_in_db": turns, "conversation_without_db_requests": 1}},
                  dropped=set(base.trace_requests), touched=set(base.index_rows), check=check)


def not_a_proxy_db(ws: Workspace, base: Baseline) -> Effect:
    ws.db.unlink()
    with sqlite3.connect(ws.db) as connection:
        connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        connection.execute("INSERT INTO notes (text) VALUES ('hello')")
    return Effect(fatal="not a claude-code-proxy DB")


def not_sqlite(ws: Workspace, base: Baseline) -> Effect:
    ws.db.write_text("timestamp,model\n2026-03-25,claude\n")
    return Effect(fatal="not a SQLite database")


def empty_file(ws: Workspace, base: Baseline) -> Effect:
    ws.db.write_bytes(b"")
    return Effect(fatal="not a claude-code-proxy DB")


FAULTS: dict[str, tuple[Mutation, tuple[str, ...]]] = {
    "body_invalid_json": (body_invalid_json, ("fixed", "cleaned")),
    "body_without_messages": (body_without_messages, ("fixed",)),
    "response_invalid_json": (response_invalid_json, ("fixed", "cleaned")),
    "response_null": (response_null, ("fixed", "cleaned")),
    "response_empty_string": (response_empty_string, ("fixed", "cleaned")),
    "response_body_text_only": (response_body_text_only, ("fixed", "cleaned")),
    "response_error_status": (response_error_status, ("fixed",)),
    "chunk_invalid_json": (chunk_invalid_json, ("fixed",)),
    "chunks_without_message_start": (chunks_without_message_start, ("fixed",)),
    "chunks_without_message_delta": (chunks_without_message_delta, ("fixed",)),
    "usage_missing": (usage_missing, ("fixed", "cleaned")),
    "usage_null": (usage_null, ("fixed", "cleaned")),
    "huge_message": (huge_message, ("fixed",)),
    "non_utf8_body": (non_utf8_body, ("fixed", "cleaned")),
    "non_utf8_response": (non_utf8_response, ("fixed", "cleaned")),
    "non_utf8_jsonl": (non_utf8_jsonl, ("fixed",)),
    "truncated_last_jsonl_line": (truncated_last_jsonl_line, ("fixed",)),
    "unknown_entry_types": (unknown_entry_types, ("fixed",)),
    "duplicate_ids_across_conversations": (duplicate_ids_across_conversations, ("fixed",)),
    "duplicate_ids_in_subagent_file": (duplicate_ids_in_subagent_file, ("fixed",)),
    "subagent_file_missing": (subagent_file_missing, ("fixed",)),
    "subagent_file_empty": (subagent_file_empty, ("fixed",)),
    "parent_file_empty": (parent_file_empty, ("fixed",)),
    "mixed_offsets": (mixed_offsets, ("fixed", "cleaned")),
    "fractional_seconds": (fractional_seconds, ("fixed",)),
    "empty_db": (empty_db, ("fixed",)),
    "not_a_proxy_db": (not_a_proxy_db, ("fixed",)),
    "not_sqlite": (not_sqlite, ("fixed",)),
    "empty_file": (empty_file, ("fixed",)),
}
CASES = [(variant, fault) for fault, (_, variants) in FAULTS.items() for variant in variants]


@dataclass
class FaultRun:
    """One mutated capture and every tool's run on it."""

    workspace: Workspace
    effect: Effect
    runs: dict[str, ToolRun]


@pytest.fixture(scope="session")
def fault_runs(baselines: dict[str, Baseline], tmp_path_factory: pytest.TempPathFactory
               ) -> Callable[[str, str], FaultRun]:
    """Run each (variant, fault) once, on first use, and share it across the per-tool tests."""
    cache: dict[tuple[str, str], FaultRun] = {}

    def get(variant: str, fault: str) -> FaultRun:
        if (variant, fault) not in cache:
            base = baselines[variant]
            workspace = _copy_capture(base.source, tmp_path_factory.mktemp(f"{variant}-{fault}"))
            effect = FAULTS[fault][0](workspace, base)
            if effect.fatal:
                # The validator reads traces: give it the good ones, so only the bad DB is at fault.
                shutil.copytree(base.traces, workspace.traces)
            cache[(variant, fault)] = FaultRun(workspace, effect, _run_pipeline(workspace))
        return cache[(variant, fault)]

    return get


@pytest.mark.parametrize("tool", tool_params())
@pytest.mark.parametrize(("variant", "fault"), CASES, ids=[f"{v}-{f}" for v, f in CASES])
def test_tool_survives_fault(variant: str, fault: str, tool: Tool, fault_runs: Callable[[str, str], FaultRun]) -> None:
    """Exit 0 with the affected rows counted by reason, or exit 2 with one line for unusable input."""
    case = fault_runs(variant, fault)
    run = case.runs[tool.name]
    if case.effect.fatal:
        assert run.exit_code == 2, run.describe()
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), run.stderr
        assert case.effect.fatal in lines[0] and case.workspace.db.name in lines[0], lines[0]
        return
    assert run.exit_code == 0, run.describe()
    assert run.summary is not None, f"--json printed no JSON: {run.stdout[:500]!r}"
    for reason, count in case.effect.counts.get(tool.name, {}).items():
        assert run.problems.get(reason, {}).get("count") == count, (reason, run.problems)
    # Problems always come with their first examples, so a user can find the rows (docs/reliability.md#bad-input).
    for reason, detail in run.problems.items():
        assert detail["examples"], reason


@pytest.mark.parametrize(("variant", "fault"), CASES, ids=[f"{v}-{f}" for v, f in CASES])
def test_unaffected_requests_survive_fault(variant: str, fault: str, baselines: dict[str, Baseline],
                                           fault_runs: Callable[[str, str], FaultRun]) -> None:
    """Index rows and trace requests of every untouched row equal the unmutated run's."""
    case = fault_runs(variant, fault)
    base = baselines[variant]
    effect = case.effect
    ws = case.workspace
    if effect.fatal:
        # Refusing the input leaves the previous outputs as they were (docs/reliability.md#interruption-and-re-runs).
        assert _native_files(ws.traces) == base.native_files
        return
    index_rows = _index_rows(ws.db)
    for request_id, row in base.index_rows.items():
        if request_id not in effect.touched:
            assert index_rows.get(request_id) == row, request_id
    conversation_rows = _conversation_rows(ws.db)
    for message_id, request_id in base.conversation_rows.items():
        if request_id not in effect.touched | effect.dropped and message_id in conversation_rows:
            assert conversation_rows[message_id] == request_id, message_id
    expected = {rid: lane for rid, lane in base.trace_requests.items() if rid not in effect.dropped}
    assert _trace_requests(ws.traces) == expected
    if expected:
        check = check_directory(ws.traces)
        assert check.ok, check.problems[:5]
    if effect.same_traces:
        assert _native_files(ws.traces) == base.native_files
    if effect.check is not None:
        effect.check(ws, case.runs)
