"""The `message_index` table: one parsed row per proxy request, so later tools never re-parse (docs/indexes.md#message-index).

Incremental: a run processes only rows with rowid above the last one indexed, plus rows whose
response was still NULL last time. Writes go in short batched transactions (docs/reliability.md#live-captures); the
proxy's `requests` table is only ever read. A rebuild fills a shadow table and swaps it in at
the end, so an interrupted rebuild leaves the previous index intact.
"""
from __future__ import annotations

import os
import sqlite3
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import orjson

from lib.atomic import write_atomic
from lib.db import (create_state_table, delete_state, open_proxy_db, read_state, table_exists, transaction, write_batch,
                    write_state)
from lib.problems import ProblemCounter
from lib.capture.proxy_generation import TwinCandidate, classify_generation, find_twin_pairs
from lib.capture.proxy_reader import (
    BATCH_ROWS,
    count_request_problems,
    fetch_proxy_rows,
    iter_proxy_rows,
    parse_proxy_row_with_facts,
)
from lib.records import ProxyRequest
from lib.capture.response_parser import KIND_ERROR, KIND_OK, KIND_PENDING, KIND_UNPARSABLE, USAGE_FIELDS, usage_from_values
from lib.timestamps import from_epoch, parse_timestamp, to_epoch
from lib.worker_guard import guard_worker

TABLE = "message_index"
# 2: capture times and numbers range-checked at read time (an index of 1 keeps rows at 1970).
SCHEMA_VERSION = "2"
WRITE_BATCH_ROWS = 200
READ_BATCH_ROWS = 500
# Below this many rows to parse, starting worker processes costs more than it saves.
PARALLEL_MIN_ROWS = 2_000
_SHADOW = "message_index_rebuild"
_STATE_PREFIX = "message_index."
COLUMNS = (
    ("request_id", "TEXT PRIMARY KEY"), ("row_id", "INTEGER"), ("message_id", "TEXT"), ("timestamp", "TEXT"),
    ("ts_epoch", "REAL"), ("completed_epoch", "REAL"), ("is_streaming", "INTEGER"), ("status", "INTEGER"),
    ("kind", "TEXT"), ("model", "TEXT"), ("input_tokens", "INTEGER"), ("cache_read_tokens", "INTEGER"),
    ("cache_creation_tokens", "INTEGER"), ("cache_creation_5m_tokens", "INTEGER"),
    ("cache_creation_1h_tokens", "INTEGER"), ("output_tokens", "INTEGER"), ("stop_reason", "TEXT"),
    ("output_types", "TEXT"), ("api_time_s", "REAL"), ("ttft_s", "REAL"), ("anthropic_request_id", "TEXT"),
    ("session_header", "TEXT"), ("max_tokens", "INTEGER"), ("retry_count", "INTEGER"), ("prompt_key", "TEXT"),
    ("message_count", "INTEGER"), ("problems", "TEXT"), ("twin_of", "TEXT"), ("is_artifact", "INTEGER"),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)
Progress = Callable[..., Iterable]


@dataclass
class MessageIndexSummary:
    """Counts over the whole index after a run, plus what this run did."""

    rows_total: int = 0
    rows_processed: int = 0
    message_ids: int = 0
    streaming: int = 0
    non_streaming: int = 0
    errors: int = 0
    pending: int = 0
    unparsable: int = 0
    skipped: int = 0
    twins: int = 0
    generation: str = ""
    problems: ProblemCounter = field(default_factory=ProblemCounter)
    elapsed_s: float = 0.0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for --json)."""
        names = ("rows_total", "rows_processed", "message_ids", "streaming", "non_streaming", "errors",
                 "pending", "unparsable", "skipped", "twins", "generation", "note")
        result: dict[str, Any] = {name: getattr(self, name) for name in names}
        result["problems"] = self.problems.as_dict()
        result["elapsed_s"] = round(self.elapsed_s, 3)
        return result

    def describe(self) -> str:
        """One paragraph for humans."""
        if self.rows_processed:
            head = f"Message index: processed {self.rows_processed} row(s) in {self.elapsed_s:.2f} s."
        else:
            head = f"Message index is up to date: nothing new to do ({self.elapsed_s:.2f} s)."
        text = (
            f"{head} {self.rows_total} rows, {self.message_ids} message ids; {self.streaming} streaming, "
            f"{self.non_streaming} non-streaming; errors: {self.errors}, pending: {self.pending}, "
            f"unparsable: {self.unparsable}, skipped (no message id): {self.skipped}; proxy generation: "
            f"{self.generation} ({self.twins} twin pairs)."
        )
        if self.note:
            text += f" {self.note}."
        if self.problems:
            text += f" Problems: {self.problems.describe()}."
        return text


def update_message_index(
    proxy: sqlite3.Connection, index: sqlite3.Connection, *, rebuild: bool = False, progress: Optional[Progress] = None,
    workers: int = 1,
) -> MessageIndexSummary:
    """Bring the message index up to date (or rebuild it) and return counts over the whole index.

    `workers` > 1 parses large runs in that many processes (build_message_index.py's --workers);
    the tools that build the index on the fly parse in their own process, beside their hashing pool.
    """
    started = time.perf_counter()
    create_state_table(index)
    reason = "" if rebuild else _mismatch_reason(proxy, index)
    if rebuild or reason:
        processed = _rebuild(proxy, index, progress, workers)
    else:
        _create_table(index, TABLE)
        pending = _arrived_rowids(proxy, index)
        last_rowid = int(_state(index).get("last_rowid", 0))
        new_rows = proxy.execute("SELECT COUNT(*) FROM requests WHERE rowid > ?", (last_rowid,)).fetchone()[0]
        rows = chain(map(_table_row, fetch_proxy_rows(proxy, pending)),
                     _parsed_rows(proxy, after_rowid=last_rowid, expected=new_rows, workers=workers))
        processed = _index_rows(index, TABLE, _with_progress(rows, progress, len(pending) + new_rows), save_state=True)
    if processed or "generation" not in _state(index):
        _update_twins(index)
    summary = _summarize(index)
    summary.rows_processed = processed
    summary.note = f"Rebuilt because {reason}" if reason else ""
    summary.elapsed_s = time.perf_counter() - started
    return summary


def ensure_message_index(proxy: sqlite3.Connection, index: sqlite3.Connection, *, say: Callable[[str], None]) -> None:
    """Build or update the message index when it is missing or stale, saying so (docs/indexes.md#where-the-tables-live)."""
    if not table_exists(index, TABLE):
        say("No message index yet: building it now (as build_message_index.py would).")
    else:
        reason = _mismatch_reason(proxy, index) or _staleness(proxy, index)
        if not reason:
            return
        say(f"Message index is out of date ({reason}): updating it now.")
    update_message_index(proxy, index)


def load_message_ids(index: sqlite3.Connection) -> dict[str, str]:
    """Map message_id → request_id; for a duplicated id, prefer a real turn over an artifact or error."""
    mapping: dict[str, str] = {}
    rows = index.execute(
        f"SELECT message_id, request_id FROM {TABLE} WHERE message_id IS NOT NULL "
        "ORDER BY is_artifact, kind != ?, ts_epoch, row_id",
        (KIND_OK,),
    )
    for message_id, request_id in rows:
        mapping.setdefault(message_id, request_id)
    return mapping


def write_message_id_json(index: sqlite3.Connection, path: str | Path) -> int:
    """Write `message_id_index.json` ({message_id: request_id}) atomically; return the number of ids."""
    mapping = load_message_ids(index)
    write_atomic(path, orjson.dumps(mapping, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    return len(mapping)


def iter_indexed_requests(
    index: sqlite3.Connection,
    *,
    since: Optional[datetime] = None,
    until: Optional[datetime] = None,
) -> Iterator[ProxyRequest]:
    """Yield indexed requests in arrival order (ts_epoch, row_id), since <= timestamp <= until."""
    low = to_epoch(since) if since is not None else float("-inf")
    high = to_epoch(until) if until is not None else float("inf")
    position: tuple[float, int] = (low, -1)
    names = ", ".join(COLUMN_NAMES)
    while True:
        # Keyset pages keep reads short and let callers write other index tables in between.
        batch = index.execute(
            f"SELECT {names} FROM {TABLE} WHERE (ts_epoch, row_id) > (?, ?) AND ts_epoch <= ? "
            "ORDER BY ts_epoch, row_id LIMIT ?",
            (*position, high, READ_BATCH_ROWS),
        ).fetchall()
        if not batch:
            return
        for values in batch:
            yield _request_from_row(dict(zip(COLUMN_NAMES, values)))
        position = (batch[-1][COLUMN_NAMES.index("ts_epoch")], batch[-1][1])


def _rebuild(proxy: sqlite3.Connection, index: sqlite3.Connection, progress: Optional[Progress], workers: int) -> int:
    """Index every row into a shadow table, then swap it in with the state in one transaction."""
    with transaction(index):
        index.execute(f"DROP TABLE IF EXISTS {_SHADOW}")
    _create_table(index, _SHADOW)
    total = proxy.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    rows = _parsed_rows(proxy, after_rowid=0, expected=total, workers=workers)
    processed = _index_rows(index, _SHADOW, _with_progress(rows, progress, total), save_state=False)
    with transaction(index):
        index.execute(f"DROP TABLE IF EXISTS {TABLE}")
        index.execute(f"ALTER TABLE {_SHADOW} RENAME TO {TABLE}")
        _create_indexes(index)
        delete_state(index, _STATE_PREFIX)
        _save_state(index, _last_indexed(index))
    return processed


def _parsed_rows(proxy: sqlite3.Connection, *, after_rowid: int, expected: int, workers: int) -> Iterator[tuple]:
    """Table rows for every proxy row past `after_rowid`, in rowid order; parsed by `workers` processes when many.

    Parsing (JSON of bodies, responses and chunks) is nearly all the work and rows are independent,
    so with workers large runs parse chunks of rows in a process pool; results come back in
    submission order, so the table and its resume points are the same as parsed here.
    """
    path = _database_path(proxy)
    if expected < PARALLEL_MIN_ROWS or workers < 2 or not path:
        return map(_table_row, iter_proxy_rows(proxy, after_rowid=after_rowid))
    return _parsed_in_workers(proxy, path, after_rowid, workers)


def _parsed_in_workers(proxy: sqlite3.Connection, path: str, after_rowid: int, workers: int) -> Iterator[tuple]:
    """Rows known at the start, parsed in `workers` processes; later arrivals wait for the next run."""
    row_ids = [row[0] for row in proxy.execute("SELECT rowid FROM requests WHERE rowid > ? ORDER BY rowid", (after_rowid,))]
    chunks = [row_ids[start : start + BATCH_ROWS] for start in range(0, len(row_ids), BATCH_ROWS)]
    with ProcessPoolExecutor(max_workers=workers, initializer=_open_worker_proxy, initargs=(os.getpid(), path)) as pool:
        for parsed in pool.map(_parse_row_ids, chunks):
            yield from parsed


_worker_proxy: dict[str, sqlite3.Connection] = {}


def _open_worker_proxy(parent_pid: int, path: str) -> None:
    """Pool initializer: each worker reads the proxy DB through its own read-only connection."""
    guard_worker(parent_pid)
    _worker_proxy["proxy"] = open_proxy_db(path)


def _parse_row_ids(row_ids: list[int]) -> list[tuple]:
    """Worker task: the table rows of these proxy rows (rows deleted meanwhile are skipped)."""
    return [_table_row(row) for row in fetch_proxy_rows(_worker_proxy["proxy"], row_ids)]


def _database_path(connection: sqlite3.Connection) -> str:
    """File of the connection's main database ('' for an in-memory or temporary one)."""
    for _, name, path in connection.execute("PRAGMA database_list"):
        if name == "main":
            return path or ""
    return ""


def _index_rows(index: sqlite3.Connection, table: str, rows: Iterable[tuple], *, save_state: bool) -> int:
    """Upsert parsed table rows in batches; with `save_state`, advance the resume point after each batch."""
    sql = f"INSERT OR REPLACE INTO {table} ({', '.join(COLUMN_NAMES)}) VALUES ({', '.join('?' * len(COLUMN_NAMES))})"
    batch: list[tuple] = []
    processed = 0
    for row in rows:
        batch.append(row)
        if len(batch) >= WRITE_BATCH_ROWS:
            processed += _flush(index, sql, batch, save_state)
    return processed + _flush(index, sql, batch, save_state)


def _flush(index: sqlite3.Connection, sql: str, batch: list[tuple], save_state: bool) -> int:
    """Write one batch, then the resume point; a crash between the two only repeats idempotent upserts."""
    if not batch:
        return 0
    count = len(batch)
    write_batch(index, sql, batch)
    if save_state:
        # Re-processed pending rows lie below the resume point; only new rows move it forward.
        newest = max((values[1], values[0]) for values in batch)
        with transaction(index):
            if newest[0] > int(_state(index).get("last_rowid", 0)):
                _save_state(index, newest)
    batch.clear()
    return count


def _table_row(row: tuple) -> tuple:
    """One proxy row → one message_index row; unknown usage stays NULL (docs/inputs.md#response-column)."""
    request, facts = parse_proxy_row_with_facts(row)
    raw_timestamp = row[2] if isinstance(row[2], str) else None
    values = {
        "request_id": request.request_id, "row_id": request.row_id, "message_id": request.message_id,
        "timestamp": raw_timestamp, "ts_epoch": to_epoch(request.timestamp),
        "completed_epoch": to_epoch(request.completed_at), "is_streaming": int(request.is_streaming),
        "status": request.status, "kind": request.kind, "model": request.model,
        "stop_reason": request.stop_reason, "output_types": orjson.dumps(list(request.output_types)).decode(),
        "api_time_s": request.api_time_s, "ttft_s": request.ttft_s,
        "anthropic_request_id": request.anthropic_request_id, "session_header": request.session_header,
        "max_tokens": request.max_tokens, "retry_count": request.retry_count, "prompt_key": request.prompt_key,
        "message_count": request.message_count, "problems": orjson.dumps(list(request.problems)).decode(),
        "twin_of": None, "is_artifact": 0,
    }
    values.update({name: getattr(facts, name) for name in USAGE_FIELDS})
    return tuple(values[name] for name in COLUMN_NAMES)


def _request_from_row(values: dict[str, Any]) -> ProxyRequest:
    """Rebuild a `ProxyRequest` from its index row."""
    # The stored text keeps the proxy's offset; ts_epoch is what the reader decided (it may be a fallback).
    timestamp = parse_timestamp(values["timestamp"])
    if timestamp is None or timestamp.timestamp() != values["ts_epoch"]:
        timestamp = from_epoch(values["ts_epoch"])
    return ProxyRequest(
        row_id=values["row_id"], request_id=values["request_id"], timestamp=timestamp,
        completed_at=from_epoch(values["completed_epoch"]), is_streaming=bool(values["is_streaming"]),
        status=values["status"], kind=values["kind"], model=values["model"] or "",
        message_id=values["message_id"], usage=usage_from_values(*(values[name] for name in USAGE_FIELDS)),
        stop_reason=values["stop_reason"] or "", output_types=tuple(orjson.loads(values["output_types"] or "[]")),
        api_time_s=values["api_time_s"], ttft_s=values["ttft_s"],
        anthropic_request_id=values["anthropic_request_id"], session_header=values["session_header"],
        max_tokens=values["max_tokens"], retry_count=values["retry_count"], prompt_key=values["prompt_key"],
        message_count=values["message_count"] or 0, problems=tuple(orjson.loads(values["problems"] or "[]")),
    )


def _update_twins(index: sqlite3.Connection) -> None:
    """Recompute old-proxy pairs over the whole index (new rows may pair with old ones, docs/inputs.md#old-proxy-twins)."""
    # Only successful turns can be twins: an errored stream and its retry are not a replay pair.
    rows = index.execute(
        f"SELECT request_id, ts_epoch, row_id, is_streaming, prompt_key FROM {TABLE} WHERE kind = ? AND prompt_key IN "
        f"(SELECT prompt_key FROM {TABLE} WHERE kind = ? AND prompt_key IS NOT NULL GROUP BY prompt_key "
        "HAVING MIN(is_streaming) = 0 AND MAX(is_streaming) = 1)",
        (KIND_OK, KIND_OK),
    ).fetchall()
    pairs = find_twin_pairs(TwinCandidate(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows)
    wanted: dict[str, tuple[Optional[str], int]] = {}
    for pair in pairs:
        wanted[pair.streaming_request_id] = (pair.replay_request_id, 1)
        wanted[pair.replay_request_id] = (pair.streaming_request_id, 0)
    current = {
        request_id: (twin_of, is_artifact)
        for request_id, twin_of, is_artifact in index.execute(
            f"SELECT request_id, twin_of, is_artifact FROM {TABLE} WHERE twin_of IS NOT NULL OR is_artifact = 1"
        )
    }
    changes = [(*wanted.get(request_id, (None, 0)), request_id) for request_id in set(wanted) | set(current)
               if wanted.get(request_id, (None, 0)) != current.get(request_id, (None, 0))]
    if changes:
        write_batch(index, f"UPDATE {TABLE} SET twin_of = ?, is_artifact = ? WHERE request_id = ?", changes)
    has_streaming_turns = index.execute(
        f"SELECT 1 FROM {TABLE} WHERE is_streaming = 1 AND kind = ? LIMIT 1", (KIND_OK,)
    ).fetchone() is not None
    report = classify_generation(pairs, has_streaming_turns=has_streaming_turns)
    with transaction(index):
        write_state(index, _STATE_PREFIX + "generation", report.generation)


def _summarize(index: sqlite3.Connection) -> MessageIndexSummary:
    """Counts over the whole table; problems are rebuilt from the stored per-row lists."""
    (total, ids, streaming, non_streaming, errors, pending, unparsable, skipped, twins) = index.execute(
        f"SELECT COUNT(*), COUNT(DISTINCT message_id), TOTAL(is_streaming = 1), TOTAL(is_streaming = 0), "
        f"TOTAL(kind = ?), TOTAL(kind = ?), TOTAL(kind = ?), TOTAL(message_id IS NULL), TOTAL(is_artifact = 1) "
        f"FROM {TABLE}",
        (KIND_ERROR, KIND_PENDING, KIND_UNPARSABLE),
    ).fetchone()
    problems = ProblemCounter()
    for request_id, kind, row_problems in index.execute(
        f"SELECT request_id, kind, problems FROM {TABLE} WHERE kind != ? OR problems != '[]' ORDER BY ts_epoch, row_id",
        (KIND_OK,),
    ):
        count_request_problems(problems, request_id, kind, orjson.loads(row_problems or "[]"))
    for message_id, copies in index.execute(
        f"SELECT message_id, COUNT(*) FROM {TABLE} WHERE message_id IS NOT NULL GROUP BY message_id HAVING COUNT(*) > 1"
    ):
        problems.add("duplicate_message_id", message_id, copies - 1)
    return MessageIndexSummary(
        rows_total=total, message_ids=ids, streaming=int(streaming), non_streaming=int(non_streaming),
        errors=int(errors), pending=int(pending), unparsable=int(unparsable), skipped=int(skipped),
        twins=int(twins), generation=_state(index).get("generation", ""), problems=problems,
    )


def _mismatch_reason(proxy: sqlite3.Connection, index: sqlite3.Connection) -> str:
    """Why the existing index cannot be extended (different schema or proxy DB, rows removed); '' if it can."""
    if not table_exists(index, TABLE):
        return ""
    state = _state(index)
    if state.get("schema_version") != SCHEMA_VERSION:
        return "the index was written by another version"
    last_rowid = int(state.get("last_rowid", 0))
    if last_rowid:
        row = proxy.execute("SELECT id FROM requests WHERE rowid = ?", (last_rowid,)).fetchone()
        if row is None or str(row[0]) != state.get("last_request_id"):
            return "the proxy DB is not the one indexed (rows renumbered or removed)"
    proxy_rows = proxy.execute("SELECT COUNT(*) FROM requests WHERE rowid <= ?", (last_rowid,)).fetchone()[0]
    indexed = index.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0]
    return "" if proxy_rows == indexed else "rows were removed from the proxy DB"


def _staleness(proxy: sqlite3.Connection, index: sqlite3.Connection) -> str:
    """'' when up to date, else what is new: rows past last_rowid or responses that arrived."""
    last_rowid = int(_state(index).get("last_rowid", 0))
    new_rows = proxy.execute("SELECT COUNT(*) FROM requests WHERE rowid > ?", (last_rowid,)).fetchone()[0]
    if new_rows:
        return f"{new_rows} new rows"
    arrived = len(_arrived_rowids(proxy, index))
    return f"responses arrived for {arrived} pending rows" if arrived else ""


def _arrived_rowids(proxy: sqlite3.Connection, index: sqlite3.Connection) -> list[int]:
    """Rowids indexed as pending (response NULL) whose response has been written since."""
    pending = [row[0] for row in index.execute(f"SELECT row_id FROM {TABLE} WHERE kind = ?", (KIND_PENDING,))]
    arrived: list[int] = []
    for start in range(0, len(pending), READ_BATCH_ROWS):
        chunk = pending[start : start + READ_BATCH_ROWS]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT rowid FROM requests WHERE rowid IN ({marks}) AND response IS NOT NULL ORDER BY rowid"
        arrived.extend(row[0] for row in proxy.execute(sql, chunk))
    return arrived


def _with_progress(rows: Iterable[tuple], progress: Optional[Progress], total: int) -> Iterable[tuple]:
    """Wrap the row stream in the caller's progress bar, if any."""
    return progress(rows, total=total, desc="message index") if progress else rows


def _create_table(index: sqlite3.Connection, table: str) -> None:
    """Create the table (and, for the live table, its indexes) if missing."""
    columns = ", ".join(f"{name} {kind}" for name, kind in COLUMNS)
    with transaction(index):
        index.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
        if table == TABLE:
            _create_indexes(index)
            write_state(index, _STATE_PREFIX + "schema_version", SCHEMA_VERSION)


def _create_indexes(index: sqlite3.Connection) -> None:
    """Lookups by message id (conversation index) and scans in arrival order (traces)."""
    index.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_message_id ON {TABLE}(message_id)")
    index.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_ts_epoch ON {TABLE}(ts_epoch, row_id)")


def _last_indexed(index: sqlite3.Connection) -> tuple[int, Optional[str]]:
    """(highest indexed rowid, its request id): the resume point and the proxy DB's fingerprint."""
    row = index.execute(f"SELECT MAX(row_id), request_id FROM {TABLE}").fetchone()
    return (row[0], row[1]) if row else (0, None)


def _state(index: sqlite3.Connection) -> dict[str, str]:
    """Our own keys of `index_state`."""
    return read_state(index, _STATE_PREFIX)


def _save_state(index: sqlite3.Connection, last: tuple[int, Optional[str]]) -> None:
    """Record the resume point (inside the caller's transaction)."""
    write_state(index, _STATE_PREFIX + "schema_version", SCHEMA_VERSION)
    write_state(index, _STATE_PREFIX + "last_rowid", str(last[0]))
    write_state(index, _STATE_PREFIX + "last_request_id", last[1] or "")
