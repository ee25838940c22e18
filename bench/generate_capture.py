#!/usr/bin/env python3
"""Generate a large synthetic capture (requests.db + jsonl/) in the real proxy format, deterministically."""
from __future__ import annotations

from pathlib import Path

import click

from bench.synthetic_capture import generate_capture, parse_size
from lib.cli import Output, common_options

HERE = Path(__file__).resolve().parent


class SizeType(click.ParamType):
    """A size like 200MB, 1GB or 4GB (decimal units)."""

    name = "size"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


@click.command()
@click.option("--size", "target_bytes", type=SizeType(), default="200MB", show_default=True,
              help="Approximate DB size: 200MB, 1GB, 4GB (any NKB/NMB/NGB works).")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where requests.db and jsonl/ go (default: bench/out/<size>).")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of every random choice.")
@common_options
def main(target_bytes: int, output_dir: Path | None, seed: int, out: Output) -> None:
    """Write a synthetic capture: concurrent 100–1,000-turn sessions with sub-agents, both proxy generations.

    Same options → byte-identical files.

    \b
    Example:
        python3 -m bench.generate_capture --size 1GB
        python3 -m bench.generate_capture --size 5MB --output-dir /tmp/tiny
    """
    target = output_dir or HERE / "out" / f"{target_bytes // 10**6}MB"
    summary = generate_capture(target, target_bytes=target_bytes, seed=seed)
    out.summary(vars(summary), f"Wrote {summary.rows} rows ({summary.db_bytes / 1e6:.1f} MB DB, {summary.sessions} "
                               f"session(s), {summary.errors} error and {summary.pending} pending rows) and "
                               f"{summary.jsonl_files} JSONL files to {target} in {summary.elapsed_s:.1f} s.")


if __name__ == "__main__":
    main()
