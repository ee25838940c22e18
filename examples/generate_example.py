#!/usr/bin/env python3
"""Generate the bundled example capture (examples/requests.db + examples/jsonl/), deterministically."""
from __future__ import annotations

from pathlib import Path

import click

from lib.cli import Output, common_options
from lib.synthetic.example import VARIANTS, generate_example

HERE = Path(__file__).resolve().parent


@click.command()
@click.option("--variant", type=click.Choice(VARIANTS), default="cleaned", show_default=True,
              help="cleaned: old-proxy capture with only the non-streaming rows (shipped); fixed: one streaming "
                   "row per turn; old: every turn as a streaming twin plus a non-streaming replay.")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=HERE, show_default=True,
              help="Where requests.db and jsonl/ are written.")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of every random choice.")
@click.option("--scale", type=click.FloatRange(min=0.001, max=10.0), default=1.0, show_default=True,
              help="Content size factor (0.05 makes a small capture for tests).")
@common_options
def main(variant: str, output_dir: Path, seed: int, scale: float, out: Output) -> None:
    """Write the example capture: the seed walkthrough's vLLM session with 4 concurrent Explore sub-agents.

    Re-running with the same options reproduces identical files.

    \b
    Example:
        python3 examples/generate_example.py
        python3 examples/generate_example.py --variant fixed --scale 0.05 --output-dir /tmp/example
    """
    summary = generate_example(output_dir, variant=variant, seed=seed, scale=scale)
    counts = ", ".join(f"{name} {count}" for name, count in summary["requests"].items())
    out.summary(summary, f"Wrote {summary['rows']} rows ({summary['db_bytes'] / 1e6:.1f} MB, variant {variant}) "
                         f"to {output_dir / 'requests.db'} and {len(summary['jsonl_lines'])} JSONL files to "
                         f"{output_dir / 'jsonl'}; requests per lane: {counts}.")


if __name__ == "__main__":
    main()
