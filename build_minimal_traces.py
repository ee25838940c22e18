#!/usr/bin/env python3
"""Write block-hashed KV-cache traces (kv-cache-tester native JSON, Mooncake JSONL) from a capture."""
from __future__ import annotations

from typing import Iterable, Optional

import click

from lib.cli import (MAX_BLOCK_SIZE, Command, FiniteFloatRange, Output, common_options, index_db_option, run,
                     time_window_options, workers_option)
from lib.hashing.block_hashes import DEFAULT_BLOCK_SIZE
from lib.errors import InputError
from lib.traces.plan import PlanOptions
from lib.traces.build import build_traces
from lib.traces.jsonl_only import build_traces_from_jsonl
from lib.traces.options import TraceOptions
from lib.traces.presets import PRESETS, Preset, conflicts, preset_table


def _preset(ctx: click.Context, _param: click.Parameter, value: Optional[str]) -> Optional[Preset]:
    """`--preset list` prints the table and stops, before the required arguments are checked."""
    if value == "list":
        click.echo(preset_table())
        ctx.exit(0)
    return PRESETS[value] if value else None


@click.command(cls=Command)
@click.argument("db", required=False, type=click.Path(dir_okay=False))
@click.option("--jsonl-dir", type=click.Path(), help="Claude Code JSONL logs (default: ~/.claude/projects); without DB "
              "every request is rebuilt from them (docs/jsonl.md).")
@click.option("--db-only", is_flag=True, help="Ignore the logs: conversations from the DB alone (docs/routes.md#db-only; "
              "the default when no log names a request of DB).")
@click.option("--output-dir", required=True, type=click.Path(file_okay=False), help="Where traces are written.")
@index_db_option
@click.option("--block-size", default=DEFAULT_BLOCK_SIZE, show_default=True, type=click.IntRange(1, MAX_BLOCK_SIZE),
              help="Tokens per hash block.")
@click.option("--min-requests", default=1, show_default=True, type=click.IntRange(1), help="Drop traces with fewer parent requests.")
@click.option("--include-subagents", is_flag=True, help="Add sub-agent markers with their own requests.")
@click.option("--anonymize", is_flag=True, help="No ids, timestamps or content-derived strings in the output.")
@click.option("--split-at-gap", type=FiniteFloatRange(0, min_open=True), metavar="SEC", help="Start a new trace after a longer pause.")
@click.option("--local-hash-ids/--global-hash-ids", default=True, show_default=True,
              help="One id namespace per conversation, or one per run.")
@click.option("--conversation-id", help="Only this conversation (JSONL sessionId).")
@time_window_options
@click.option("--salt", help="Reproducible hashing salt (default: random per run; never written).")
@click.option("--format", "output_format", type=click.Choice(["kv", "mooncake", "both"]), default="kv", show_default=True,
              help="kv: native JSON per trace; mooncake: one Mooncake JSONL; both.")
@click.option("--mooncake-block-size", default=512, show_default=True, type=click.IntRange(1, MAX_BLOCK_SIZE),
              help="Block size of the Mooncake export.")
@click.option("--mooncake-sessions", is_flag=True, help="Also write AIPerf's session flavour (per-turn deltas).")
@click.option("--preset", type=click.Choice([*PRESETS, "list"]), callback=_preset, is_eager=True,
              help="Write what a replay tool expects and print its command line; `list` shows the table "
                   "(docs/traces.md#replay-presets).")
@workers_option
@click.option("--token-count", type=click.Choice(["tokenizer", "api"]), default="tokenizer", show_default=True,
              help="`in` from cl100k_base, or the API's prompt size with positions scaled per model family"
                   " (without DB: only api).")
@click.option("--subagent-clock", type=click.Choice(["spawn", "aiperf"]), default="spawn", show_default=True,
              help="aiperf: start the parent's `t` past every sub-agent `t` so AIPerf 0.13 reads them relative "
                   "(docs/traces.md).")
@common_options
def main(db: Optional[str], jsonl_dir: Optional[str], db_only: bool, output_dir: str, index_db: Optional[str], block_size: int,
         min_requests: int, include_subagents: bool, anonymize: bool, split_at_gap: Optional[float],
         local_hash_ids: bool, conversation_id: Optional[str], since, until, salt: Optional[str],
         output_format: str, mooncake_block_size: int, mooncake_sessions: bool, preset: Optional[Preset],
         workers: int, token_count: str, subagent_clock: str, out: Output) -> None:
    """Build minimal KV-cache traces from a proxy DB and Claude Code logs.

    Without DB, the requests are rebuilt from the logs alone (JSONL-only, docs/jsonl.md):
    `in` is the API's prompt size, api_time and ttft are absent. Without logs (none found,
    none naming a request of DB, or --db-only), conversations and sub-agents are rebuilt from
    the DB alone (DB-only, docs/routes.md#db-only).

    \b
    Example:
        python3 build_minimal_traces.py examples/requests.db \\
            --jsonl-dir examples/jsonl/ --output-dir examples/traces/ \\
            --block-size 64 --include-subagents --anonymize
    """
    if preset:
        output_format, block_size, mooncake_sessions, local_hash_ids = _apply_preset(
            preset, click.get_current_context(), output_format, block_size, mooncake_block_size, mooncake_sessions,
            local_hash_ids)
        mooncake_block_size = preset.mooncake_block_size or mooncake_block_size
    formats = {"kv": ("kv",), "mooncake": ("mooncake",), "both": ("kv", "mooncake")}[output_format]
    if "mooncake" in formats and mooncake_block_size % block_size:
        raise InputError(f"--mooncake-block-size {mooncake_block_size} must be a multiple of --block-size {block_size}")
    if mooncake_sessions and "mooncake" not in formats:
        raise InputError("--mooncake-sessions needs --format mooncake or --format both")
    if since and until and since > until:
        raise InputError(f"--since {since.isoformat()} is after --until {until.isoformat()}")
    plan = PlanOptions(include_subagents=include_subagents, anonymize=anonymize, split_at_gap_s=split_at_gap,
                       min_requests=min_requests, conversation_id=conversation_id, since=since, until=until)
    options = TraceOptions(plan=plan, block_size=block_size, hash_id_scope="local" if local_hash_ids else "global",
                           salt=salt, formats=formats, mooncake_block_size=mooncake_block_size,
                           mooncake_sessions=mooncake_sessions, workers=workers, token_count=token_count,
                           subagent_clock=subagent_clock)
    def progress(items: Iterable, total: int) -> Iterable:
        return out.progress(items, total=total, desc="traces")

    if db_only and jsonl_dir:
        raise InputError("--db-only reads no logs: drop --jsonl-dir, or --db-only to use them")
    if db is None:
        if db_only:
            raise InputError("--db-only needs a DB")
        if index_db:
            raise InputError("--index-db needs a DB: without one the requests come from the JSONL logs alone")
        if click.get_current_context().get_parameter_source("token_count") == click.core.ParameterSource.COMMANDLINE \
                and token_count == "tokenizer":
            # The logs lack the tools and system prompt, so the whole prompt cannot be tokenized: running
            # on with API-sized `in` would contradict the option.
            raise click.UsageError("--token-count tokenizer needs a DB: without one `in` is the API prompt size the "
                                   "logs record (docs/jsonl.md); use --token-count api or drop the option")
        summary = build_traces_from_jsonl(jsonl_dir, output_dir, options, progress=progress)
    else:
        summary = build_traces(db, jsonl_dir, output_dir, options, index_db=index_db, db_only=db_only, say=out.text,
                               progress=progress)
    data, text = summary.as_dict(), summary.describe()
    if preset:
        replayed = (summary.mooncake_rows if preset.replayed != "."
                    else summary.requests_written + summary.subagent_requests_written)
        command = preset.command_line(output_dir, replayed)
        data.update(preset=preset.name, replay_command=command)
        text += f"\nReplay with {preset.tool}:\n  {command}"
    out.summary(data, text)


def _apply_preset(preset: Preset, ctx: click.Context, output_format: str, block_size: int, mooncake_block_size: int,
                  mooncake_sessions: bool, local_hash_ids: bool) -> tuple[str, int, bool, bool]:
    """The preset's shaping options; one given on the command line with another value is a usage error."""
    typed = {"--format": (output_format, f"--format {output_format}"),
             "--block-size": (block_size, f"--block-size {block_size}"),
             "--mooncake-block-size": (mooncake_block_size, f"--mooncake-block-size {mooncake_block_size}"),
             "--mooncake-sessions": (mooncake_sessions, "--mooncake-sessions"),
             "hash_id_scope": ("local" if local_hash_ids else "global",
                               "--local-hash-ids" if local_hash_ids else "--global-hash-ids")}
    parameter = {"--format": "output_format", "--block-size": "block_size", "--mooncake-block-size": "mooncake_block_size",
                 "--mooncake-sessions": "mooncake_sessions", "hash_id_scope": "local_hash_ids"}
    given = {key: value for key, value in typed.items()
             if ctx.get_parameter_source(parameter[key]) == click.core.ParameterSource.COMMANDLINE}
    contradicting = conflicts(preset, given)
    if contradicting:
        raise click.UsageError(f"--preset {preset.name} writes {preset.describe()}; drop {', '.join(contradicting)}")
    return preset.output_format, preset.block_size, preset.mooncake_sessions, preset.hash_id_scope == "local"


def cli() -> None:
    """The installed command (`pip install .`): the same as running this file."""
    run(main)


if __name__ == "__main__":
    run(main)
