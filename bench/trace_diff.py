"""What differs between two trace directories of one capture (the DB+JSONL and the DB-only routes).

Traces are paired in manifest order (plan order: the same on both routes, whatever their ids); each
pair's trace file, sidecar and manifest entry are compared value by value, and every differing value
is counted under its field name. Lists of records are compared record by record, other lists whole.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson

MANIFEST = Path("_sidecar") / "manifest.json"
_MISSING = object()


def _count(left: Any, right: Any, field: str, counts: Counter) -> None:
    if isinstance(left, dict) and isinstance(right, dict):
        for name in sorted(left.keys() | right.keys()):
            _count(left.get(name, _MISSING), right.get(name, _MISSING), name, counts)
    elif (isinstance(left, list) and isinstance(right, list) and len(left) == len(right)
          and any(isinstance(item, dict) for item in left)):
        for left_item, right_item in zip(left, right):
            _count(left_item, right_item, field, counts)
    elif left != right:
        counts[field] += 1


def _sidecar(directory: Path, entry: dict) -> list[Any]:
    return [orjson.loads(line) for line in (directory / entry["sidecar"]).read_bytes().splitlines()] if entry.get("sidecar") else []


def trace_differences(left: Path, right: Path) -> dict[str, Any]:
    """Counts of differing values per field, in traces, sidecars and manifest entries; identical trace
    files (byte for byte, when both runs named them alike) and the requests compared."""
    entries = [orjson.loads((directory / MANIFEST).read_bytes())["traces"] for directory in (left, right)]
    traces, sidecars, manifest = Counter(), Counter(), Counter()
    identical = requests = 0
    for left_entry, right_entry in zip(*entries):
        left_bytes, right_bytes = (left / left_entry["file"]).read_bytes(), (right / right_entry["file"]).read_bytes()
        identical += left_entry["file"] == right_entry["file"] and left_bytes == right_bytes
        left_trace = orjson.loads(left_bytes)
        requests += sum(len(item["requests"]) if item.get("type") == "subagent" else 1 for item in left_trace["requests"])
        _count(left_trace, orjson.loads(right_bytes), "", traces)
        _count(_sidecar(left, left_entry), _sidecar(right, right_entry), "", sidecars)
        _count(left_entry, right_entry, "", manifest)
    return {"traces": [len(entries[0]), len(entries[1])], "identical_files": identical, "requests": requests,
            "trace_fields": dict(sorted(traces.items())), "sidecar_fields": dict(sorted(sidecars.items())),
            "manifest_fields": dict(sorted(manifest.items()))}
