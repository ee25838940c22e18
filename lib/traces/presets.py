"""Replay presets of build_minimal_traces.py (`--preset NAME`): the export a replay tool expects.

A preset fixes the options that shape the files (format, block sizes, id scope, session rows)
and names the command line that replays them; docs/traces.md ("Replay presets") carries the
table `preset_table()` prints, and tests/test_replay_presets.py pins it.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

# Placeholders the user replaces: the served model and the server under test.
MODEL = "<model>"
URL = "http://localhost:8000"


@dataclass(frozen=True)
class Preset:
    """What one replay tool reads, and how it is run on the written directory."""

    name: str
    tool: str
    output_format: str  # the --format value
    block_size: int
    mooncake_block_size: Optional[int]  # None: no Mooncake file is written
    mooncake_sessions: bool
    replayed: str  # the file or directory the tool reads, relative to --output-dir
    why: str
    command: Callable[[str, int], list[str]]  # (replayed path, requests in it) -> argv

    hash_id_scope: str = "local"

    def command_line(self, output_dir: str, rows: int) -> str:
        path = output_dir if self.replayed == "." else str(Path(output_dir) / self.replayed)
        return shlex.join(self.command(path, rows))

    def describe(self) -> str:
        """The shaping options, as the user would type them."""
        words = [f"--format {self.output_format}", f"--block-size {self.block_size}"]
        if self.mooncake_block_size is not None:
            words.append(f"--mooncake-block-size {self.mooncake_block_size}")
        if self.mooncake_sessions:
            words.append("--mooncake-sessions")
        words.append(f"--{self.hash_id_scope}-hash-ids")
        return " ".join(words)

    def fixed_options(self) -> dict[str, object]:
        """The option values this preset writes (`hash_id_scope` for --local/--global-hash-ids)."""
        return {"--format": self.output_format, "--block-size": self.block_size,
                "--mooncake-block-size": self.mooncake_block_size,
                "--mooncake-sessions": self.mooncake_sessions,
                "hash_id_scope": self.hash_id_scope}


PRESETS: dict[str, Preset] = {preset.name: preset for preset in (
    Preset("kv-cache-tester", "kv-cache-tester `trace_replay_tester.py`", "kv", 64, None, False, ".",
           "native files at its dataset's 64-token blocks; it reads every *.json of the directory",
           lambda path, rows: ["python", "trace_replay_tester.py", "--api-endpoint", URL,
                               "--trace-directory", path, "--output-dir", "results"]),
    Preset("aiperf-weka", "AIPerf `weka_trace`", "kv", 64, None, False, ".",
           "the loader takes each file's declared block_size and accepts only hash_id_scope local",
           lambda path, rows: ["aiperf", "profile", "--model", MODEL, "--url", URL, "--endpoint-type", "chat",
                               "--streaming", "--custom-dataset-type", "weka_trace", "--input-file", path,
                               # AIPerf's default cap (10) can fall inside a sub-agent fan-out, where the
                               # run never ends (docs/traces.md, "Replaying the traces").
                               "--request-count", str(rows)]),
    Preset("aiperf-mooncake", "AIPerf `mooncake_trace` sessions", "mooncake", 64, 512, True,
           "mooncake_sessions.jsonl",
           "session rows (per-turn deltas, docs/traces.md \"Session rows\") at the loader's default 512",
           lambda path, rows: ["aiperf", "profile", "--model", MODEL, "--url", URL, "--endpoint-type", "chat",
                               "--streaming", "--custom-dataset-type", "mooncake_trace", "--input-file", path,
                               # Every row of the file, as for weka_trace: one request per session row.
                               "--isl-block-size", "512", "--request-count", str(rows)]),
    Preset("dynamo-replay", "NVIDIA Dynamo `dynamo.replay` (mocker)", "mooncake", 64, 512, False,
           "mooncake_trace.jsonl",
           "flat rows; the mocker builds a hash id's tokens from its engine block_size, which must be 512",
           lambda path, rows: ["python", "-m", "dynamo.replay", path, "--replay-mode", "offline",
                               "--num-workers", "1", "--extra-engine-args", '{"block_size":512}',
                               "--report-json", "replay-report.json"]),
    Preset("sglang", "SGLang `bench_serving` mooncake dataset", "mooncake", 64, 512, False,
           "mooncake_trace.jsonl",
           "flat rows; it reads timestamp, hash_ids and output_length, builds each prompt from hash_ids "
           "alone (128 words per id, not input_length) and replays the first --num-prompts rows",
           lambda path, rows: ["python", "-m", "sglang.bench_serving", "--backend", "sglang",
                               "--dataset-name", "mooncake", "--dataset-path", path,
                               "--mooncake-num-rounds", "1", "--mooncake-slowdown-factor", "1.0",
                               "--num-prompts", str(rows)]),
)}

# Tools asked about that no preset serves, with the reason (listed by `--preset list`).
WITHOUT_PRESET = {
    "vLLM `vllm bench serve`": "none: its `custom` dataset reads prompt text (`prompt` per JSONL row), which no "
                               "export of ours has; replay against a vLLM server with `aiperf-mooncake` instead",
}


def preset_table() -> str:
    """The Markdown table of docs/traces.md ("Replay presets"), generated from PRESETS."""
    lines = ["| preset | tool | writes | block size | ids | replays | why |", "|---|---|---|---|---|---|---|"]
    for preset in PRESETS.values():
        writes = {"kv": "native `trace_*.json`", "mooncake": "`mooncake_trace.jsonl`"}[preset.output_format]
        if preset.mooncake_sessions:
            writes += " + `mooncake_sessions.jsonl`"
        blocks = (f"{preset.block_size}" if preset.mooncake_block_size is None
                  else f"{preset.block_size} (Mooncake {preset.mooncake_block_size})")
        replayed = "the directory" if preset.replayed == "." else f"`{preset.replayed}`"
        # Mooncake ids share one namespace per file whatever the native scope (docs/traces.md).
        ids = preset.hash_id_scope if preset.output_format == "kv" else "one per file"
        lines.append(f"| `{preset.name}` | {preset.tool} | {writes} | {blocks} | {ids} | "
                     f"{replayed} | {preset.why} |")
    for tool, reason in WITHOUT_PRESET.items():
        lines.append(f"| — | {tool} | {reason} | | | | |")
    return "\n".join(lines)


def conflicts(preset: Preset, given: dict[str, tuple[object, str]]) -> list[str]:
    """The options given explicitly (key -> (value, as typed)) that contradict the preset; a value
    equal to the preset's is fine."""
    fixed = preset.fixed_options()
    return [typed for key, (value, typed) in given.items() if key in fixed and fixed[key] != value]
