"""What the five scripts share: common options, progress bars, summaries and exit codes (docs/cli.md)."""
from __future__ import annotations

import functools
import gc
import json
import math
import os
import sqlite3
import sys
from typing import Any, Callable, Iterable, NoReturn, Optional, TypeVar

import click

from lib.db import describe_database_error, forget_opened
from lib.errors import CheckFailed, InputError
from lib.timestamps import parse_timestamp
from lib.worker_guard import cpu_limit

T = TypeVar("T")
# A hash block of more tokens than any prompt holds would only make every request one partial block.
MAX_BLOCK_SIZE = 1 << 20
NOTES_KEY = "lib.cli.notes"
GC_FIRST_GENERATION_THRESHOLD = 50_000


class Command(click.Command):
    """A click command whose usage errors are one line, `Error: …`, and exit 2 (docs/cli.md#exit-codes).

    click's default prints the usage and a hint around the message; a script's caller (a shell
    script, CI) wants only the problem.
    """

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        thresholds = gc.get_threshold()
        # A run allocates millions of small containers (key lists, records) and keeps many of them:
        # at the default threshold (700) the cycle collector re-scans them hundreds of times (5–10 %
        # of a run) for cycles there are hardly any of. Reference counting still frees everything
        # else at once; cyclic garbage waits for 50,000 allocations instead of 700.
        gc.set_threshold(GC_FIRST_GENERATION_THRESHOLD, *thresholds[1:])
        try:
            return super().main(*args, **kwargs)
        except click.UsageError as error:
            click.echo(f"Error: {error.format_message()} (see --help)", err=True)
            sys.exit(2)
        except click.exceptions.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        finally:
            gc.set_threshold(*thresholds)


def counted(number: int, noun: str) -> str:
    """`1 file`, `2 files`: the count and its noun as the summaries print them."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def run(command: click.Command) -> NoReturn:
    """Run a script's command from the command line and end the process without the interpreter's teardown.

    Teardown frees every object one at a time, ~0.07 s after a large run (mostly the tokenizer's
    100,000-entry vocabulary), for memory the system takes back at once. Every output file is
    closed and renamed, and every database connection closed, before the command returns; only
    stdout and stderr are left to flush. Never call this from a test or a library: it ends the process.
    """
    try:
        result: object = command.main()
        code = result if isinstance(result, int) else 0
    except SystemExit as exit_request:
        code = _exit_code(exit_request.code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a reader that left (`| head`) or a closed stream
            pass
    os._exit(code)


def _exit_code(code: Any) -> int:
    """What the interpreter makes of `sys.exit(code)`: None is 0, a message is printed and 1."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def common_options(command: Callable) -> Callable:
    """Add --json, -q/--quiet, --progress and --debug, and map exceptions to exit codes.

    The wrapped function receives an `out: Output` keyword instead of the four flags.
    InputError, a SQLite error (a corrupt, locked, read-only or foreign file) or an OSError naming
    a file (an output path that cannot be written) → one line on stderr, exit 2; CheckFailed →
    its message, exit 1. Any other exception is a bug and keeps its traceback.
    """

    @click.option("--json", "json_output", is_flag=True, help="Print a machine-readable summary on stdout.")
    @click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors (and --json).")
    @click.option("--progress/--no-progress", default=None, help="Force progress bars on or off (default: when stderr is a terminal).")
    @click.option("--debug", is_flag=True, help="Show tracebacks for input errors.")
    @functools.wraps(command)
    def wrapper(*args: Any, json_output: bool, quiet: bool, progress: Optional[bool], debug: bool, **kwargs: Any) -> Any:
        out = Output(json_output=json_output, quiet=quiet, progress=progress)
        for note in click.get_current_context().meta.get(NOTES_KEY, ()):
            if not quiet:
                click.echo(note, err=True)
        forget_opened()
        try:
            return command(*args, out=out, **kwargs)
        except (InputError, sqlite3.Error, OSError) as error:
            if debug or (isinstance(error, OSError) and not error.filename):
                raise
            click.echo(f"Error: {_boundary_message(error)}", err=True)
            sys.exit(2)
        except CheckFailed as error:
            click.echo(f"Check failed: {error}", err=True)
            sys.exit(1)

    return wrapper


def cap_workers(ctx: click.Context, param: click.Parameter, value: Optional[int]) -> int:
    """`--workers` callback: at most the CPU count (more processes only contend, each with its own
    tokenizer and memo), with a one-line note when capped; None (no option given) is the CPU count."""
    limit = cpu_limit()
    if value is None:
        return limit
    if value > limit:
        ctx.meta.setdefault(NOTES_KEY, []).append(f"Note: --workers {value} capped at {limit} (the CPU count).")
        return limit
    return value


def _boundary_message(error: Exception) -> str:
    """The `<file>: <problem>` of an error at the command boundary."""
    if isinstance(error, sqlite3.Error):
        return describe_database_error(error)
    if isinstance(error, OSError):
        return f"{error.filename}: {error.strerror or error}"
    return str(error)


def index_db_option(command: Callable) -> Callable:
    """--index-db FILE: the tools' index tables in a file of their own instead of the proxy DB."""
    return click.option("--index-db", type=click.Path(dir_okay=False),
                        help="Keep the index tables in this SQLite file instead of DB (DB stays untouched).")(command)


def time_window_options(command: Callable) -> Callable:
    """--since / --until: only requests in this time window (ends included)."""
    command = click.option("--until", type=TimestampType(), help="Only requests at or before this time (ISO 8601).")(command)
    return click.option("--since", type=TimestampType(), help="Only requests at or after this time (ISO 8601).")(command)


def workers_option(command: Callable) -> Callable:
    """--workers N: processes hashing prompts; the output never depends on N."""
    return click.option("--workers", default=1, show_default=True, type=click.IntRange(1), callback=cap_workers,
                        help="Processes hashing prompts (the same output for any count; at most the CPU count).")(command)


class Output:
    """Where a command's progress, text and JSON summary go."""

    def __init__(self, *, json_output: bool = False, quiet: bool = False, progress: Optional[bool] = None) -> None:
        self.json_output = json_output
        self.quiet = quiet
        self.show_progress = progress if progress is not None else (sys.stderr.isatty() and not quiet)

    def progress(self, iterable: Iterable[T], *, total: Optional[int] = None, desc: str = "") -> Iterable[T]:
        """Wrap an iterable in a tqdm bar on stderr when progress is enabled."""
        if not self.show_progress:
            return iterable
        # Imported here: tqdm's import costs ~40 ms (it reads its package metadata), paid only with a bar.
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False, unit="row")

    def text(self, message: str) -> None:
        """Human text: stdout normally, stderr under --json (stdout then holds only JSON)."""
        if self.quiet:
            return
        click.echo(message, err=self.json_output)

    def summary(self, summary: dict, text: str) -> None:
        """Print the final summary: JSON on stdout with --json, the paragraph otherwise."""
        if self.json_output:
            click.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))
        elif not self.quiet:
            click.echo(text)


class TimestampType(click.ParamType):
    """An ISO 8601 / RFC 3339 time on the command line; naive values are taken as UTC."""

    name = "timestamp"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        if not isinstance(value, str):
            return value
        parsed = parse_timestamp(value)
        if parsed is None:
            self.fail(f"{value!r} is not an ISO 8601 time (e.g. 2026-03-25T15:43:05-04:00)", param, ctx)
        return parsed


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that refuses nan and inf: nan passes every range comparison, so `--max-error nan`
    would switch a CI gate off without a word."""

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number
