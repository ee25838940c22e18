#!/usr/bin/env python3
"""The bare read-and-parse floor: read every row's body and response, parse their JSON, nothing else.

It is the lower bound any tool that must look at every request pays: rows in rowid batches (the
same keyset pagination the tools use), orjson on the body, the response and each streaming chunk.
Prints one JSON line: rows, bytes read, seconds. `floor.py --jsonl DIR` is the same floor for the
logs: every line of every `.jsonl` file under DIR read and parsed with orjson.
"""
from __future__ import annotations

import os
import sqlite3
import sys
import time

import orjson

BATCH_ROWS = 64
DATA_PREFIX = "data:"


def read_and_parse(db_path: str) -> dict:
    """Read and parse every row of `requests`; returns counts and elapsed seconds."""
    started = time.perf_counter()
    connection = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    rows = payload = chunks = broken = 0
    last = 0
    while True:
        batch = connection.execute(
            "SELECT rowid, body, response FROM requests WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, BATCH_ROWS)
        ).fetchall()
        if not batch:
            break
        for _, body, response in batch:
            rows += 1
            payload += len(body or "") + len(response or "")
            try:
                orjson.loads(body)
                parsed = orjson.loads(response) if response is not None else None
            except orjson.JSONDecodeError:
                broken += 1
                continue
            for chunk in (parsed or {}).get("streamingChunks") or ():
                chunks += 1
                text = chunk[len(DATA_PREFIX):] if chunk.startswith(DATA_PREFIX) else chunk
                try:
                    orjson.loads(text)
                except orjson.JSONDecodeError:
                    broken += 1
        last = batch[-1][0]
    connection.close()
    return {"rows": rows, "payload_bytes": payload, "chunks": chunks, "broken": broken,
            "elapsed_s": round(time.perf_counter() - started, 3)}


def read_and_parse_jsonl(directory: str) -> dict:
    """Read and parse every non-blank line of every `.jsonl` file under `directory`; counts and seconds."""
    started = time.perf_counter()
    files = lines = payload = broken = 0
    for folder, _, names in os.walk(directory):
        for name in names:
            if not name.endswith(".jsonl"):
                continue
            files += 1
            with open(os.path.join(folder, name), "rb") as stream:
                for raw in stream:
                    if not raw.strip():
                        continue
                    lines += 1
                    payload += len(raw)
                    try:
                        orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        broken += 1
    return {"files": files, "lines": lines, "payload_bytes": payload, "broken": broken,
            "elapsed_s": round(time.perf_counter() - started, 3)}


if __name__ == "__main__":
    if sys.argv[1] == "--jsonl":
        print(orjson.dumps(read_and_parse_jsonl(sys.argv[2])).decode())
    else:
        print(orjson.dumps(read_and_parse(sys.argv[1])).decode())
