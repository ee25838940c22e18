#!/usr/bin/env python3
"""Time validate_trace_cache.py (schema + statistics) on a generated corpus of native traces (issue 4).

The corpus mimics long Claude Code sessions: each trace's context grows from ~20K to ~120K tokens
over ~100 parent requests (so `hash_ids` lists reach ~2,000 ids), with an occasional compaction
(a fresh id run) and a few sub-agent markers whose ids continue the parent's counter (local scope).
Defaults give 700 traces / ~450 MB. Written with orjson from list slices, so generation is quick.
"""
from __future__ import annotations

import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import click
import orjson

ROOT = Path(__file__).resolve().parent.parent
BLOCK_SIZE = 64
MODELS = ("claude-opus-4-6", "claude-haiku-4-5-20251001")


def _requests(rng: random.Random, count: int, start_in: int, end_in: int, model: str,
              next_id: int) -> tuple[list[dict], int]:
    """One lane's requests with growing, prefix-sharing ids; returns them and the next free id."""
    base = list(range(next_id, next_id + end_in // BLOCK_SIZE + 1))
    next_id = base[-1] + 1
    entries, t = [], 0.0
    for k in range(count):
        size = start_in + (end_in - start_in) * k // max(count - 1, 1) + rng.randrange(64)
        if k and rng.random() < 0.01:  # a compaction: the prompt starts over with new ids
            base = list(range(next_id, next_id + end_in // BLOCK_SIZE + 1))
            next_id = base[-1] + 1
        api_time = round(rng.uniform(1, 30), 3)
        think = 0 if k == 0 else rng.choice((0, 1, 2, 4, 15, 300))
        t += think
        entries.append({
            "t": round(t, 3), "type": "s", "model": model, "in": size, "out": rng.randrange(20, 4000),
            "hash_ids": base[: size // BLOCK_SIZE], "input_types": ["tool_result"], "output_types": ["tool_use"],
            "stop": "tool_use", "api_time": api_time, "think_time": think, "ttft": round(api_time / 5, 3),
        })
        t += api_time
    return entries, next_id


def write_trace(path: Path, number: int, rng: random.Random) -> int:
    """Write one trace file; returns its size in bytes."""
    parent, next_id = _requests(rng, rng.randrange(80, 121), 20_000, rng.randrange(118_000, 170_000), MODELS[0], 1)
    entries = list(parent)
    for agent in range(rng.randrange(0, 4)):
        sub, next_id = _requests(rng, rng.randrange(5, 20), 13_000, 40_000, MODELS[1], next_id)
        position = rng.randrange(1, len(entries))
        marker = {
            "t": entries[position - 1]["t"], "type": "subagent", "agent_id": f"agent_{agent + 1:03d}",
            "subagent_type": "Explore", "duration_ms": 60_000, "total_tokens": 50_000, "tool_use_count": len(sub),
            "status": "completed", "models": [MODELS[1]], "tool_tokens": 9_900, "system_tokens": 3_000,
            "requests": sub,
        }
        entries.insert(position, marker)
    document = {
        "id": f"trace_{number:04d}", "models": sorted(MODELS), "block_size": BLOCK_SIZE, "hash_id_scope": "local",
        "tool_tokens": 13_900, "system_tokens": 6_000, "requests": entries,
    }
    data = orjson.dumps(document)
    path.write_bytes(data)
    return len(data)


def generate_corpus(directory: Path, traces: int, seed: int) -> int:
    """Write `traces` files into `directory`; returns the total bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    return sum(write_trace(directory / f"trace_{n:04d}.json", n, rng) for n in range(1, traces + 1))


@click.command()
@click.option("--traces", default=700, show_default=True, type=click.IntRange(1), help="Number of trace files.")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=ROOT / "bench" / "out" / "validate-corpus",
              show_default=True, help="Where the corpus is written (its trace_*.json files are replaced).")
@click.option("--seed", default=1, show_default=True, help="Seed of the generator.")
def main(traces: int, output_dir: Path, seed: int) -> None:
    """Generate the corpus, run the validator on it once, print files, MB, seconds and peak RSS."""
    for stale in output_dir.glob("trace_*.json"):
        stale.unlink()
    started = time.perf_counter()
    total = generate_corpus(output_dir, traces, seed)
    click.echo(f"Generated {traces} traces, {total / 1e6:.0f} MB in {time.perf_counter() - started:.1f} s")
    command = [sys.executable, str(ROOT / "validate_trace_cache.py"), str(output_dir), "--json"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    # ru_maxrss of waited-for children, in KiB on Linux: the validator's peak resident memory.
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report = orjson.loads(result.stdout) if result.stdout.startswith("{") else {}
    schema = report.get("schema", {}) if report else {}
    click.echo(f"validate_trace_cache.py: {traces} files, {total / 1e6:.0f} MB, {elapsed:.1f} s, "
               f"peak RSS {peak_mb:.0f} MB, exit {result.returncode}, {schema.get('errors', '?')} schema error(s), "
               f"{schema.get('warnings', '?')} warning(s)")
    if result.returncode not in (0, 1):
        click.echo(result.stderr, err=True)


if __name__ == "__main__":
    main()
