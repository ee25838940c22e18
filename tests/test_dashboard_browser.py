"""Real-browser check of the dashboard: headless Debian chromium draws every chart, offline, without errors.

`UPDATE_SCREENSHOT=1` copies the screenshot of the example's `combined` report to docs/dashboard.png.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from lib.report.analysis import AnalysisOptions
from lib.report.dashboard import render_index, render_report
from lib.report.model import IndexEntry, ReportModel
from lib.report.visualizer import VisualizerOptions, run_visualizer
from chromium_cdp import CHROMIUM, ChromiumPage
from report_samples import build_sample_report

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
DOCS_SCREENSHOT = ROOT / "docs" / "dashboard.png"
CHARTS_READY = "document.body.getAttribute('data-charts-ready') === '1'"
CHART_STATES = "Array.from(document.querySelectorAll('[data-chart]'), e => [e.dataset.chart, e.dataset.rendered || ''])"
EXPECTED_CHARTS = 13
# Axis titles wider than their axis (each chart box lists them; the page script measures them).
TITLE_OVERFLOWS = ("Array.from(document.querySelectorAll('[data-chart]'), e => [e.dataset.chart, "
                   "JSON.parse(e.dataset.titleOverflow || '[]')]).filter(([, titles]) => titles.length)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromiumPage]:
    """One headless chromium for the module, with a fresh empty profile."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    page = ChromiumPage(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield page
    finally:
        page.close()


@pytest.fixture(scope="module")
def sample() -> ReportModel:
    """The ~90-request, 4-sub-agent sample report."""
    return build_sample_report()


@pytest.fixture(scope="module")
def example_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed's `combined` dashboard of the real example capture, with its JSONL linked."""
    source = ROOT / "examples" / "requests.db"
    if not source.is_file():
        pytest.skip("examples/requests.db not generated yet")
    folder = tmp_path_factory.mktemp("example")
    (folder / "examples").mkdir()
    shutil.copyfile(source, folder / "examples" / "requests.db")
    options = VisualizerOptions(conversation_id="combined", output_html=Path("examples/visualizations/combined.html"),
                                projects_path=str(ROOT / "examples" / "jsonl"), analysis=AnalysisOptions())
    # Relative paths as in the seed command, so the page (and the docs screenshot) names examples/requests.db.
    previous = Path.cwd()
    os.chdir(folder)
    try:
        run_visualizer("examples/requests.db", options)
    finally:
        os.chdir(previous)
    output = folder / "examples" / "visualizations" / "combined.html"
    return output


def _open(browser: ChromiumPage, path: Path, *, width: int, height: int, is_mobile: bool = False) -> None:
    """Load `path` with a clean event log and wait until the page script has drawn every chart."""
    browser.events.clear()
    browser.open(path.as_uri(), width=width, height=height, is_mobile=is_mobile)
    browser.wait_for(CHARTS_READY)


def test_every_chart_draws_offline_without_console_errors(browser: ChromiumPage, sample: ReportModel,
                                                          tmp_path: Path) -> None:
    report = tmp_path / "combined.html"
    render_report(sample, report)
    _open(browser, report, width=1280, height=900)
    states = browser.evaluate(CHART_STATES)
    assert len(states) == EXPECTED_CHARTS
    assert [name for name, state in states if state != "1"] == []
    assert browser.evaluate(TITLE_OVERFLOWS) == []
    assert browser.errors() == []
    assert browser.requested_urls() == [report.as_uri()]


def test_the_example_dashboard_draws_every_chart_offline(browser: ChromiumPage, example_report: Path) -> None:
    _open(browser, example_report, width=1280, height=900)
    states = browser.evaluate(CHART_STATES)
    assert len(states) == EXPECTED_CHARTS
    assert [name for name, state in states if state != "1"] == []
    # Every chart has data points, not just axes.
    counts = browser.evaluate(
        "Array.from(document.querySelectorAll('[data-chart] canvas'), c => Chart.getChart(c).data.datasets"
        ".reduce((n, d) => n + d.data.filter(v => v !== null && v !== undefined).length, 0))")
    assert len(counts) == EXPECTED_CHARTS and min(counts) > 0
    assert browser.evaluate("document.querySelectorAll('#subagents tbody tr').length") == 4
    assert browser.evaluate(TITLE_OVERFLOWS) == []
    # Every title was measured, e.g. the growth chart's (clipped before it was shortened).
    assert browser.evaluate("document.querySelector('[data-chart=growth]').dataset.titleOverflow") == "[]"
    # Why each miss: one legend entry per cause, billed and simulated stacks per request.
    assert browser.evaluate("Chart.getChart(document.querySelector('[data-chart=misses] canvas')).legend.legendItems"
                            ".map(i => i.text)") == ["first use (new content)", "TTL expiry",
                                                     "in flight (written by a request not yet answered)",
                                                     "partial last block",
                                                     "server-side miss (our prefix unchanged and alive)"]
    assert browser.errors() == []
    assert browser.requested_urls() == [example_report.as_uri()]
    browser.screenshot(ARTIFACTS / "dashboard.png")
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ARTIFACTS / "dashboard.png", DOCS_SCREENSHOT)


def test_hovering_a_bar_shows_request_index_tokens_and_hit_rate(browser: ChromiumPage, sample: ReportModel,
                                                               tmp_path: Path) -> None:
    report = tmp_path / "hover.html"
    render_report(sample, report)
    _open(browser, report, width=1280, height=900)
    box = browser.evaluate(
        "(() => { const c = document.querySelector('[data-chart=requests] canvas'); c.scrollIntoView();"
        " const r = c.getBoundingClientRect(); return {x: r.left + r.width * 0.6, y: r.top + r.height * 0.5}; })()")
    browser.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": box["x"], "y": box["y"]}, page=True)
    tooltip = browser.evaluate(
        "(() => { const t = Chart.getChart(document.querySelector('[data-chart=requests] canvas')).tooltip;"
        " return {title: t.title, body: t.body.map(b => b.lines.join(' ')), footer: t.footer}; })()")
    assert tooltip["title"][0].startswith("Request #")
    assert any(line.startswith("API cache read: ") for line in tooltip["body"])
    assert any(line.startswith("Hit rate: API ") for line in tooltip["footer"])
    assert any(line.startswith("Prompt: ") and "tokens" in line for line in tooltip["footer"])
    assert browser.errors() == []


def test_batch_report_uses_the_shared_library_and_fits_a_phone(browser: ChromiumPage, sample: ReportModel,
                                                               tmp_path: Path) -> None:
    report = tmp_path / "conv1.html"
    render_report(sample, report, shared_assets_dir=tmp_path / "assets")
    index = render_index([IndexEntry.from_report(sample, report.name)], tmp_path)
    _open(browser, report, width=390, height=844, is_mobile=True)
    states = browser.evaluate(CHART_STATES)
    assert [name for name, state in states if state != "1"] == []
    assert browser.evaluate("document.documentElement.scrollWidth") <= 390
    assert browser.errors() == []
    assert (tmp_path / "assets" / "chart.umd.min.js").as_uri() in browser.requested_urls()
    assert browser.evaluate(TITLE_OVERFLOWS) == []
    browser.screenshot(ARTIFACTS / "dashboard-narrow.png")
    browser.events.clear()
    browser.open(index.as_uri(), width=1280, height=900)
    assert browser.evaluate("document.querySelectorAll('tbody tr a').length") == 1
    assert browser.errors() == []


def test_a_batch_report_copied_alone_says_what_it_needs(browser: ChromiumPage, sample: ReportModel,
                                                        tmp_path: Path) -> None:
    render_report(sample, tmp_path / "all" / "conv1.html", shared_assets_dir=tmp_path / "all")
    alone = tmp_path / "copied" / "conv1.html"
    alone.parent.mkdir()
    shutil.copyfile(tmp_path / "all" / "conv1.html", alone)
    _open(browser, alone, width=1280, height=900)
    states = browser.evaluate(CHART_STATES)
    assert len(states) == EXPECTED_CHARTS
    assert {state for _, state in states} == {"missing-library"}
    message = browser.evaluate("document.querySelector('[data-chart=requests] .missing-library').textContent")
    assert message.startswith("Charts need the chart library chart.umd.min.js, which was not found")
    assert "--output FILE.html" in message


def test_the_growth_title_is_measured_as_too_long_when_it_is(browser: ChromiumPage, sample: ReportModel,
                                                            tmp_path: Path) -> None:
    # The check itself: the old growth title does not fit its short chart.
    report = tmp_path / "long.html"
    render_report(sample, report)
    html = report.read_text(encoding="utf-8").replace('tokenAxis("tokens added")',
                                                      'tokenAxis("new tokens vs the lane\'s previous request")')
    report.write_text(html, encoding="utf-8")
    _open(browser, report, width=1280, height=900)
    assert browser.evaluate(TITLE_OVERFLOWS) == [["growth", ["new tokens vs the lane's previous request"]]]
