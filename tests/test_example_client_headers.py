"""The example generator's newer-client and partial captures: `--client-headers` (session and sub-agent
headers, docs/example.md#regenerating) and `--omit logs|db` (the DB-only and JSONL-only routes)."""
from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lib.synthetic.example import generate_example

SMALL = 0.05
SESSION = "X-Claude-Code-Session-Id"
AGENT = "X-Claude-Code-Agent-Id"
NEW_HEADERS = {SESSION, AGENT, "User-Agent"}
NEW_USER_AGENT = "claude-cli/2.1.90 (external, cli)"
# The default output's content (every `requests` column in rowid order, then each JSONL file's bytes) at
# --scale 0.05, seed 7; a change here changes the shipped example. (The DB file's own bytes also hold the
# writing SQLite's version, so they are compared between runs below, not pinned.)
DEFAULT_DIGESTS = {"cleaned": "2f0d407f65a3da73c280a5ae2a5dbab426ace00eeccdef6a06109e79ba6f76cb",
                   "old": "48742b717a4647111d5c8ec3c1c681ce11aa0b8901f1877257c234c0b388a69e"}


def _generate(folder: Path, variant: str, **options: Any) -> Path:
    generate_example(folder, variant=variant, seed=7, scale=SMALL, **options)
    return folder


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], Path]:
    """(variant, client_headers) → a small capture, for cleaned and old."""
    return {(variant, headers): _generate(tmp_path_factory.mktemp(f"{variant}-{headers}"), variant, client_headers=headers)
            for variant in ("cleaned", "old") for headers in (False, True)}


def _rows(db: Path) -> list[sqlite3.Row]:
    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        return connection.execute("SELECT rowid, * FROM requests ORDER BY rowid").fetchall()


def _logs(jsonl: Path) -> tuple[str, dict[str, str]]:
    """The sessionId of every line (one, the parent file's name), and message id → agentId of every sub-agent call."""
    agent_of: dict[str, str] = {}
    sessions = set()
    for path in sorted(jsonl.glob("*.jsonl")):
        lines = [json.loads(text) for text in path.read_text().splitlines()]
        sessions.update(line["sessionId"] for line in lines if "sessionId" in line)
        if path.name.startswith("agent-"):
            agent_ids = {line["agentId"] for line in lines}
            assert agent_ids == {path.name.removeprefix("agent-").removesuffix(".jsonl")}
            agent_of.update((line["message"]["id"], line["agentId"]) for line in lines if line["type"] == "assistant")
    (session,) = sessions
    assert (jsonl / f"{session}.jsonl").is_file()
    return session, agent_of


def _index(source: Path, workdir: Path) -> dict[int, tuple[str, str | None]]:
    """Build the message index on a copy; rowid → (the message id the JSONL knows, session_header).

    An old-proxy streaming twin is known by its replay's message id."""
    db = workdir / "indexed.db"
    shutil.copyfile(source, db)
    runner = CliRunner().invoke(importlib.import_module("build_message_index").main, [str(db), "-q"],
                                catch_exceptions=False)
    assert runner.exit_code == 0, runner.output
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT row_id, message_id, session_header, twin_of, is_artifact, request_id "
                                  "FROM message_index").fetchall()
    by_request = {request_id: message_id for _, message_id, _, _, _, request_id in rows}
    return {row_id: (by_request[twin_of] if is_artifact else message_id, session_header)
            for row_id, message_id, session_header, twin_of, is_artifact, _ in rows}


def _header_counts(db: Path) -> Counter:
    counts: Counter = Counter()
    for row in _rows(db):
        counts.update(name for name in json.loads(row["headers"]) if name.startswith("X-Claude-Code-"))
    return counts


# Rows per kind: old adds a streaming twin for every turn but the quota probe (the twin of a sub-agent call is
# the sub-agent's request too).
KINDS = {"cleaned": {"sub-agent": 84, "parent": 6, "quota": 1, "title": 1},
         "old": {"sub-agent": 168, "parent": 12, "quota": 1, "title": 2}}


@pytest.mark.parametrize("variant", ["cleaned", "old"])
def test_every_row_carries_its_session_and_a_sub_agent_its_agent_id(
        captures: dict[tuple[str, bool], Path], variant: str, tmp_path: Path) -> None:
    folder = captures[variant, True]
    db = folder / "requests.db"
    session, agent_of = _logs(folder / "jsonl")
    index = _index(db, tmp_path)
    kinds: Counter = Counter()
    for row in _rows(db):
        headers = json.loads(row["headers"])
        message_id, session_header = index[row["rowid"]]
        assert headers[SESSION] == [session] and session_header == session
        assert not any("parent-agent" in name.lower() for name in headers)
        if message_id in agent_of:
            assert headers[AGENT] == [agent_of[message_id]]
            kinds["sub-agent"] += 1
        else:
            assert AGENT not in headers
            body = json.loads(row["body"])
            kinds["quota" if body["max_tokens"] == 1 else "title" if "tools" not in body else "parent"] += 1
    assert kinds == KINDS[variant]
    assert _header_counts(db) == {SESSION: sum(kinds.values()), AGENT: kinds["sub-agent"]}


def test_without_the_flag_no_row_has_the_new_headers(captures: dict[tuple[str, bool], Path], tmp_path: Path) -> None:
    for variant in ("cleaned", "old"):
        db = captures[variant, False] / "requests.db"
        assert _header_counts(db) == {}
        assert {session for _, session in _index(db, tmp_path).values()} == {None}


@pytest.mark.parametrize("variant", ["cleaned", "old"])
def test_only_the_client_version_and_the_new_headers_change(captures: dict[tuple[str, bool], Path], variant: str) -> None:
    plain, newer = (_rows(captures[variant, headers] / "requests.db") for headers in (False, True))
    assert len(plain) == len(newer)
    billing = 0
    for old_row, new_row in zip(plain, newer):
        old_headers, new_headers = json.loads(old_row["headers"]), json.loads(new_row["headers"])
        # Go stores the map sorted; Content-Length and the rest agree with the 2.1.83 capture.
        assert list(new_headers) == sorted(new_headers)
        assert {name: value for name, value in new_headers.items() if name not in NEW_HEADERS} == \
            {name: value for name, value in old_headers.items() if name not in NEW_HEADERS}
        assert new_headers["User-Agent"] == [NEW_USER_AGENT] and new_row["user_agent"] == NEW_USER_AGENT
        assert old_row["user_agent"] == "claude-cli/2.1.83 (external, cli)"
        billing += old_row["body"].count("cc_version=2.1.83.")
        assert new_row["body"] == old_row["body"].replace("cc_version=2.1.83.", "cc_version=2.1.90.")
        assert [new_row[name] for name in ("id", "timestamp", "response", "model", "created_at")] == \
            [old_row[name] for name in ("id", "timestamp", "response", "model", "created_at")]
    assert billing == len(plain) - 1  # every row but the quota probe
    versions = Counter(json.loads(text)["version"] for path in (captures[variant, True] / "jsonl").glob("*.jsonl")
                       for text in path.read_text().splitlines() if "version" in json.loads(text))
    assert versions == {"2.1.90": 351}


def test_traces_are_the_same_as_from_the_older_client(captures: dict[tuple[str, bool], Path], tmp_path: Path) -> None:
    build = importlib.import_module("build_minimal_traces").main
    traces = {}
    for headers in (False, True):
        # A copy: the builder adds its index tables to the DB.
        folder = shutil.copytree(captures["cleaned", headers], tmp_path / f"capture-{headers}")
        out = tmp_path / f"traces-{headers}"
        result = CliRunner().invoke(build, [str(folder / "requests.db"), "--jsonl-dir", str(folder / "jsonl"),
                                            "--output-dir", str(out), "--include-subagents", "-q"],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        traces[headers] = {path.name: path.read_bytes() for path in sorted(out.glob("*.json"))}
    assert len(traces[True]) == 1 and traces[True] == traces[False]


def _content_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for row in _rows(folder / "requests.db"):
        digest.update(json.dumps(list(row)).encode())
    for path in sorted((folder / "jsonl").glob("*.jsonl")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("variant", ["cleaned", "old"])
def test_the_default_output_is_unchanged(captures: dict[tuple[str, bool], Path], variant: str, tmp_path: Path) -> None:
    assert _content_digest(captures[variant, False]) == DEFAULT_DIGESTS[variant]
    again = _generate(tmp_path, variant)
    assert (again / "requests.db").read_bytes() == (captures[variant, False] / "requests.db").read_bytes()


def _cli(*arguments: str) -> Any:
    from examples.generate_example import main as generate

    return CliRunner().invoke(generate, list(arguments), catch_exceptions=False)


def test_omit_logs_writes_the_db_alone(captures: dict[tuple[str, bool], Path], tmp_path: Path) -> None:
    # A previous full run in the folder: its logs must go, or they would be read as this DB's.
    _generate(tmp_path, "fixed")
    result = _cli("--client-headers", "--omit", "logs", "--scale", str(SMALL), "--output-dir", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["omitted"], summary["client_headers"], summary["rows"], summary["jsonl_lines"]) == ("logs", True, 92, {})
    assert sorted(path.name for path in tmp_path.iterdir()) == ["requests.db"]
    assert (tmp_path / "requests.db").read_bytes() == (captures["cleaned", True] / "requests.db").read_bytes()
    text = _cli("--client-headers", "--omit", "logs", "--scale", str(SMALL), "--output-dir", str(tmp_path)).stdout
    assert text.startswith(f"Wrote 92 rows (2.1 MB, variant cleaned, constant billing header, session and agent headers) "
                           f"to {tmp_path / 'requests.db'} and no JSONL logs (--omit logs); requests per lane: parent 6, ")


def test_omit_db_writes_the_logs_alone(captures: dict[tuple[str, bool], Path], tmp_path: Path) -> None:
    _generate(tmp_path, "cleaned")
    result = _cli("--omit", "db", "--scale", str(SMALL), "--output-dir", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["omitted"], summary["rows"], summary["db_bytes"]) == ("db", 0, 0)
    assert sum(summary["jsonl_lines"].values()) == 353
    assert sorted(path.name for path in tmp_path.iterdir()) == ["jsonl"]
    expected = captures["cleaned", False] / "jsonl"
    assert {path.name: path.read_bytes() for path in (tmp_path / "jsonl").iterdir()} == \
        {path.name: path.read_bytes() for path in expected.iterdir()}
    text = _cli("--omit", "db", "--scale", str(SMALL), "--output-dir", str(tmp_path)).stdout
    assert text.startswith(f"Wrote 5 JSONL files to {tmp_path / 'jsonl'} (variant cleaned) and no requests.db "
                           "(--omit db); requests per lane: parent 6, ")


@pytest.mark.parametrize(("arguments", "message"), [
    (["--omit", "logs", "--omit", "db"], "--omit logs and --omit db together leave nothing to write"),
    (["--omit", "db", "--client-headers"], "--client-headers only changes requests.db, which --omit db leaves out"),
    (["--omit", "db", "--billing-header", "per-request"],
     "--billing-header per-request only changes requests.db, which --omit db leaves out"),
])
def test_senseless_combinations_are_refused(arguments: list[str], message: str, tmp_path: Path) -> None:
    result = _cli(*arguments, "--output-dir", str(tmp_path / "out"))
    assert (result.exit_code, result.output) == (2, f"Error: {message} (see --help)\n")
    assert not (tmp_path / "out").exists()


def test_omit_refuses_the_shipped_example_folder() -> None:
    from examples.generate_example import HERE

    before = sorted(path.name for path in HERE.iterdir())
    for part in ("logs", "db"):
        result = _cli("--omit", part, "--scale", str(SMALL))
        assert (result.exit_code, result.output) == (
            2, "Error: --omit would remove part of the shipped example; give --output-dir (see --help)\n")
    assert sorted(path.name for path in HERE.iterdir()) == before
