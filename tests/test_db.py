"""lib/db.py: the proxy and index connections opened and closed together."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import lib.db
from lib.db import open_databases
from lib.errors import InputError
from tests.proxy_builders import make_proxy_db, proxy_row


def test_open_databases_gives_a_read_only_proxy_and_closes_both(tmp_path: Path) -> None:
    db = make_proxy_db(tmp_path / "requests.db", [proxy_row("r1", "2026-03-25T14:00:01Z", response=None)])
    with open_databases(db, tmp_path / "index.sqlite") as (proxy, index):
        assert proxy.execute("SELECT id FROM requests").fetchall() == [("r1",)]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            proxy.execute("DELETE FROM requests")
        index.execute("CREATE TABLE t (x)")
    for connection in (proxy, index):
        with pytest.raises(sqlite3.ProgrammingError):
            connection.execute("SELECT 1")
    assert (tmp_path / "index.sqlite").is_file()


def test_open_databases_closes_the_proxy_when_the_index_db_cannot_open(tmp_path: Path, monkeypatch) -> None:
    db = make_proxy_db(tmp_path / "requests.db")
    opened: list[sqlite3.Connection] = []
    real_open = lib.db.open_proxy_db
    monkeypatch.setattr(lib.db, "open_proxy_db", lambda path: opened.append(real_open(path)) or opened[-1])
    with pytest.raises(InputError, match="cannot open for writing"):
        with open_databases(db, tmp_path / "no-such-dir" / "index.sqlite"):
            pass
    with pytest.raises(sqlite3.ProgrammingError):
        opened[0].execute("SELECT 1")
