"""Fast checks of the rendered dashboard HTML: sections, offline assets, batch sharing, the index."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from lib.report.dashboard import (
    CHART_JS_FILENAME, SECTIONS, STATIC_DIR, format_ttl, render_index, render_report,
)
from lib.report.model import (
    CacheSplit, IndexEntry, ReportModel, RequestPoint, SummaryCard, TimingDistribution,
)
from report_samples import build_sample_report

REMOTE_REFERENCE = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I)
MAX_REPORT_BYTES = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def sample() -> ReportModel:
    """The ~90-request, 4-sub-agent sample report."""
    return build_sample_report()


@pytest.fixture(scope="module")
def chart_library() -> str:
    """The vendored chart library text."""
    return (STATIC_DIR / CHART_JS_FILENAME).read_text(encoding="utf-8")


@pytest.fixture
def report_html(sample: ReportModel, tmp_path: Path) -> str:
    """The sample rendered as one self-contained file."""
    target = tmp_path / "combined.html"
    render_report(sample, target)
    return target.read_text(encoding="utf-8")


def _embedded_data(html: str) -> dict:
    """The JSON the page script draws from."""
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    return json.loads(match.group(1))


def _minimal_model(title: str = "tiny") -> ReportModel:
    """Two requests and nothing else: every optional section empty."""
    points = tuple(
        RequestPoint(index=i, t_s=10.0 * i, lane="parent", model="m", simulated=CacheSplit(0, 100, 5),
                     api=CacheSplit(90, 10, 5), context_tokens=105, growth_tokens=0)
        for i in range(2)
    )
    return ReportModel(title=title, subtitle="", source="db", cards=(SummaryCard("Requests", "2"),), requests=points)


def _documented_sections() -> list[str]:
    """The section names docs/visualizer.md promises, in its order (its "Dashboard sections" list)."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "visualizer.md").read_text()
    part = text.split("## Dashboard sections", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^- \*\*(.+?)\*\*", part, re.MULTILINE)


def test_report_has_every_documented_section_in_order(report_html: str) -> None:
    documented = _documented_sections()
    assert documented[0] == "Summary cards" and len(documented) == len(SECTIONS)
    positions = []
    for section_id, _ in SECTIONS:
        assert f'id="{section_id}"' in report_html
        positions.append(report_html.index(f'id="{section_id}"'))
    assert positions == sorted(positions)
    # The page's headings are the documented names ("Summary cards" is the docs' name for the summary).
    assert [heading for _, heading in SECTIONS][1:] == documented[1:]
    for heading in documented[1:]:
        assert f">{heading}<" in report_html


def test_report_references_nothing_on_the_network(report_html: str) -> None:
    assert REMOTE_REFERENCE.search(report_html) is None
    assert '<link rel="icon" href="data:,">' in report_html


def test_chart_library_is_inlined_exactly_once(report_html: str, chart_library: str) -> None:
    assert report_html.count(chart_library[:300]) == 1
    assert report_html.count("Chart.js v") == 1
    assert "sourceMappingURL" not in report_html


def test_single_report_stays_far_below_5_mb(sample: ReportModel, tmp_path: Path) -> None:
    target = tmp_path / "one.html"
    render_report(sample, target)
    assert target.stat().st_size < MAX_REPORT_BYTES / 10


def test_one_chart_container_per_chart_with_data(report_html: str) -> None:
    charts = re.findall(r'data-chart="([^"]+)"', report_html)
    assert charts == ["requests", "hit-rate", "misses", "context", "growth", "ttl", "working-set", "capacity",
                      "timing-api_time", "timing-ttft", "timing-think_time", "gantt", "concurrency"]


def test_embedded_data_has_one_entry_per_request_and_every_timing_sample(report_html: str, sample: ReportModel) -> None:
    data = _embedded_data(report_html)
    assert data["requests"]["index"] == [point.index for point in sample.requests]
    assert data["requests"]["api_read"][40] is None
    for timing in data["timings"]:
        assert sum(timing["counts"]) == len(sample.requests)
    assert [row["label"] for row in data["ttl"] if row["is_selected"]] == ["5m"]


def test_text_and_data_are_escaped(tmp_path: Path) -> None:
    model = _minimal_model(title="</script><b>x</b>")
    target = tmp_path / "escaped.html"
    render_report(model, target)
    html = target.read_text(encoding="utf-8")
    assert "<b>x</b>" not in html
    assert "&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;" in html
    assert _embedded_data(html) is not None


def test_empty_sections_show_a_note_instead_of_a_chart(tmp_path: Path) -> None:
    target = tmp_path / "tiny.html"
    render_report(_minimal_model(), target)
    html = target.read_text(encoding="utf-8")
    assert re.findall(r'data-chart="([^"]+)"', html) == ["requests", "hit-rate", "context", "growth"]
    assert "No TTL sweep was computed." in html
    assert "No sub-agents in this report." in html
    assert "No data-quality problems found." in html


def test_batch_reports_share_one_chart_library(sample: ReportModel, chart_library: str, tmp_path: Path) -> None:
    assets = tmp_path / "assets"
    paths = [tmp_path / f"conv{i}.html" for i in range(3)] + [tmp_path / "nested" / "deep.html"]
    for path in paths:
        render_report(sample, path, shared_assets_dir=assets)
    assert [p.name for p in assets.iterdir()] == [CHART_JS_FILENAME]
    assert (assets / CHART_JS_FILENAME).read_text(encoding="utf-8") == chart_library
    for path in paths:
        html = path.read_text(encoding="utf-8")
        assert chart_library[:300] not in html
        assert path.stat().st_size < 200_000
    assert '<script src="assets/chart.umd.min.js"></script>' in paths[0].read_text(encoding="utf-8")
    assert '<script src="../assets/chart.umd.min.js"></script>' in paths[-1].read_text(encoding="utf-8")


def test_index_lists_every_report_with_its_key_figures(sample: ReportModel, tmp_path: Path) -> None:
    entries = [IndexEntry.from_report(sample, f"conv{i}.html") for i in range(3)]
    entries.append(IndexEntry.from_report(_minimal_model("tiny"), "tiny.html"))
    index = render_index(entries, tmp_path)
    html = index.read_text(encoding="utf-8")
    assert index == tmp_path / "index.html"
    for entry in entries:
        assert f'href="{entry.href}"' in html
    assert html.count(">combined</a>") == 3
    for card in sample.cards:
        assert (card.label in html) == card.is_key
    assert "93.1%" in html
    assert REMOTE_REFERENCE.search(html) is None
    # The "Requests" key card is the index's own request-count column, shown once.
    assert html.count('<th scope="col">Requests</th>') == 1


def test_miss_section_totals_each_cause_over_the_requests(sample: ReportModel, report_html: str) -> None:
    data = _embedded_data(report_html)["misses"]
    assert data["causes"] == ["first_use", "ttl_expiry", "in_flight", "partial_block"]
    assert [sum(v for v in data["billed"]["ttl_expiry"] if v)] == [
        sum((c.billed or {}).get("ttl_expiry", 0) for c in sample.miss_causes)]
    assert "Why each miss" in report_html and "<th scope=\"row\">TTL expiry</th>" in report_html


def test_capacity_caption_explains_the_infinite_ttl_gap(report_html: str) -> None:
    assert "infinite-cache hit rate 93.0%. It differs from the TTL sweep's ∞ row (92.0%)" in report_html
    assert "readable only when its response starts" in report_html


def test_rerender_replaces_the_file_and_leaves_no_temporary_files(sample: ReportModel, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("old", encoding="utf-8")
    render_report(sample, target)
    assert target.read_text(encoding="utf-8").startswith("<!doctype html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


@pytest.mark.parametrize(("ttl_s", "label"), [(60, "1m"), (300, "5m"), (5400, "1h30m"), (86400, "24h"),
                                              (None, "∞"), (float("inf"), "∞"), (45, "45s")])
def test_format_ttl_matches_the_sweep_labels(ttl_s: float | None, label: str) -> None:
    assert format_ttl(ttl_s) == label


def test_timing_metric_without_finite_samples_gets_no_chart(sample: ReportModel, tmp_path: Path) -> None:
    broken = TimingDistribution("ttft", "ttft", (float("nan"),))
    model = dataclasses.replace(sample, timings=(sample.timings[0], broken))
    target = tmp_path / "timings.html"
    render_report(model, target)
    html = target.read_text(encoding="utf-8")
    assert 'data-chart="timing-api_time"' in html
    assert 'data-chart="timing-ttft"' not in html
    assert [item["name"] for item in _embedded_data(html)["timings"]] == ["api_time"]
