"""SQLite connections: the proxy DB read-only, the index tables in short write transactions (SPEC §1.1, §3).

The proxy may be writing while we read (INSERT on arrival, UPDATE of `response` later, default
rollback journal), so every connection waits on locks instead of failing, and writers never keep
a transaction open longer than one batch.
"""
from __future__ import annotations

import contextlib
import re
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

from lib.errors import InputError

BUSY_TIMEOUT_MS = 30_000
PROXY_COLUMNS = frozenset({"id", "timestamp", "headers", "body", "response", "model"})
# What `decode_text` turns invalid UTF-8 bytes into (surrogateescape's range).
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def open_proxy_db(path: str | Path) -> sqlite3.Connection:
    """Open a claude-code-proxy DB read-only (`mode=ro`); InputError if it is missing or not a proxy DB.

    Never creates a file: a missing path is an error, not an empty DB.
    """
    db_path = Path(path)
    if not db_path.is_file():
        raise InputError(f"{path}: no such file")
    uri = f"file:{db_path.resolve().as_posix()}?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
        connection.text_factory = decode_text
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        columns = {row[1] for row in connection.execute("PRAGMA table_info(requests)")}
        kind = connection.execute("SELECT type FROM sqlite_master WHERE name = 'requests'").fetchone()
    except sqlite3.DatabaseError as error:
        raise InputError(f"{path}: not a SQLite database ({error})") from None
    missing = PROXY_COLUMNS - columns
    if missing:
        connection.close()
        what = "has no `requests` table" if not columns else f"`requests` lacks columns {sorted(missing)}"
        raise InputError(f"{path}: not a claude-code-proxy DB ({what})")
    if kind is not None and kind[0] != "table":
        # Rows are read by rowid (arrival order, resume points), which a view does not have: 0 rows, silently.
        connection.close()
        raise InputError(f"{path}: not a claude-code-proxy DB (`requests` is a {kind[0]}, not the proxy's table)")
    return connection


def decode_text(raw: bytes) -> str:
    """SQLite TEXT → str, keeping invalid UTF-8 bytes as lone surrogates (see `repair_text`).

    With the default decoder one corrupt byte in one body makes sqlite3 raise on the whole
    SELECT, so a single bad row would stop every tool (SPEC §9).
    """
    return raw.decode("utf-8", "surrogateescape")


def repair_text(value: Any) -> tuple[Any, bool]:
    """(value with invalid UTF-8 bytes replaced by U+FFFD, whether there were any) for a proxy DB value."""
    if isinstance(value, str) and not value.isascii() and _ESCAPED_BYTE.search(value):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), True
    return value, False


def open_index_db(proxy_db: str | Path, index_db: Optional[str | Path] = None) -> sqlite3.Connection:
    """Open the writable DB that holds the index tables: `index_db` if given, else the proxy DB itself.

    The proxy's `requests` table is never written; only our own tables are created in this file.
    """
    target = Path(index_db) if index_db else Path(proxy_db)
    if not index_db and not target.is_file():
        raise InputError(f"{proxy_db}: no such file")
    try:
        connection = sqlite3.connect(str(target), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    except sqlite3.DatabaseError as error:
        raise InputError(f"{target}: cannot open for writing ({error})") from None
    return connection


@contextlib.contextmanager
def open_databases(proxy_db: str | Path, index_db: Optional[str | Path] = None
                   ) -> Iterator[tuple[sqlite3.Connection, sqlite3.Connection]]:
    """The proxy DB (read-only) and the DB of the index tables (see `open_index_db`); both closed on exit."""
    proxy = open_proxy_db(proxy_db)
    try:
        index = open_index_db(proxy_db, index_db)
    except BaseException:
        proxy.close()
        raise
    try:
        yield proxy, index
    finally:
        index.close()
        proxy.close()


def table_exists(connection: sqlite3.Connection, name: str) -> bool:
    """True when `name` is a table of this connection's main database."""
    row = connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
    return row is not None


@contextlib.contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """A short write transaction on an autocommit (isolation_level=None) connection; ROLLBACK on error."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def write_batch(connection: sqlite3.Connection, sql: str, rows: Iterable[Sequence]) -> None:
    """Run one executemany inside its own short transaction (an autocommit connection)."""
    with transaction(connection):
        connection.executemany(sql, rows)
