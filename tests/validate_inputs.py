"""Trace directories for the validator's tests: the example built by the seed command, copied per test."""
from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

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
