"""The `index_state` key/value table: where index builders keep their resume points (docs/indexes.md#where-the-tables-live).

Each builder owns the keys under its own prefix (e.g. `message_index.`), so builders sharing
one index file never overwrite each other's state.
"""
from __future__ import annotations

import sqlite3

from lib.db import table_exists, transaction

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
