"""Deterministic filler content for the example capture: vLLM-like Python source and technical prose.

Everything is drawn from a `random.Random` the caller seeds, and sized in characters, so the
`--scale` option can shrink the capture without changing its structure.
"""
from __future__ import annotations

import random

NOUNS = ("scheduler", "block_manager", "sequence_group", "kv_cache", "worker", "model_runner", "sampler",
         "tokenizer", "engine", "request", "attention_backend", "cache_engine", "executor", "lora_adapter",
         "prefix_cache", "swap_space", "block_table", "logits_processor", "spec_decoder", "output_processor")
VERBS = ("schedule", "allocate", "free", "prepare", "execute", "sample", "swap_in", "swap_out", "preempt",
         "append_slots", "compute_logits", "profile", "initialize", "load", "build", "update", "evict", "fork")
TYPES = ("int", "bool", "float", "torch.Tensor", "list[int]", "Optional[int]", "SequenceGroup",
         "SchedulerOutputs", "BlockTable", "dict[int, int]", "SamplingParams", "AttentionMetadata")
TOPICS = ("the scheduler's waiting, running and swapped queues", "paged attention block tables",
          "prefix caching with hashed full blocks", "chunked prefill budgets", "CUDA graph capture sizes",
          "the worker's cache engine and swap space", "sampling metadata and logits processors",
          "speculative decoding proposers", "the async output processor", "tensor-parallel executors",
          "LoRA adapter slots", "copy-on-write block forks", "the block allocator's free list",
          "preemption by recomputation versus swapping", "the detokenizer's incremental state")
CLAUSES = ("which keeps the hot path free of Python allocations", "so that decode steps never block on prefill",
           "because the GPU block count is fixed after profiling", "and the result is cached per sequence group",
           "while the CPU swap space absorbs preempted requests", "before the model runner builds its input tensors",
           "which is why the scheduler budgets tokens instead of requests", "so a full block can be shared by hash",
           "and the executor broadcasts the metadata to every worker", "which matters most for long prompts")


def _identifier(rng: random.Random) -> str:
    return f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}"


def _class_name(rng: random.Random) -> str:
    return "".join(part.capitalize() for part in rng.choice(NOUNS).split("_")) + rng.choice(("", "Config", "Manager", "State", "Base"))


def sentence(rng: random.Random) -> str:
    """One technical sentence about vLLM internals."""
    subject = rng.choice(NOUNS).replace("_", " ")
    return f"The {subject} handles {rng.choice(TOPICS)}, {rng.choice(CLAUSES)}."


def prose(rng: random.Random, chars: int) -> str:
    """Paragraphs of technical prose, about `chars` characters long."""
    paragraphs: list[str] = []
    total = 0
    while total < chars:
        paragraph = " ".join(sentence(rng) for _ in range(rng.randint(2, 5)))
        paragraphs.append(paragraph)
        total += len(paragraph) + 2
    return "\n\n".join(paragraphs)


def _function(rng: random.Random, indent: str) -> list[str]:
    name = _identifier(rng)
    params = ", ".join(f"{rng.choice(NOUNS)}: {rng.choice(TYPES)}" for _ in range(rng.randint(1, 3)))
    self_param = "self, " if indent else ""
    lines = [f"{indent}def {name}({self_param}{params}) -> {rng.choice(TYPES)}:",
             f'{indent}    """{sentence(rng)}"""']
    for _ in range(rng.randint(3, 9)):
        target = rng.choice(NOUNS)
        kind = rng.randrange(5)
        if kind == 0:
            lines.append(f"{indent}    if {target} is None or not {rng.choice(NOUNS)}:")
            lines.append(f"{indent}        raise ValueError(f\"{target} must be set before {name}\")")
        elif kind == 1:
            lines.append(f"{indent}    for seq_id, block in enumerate(self.{target}):")
            lines.append(f"{indent}        self.{rng.choice(NOUNS)}[seq_id] = block.{_identifier(rng)}()")
        elif kind == 2:
            lines.append(f"{indent}    # {sentence(rng)}")
        else:
            lines.append(f"{indent}    {target} = self.{rng.choice(NOUNS)}.{_identifier(rng)}({rng.choice(NOUNS)})")
    lines.append(f"{indent}    return {rng.choice(NOUNS)}")
    lines.append("")
    return lines


def python_module(rng: random.Random, module_path: str, chars: int) -> str:
    """A vLLM-flavoured Python module of about `chars` characters."""
    package = module_path.removesuffix(".py").replace("/", ".")
    lines = [f'"""{package}: {sentence(rng)}"""', "from __future__ import annotations", "",
             "import enum", "from dataclasses import dataclass, field", "from typing import Optional", "",
             "import torch", "", "from vllm.logger import init_logger", "", "logger = init_logger(__name__)", ""]
    total = sum(len(line) + 1 for line in lines)
    while total < chars:
        if rng.random() < 0.35:
            block = ["", f"class {_class_name(rng)}:", f'    """{sentence(rng)}"""', ""]
            for _ in range(rng.randint(2, 4)):
                block.extend(_function(rng, "    "))
        else:
            block = [""] + _function(rng, "")
        lines.extend(block)
        total += sum(len(line) + 1 for line in block)
    return "\n".join(lines) + "\n"


def numbered(text: str, start: int = 1) -> str:
    """Claude Code's Read output: `cat -n` style numbers with an arrow (U+2192)."""
    return "\n".join(f"{number:>6}\u2192{line}" for number, line in enumerate(text.split("\n"), start))


def markdown_report(rng: random.Random, title: str, paths: list[str], chars: int) -> str:
    """A findings report in Markdown that cites file paths and line numbers."""
    parts = [f"# {title}", ""]
    total = len(title) + 3
    section = 0
    while total < chars:
        section += 1
        path = paths[section % len(paths)] if paths else "vllm/engine/llm_engine.py"
        lines = [f"## {section}. {rng.choice(NOUNS).replace('_', ' ').title()} (`{path}`)", ""]
        for _ in range(rng.randint(3, 6)):
            lines.append(f"- `{path}:{rng.randint(20, 900)}` `{_identifier(rng)}()`: {sentence(rng)}")
        lines.extend(["", prose(rng, rng.randint(200, 500)), ""])
        parts.extend(lines)
        total += sum(len(line) + 1 for line in lines)
    return "\n".join(parts)
