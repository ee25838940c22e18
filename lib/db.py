"""SQLite connections: the proxy DB read-only, the index tables in short write transactions (docs/inputs.md#reading-a-live-database,
docs/indexes.md#where-the-tables-live).

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
# SQLite's messages for a failed write, which concerns the file holding the index tables.
_WRITE_FAILURES = ("readonly", "locked", "disk is full", "disk I/O")
# The databases this command opened, proxy first: the files a SQLite error can concern.
_opened: dict[str, str] = {}


def open_proxy_db(path: str | Path) -> sqlite3.Connection:
    """Open a claude-code-proxy DB read-only (`mode=ro`); InputError if it is missing or not a proxy DB.

    Never creates a file: a missing path is an error, not an empty DB.
    """
    db_path = Path(path)
    if not db_path.is_file():
        raise InputError(f"{path}: no such file")
    _opened.setdefault(str(path), "proxy")
    try:
        connection, columns, kind = _connect_read_only(db_path)
    except sqlite3.DatabaseError as error:
        if not _has_hot_journal(db_path, error):
            raise InputError(_problem(str(path), error, writes_here=False)) from None
        _roll_back_hot_journal(path, db_path)
        connection, columns, kind = _connect_read_only(db_path)
    missing = PROXY_COLUMNS - columns
    if missing:
        connection.close()
        what = "has no `requests` table" if not columns else f"`requests` lacks columns {sorted(missing)}"
        raise InputError(f"{path}: not a claude-code-proxy DB ({what})")
    if kind is not None and kind != "table":
        # Rows are read by rowid (arrival order, resume points), which a view does not have: 0 rows, silently.
        connection.close()
        raise InputError(f"{path}: not a claude-code-proxy DB (`requests` is a {kind}, not the proxy's table)")
    return connection


def _connect_read_only(db_path: Path) -> tuple[sqlite3.Connection, set[str], Optional[str]]:
    """A `mode=ro` connection, the columns of its `requests` and what `requests` is (table, view, None)."""
    uri = f"file:{db_path.resolve().as_posix()}?mode=ro"
    connection = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    try:
        connection.text_factory = decode_text
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        columns = {row[1] for row in connection.execute("PRAGMA table_info(requests)")}
        kind = connection.execute("SELECT type FROM sqlite_master WHERE name = 'requests'").fetchone()
        return connection, columns, kind[0] if kind else None
    except BaseException:
        connection.close()
        raise


def _has_hot_journal(db_path: Path, error: sqlite3.DatabaseError) -> bool:
    """True when a read-only open failed on the journal a killed writer left (SQLITE_READONLY_ROLLBACK)."""
    journal = Path(f"{db_path}-journal")
    return "readonly" in str(error) and journal.is_file() and journal.stat().st_size > 0


def _roll_back_hot_journal(path: str | Path, db_path: Path) -> None:
    """Let SQLite roll back the interrupted transaction, which needs one read-write open.

    The journal holds the pages as they were before the killed write (of our index tables: the
    proxy's `requests` is never written), so rolling back restores the last committed state, as
    the proxy itself would on its next open.
    """
    try:
        with contextlib.closing(sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_MS / 1000)) as connection:
            connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as error:
        raise InputError(
            f"{path}: an interrupted write left the hot journal {db_path.name}-journal, and rolling it back "
            f"failed ({error}); run this once with write access to the file and its directory") from None


def describe_database_error(error: sqlite3.Error) -> str:
    """`<file>: <problem>` for a SQLite error that reached the command boundary, with what to do."""
    proxies = [path for path, role in _opened.items() if role == "proxy"]
    indexes = [path for path, role in _opened.items() if role == "index"]
    text = str(error)
    if any(phrase in text for phrase in _WRITE_FAILURES):
        target = (indexes or proxies or ["database"])[-1]
    else:
        target = next((path for path in _opened if not _is_intact(path)), (proxies or indexes or ["database"])[0])
    return _problem(target, error, writes_here=target in proxies)


def _problem(target: str, error: sqlite3.Error, *, writes_here: bool) -> str:
    """`<file>: <SQLite's message> (what to do)`."""
    text = str(error)
    hint = ""
    if "locked" in text:
        hint = f" (another process held a lock for over {BUSY_TIMEOUT_MS / 1000:g} s; retry when it is done)"
    elif "readonly" in text and writes_here:
        hint = " (the index tables cannot be written beside the requests; give --index-db FILE)"
    elif "malformed" in text:
        hint = " (restore a copy, or recover one with `sqlite3 FILE .recover`)"
    elif "not a database" in text:
        return f"{target}: not a SQLite database ({text})"
    return f"{target}: {text}{hint}"


def forget_opened() -> None:
    """Start a command's list of opened databases afresh (commands run in-process in tests)."""
    _opened.clear()


def _is_intact(path: str) -> bool:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{Path(path).resolve().as_posix()}?mode=ro", uri=True)) as check:
            return check.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except sqlite3.Error:
        return False


def decode_text(raw: bytes) -> str:
    """SQLite TEXT → str, keeping invalid UTF-8 bytes as lone surrogates (see `repair_text`).

    With the default decoder one corrupt byte in one body makes sqlite3 raise on the whole
    SELECT, so a single bad row would stop every tool (docs/reliability.md#bad-input).
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
    if target.is_dir():
        raise InputError(f"{target}: is a directory, not a SQLite file")
    _opened[str(target)] = "index" if index_db else "proxy"
    try:
        connection = sqlite3.connect(str(target), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    except sqlite3.DatabaseError as error:
        raise InputError(f"{target}: cannot open for writing ({error})") from None
    try:
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # The first read of the schema tells a file that is not SQLite (or an unreadable one) now.
        connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as error:
        connection.close()
        raise InputError(_problem(str(target), error, writes_here=not index_db)) from None
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
        # SQLite may have rolled back already (a failed write, e.g. disk full): ROLLBACK would then
        # raise "no transaction is active" and hide the real error.
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def write_batch(connection: sqlite3.Connection, sql: str, rows: Iterable[Sequence]) -> None:
    """Run one executemany inside its own short transaction (an autocommit connection)."""
    with transaction(connection):
        connection.executemany(sql, rows)


# --- the `index_state` key/value table: where index builders keep their resume points
# (docs/indexes.md#bookkeeping). Each builder owns the keys under its own prefix (e.g. `message_index.`),
# so builders sharing one index file never overwrite each other's state.

STATE_TABLE = "index_state"


def create_state_table(index: sqlite3.Connection) -> None:
    """Create the key/value table if it is missing."""
    with transaction(index):
        index.execute(f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (key TEXT PRIMARY KEY, value TEXT)")


def read_state(index: sqlite3.Connection, prefix: str) -> dict[str, str]:
    """The keys under `prefix`, with the prefix removed ({} before the table exists)."""
    if not table_exists(index, STATE_TABLE):
        return {}
    rows = index.execute(f"SELECT key, value FROM {STATE_TABLE} WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))
    return {key[len(prefix):]: value for key, value in rows}


def write_state(index: sqlite3.Connection, key: str, value: str) -> None:
    """Upsert one key (call inside `transaction`); an unchanged value writes nothing, so a re-run that
    finds nothing new leaves the index file byte-identical."""
    index.execute(f"INSERT INTO {STATE_TABLE} (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE"
                  " SET value = excluded.value WHERE value IS NOT excluded.value", (key, value))


def delete_state(index: sqlite3.Connection, prefix: str) -> None:
    """Remove every key under `prefix` (call inside `transaction`)."""
    index.execute(f"DELETE FROM {STATE_TABLE} WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))
