#!/usr/bin/env python3
"""Check a directory of KV-cache traces: schema, statistics table, and cache behaviour versus the real API."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from lib.atomic import write_atomic
from lib.cli import MAX_BLOCK_SIZE, Command, FiniteFloatRange, Output, common_options, index_db_option, run, workers_option
from lib.errors import InputError
from lib.validate.validator import check_gates, validate_traces


@click.command(cls=Command)
@click.argument("traces", type=click.Path())
@click.option("--db", "db_path", type=click.Path(dir_okay=False), help="The proxy's requests.db, to compare with the API's usage.")
@click.option("--jsonl-dir", type=click.Path(),
              help="Claude Code JSONL logs the traces were built from, to match anonymized traces to DB rows "
                   "(without them, through a plan from the DB alone: docs/validate.md); without --db, the API "
                   "usage they record.")
@index_db_option
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write the statistics table as CSV here.")
@click.option("--min-accuracy", type=FiniteFloatRange(0, 100), metavar="PCT",
              help="Exit 1 when the overall simulated-vs-API accuracy is below PCT.")
@click.option("--max-error", type=FiniteFloatRange(0), metavar="PCT",
              help="Exit 1 when the API model's median error of any usage field exceeds PCT of the prompt.")
@click.option("--mooncake-block-size", default=512, show_default=True, type=click.IntRange(1, MAX_BLOCK_SIZE),
              help="Block size for the ceil check of Mooncake *.jsonl files.")
@click.option("--strict", is_flag=True, help="Exit 1 on schema warnings too (missing optional timing, ...).")
@workers_option
@common_options
def main(traces: str, db_path: Optional[str], jsonl_dir: Optional[str], index_db: Optional[str],
         csv_path: Optional[str], min_accuracy: Optional[float], max_error: Optional[float],
         mooncake_block_size: int, strict: bool, workers: int, out: Output) -> None:
    """Validate traces: schema check, statistics table, simulated vs API cache hits.

    Exit 1 on schema errors (and warnings with --strict) or a missed --min-accuracy / --max-error;
    2 on unusable input. docs/validate.md lists the rules.

    \b
    Example:
        python3 validate_trace_cache.py examples/traces/ \\
            --db examples/requests.db \\
            --jsonl-dir examples/jsonl/
    """
    if max_error is not None and jsonl_dir and not db_path:
        raise InputError("--max-error needs --db: the API model rebuilds breakpoints from the request bodies")
    report = validate_traces(traces, db_path=db_path, jsonl_dir=jsonl_dir, index_db=index_db,
                             mooncake_block_size=mooncake_block_size,
                             needs_api=min_accuracy is not None or max_error is not None, say=out.text,
                             workers=workers,
                             progress=lambda items, total: out.progress(items, total=total, desc="hashing"))
    if csv_path:
        write_atomic(Path(csv_path), report.stats.csv_text().encode())
    out.summary(report.as_dict(), report.text())
    check_gates(report, min_accuracy=min_accuracy, max_error=max_error, strict=strict)


def cli() -> None:
    """The installed command (`pip install .`): the same as running this file."""
    run(main)


if __name__ == "__main__":
    run(main)
