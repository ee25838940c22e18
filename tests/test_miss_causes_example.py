"""Why each miss on the example capture: the 315 s pause, the model switch, totals in stats and --json."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from build_conversation_index import main as build_conversation_index
from complete_cache_visualizer import main as visualizer
from lib.synthetic.example import generate_example

ROOT = Path(__file__).resolve().parent.parent


def _report(db: Path, jsonl: Path, out: Path, *extra: str) -> tuple[dict, dict, str]:
    """(--json summary of the one report, the page's embedded data, the stats text)."""
    indexed = CliRunner().invoke(build_conversation_index, [str(db), "--projects-path", str(jsonl), "-q"])
    assert indexed.exit_code == 0, indexed.stderr
    result = CliRunner().invoke(visualizer, [str(db), "--conversation-id", "combined", "--output",
                                             str(out / "combined.html"), "--json", *extra])
    assert result.exit_code == 0, result.stderr
    page = (out / "combined.html").read_text(encoding="utf-8")
    data = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)[1])
    return json.loads(result.stdout)["reports"][0], data, (out / "combined_stats.txt").read_text(encoding="utf-8")


def _parent_causes(data: dict, kind: str) -> list[dict[str, int]]:
    """Per parent request (in time order): its non-zero causes."""
    misses, lanes = data["misses"], data["requests"]["lane"]
    return [{cause: misses[kind][cause][i] for cause in misses["causes"] if misses[kind][cause][i]}
            for i, lane in enumerate(lanes) if lane == "parent"]


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, str]:
    source = ROOT / "examples" / "requests.db"
    if not source.is_file():
        pytest.skip("examples/requests.db not generated yet")
    folder = tmp_path_factory.mktemp("example")
    shutil.copyfile(source, folder / "requests.db")
    return _report(folder / "requests.db", ROOT / "examples" / "jsonl", folder)


def test_example_totals_in_json_and_stats(example: tuple[dict, dict, str]) -> None:
    summary, _, stats = example
    assert summary["miss_causes"] == {
        "simulated": {"first_use": 333_170, "ttl_expiry": 50_817, "in_flight": 39_284, "partial_block": 3_584},
        "billed": {"first_use": 312_077, "in_flight": 39_284, "partial_block": 3_586, "server_side": 1, "ttl_expiry": 50_817},
    }
    # Each side adds up to its misses: the API's creation + input, the TTL model's creation + new.
    # The example is a cleaned old-proxy capture: "billed" is the estimate (lib/capture/turn_timing.py).
    assert sum(summary["miss_causes"]["billed"].values()) == 392_570 + 13_195
    assert sum(summary["miss_causes"]["simulated"].values()) == 423_281 + 3_574
    assert "TTL expiry                                          50,817 (12.5%)   50,817 (11.9%)         1" in stats
    assert re.search(r"^total +405,765 +426,855 +92$", stats, re.M)


def test_the_315_s_pause_is_a_ttl_expiry_only_under_the_5_minute_model(example: tuple[dict, dict, str]) -> None:
    _, data, _ = example
    simulated, billed = _parent_causes(data, "simulated"), _parent_causes(data, "billed")
    # The follow-up after the pause: our 5-minute model lost the whole cached prefix. The API's main
    # thread writes 1-hour entries, but the example is a cleaned old-proxy capture: its replays read
    # everything and show no 1-hour write, so the estimate of their first sends assumes 5 minutes too.
    assert simulated[-1] == {"ttl_expiry": 50_817, "first_use": 302, "partial_block": 55}
    assert billed[-1] == {"ttl_expiry": 50_817, "first_use": 302, "partial_block": 55}
    assert sum(1 for causes in simulated if "ttl_expiry" in causes) == 1


def test_a_one_hour_model_sees_no_expiry(tmp_path: Path) -> None:
    source = ROOT / "examples" / "requests.db"
    if not source.is_file():
        pytest.skip("examples/requests.db not generated yet")
    shutil.copyfile(source, tmp_path / "requests.db")
    summary, _, _ = _report(tmp_path / "requests.db", ROOT / "examples" / "jsonl", tmp_path, "--cache-ttl", "3600")
    assert "ttl_expiry" not in summary["miss_causes"]["simulated"]


def test_a_model_switch_is_attributed_to_the_switch(tmp_path: Path) -> None:
    generate_example(tmp_path, variant="fixed", scale=0.05, model_switch=True)
    _, data, stats = _report(tmp_path / "requests.db", tmp_path / "jsonl", tmp_path)
    models = [model for model, lane in zip(data["requests"]["model"], data["requests"]["lane"]) if lane == "parent"]
    assert models[-1] == "claude-sonnet-4-5-20250929" and set(models[:-1]) == {"claude-opus-4-6"}
    simulated, billed = _parent_causes(data, "simulated"), _parent_causes(data, "billed")
    # Nothing of the Opus conversation is cached for Sonnet: all of it is re-prefilled for the switch.
    assert simulated[-1] == billed[-1] == {"model_switch": 8_493, "first_use": 156, "partial_block": 23}
    assert "prefix change: model switch" in stats


def test_the_working_set_empties_during_the_pause_and_after_the_last_write(example: tuple[dict, dict, str]) -> None:
    _, data, _ = example
    series = list(zip(data["working_set"]["t_s"], data["working_set"]["tokens"]))
    # The parent's write before the pause lands at 682.35 s: 300 s later, before the follow-up at
    # 1005.8 s, everything has expired (the chart used to stay flat until the next request).
    during = [(round(t, 2), tokens) for t, tokens in series if 900 < t < 1005]
    assert during == [(982.35, 0)]
    # The follow-up's 43,392 tokens expire 300 s after its write, not at the last request.
    assert [(round(t, 2), tokens) for t, tokens in series[-2:]] == [(1008.38, 43_392), (1308.38, 0)]


def test_generate_example_cli_adds_the_model_switch(tmp_path: Path) -> None:
    from examples.generate_example import main as generate

    result = CliRunner().invoke(generate, ["--model-switch", "--scale", "0.05", "--output-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["requests"]["parent"] == 7 and summary["rows"] == 93
