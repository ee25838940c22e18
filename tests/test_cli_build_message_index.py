"""build_message_index.py: summaries, incremental re-runs, --index-db, --json-out, exit codes."""
from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from build_message_index import main
from tests.proxy_builders import manifest_turns


def run(*args: str):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_first_run_indexes_and_second_run_has_nothing_to_do(fixture_db: Path) -> None:
    first = run(fixture_db)
    assert first.exit_code == 0, first.output
    assert "processed 40 row(s)" in first.stdout
    assert "40 rows, 39 message ids; 39 streaming, 1 non-streaming; errors: 1, pending: 0" in first.stdout
    assert "proxy generation: fixed (0 twin pairs)" in first.stdout
    second = run(fixture_db, "--json")
    assert second.exit_code == 0
    summary = json.loads(second.stdout)
    assert (summary["rows_processed"], summary["rows_total"], summary["message_ids"], summary["errors"]) == (0, 40, 39, 1)
    assert summary["problems"] == {"error_response": {"count": 1, "examples": ["db658db7dce53d4a"]}}
    assert "nothing new to do" in run(fixture_db).stdout


def test_json_out_maps_manifest_ids_to_their_rows(fixture_db: Path, fixture_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "message_id_index.json"
    result = run(fixture_db, "--json-out", target)
    assert result.exit_code == 0
    mapping = json.loads(target.read_text())
    assert len(mapping) == 39
    with sqlite3.connect(fixture_db) as connection:
        for message_id, turn in manifest_turns(fixture_dir).items():
            headers = json.loads(connection.execute(
                "SELECT response FROM requests WHERE id = ?", (mapping[message_id],)).fetchone()[0])["headers"]
            assert headers["Request-Id"] == [turn["request_id"]]


def test_index_db_leaves_the_proxy_db_byte_identical(fixture_db: Path, tmp_path: Path) -> None:
    before = sha256(fixture_db)
    index_path = tmp_path / "index.sqlite"
    assert run(fixture_db, "--index-db", index_path).exit_code == 0
    assert run(fixture_db, "--index-db", index_path, "--rebuild").exit_code == 0
    assert sha256(fixture_db) == before
    with sqlite3.connect(index_path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM message_index").fetchone()[0] == 40


def test_index_db_must_differ_from_the_proxy_db(fixture_db: Path) -> None:
    result = run(fixture_db, "--index-db", fixture_db)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {fixture_db}: --index-db must be a different file from the proxy DB\n"


def test_missing_db_exits_2_with_one_line_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    result = run(missing, "--index-db", tmp_path / "index.sqlite")
    assert result.exit_code == 2
    assert result.stderr == f"Error: {missing}: no such file\n"
    assert list(tmp_path.iterdir()) == []


def test_non_proxy_sqlite_file_exits_2(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
    before = sha256(other)
    result = run(other)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {other}: not a claude-code-proxy DB (has no `requests` table)\n"
    assert sha256(other) == before


def test_non_sqlite_file_exits_2(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a database\n" * 10)
    result = run(text)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {text}: not a SQLite database")
    assert result.stderr.count("\n") == 1


def test_help_shows_the_example_and_common_options() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for text in ("build_message_index.py examples/requests.db", "--index-db", "--rebuild", "--json-out", "--json", "--quiet"):
        assert text in result.stdout
