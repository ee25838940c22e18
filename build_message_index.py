#!/usr/bin/env python3
"""Map every `msg_…` id in a claude-code-proxy DB to its request, with per-request facts (docs/indexes.md#message-index).

\b
Example (the seed walkthrough's first step):
    python3 build_message_index.py examples/requests.db
\b
Also:
    python3 build_message_index.py requests.db --index-db index.sqlite   # leave requests.db untouched
    python3 build_message_index.py requests.db --rebuild --json-out message_id_index.json
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from lib.cli import Command, Output, cap_workers, common_options, index_db_option, run
from lib.db import open_databases
from lib.errors import InputError


@click.command(cls=Command, help=__doc__)
@click.argument("db", type=click.Path(dir_okay=False, path_type=Path))
@index_db_option
@click.option("--rebuild", is_flag=True, help="Discard the existing index and parse every row again.")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write {message_id: request_id} to this JSON file (atomically).")
@click.option("--workers", type=click.IntRange(1), default=None, callback=cap_workers,
              help="Parsing processes for large runs (default and maximum: the CPU count).")
@common_options
def main(db: Path, index_db: Optional[str], rebuild: bool, json_out: Optional[Path], workers: int, out: Output) -> None:
    """Build or update the message index of DB."""
    from lib.capture.message_index import update_message_index, write_message_id_json

    with open_databases(db, index_db) as (proxy, index):
        if index_db is not None and Path(index_db).resolve() == db.resolve():
            raise InputError(f"{index_db}: --index-db must be a different file from the proxy DB")
        summary = update_message_index(proxy, index, rebuild=rebuild, progress=out.progress, workers=workers)
        if json_out is not None:
            count = write_message_id_json(index, json_out)
            out.text(f"Wrote {count} message ids to {json_out}.")
    out.summary(summary.as_dict(), summary.describe())


def cli() -> None:
    """The installed command (`pip install .`): the same as running this file."""
    run(main)


if __name__ == "__main__":
    run(main)
