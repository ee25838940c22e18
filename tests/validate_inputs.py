"""Trace directories for the validator's tests: the example built by the seed command, copied per test,
and a published-format corpus."""
from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Callable

import orjson
from click.testing import CliRunner

from bench.validate_corpus import write_trace
from build_minimal_traces import main as build_main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SEED_BUILD_OPTIONS = ["--block-size", "64", "--include-subagents", "--anonymize"]


def build_example_traces(workdir: Path, *extra: str) -> Path:
    """workdir/examples/{requests.db, jsonl/, traces/}: the seed's build command run there; returns workdir."""
    examples = workdir / "examples"
    examples.mkdir(parents=True)
    shutil.copyfile(EXAMPLES / "requests.db", examples / "requests.db")
    shutil.copytree(EXAMPLES / "jsonl", examples / "jsonl")
    result = CliRunner().invoke(build_main, [
        str(examples / "requests.db"), "--jsonl-dir", str(examples / "jsonl"),
        "--output-dir", str(examples / "traces"), *SEED_BUILD_OPTIONS, "-q", *extra,
    ])
    if result.exit_code != 0:
        raise RuntimeError(f"building the example traces failed: {result.output}")
    return workdir


def published_corpus(directory: Path) -> Path:
    """A small copy of the published kv-cache-tester corpus's shape: native traces that every
    loader reads, with what the published files lack or repeat (issue 13: 8,771 such findings
    in 710 traces): 5 requests without `api_time`, 3 without `think_time`, 4 streaming requests
    without `ttft`, one marker with null counters, and one trace repeating another's requests."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(3)
    for number in (1, 2, 3):
        write_trace(directory / f"trace_{number:04d}.json", number, rng)

    def edit(number: int, change: Callable[[dict], None], target: int | None = None) -> None:
        document = orjson.loads((directory / f"trace_{number:04d}.json").read_bytes())
        change(document)
        (directory / f"trace_{target or number:04d}.json").write_bytes(orjson.dumps(document))

    def first_trace(document: dict) -> None:
        requests = document["requests"]
        for entry in requests[:5]:
            del entry["api_time"]
        for entry in requests[5:8]:
            del entry["think_time"]
        marker = next(entry for entry in requests if entry["type"] == "subagent")
        marker.update(duration_ms=None, total_tokens=None, tool_use_count=None)

    def second_trace(document: dict) -> None:
        for entry in document["requests"][:4]:
            del entry["ttft"]

    edit(1, first_trace)
    edit(2, second_trace)
    edit(3, lambda document: document.update(id="trace_0004"), target=4)
    return directory
