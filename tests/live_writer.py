"""Replay a capture into a live proxy DB with the proxy's write pattern (run as a separate process).

The real proxy INSERTs a row with `response` NULL when a request arrives and UPDATEs `response`
when the answer is complete, each in its own transaction, on a default rollback-journal DB with
go-sqlite3's 5 s busy timeout (docs/inputs.md#reading-a-live-database). Several requests are in flight at once, so
responses land out of arrival order. Exits 1 with one line if any write fails (e.g. "database
is locked": a reader held a lock too long).

    python tests/live_writer.py SOURCE_DB TARGET_DB [--seed N] [--pause-ms MS]
"""
from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import time

COLUMNS = ("id", "timestamp", "method", "endpoint", "headers", "body", "user_agent", "content_type",
           "prompt_grade", "response", "model", "original_model", "routed_model", "created_at")
BUSY_TIMEOUT_S = 5.0  # go-sqlite3's default `_busy_timeout`
MAX_IN_FLIGHT = 4


def replay(source: str, target: str, *, seed: int, pause_ms: float) -> int:
    """Insert every source row (response NULL), then fill responses a few rows later; return rows written."""
    rng = random.Random(seed)
    with sqlite3.connect(source) as reader:
        rows = reader.execute(f"SELECT {', '.join(COLUMNS)} FROM requests ORDER BY rowid").fetchall()
    writer = sqlite3.connect(target, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    insert = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    response_at = COLUMNS.index("response")
    in_flight: list[tuple] = []
    for row in rows:
        writer.execute(insert, row[:response_at] + (None,) + row[response_at + 1:])
        in_flight.append(row)
        # Answers finish in any order; at most MAX_IN_FLIGHT requests wait at a time.
        while in_flight and (len(in_flight) >= MAX_IN_FLIGHT or rng.random() < 0.5):
            done = in_flight.pop(rng.randrange(len(in_flight)))
            writer.execute("UPDATE requests SET response = ? WHERE id = ?", (done[response_at], done[0]))
        time.sleep(rng.uniform(0, pause_ms) / 1000)
    for done in in_flight:
        writer.execute("UPDATE requests SET response = ? WHERE id = ?", (done[response_at], done[0]))
    writer.close()
    return len(rows)


def main() -> None:
    """Command-line entry: replay and report, exit 1 on a failed write."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pause-ms", type=float, default=40.0)
    args = parser.parse_args()
    try:
        count = replay(args.source, args.target, seed=args.seed, pause_ms=args.pause_ms)
    except sqlite3.OperationalError as error:
        print(f"live writer failed: {error}", file=sys.stderr)
        sys.exit(1)
    print(count)


if __name__ == "__main__":
    main()
