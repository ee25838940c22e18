"""Anonymized traces leak nothing from the capture (docs/reliability.md#anonymization).

Runs build_minimal_traces.py --anonymize (native + Mooncake + sessions + sidecar + manifest) on
the shipped example and on the real-format fixture, then checks every output file:
- no 12-character window of it equals a 12-character substring of any string in the input
  (request bodies, responses with their SSE chunks, headers, JSONL), which also covers `msg_`,
  `toolu_`, `req_` and row ids, UUIDs, file paths, host names and RFC 3339 timestamps;
- no calendar date, and no number in the range of an epoch time (s or ms);
- the salt appears nowhere.
Model names and the native format's own vocabulary (keys, `subagent_type`, status) may appear;
keys must be snake_case schema names.
"""
from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import EXAMPLES_DIR, FIXTURE_DIR
from tests.tool_runner import TOOL_BY_NAME, Workspace, run_tool

WINDOW = 12
SALT = "pepper-7f3a9c2e51d8"
# Values the native format must carry (docs/traces.md#the-native-trace-file): not content, so they may appear.
ALLOWED_KEYS = frozenset({"model", "models", "subagent_type", "status"})
_SCHEMA_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_LETTER = re.compile(r"[A-Za-z]")
_DATE = re.compile(r"(19|20)\d\d-[01]\d-[0-3]\d")
# Epoch seconds (2001-2033) or milliseconds: no relative time or count of a trace gets that big.
_EPOCH = re.compile(r"(?<![\d.])(1[0-9]{9}|1[0-9]{12})(?![\d])")
_SSE_PREFIX = "data: "
OPTION_SETS = {
    "default": [],
    "split-global-api": ["--split-at-gap", "20", "--global-hash-ids", "--token-count", "api",
                         "--since", "2000-01-01T00:00:00Z", "--until", "2100-01-01T00:00:00+05:30"],
}


def _strings(value: Any, key: str = "") -> Iterator[str]:
    """Every string value at any depth (not keys, which are the schema), SSE chunks opened up."""
    if isinstance(value, dict):
        for child_key, child in value.items():
            yield from _strings(child, child_key)
    elif isinstance(value, list):
        for child in value:
            yield from _strings(child, key)
    elif isinstance(value, str) and key not in ALLOWED_KEYS:
        parsed = _json_inside(value)
        if parsed is None:
            yield value
        else:
            yield from _strings(parsed, key)


def _json_inside(text: str) -> Any:
    """The JSON object a string holds (a stored SSE line, a bodyText, a whole column), else None."""
    body = text[len(_SSE_PREFIX):] if text.startswith(_SSE_PREFIX) else text
    if not body.startswith(("{", "[")):
        return None
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return None


def _input_strings(db: Path, jsonl: Path) -> set[str]:
    """Unique strings of every proxy column and JSONL line (12+ characters, with a letter)."""
    found: set[str] = set()
    with sqlite3.connect(db) as connection:
        for row in connection.execute("SELECT id, timestamp, headers, body, user_agent, response, created_at FROM requests"):
            for column in row:
                if isinstance(column, str):
                    found.update(_strings({"": column}))
    for path in sorted(jsonl.rglob("*.jsonl")):
        found.add(str(path))
        for line in path.read_text(errors="replace").splitlines():
            found.update(_strings({"": line}))
    return {text for text in found if len(text) >= WINDOW and _LETTER.search(text)}


def _output_texts(traces: Path) -> dict[str, tuple[str, list[str], set[str]]]:
    """Per output file: its raw text, its string values (escapes undone) and its keys."""
    texts: dict[str, tuple[str, list[str], set[str]]] = {}
    for path in sorted(traces.rglob("*")):
        if not path.is_file():
            continue
        raw = path.read_text()
        documents = [json.loads(raw)] if path.suffix == ".json" else [json.loads(line) for line in raw.splitlines()]
        keys: set[str] = set()
        values = [text for document in documents for text in _strings(document)]
        for document in documents:
            keys.update(_keys(document))
        texts[str(path.relative_to(traces))] = (raw, values, keys)
    return texts


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield key
            yield from _keys(child)
    elif isinstance(value, list):
        for child in value:
            yield from _keys(child)


def _windows(texts: list[str]) -> set[str]:
    return {text[i:i + WINDOW] for text in texts for i in range(len(text) - WINDOW + 1)
            if _LETTER.search(text[i:i + WINDOW])}


def _leaks(secrets: set[str], windows: dict[str, str]) -> list[tuple[str, str]]:
    """(input string, shared window) for each input string sharing a 12-character window with the output."""
    found = []
    for secret in secrets:
        shared = next((secret[i:i + WINDOW] for i in range(len(secret) - WINDOW + 1) if secret[i:i + WINDOW] in windows), None)
        if shared is not None:
            found.append((secret, shared))
    return found


def _capture(name: str) -> Path:
    source = {"example": EXAMPLES_DIR, "fixture": FIXTURE_DIR}[name]
    if not (source / "requests.db").is_file():
        pytest.skip(f"{source} is absent")
    return source


@pytest.mark.parametrize("options", list(OPTION_SETS), ids=list(OPTION_SETS))
@pytest.mark.parametrize("capture", ["example", "fixture"])
def test_anonymized_outputs_leak_nothing(capture: str, options: str, tmp_path: Path) -> None:
    """No content substring, id, path, host, timestamp or salt in any anonymized output file."""
    source = _capture(capture)
    workspace = Workspace(db=tmp_path / "requests.db", jsonl=tmp_path / "jsonl", out=tmp_path / "out")
    shutil.copyfile(source / "requests.db", workspace.db)
    shutil.copytree(source / "jsonl", workspace.jsonl)
    secrets = _input_strings(source / "requests.db", workspace.jsonl) | {str(source), str(tmp_path)}

    run = run_tool(TOOL_BY_NAME["traces"], workspace, "--anonymize", "--mooncake-sessions",
                   "--salt", SALT, *OPTION_SETS[options])
    assert run.exit_code == 0, run.describe()
    assert run.summary["traces_written"] >= 1
    outputs = _output_texts(workspace.traces)
    assert {"_sidecar/manifest.json", "mooncake_trace.jsonl", "mooncake_sessions.jsonl"} <= set(outputs)

    windows: dict[str, str] = {}
    for name, (raw, values, keys) in outputs.items():
        assert SALT not in raw, name
        assert not _DATE.search(raw), (name, _DATE.search(raw).group(0))
        assert not _EPOCH.search(raw), (name, _EPOCH.search(raw).group(0))
        # Keys are the schema's snake_case names (or model families), never ids or text.
        assert all(_SCHEMA_KEY.match(key) for key in keys), (name, sorted(k for k in keys if not _SCHEMA_KEY.match(k)))
        windows.update(dict.fromkeys(_windows(values), name))
    # One pass over the input's windows for all files together; the message names the file.
    leaks = _leaks(secrets, windows)
    assert not leaks, [(windows[window], window, text[:80]) for text, window in leaks[:5]]


def test_leak_check_finds_ids_in_plain_traces(tmp_path: Path) -> None:
    """The detector itself works: without --anonymize the sidecar holds request and message ids."""
    source = _capture("fixture")
    workspace = Workspace(db=tmp_path / "requests.db", jsonl=source / "jsonl", out=tmp_path / "out")
    shutil.copyfile(source / "requests.db", workspace.db)
    assert run_tool(TOOL_BY_NAME["traces"], workspace, "--salt", SALT).exit_code == 0
    values = [text for _, texts, _ in _output_texts(workspace.traces).values() for text in texts]
    leaked = {text for text, _ in _leaks(_input_strings(workspace.db, workspace.jsonl), dict.fromkeys(_windows(values)))}
    assert any(text.startswith("msg_") for text in leaked) and any(text.startswith("req_") for text in leaked)
