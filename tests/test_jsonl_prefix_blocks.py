"""The JSONL-only route's tools + system prefix ends within the first request's full blocks
(lib/hashing/jsonl_layout.py, docs/jsonl.md): AIPerf 0.13's weka_trace loader rejects a trace whose
`tool_tokens` + `system_tokens` need more blocks than its first request's `hash_ids` hold."""
from __future__ import annotations

import json
import math
from pathlib import Path

from click.testing import CliRunner

from build_minimal_traces import main
from jsonl_builders import SESSION, assistant, user_prompt, write_jsonl


def test_prefix_of_a_short_first_prompt_stops_at_its_last_full_block(tmp_path: Path) -> None:
    # A two-word first prompt in a 21,950-token request (21,950 = 342 blocks of 64 + 62): the
    # prompt total minus the visible prompt lands inside the partial 343rd block.
    prompt = {**user_prompt("2026-01-01T10:00:00.000Z"), "uuid": "u1", "parentUuid": None}
    answer = assistant("msg_1", "2026-01-01T10:00:02.000Z", uuid="a1", parent_uuid="u1")
    answer["message"]["usage"].update(input_tokens=3, cache_read_input_tokens=0, cache_creation_input_tokens=21947)
    write_jsonl(tmp_path / "logs" / f"{SESSION}.jsonl", [prompt, answer])

    result = CliRunner().invoke(main, ["--jsonl-dir", str(tmp_path / "logs"), "--output-dir", str(tmp_path / "out"),
                                       "--block-size", "64", "-q"])

    assert result.exit_code == 0, result.output
    (trace,) = [json.loads(path.read_text()) for path in (tmp_path / "out").glob("*.json")]
    first = trace["requests"][0]
    assert (first["in"], len(first["hash_ids"])) == (21950, 342)
    assert (trace["tool_tokens"], trace["system_tokens"]) == (342 * 64, 0)
    assert math.ceil(trace["tool_tokens"] / 64) <= len(first["hash_ids"])
