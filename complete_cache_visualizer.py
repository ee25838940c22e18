#!/usr/bin/env python3
"""Analyse a capture's KV-cache behaviour: one self-contained HTML dashboard and a stats text per report."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from lib.cache.kv_bytes import DEFAULT_PRESET, PRESETS, resolve_model
from lib.cache.tiers import DEFAULT_TIERS_GIB, parse_tiers
from lib.report.analysis import AnalysisOptions
from lib.cli import (MAX_BLOCK_SIZE, Command, FiniteFloatRange, Output, common_options, index_db_option, run,
                     time_window_options, workers_option)
from lib.hashing.block_hashes import DEFAULT_BLOCK_SIZE
from lib.errors import InputError
from lib.report.visualizer import VisualizerOptions, run_visualizer


@click.command(cls=Command)
@click.argument("db", required=False, type=click.Path(dir_okay=False))
@click.option("--jsonl-dir", type=click.Path(),
              help="Claude Code JSONL logs. Without DB every request is rebuilt from them (default: "
                   "~/.claude/projects; docs/jsonl.md#the-dashboard); with DB the same as --projects-path.")
@click.option("--conversation-id", metavar="ID|combined|all",
              help="One conversation (its sub-agents as lanes), `combined` (every request, one shared cache) "
                   "or `all` (one report per conversation plus index.html).")
@click.option("--newest", is_flag=True, help="Report on the conversation that started last.")
@click.option("--output", "output_html", type=click.Path(dir_okay=False, path_type=Path),
              help="Dashboard file of a single report; the stats go beside it as <name>_stats.txt.")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for reports named after the conversation (default: ./visualizations).")
@click.option("--text-only", is_flag=True, help="Write only <name>_stats.txt, no HTML.")
@click.option("--cache-ttl", default=300.0, show_default=True, type=FiniteFloatRange(0, min_open=True), metavar="SEC",
              help="TTL of the main TTL-model simulation (the sweep always covers 1m…24h and infinite).")
@click.option("--block-size", default=DEFAULT_BLOCK_SIZE, show_default=True, type=click.IntRange(1, MAX_BLOCK_SIZE),
              help="Tokens per hash block.")
@click.option("--min-requests", default=1, show_default=True, type=click.IntRange(1),
              help="With `all`: skip conversations with fewer parent requests.")
@time_window_options
@click.option("--projects-path", type=click.Path(), help="Claude Code JSONL logs, to (re)build the conversation index.")
@index_db_option
@click.option("--kv-model", default=DEFAULT_PRESET, show_default=True, type=click.Choice(list(PRESETS), case_sensitive=False),
              help="Model whose KV bytes per token turn capacities into GiB (presets: docs/cache-models.md#kv-bytes-per-token).")
@click.option("--kv-geometry", metavar="KEY=N,...",
              help="A custom model instead of --kv-model: layers=L,kv_heads=H,head_dim=D[,dtype_bytes=2], "
                   "or layers=L,mla_dim=M for latent attention.")
@click.option("--kv-bytes-per-token", type=click.IntRange(1), metavar="BYTES",
              help="KV bytes per token directly (overrides --kv-model and --kv-geometry).")
@click.option("--kv-tiers", default=",".join(f"{size:g}" for _, size in DEFAULT_TIERS_GIB), show_default=True,
              metavar="GIB,...", help="Sizes of the HBM, DRAM and SSD tiers in GiB (or NAME=GiB,...) for the tier view.")
@workers_option
@common_options
def main(db: Optional[str], jsonl_dir: Optional[str], conversation_id: Optional[str], newest: bool,
         output_html: Optional[Path], output_dir: Optional[Path], text_only: bool, cache_ttl: float, block_size: int,
         min_requests: int, since, until,
         projects_path: Optional[str], index_db: Optional[str], kv_model: str, kv_geometry: Optional[str],
         kv_bytes_per_token: Optional[int], kv_tiers: str, workers: int, out: Output) -> None:
    """Simulate the prompt cache of a claude-code-proxy capture against the API's own usage.

    Sections: summary, per-request cache read/creation/new (API vs simulated), hit rate over time,
    context growth, TTL sweep, working set, LRU/OPT capacity curve, capacity in GiB of a KV model
    with an HBM/DRAM/SSD tier view, the effective eviction time fitted to the billed cache reads,
    timing, sub-agent lanes, model usage and data-quality notes. Indexes missing from DB are built on the fly;
    turn rows no log names become conversations rebuilt from the DB alone (docs/routes.md#db-only).
    Without DB the logs alone: their usage is the API side, and what only the proxy records is named as
    not available.

    \b
    Example:
        python3 complete_cache_visualizer.py examples/requests.db \\
            --conversation-id combined \\
            --output examples/visualizations/combined.html
        python3 complete_cache_visualizer.py --jsonl-dir ~/.claude/projects --conversation-id all
    """
    if newest and conversation_id:
        raise InputError("give either --conversation-id or --newest, not both")
    if output_html and output_dir:
        raise InputError("give either --output or --output-dir, not both")
    if db is None and projects_path:
        raise InputError("--projects-path needs a DB: without one give the logs as --jsonl-dir")
    if db is None and index_db:
        raise InputError("--index-db needs a DB: without one the requests come from the JSONL logs alone")
    if db and jsonl_dir and projects_path:
        raise InputError("give the logs once: --jsonl-dir or --projects-path")
    if since and until and since > until:
        raise InputError(f"--since {since.isoformat()} is after --until {until.isoformat()}")
    try:
        model = resolve_model(kv_model, geometry=kv_geometry, bytes_per_token=kv_bytes_per_token)
    except ValueError as error:
        raise InputError(f"--kv-geometry: {error}") from None
    try:
        tiers = parse_tiers(kv_tiers)
    except ValueError as error:
        raise InputError(f"--kv-tiers: {error}") from None
    options = VisualizerOptions(
        conversation_id=conversation_id, newest=newest, output_html=output_html, output_dir=output_dir,
        text_only=text_only, min_requests=min_requests, since=since, until=until,
        projects_path=(projects_path or jsonl_dir) if db else None, index_db=index_db, jsonl_dir=None if db else jsonl_dir,
        analysis=AnalysisOptions(block_size=block_size, cache_ttl_s=cache_ttl, kv_model=model, tiers_gib=tiers),
        workers=workers,
    )
    summary = run_visualizer(db, options, say=out.text,
                             progress=lambda items, total: out.progress(items, total=total, desc="hashing"))
    out.summary(summary.as_dict(), summary.describe())


def cli() -> None:
    """The installed command (`pip install .`): the same as running this file."""
    run(main)


if __name__ == "__main__":
    run(main)
