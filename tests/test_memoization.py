"""The performance rule of
docs/hashing.md#work-grows-with-unique-content on multi-turn data: tokenized tokens stay a small share of prompt tokens."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.synthetic_capture import generate_capture
from lib.traces.plan import PlanOptions
from lib.traces.build import build_traces
from lib.traces.options import TraceOptions

# Re-tokenizing whole histories would put the ratio near 100 %; memoized segments keep it ~2 %.
MAX_MEMO_RATIO = 0.10


@pytest.fixture(scope="module")
def small_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~6 MB synthetic capture: concurrent multi-turn sessions, sub-agents, both proxy generations."""
    directory = tmp_path_factory.mktemp("capture")
    summary = generate_capture(directory, target_bytes=6_000_000, seed=3)
    assert summary.rows > 20
    return directory


def test_trace_builder_tokenizes_under_ten_percent_of_prompt_tokens(small_capture: Path, tmp_path: Path) -> None:
    options = TraceOptions(plan=PlanOptions(include_subagents=True), salt="memo")
    summary = build_traces(str(small_capture / "requests.db"), str(small_capture / "jsonl"), str(tmp_path / "traces"),
                           options, index_db=str(tmp_path / "index.sqlite"))
    assert summary.requests_written > 20
    assert summary.tokens_requested > 0
    assert summary.tokens_tokenized / summary.tokens_requested < MAX_MEMO_RATIO


def test_synthetic_capture_is_deterministic(small_capture: Path, tmp_path: Path) -> None:
    generate_capture(tmp_path, target_bytes=6_000_000, seed=3)
    assert (tmp_path / "requests.db").read_bytes() == (small_capture / "requests.db").read_bytes()
