"""Finding and reading trace files one at a time, and checking a whole directory (SPEC §7.1).

A directory may hold 700 traces / 450 MB: files are parsed one by one and only small digests
(trace id, a hash of the request list) are kept across files, so memory stays bounded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import orjson
import xxhash

from .errors import InputError
from .trace_schema import SchemaProblem, check_mooncake_rows, check_native_trace

NOT_TRACES = {"manifest.json"}
SKIPPED_DIRS = {"_sidecar"}


def find_trace_files(path: str | Path) -> tuple[list[Path], list[Path]]:
    """Native (`*.json`) and Mooncake (`*.jsonl`) files under `path` (a directory or one file)."""
    root = Path(path)
    if root.is_file():
        return ([root], []) if root.suffix == ".json" else ([], [root])
    if not root.is_dir():
        raise InputError(f"{path}: no such file or directory")
    native, mooncake = [], []
    for file in sorted(root.rglob("*")):
        if not file.is_file() or SKIPPED_DIRS.intersection(file.relative_to(root).parts[:-1]):
            continue
        if file.suffix == ".json" and file.name not in NOT_TRACES and not file.name.startswith("."):
            native.append(file)
        elif file.suffix == ".jsonl" and not file.name.startswith("."):
            mooncake.append(file)
    return native, mooncake


def load_json(path: Path) -> tuple[Optional[Any], Optional[str]]:
    """Parse one JSON file: (document, None) or (None, reason)."""
    try:
        return orjson.loads(path.read_bytes()), None
    except orjson.JSONDecodeError as error:
        return None, f"not valid JSON ({error})"
    except OSError as error:
        return None, f"cannot read ({error.strerror})"


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed row or None when broken) for each non-blank line."""
    with path.open("rb") as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                yield number, orjson.loads(line)
            except orjson.JSONDecodeError:
                yield number, None


@dataclass
class DirectoryCheck:
    """Result of the schema check of a trace directory."""

    native_files: int = 0
    mooncake_files: int = 0
    requests: int = 0
    problems: list[SchemaProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "native_files": self.native_files,
            "mooncake_files": self.mooncake_files,
            "requests": self.requests,
            "problems": [str(problem) for problem in self.problems],
        }


def check_directory(path: str | Path, *, mooncake_block_size: int = 512,
                    visit: Optional[Callable[[Path, dict], None]] = None) -> DirectoryCheck:
    """Schema-check every trace file, then look for duplicate ids and duplicate traces across files.

    `visit(path, document)` sees each parsed native trace object once, so statistics can be
    gathered in the same single pass instead of parsing a large directory twice.
    """
    native, mooncake = find_trace_files(path)
    result = DirectoryCheck(native_files=len(native), mooncake_files=len(mooncake))
    ids_seen: dict[str, str] = {}
    digests_seen: dict[bytes, str] = {}
    for file in native:
        name = file.name
        document, error = load_json(file)
        if error:
            result.problems.append(SchemaProblem(name, "file", error))
            continue
        result.problems.extend(check_native_trace(document, name))
        if not isinstance(document, dict):
            continue
        if visit is not None:
            visit(file, document)
        requests = document.get("requests")
        result.requests += _count_requests(requests)
        trace_id = document.get("id")
        if isinstance(trace_id, str):
            if trace_id in ids_seen:
                result.problems.append(SchemaProblem(name, "top level", f"duplicate trace id `{trace_id}` (also in {ids_seen[trace_id]})"))
            ids_seen.setdefault(trace_id, name)
        try:
            digest = xxhash.xxh3_128_digest(orjson.dumps(requests))
        except TypeError:  # orjson's "Recursion limit reached": it reads 1024 levels but writes 254
            result.problems.append(SchemaProblem(name, "requests", "nested deeper than 254 levels"))
            continue
        if digest in digests_seen:
            result.problems.append(SchemaProblem(name, "requests", f"duplicate trace: identical request list to {digests_seen[digest]}"))
        digests_seen.setdefault(digest, name)
    for file in mooncake:
        counted = _counting(iter_jsonl(file), result)
        result.problems.extend(check_mooncake_rows(counted, file.name, block_size=mooncake_block_size))
    return result


def _count_requests(entries: Any) -> int:
    """Requests in a native request list: sub-agent markers count their own requests, not themselves."""
    if not isinstance(entries, list):
        return 0
    return sum(_count_requests(entry.get("requests")) if isinstance(entry, dict) and entry.get("type") == "subagent"
               else 1 for entry in entries)


def _counting(rows: Iterator[tuple[int, Any]], result: DirectoryCheck) -> Iterator[tuple[int, Any]]:
    for row in rows:
        result.requests += 1
        yield row
