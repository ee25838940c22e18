"""The conventions all five scripts share (docs/cli.md): one-line usage errors with exit 2."""
from __future__ import annotations

import gc
import importlib
import json
import subprocess
import sys

import click
import pytest

from conftest import ROOT
from lib.cli import GC_FIRST_GENERATION_THRESHOLD, Command

SCRIPTS = ["build_message_index.py", "build_conversation_index.py", "build_minimal_traces.py",
           "validate_trace_cache.py", "complete_cache_visualizer.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_unknown_option_is_one_line_and_exit_2(script):
    run = subprocess.run([sys.executable, script, "--no-such-option"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: No such option '--no-such-option'"), run.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_an_example_and_exits_0(script):
    run = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0
    assert "Example" in run.stdout and "examples/" in run.stdout


def test_a_command_runs_with_a_raised_collector_threshold_and_restores_it():
    seen = []

    @click.command(cls=Command)
    def probe():
        seen.append(gc.get_threshold())

    before = gc.get_threshold()
    probe.main([], prog_name="probe")
    assert seen == [(GC_FIRST_GENERATION_THRESHOLD, *before[1:])]
    assert gc.get_threshold() == before


RUN_PROBE = """
import atexit, sys, click
from lib.cli import Command, run
atexit.register(lambda: print("teardown ran"))

@click.command(cls=Command)
@click.option("--code", type=int, default=None)
@click.option("--message", default=None)
def probe(code, message):
    click.echo("x" * 100_000)
    if message is not None:
        sys.exit(message)
    if code is not None:
        sys.exit(code)

run(probe)
print("after run")
"""


@pytest.mark.parametrize("arguments, code, stderr", [
    ([], 0, ""), (["--code", "3"], 3, ""), (["--code", "0"], 0, ""), (["--message", "boom"], 1, "boom\n"),
])
def test_run_flushes_output_keeps_the_exit_code_and_skips_teardown(arguments, code, stderr):
    # stdout is a pipe here, so block-buffered: without the flush the 100,000 characters would be lost.
    done = subprocess.run([sys.executable, "-c", RUN_PROBE, *arguments], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == code
    assert done.stdout == "x" * 100_000 + "\n"
    assert done.stderr == stderr


def test_run_keeps_usage_errors_at_exit_2():
    done = subprocess.run([sys.executable, "-c", RUN_PROBE, "--code", "x"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("Error: Invalid value for '--code'") and done.stderr.count("\n") == 1


# Options several scripts share come from one bundle in lib/cli.py: same name, type, default and help.
SHARED_OPTIONS = {
    "index_db": SCRIPTS,
    "workers": ["build_minimal_traces.py", "validate_trace_cache.py", "complete_cache_visualizer.py"],
    "since": ["build_minimal_traces.py", "complete_cache_visualizer.py"],
    "until": ["build_minimal_traces.py", "complete_cache_visualizer.py"],
}


@pytest.mark.parametrize("name", sorted(SHARED_OPTIONS))
def test_shared_options_are_defined_once(name):
    def spelled(script: str) -> str:
        command = importlib.import_module(script.removesuffix(".py")).main
        (option,) = [param for param in command.params if param.name == name]
        return json.dumps(option.to_info_dict(), sort_keys=True, default=str)

    spellings = {spelled(script) for script in SHARED_OPTIONS[name]}
    assert len(spellings) == 1, spellings
