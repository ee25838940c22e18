#!/usr/bin/env python3
"""Generate the bundled example capture (examples/requests.db + examples/jsonl/), deterministically."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from lib.cli import Command, FiniteFloatRange, Output, common_options, run
from lib.synthetic.example import BILLING_HEADERS, OMITTABLE, VARIANTS, generate_example

HERE = Path(__file__).resolve().parent


@click.command(cls=Command)
@click.option("--variant", type=click.Choice(VARIANTS), default="cleaned", show_default=True,
              help="cleaned: old-proxy capture with only the non-streaming rows (shipped); fixed: one streaming "
                   "row per turn; old: every turn as a streaming twin plus a non-streaming replay.")
@click.option("--billing-header", type=click.Choice(BILLING_HEADERS), default="constant", show_default=True,
              help="constant: one x-anthropic-billing-header value per conversation (shipped); per-request: a "
                   "value derived from each body, as many Claude Code versions send it (any --variant).")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=HERE, show_default=True,
              help="Where requests.db and jsonl/ are written.")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of every random choice.")
@click.option("--scale", type=FiniteFloatRange(min=0.001, max=10.0), default=1.0, show_default=True,
              help="Content size factor (0.05 makes a small capture for tests).")
@click.option("--model-switch", is_flag=True,
              help="Add a last parent turn after a `/model sonnet` switch (not in the shipped example).")
@click.option("--api-cache-ttl", type=FiniteFloatRange(min=1.0), metavar="SEC",
              help="One TTL for the simulated API cache's usage numbers in every lane (default: 1 h for the "
                   "main thread, 5 min for the others); a known eviction time for docs/cache-models.md#effective-eviction-time. "
                   "Visible with --variant fixed or old: a cleaned capture's API figures are estimated from the model.")
@click.option("--client-headers", is_flag=True,
              help="Send the session and sub-agent headers of Claude Code >= 2.1.86 (X-Claude-Code-Session-Id, "
                   "X-Claude-Code-Agent-Id), as version 2.1.90.")
@click.option("--background-agents", is_flag=True,
              help="Launch the 4 sub-agents in the background (run_in_background): the parent gets launch "
                   "acknowledgements, works on, and receives each agent's <task-notification> in a later prompt.")
@click.option("--omit", type=click.Choice(OMITTABLE), multiple=True,
              help="Leave the JSONL logs or requests.db out (a DB-only or JSONL-only capture); needs --output-dir.")
@common_options
def main(variant: str, billing_header: str, output_dir: Path, seed: int, scale: float, model_switch: bool,
         api_cache_ttl: Optional[float], client_headers: bool, background_agents: bool, omit: tuple[str, ...],
         out: Output) -> None:
    """Write the example capture: the seed walkthrough's vLLM session with 4 concurrent Explore sub-agents.

    Re-running with the same options reproduces identical files.

    \b
    Example:
        python3 examples/generate_example.py
        python3 examples/generate_example.py --variant fixed --scale 0.05 --output-dir /tmp/example
        python3 examples/generate_example.py --billing-header per-request --output-dir /tmp/per-request
        python3 examples/generate_example.py --client-headers --omit logs --output-dir /tmp/db-only
        python3 examples/generate_example.py --background-agents --output-dir /tmp/background
    """
    omitted = _omitted(set(omit), output_dir, client_headers=client_headers, billing_header=billing_header)
    summary = generate_example(output_dir, variant=variant, seed=seed, scale=scale, billing_header=billing_header,
                               model_switch=model_switch, api_cache_ttl_s=api_cache_ttl, client_headers=client_headers,
                               omit=omitted, background_agents=background_agents)
    counts = ", ".join(f"{name} {count}" for name, count in summary["requests"].items())
    headers = ", session and agent headers" if client_headers else ""
    background = ", background agents" if background_agents else ""
    logs = f"{len(summary['jsonl_lines'])} JSONL files to {output_dir / 'jsonl'}"
    if omitted == "db":
        written = f"{logs} (variant {variant}{background}) and no requests.db (--omit db)"
    else:
        db = (f"{summary['rows']} rows ({summary['db_bytes'] / 1e6:.1f} MB, variant {variant}, {billing_header} "
              f"billing header{headers}{background}) to {output_dir / 'requests.db'}")
        written = f"{db} and {'no JSONL logs (--omit logs)' if omitted == 'logs' else logs}"
    out.summary(summary, f"Wrote {written}; requests per lane: {counts}.")


def _omitted(omit: set[str], output_dir: Path, *, client_headers: bool, billing_header: str) -> Optional[str]:
    """The one part to leave out, or a usage error for a combination that makes no sense."""
    if not omit:
        return None
    if len(omit) > 1:
        raise click.UsageError("--omit logs and --omit db together leave nothing to write")
    if output_dir.resolve() == HERE:
        raise click.UsageError("--omit would remove part of the shipped example; give --output-dir")
    part = omit.pop()
    if part == "db" and (client_headers or billing_header != "constant"):
        option = "--client-headers" if client_headers else f"--billing-header {billing_header}"
        raise click.UsageError(f"{option} only changes requests.db, which --omit db leaves out")
    return part


if __name__ == "__main__":
    run(main)
