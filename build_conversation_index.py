#!/usr/bin/env python3
"""Link Claude Code JSONL logs to the proxy's requests: the conversation index (docs/indexes.md#conversation-index).

\b
Example (the seed walkthrough):
    python3 build_conversation_index.py examples/requests.db --projects-path examples/jsonl/

Writes the tables `conversation_index` (one row per assistant turn, with its request id),
`subagent_links` (Agent/Task tool calls with spawn and completion times) and `jsonl_files`
into the DB (or --index-db). Builds the message index first when it is missing. Re-runs only
re-read conversations whose files changed (size or mtime); --rebuild re-reads everything.
"""
from __future__ import annotations

from typing import Optional

import click

from lib.cli import Command, Output, common_options, index_db_option, run


@click.command(cls=Command, help=__doc__)
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--projects-path", type=click.Path(), default=None,
              help="JSONL directory (searched recursively) or one session file. Default: ~/.claude/projects "
                   "($CLAUDE_CONFIG_DIR/projects).")
@index_db_option
@click.option("--rebuild", is_flag=True, help="Forget earlier runs and re-read every JSONL file.")
@common_options
def main(db: str, projects_path: Optional[str], index_db: Optional[str], rebuild: bool, out: Output) -> None:
    """Build or update the conversation index."""
    from lib.capture.conversation_index import update_conversation_index
    from lib.db import open_databases

    with open_databases(db, index_db) as (proxy, index):
        summary = update_conversation_index(proxy, index, projects_path, rebuild=rebuild,
                                            progress=out.progress, say=out.text)
    out.summary(summary.as_dict(), summary.describe())


def cli() -> None:
    """The installed command (`pip install .`): the same as running this file."""
    run(main)


if __name__ == "__main__":
    run(main)
