"""complete_cache_visualizer.py as a user runs it: the seed command, `all`, --text-only, --newest, exit codes."""
from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from build_conversation_index import main as build_conversation_index
from complete_cache_visualizer import main
from tests.jsonl_builders import OTHER_SESSION, SESSION
from tests.trace_inputs import hand_capture

ROOT = Path(__file__).resolve().parent.parent
SEED_ARGS = ["examples/requests.db", "--conversation-id", "combined", "--output", "examples/visualizations/combined.html"]
# docs/visualizer.md: the original's sections, then ours.
SECTIONS = ("Request counts", "Input tokens: simulated vs API", "Output tokens", "Model usage", "Context length",
            "Incremental growth per turn", "Time between requests", "TTL analysis", "Cache capacity", "Data quality")
MAX_REPORT_BYTES = 5_000_000


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def seed_dir(example_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp/examples/{requests.db, jsonl/} as cwd, no Claude config of the machine in sight."""
    (tmp_path / "examples").mkdir()
    shutil.move(example_db, tmp_path / "examples" / "requests.db")
    shutil.copytree(ROOT / "examples" / "jsonl", tmp_path / "examples" / "jsonl")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "no-claude"))
    return tmp_path


@pytest.fixture
def hand(tmp_path: Path) -> tuple[str, str]:
    db, jsonl = hand_capture(tmp_path / "capture")
    return str(db), str(jsonl)


def _api_totals(db: Path) -> dict[str, int]:
    """Usage summed straight from the stored response JSON (independent of the message index)."""
    totals = {"rows": 0, "cache_read": 0, "output": 0}
    for (response,) in sqlite3.connect(db).execute("SELECT response FROM requests"):
        usage = json.loads(response)["body"]["usage"]
        totals["rows"] += 1
        totals["cache_read"] += usage.get("cache_read_input_tokens", 0)
        totals["output"] += usage["output_tokens"]
    return totals


def _line(text: str, label: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(label))


def test_help_shows_the_seed_command() -> None:
    code, out, _ = invoke("--help")
    assert code == 0
    assert "python3 complete_cache_visualizer.py examples/requests.db" in out
    assert "--conversation-id combined" in out and "--output examples/visualizations/combined.html" in out
    assert all(option in out for option in ("--json", "--quiet", "--progress", "--debug", "--since", "--until"))


def test_seed_command_writes_dashboard_and_stats(seed_dir: Path) -> None:
    index_result = CliRunner().invoke(build_conversation_index, ["examples/requests.db", "--projects-path", "examples/jsonl/"])
    assert index_result.exit_code == 0, index_result.stderr
    code, out, err = invoke(*SEED_ARGS)
    assert code == 0, err
    html = seed_dir / "examples" / "visualizations" / "combined.html"
    stats = (seed_dir / "examples" / "visualizations" / "combined_stats.txt").read_text()
    assert out.startswith("combined: 92 requests, API hit rate 88.6% (estimated: cleaned old-proxy capture)")
    assert 0 < html.stat().st_size < MAX_REPORT_BYTES
    page = html.read_text()
    assert "<script src=" not in page and "cdn" not in page.lower()
    for section in SECTIONS:
        assert f"== {section}" in stats
    totals = _api_totals(seed_dir / "examples" / "requests.db")
    assert (totals["rows"], totals["cache_read"], totals["output"]) == (92, 3_560_615, 26_970)
    assert _line(stats, "Rows considered").split()[-1] == "92"
    assert _line(stats, "streaming").split()[-1] == "0" and _line(stats, "non-streaming").split()[-1] == "92"
    # The stored reads include the deleted twins' writes; the stats show the estimate (lib/capture/turn_timing.py).
    assert _line(stats, "cache read").split()[2] == "3,168,045" and "API (estimated)" in stats
    assert "total 26,970" in _line(stats, "output tokens per request")
    assert _line(stats, "claude-haiku-4-5-20251001").split()[1:3] == ["86", "417"]
    assert _line(stats, "claude-opus-4-6").split()[1:3] == ["6", "12,778"]
    assert _line(stats, "sub-agent").split()[-1] == "84" and _line(stats, "unlinked").split()[1] == "2"
    assert len([line for line in stats.splitlines() if line.startswith("a") and "Explore" in line]) == 4
    assert _line(stats, "5m *").split()[2].endswith("%")


def test_fresh_db_without_jsonl_rebuilds_the_conversation_from_the_db(seed_dir: Path) -> None:
    code, out, err = invoke(*SEED_ARGS, "--text-only")
    assert code == 0, err
    assert "No message index yet: building it now" in out
    assert ("no JSONL logs (looked in " in out
            and "1 conversation rebuilt from the DB alone, no log naming its rows (docs/routes.md#db-only)" in out)
    # All non-streaming, no twins: a cleaned old-proxy capture, estimated on the DB-only lanes.
    assert "API hit rate 89.0% (estimated: cleaned old-proxy capture)" in out
    stats = (seed_dir / "examples" / "visualizations" / "combined_stats.txt").read_text()
    # Only the quota probe and the title stay unlinked; the 90 turns are in their lanes.
    assert _line(stats, "unlinked").split()[1] == "2"
    assert _line(stats, "sub-agent").split()[-1] == "84"
    assert not (seed_dir / "examples" / "visualizations" / "combined.html").exists()


def test_all_writes_one_report_per_conversation_and_one_chart_library(hand: tuple[str, str], tmp_path: Path) -> None:
    db, jsonl = hand
    out_dir = tmp_path / "reports"
    code, out, err = invoke(db, "--conversation-id", "all", "--projects-path", jsonl, "--output-dir", str(out_dir),
                            "--block-size", "16", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert [report["name"] for report in summary["reports"]] == [SESSION, OTHER_SESSION]
    names = sorted(path.name for path in out_dir.iterdir())
    assert names == sorted([f"{SESSION}.html", f"{SESSION}_stats.txt", f"{OTHER_SESSION}.html",
                            f"{OTHER_SESSION}_stats.txt", "index.html", "chart.umd.min.js"])
    assert len(list(tmp_path.rglob("chart.umd.min.js"))) == 1
    assert '<script src="chart.umd.min.js"></script>' in (out_dir / f"{SESSION}.html").read_text()
    index = (out_dir / "index.html").read_text()
    assert f'href="{SESSION}.html"' in index and f'href="{OTHER_SESSION}.html"' in index


def test_all_with_min_requests_drops_short_conversations(hand: tuple[str, str], tmp_path: Path) -> None:
    db, jsonl = hand
    code, out, err = invoke(db, "--conversation-id", "all", "--projects-path", jsonl, "--output-dir",
                            str(tmp_path / "reports"), "--min-requests", "2", "--text-only")
    assert code == 0, err
    assert "Dropped 1 conversation(s) under --min-requests." in out
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [f"{SESSION}_stats.txt"]


def test_newest_picks_the_conversation_that_started_last(hand: tuple[str, str], tmp_path: Path) -> None:
    db, jsonl = hand
    code, out, err = invoke(db, "--newest", "--projects-path", jsonl, "--output-dir", str(tmp_path / "v"), "--text-only")
    assert code == 0, err
    assert f"{OTHER_SESSION}: 1 request," in out
    assert (tmp_path / "v" / f"{OTHER_SESSION}_stats.txt").is_file()


@pytest.mark.parametrize("args, message", [
    (["missing.db", "--conversation-id", "combined"], "Error: missing.db: no such file"),
    (["{db}", "--conversation-id", "nope", "--projects-path", "{jsonl}"], "Error: --conversation-id nope: no such conversation"),
    (["{db}", "--conversation-id", "all", "--output", "x.html"], "Error: --output names one file"),
    (["{db}", "--newest", "--conversation-id", "combined"], "Error: give either --conversation-id or --newest"),
])
def test_input_errors_exit_2_with_one_line(hand: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    db, jsonl = hand
    code, _, err = invoke(*[arg.format(db=db, jsonl=jsonl) for arg in args])
    assert code == 2
    assert err.startswith(message) and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("mode", ["combined", "all"])
def test_workers_give_the_same_reports(hand: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       mode: str) -> None:
    # Chunks of 2 requests, hashed in 2 processes with a random salt each run: same figures.
    monkeypatch.setattr("lib.hashing.hash_pool.CHUNK_REQUESTS", 2)
    db, jsonl = hand
    outputs = []
    for workers in ("1", "2"):
        out_dir = tmp_path / f"w{workers}"
        code, out, err = invoke(db, "--conversation-id", mode, "--projects-path", jsonl, "--output-dir", str(out_dir),
                                "--text-only", "--json", "--workers", workers)
        assert code == 0, err
        summary = json.loads(out)
        del summary["elapsed_s"]
        # The header's "generated <minute>" may tick between the two runs.
        stats = {path.name: re.sub(r" · generated [^\n]*", "", path.read_text())
                 for path in sorted(out_dir.glob("*_stats.txt"))}
        assert stats
        for report in summary["reports"]:
            report["stats"] = Path(report["stats"]).name
        outputs.append((summary, stats))
    assert outputs[0] == outputs[1]
