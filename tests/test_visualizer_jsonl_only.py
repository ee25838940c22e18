"""The visualizer without a DB: the dashboard and stats from the JSONL logs alone (lib/report/jsonl_capture.py)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from complete_cache_visualizer import main
from chromium_cdp import CHROMIUM, ChromiumPage
from jsonl_builders import SESSION, assistant, user_prompt, write_jsonl
from lib.synthetic.example import generate_example

CONVERSATION = "c7eb779f-2e12-4a2b-bfa9-8e0d73c6d846"  # the example's session
NOT_AVAILABLE = "not available on the JSONL-only route"


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's fixed variant at scale 0.05: requests.db and jsonl/."""
    folder = tmp_path_factory.mktemp("example")
    generate_example(folder, variant="fixed", seed=7, scale=0.05)
    return folder


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def report(*args: str) -> tuple[dict, dict]:
    """The --json summary and its one report."""
    code, out, err = run(*args, "--json", "-q")
    assert code == 0, err
    summary = json.loads(out)
    (only,) = summary["reports"]
    return summary, only


def headline(result: dict) -> tuple:
    """(requests, API hit rate, API-model hit rate, TTL-model hit rate at 5m), rates to 0.01 %."""
    rates = [None if result[key] is None else round(result[key], 4)
             for key in ("api_hit_rate", "api_model_hit_rate", "ttl_model_hit_rate")]
    return (result["requests"], *rates)


def lanes(stats: Path) -> tuple[int, int, int]:
    """(parent requests, sub-agent requests, sub-agent lanes) from the stats file."""
    text = stats.read_text()
    parent = int(re.search(r"^  parent +(\d+)$", text, re.M).group(1))
    subagent = int(re.search(r"^  sub-agent +(\d+)", text, re.M).group(1))
    section = text.split("== Sub-agents ==\n")[1].split("\n\n")[0].splitlines()
    return parent, subagent, len(section) - 2  # less the header and the closing line


def test_example_from_the_logs_alone_against_the_db_run(example: Path, tmp_path: Path) -> None:
    logs = str(example / "jsonl")
    common = ["--conversation-id", CONVERSATION, "--text-only"]
    summary, only = report("--jsonl-dir", logs, "--output-dir", str(tmp_path / "logs"), *common)
    _, full = report(str(example / "requests.db"), "--jsonl-dir", logs, "--output-dir", str(tmp_path / "db"), *common)
    assert summary["route"] == "JSONL-only"
    # The same turns; the API side is the same usage, so its hit rate is equal. The TTL model sees
    # the logs' block layout (line sizes from the usage, not the bodies' tokens) and blocks readable at
    # the call's last logged line instead of at its first token: +0.52 points here.
    assert headline(only) == (90, 0.9221, None, 0.8963)
    assert headline(full) == (90, 0.9221, 0.8953, 0.8911)
    assert only["api_hit_rate"] == full["api_hit_rate"]
    assert lanes(Path(only["stats"])) == lanes(Path(full["stats"])) == (6, 84, 4)
    # No breakpoints in the logs: what the TTL model had cached but the API missed is not "beyond a breakpoint".
    assert only["miss_causes"]["billed"] == {"first_use": 29908, "in_flight": 7488, "partial_block": 2912,
                                             "server_side": 1043}
    assert only["problems"] == {}


def test_combined_from_the_logs_has_no_unlinked_rows(example: Path, tmp_path: Path) -> None:
    logs = str(example / "jsonl")
    _, only = report("--jsonl-dir", logs, "--conversation-id", "combined", "--output-dir", str(tmp_path / "logs"))
    _, full = report(str(example / "requests.db"), "--jsonl-dir", logs, "--conversation-id", "combined",
                     "--output-dir", str(tmp_path / "db"))
    # The DB also has the quota probe and the title request, which no log names (lane `unlinked`).
    assert headline(only) == (90, 0.9221, None, 0.8963)
    assert headline(full) == (92, 0.9218, 0.895, 0.8908)


def test_what_the_logs_cannot_give_is_named(example: Path, tmp_path: Path) -> None:
    html = tmp_path / "combined.html"
    code, out, _ = run("--jsonl-dir", str(example / "jsonl"), "--conversation-id", "combined", "--output", str(html))
    assert code == 0
    assert "API model n/a" in out and "Route JSONL-only: the API figures are the usage the logs record" in out
    stats = (tmp_path / "combined_stats.txt").read_text()
    for what in ("API model", "api_time and ttft", "tokenizer calibration", "proxy rows and their data quality"):
        assert f"{what}: {NOT_AVAILABLE}: " in stats
    assert "Route: JSONL-only" in stats and "API token positions" in stats and "tokenizer cl100k_base" not in stats
    assert "Calls in the logs                    90" in stats and not re.search(r"^  (streaming|errors|pending) ", stats, re.M)
    # Think time comes from the logs; api_time and ttft are not drawn as empty distributions.
    assert "think time (per lane, gap after the previous response): n=85" in stats
    assert not re.search(r"^(api_time|ttft): ", stats, re.M)
    page = html.read_text()
    assert f'<p class="empty">api_time and ttft: {NOT_AVAILABLE}: ' in page
    assert '<p class="route">Route JSONL-only:' in page and "simulation (TTL model 5m; right bar, lighter)" in page
    assert re.search(rf'API-model hit rate</div>\s*<div class="value">n/a</div>\s*<div class="hint">{NOT_AVAILABLE}: '
                     "no cache_control breakpoints in the logs</div>", page)


def test_a_turn_without_usage_is_counted_not_simulated(tmp_path: Path) -> None:
    no_usage = assistant("msg_2", "2026-01-01T10:00:09.000Z", uuid="a2", parent_uuid="u2")
    del no_usage["message"]["usage"]
    write_jsonl(tmp_path / "logs" / f"{SESSION}.jsonl", [
        {**user_prompt("2026-01-01T10:00:00.000Z"), "uuid": "u1", "parentUuid": None},
        assistant("msg_1", "2026-01-01T10:00:02.000Z", uuid="a1", parent_uuid="u1"),
        {**user_prompt("2026-01-01T10:00:05.000Z"), "uuid": "u2", "parentUuid": "a1"},
        no_usage,
    ])
    _, only = report("--jsonl-dir", str(tmp_path / "logs"), "--conversation-id", "combined", "--text-only",
                     "--output-dir", str(tmp_path / "out"))
    assert only["requests"] == 1
    assert only["problems"] == {"turn_without_usage": {"count": 1, "examples": ["msg_2"]}}


@pytest.mark.parametrize("arguments, message", [
    (["--jsonl-dir", "{empty}"], "{empty}: no Claude Code JSONL logs found"),
    (["--jsonl-dir", "{logs}", "--index-db", "{empty}/index.db"],
     "--index-db needs a DB: without one the requests come from the JSONL logs alone"),
    (["--jsonl-dir", "{logs}", "--projects-path", "{logs}"],
     "--projects-path needs a DB: without one give the logs as --jsonl-dir"),
    (["{db}", "--jsonl-dir", "{logs}", "--projects-path", "{logs}"], "give the logs once: --jsonl-dir or --projects-path"),
])
def test_unusable_input_is_one_line_and_exit_2(example: Path, tmp_path: Path, arguments: list[str], message: str) -> None:
    (tmp_path / "empty").mkdir()
    names = {"empty": str(tmp_path / "empty"), "logs": str(example / "jsonl"), "db": str(example / "requests.db")}
    code, out, err = run(*(a.format(**names) for a in arguments), "--conversation-id", "combined",
                         "--output-dir", str(tmp_path / "out"))
    assert (code, out, err) == (2, "", f"Error: {message.format(**names)}\n")
    assert not (tmp_path / "out").exists()


def test_fixture_from_the_logs_alone_against_the_db_run(fixture_db: Path, fixture_dir: Path, tmp_path: Path) -> None:
    logs = str(shutil.copytree(fixture_dir / "jsonl", tmp_path / "jsonl"))
    _, only = report("--jsonl-dir", logs, "--conversation-id", "all", "--output-dir", str(tmp_path / "logs"))
    _, full = report(str(fixture_db), "--jsonl-dir", logs, "--conversation-id", "all", "--output-dir", str(tmp_path / "db"))
    assert only["name"] == full["name"] == "aece16d6-730c-4020-ab76-fd7ec747f412"
    # Same API hit rate; the TTL model at 5m is 1.58 points above the DB run's.
    assert headline(only) == (37, 0.8799, None, 0.8759)
    assert headline(full) == (37, 0.8799, 0.8866, 0.8601)
    assert only["api_hit_rate"] == full["api_hit_rate"]
    assert lanes(Path(only["stats"])) == lanes(Path(full["stats"])) == (12, 25, 3)


def test_the_page_draws_every_chart_it_has_data_for(example: Path, tmp_path: Path) -> None:
    """In a real browser: every chart drawn offline without errors; of the timing charts only think time."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    html = tmp_path / "combined.html"
    assert run("--jsonl-dir", str(example / "jsonl"), "--conversation-id", "combined", "--output", str(html), "-q")[0] == 0
    page = ChromiumPage(tmp_path / "profile")
    try:
        page.open(html.as_uri(), width=1280, height=900)
        page.wait_for("document.body.getAttribute('data-charts-ready') === '1'")
        states = page.evaluate("Array.from(document.querySelectorAll('[data-chart]'), e => [e.dataset.chart, "
                               "e.dataset.rendered || ''])")
        assert [name for name, _ in states if name.startswith("timing-")] == ["timing-think_time"]
        assert len(states) == 11 and [name for name, state in states if state != "1"] == []
        assert page.errors() == [] and page.requested_urls() == [html.as_uri()]
    finally:
        page.close()
