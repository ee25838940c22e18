"""build_conversation_index.py: the command as a user runs it (docs/indexes.md#conversation-index)."""
from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from build_conversation_index import main


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    return result.exit_code, result.stdout, result.stderr


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_help_shows_the_seed_example_and_common_options() -> None:
    code, stdout, _ = run("--help")
    assert code == 0
    assert "python3 build_conversation_index.py examples/requests.db --projects-path examples/jsonl/" in stdout
    for option in ("--projects-path", "--index-db", "--rebuild", "--json", "--quiet", "--progress", "--debug"):
        assert option in stdout


def test_first_run_indexes_the_fixture_and_second_run_has_nothing_new(fixture_db: Path, fixture_dir: Path) -> None:
    pytest.importorskip("lib.capture.message_index")
    code, stdout, stderr = run(fixture_db, "--projects-path", fixture_dir / "jsonl", "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert {key: summary[key] for key in ("files_read", "conversations", "parent_turns", "subagents",
                                          "subagent_turns", "subagent_links", "matched_ids", "total_ids")} == {
        "files_read": 4, "conversations": 1, "parent_turns": 12, "subagents": 3, "subagent_turns": 25,
        "subagent_links": 3, "matched_ids": 37, "total_ids": 37}
    assert (summary["match_rate"], summary["problems"]) == (1.0, {})
    assert "building it now" in stderr  # the message index was missing and was built first, saying so
    code, stdout, _ = run(fixture_db, "--projects-path", fixture_dir / "jsonl")
    assert code == 0
    assert stdout.startswith("Conversation index: nothing new (4 files unchanged).")
    assert "Match rate 100.0% (37/37" in stdout


def test_index_db_leaves_the_proxy_db_byte_identical(fixture_db: Path, fixture_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("lib.capture.message_index")
    before = digest(fixture_db)
    code, _, stderr = run(fixture_db, "--projects-path", fixture_dir / "jsonl", "--index-db", tmp_path / "idx.db", "-q")
    assert code == 0, stderr
    assert digest(fixture_db) == before
    with sqlite3.connect(tmp_path / "idx.db") as index:
        assert index.execute("SELECT COUNT(*), COUNT(request_id) FROM conversation_index").fetchone() == (37, 37)


def test_missing_db_exits_2_with_one_line_and_creates_nothing(tmp_path: Path) -> None:
    code, stdout, stderr = run(tmp_path / "absent.db", "--projects-path", tmp_path)
    assert (code, stdout) == (2, "")
    assert stderr == f"Error: {tmp_path / 'absent.db'}: no such file\n"
    assert not (tmp_path / "absent.db").exists()


def test_non_proxy_db_exits_2(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE notes (x)")
    code, _, stderr = run(other, "--projects-path", tmp_path)
    assert code == 2
    assert stderr == f"Error: {other}: not a claude-code-proxy DB (has no `requests` table)\n"


def test_missing_projects_path_exits_2(fixture_db: Path, tmp_path: Path) -> None:
    pytest.importorskip("lib.capture.message_index")
    code, _, stderr = run(fixture_db, "--projects-path", tmp_path / "nowhere")
    assert code == 2
    assert stderr == f"Error: {tmp_path / 'nowhere'}: no such file or directory\n"
