"""Effective eviction time: both TTL models by hand, the fit, idle ratio, and recovering a known TTL."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from complete_cache_visualizer import main
from lib.cache.eviction_time import (EVICTION_TTLS_S, BilledRequest, best_fit, effective_eviction_time, idle_kv_ratios,
                                     no_refresh_hit_blocks)
from lib.cache.replay import CacheEvent
from lib.cache.ttl_model import sweep_ttl
from lib.synthetic.example import generate_example

SWEEP_STEP_S = 30  # EVICTION_TTLS_S's step up to 10 minutes


def test_no_refresh_expires_from_creation_refresh_from_last_use() -> None:
    # Block 1 is written at 0 and used at 50 and 100. With refresh (TTL 60) the use at 50 keeps it
    # until 110, so C hits blocks 1-3; without, it dies at 60 and C misses from its first block.
    events = [CacheEvent(0, 0, [1, 2], 2), CacheEvent(50, 50, [1, 2, 3], 3), CacheEvent(100, 100, [1, 2, 3, 4], 4)]
    assert no_refresh_hit_blocks(events, [60, None]).tolist() == [[0, 0], [2, 2], [0, 3]]
    assert [r.request_hit_blocks for r in sweep_ttl(events, [60, None], block_size=1)] == [(0, 2, 3), (0, 2, 3)]


def test_no_refresh_recreates_an_expired_entry() -> None:
    # Written at 0, expired at 100 (TTL 60), re-created by that request's write: hit again at 150.
    events = [CacheEvent(0, 0, [7], 1), CacheEvent(100, 100, [7], 1), CacheEvent(150, 150, [7], 1)]
    assert no_refresh_hit_blocks(events, [60]).tolist() == [[0], [0], [1]]


def test_idle_ratio_by_hand() -> None:
    # One block in use 0-10 and 40-50 (20 s); idle 30 s between, capped at the TTL; capture ends at 50.
    events = [CacheEvent(0, 0, [1], 1), CacheEvent(40, 40, [1], 1)]
    assert idle_kv_ratios(events, [10, 50], [20, None]) == [20 / 20, 30 / 20]


def test_best_fit_matches_per_request_reads_and_reports_the_range() -> None:
    # Two requests of 100 tokens, billed reads 0 and 100; TTLs 60/120/∞ simulate (0, 0), (0, 100), (0, 100).
    simulated = np.array([[0, 0, 0], [0, 100, 100]], dtype=np.float64)
    fit = best_fit([60, 120, None], simulated, np.array([0.0, 100.0]), np.array([100.0, 100.0]))
    assert (fit.ttl_s, fit.error, fit.mismatch, fit.range_low_s, fit.range_high_s) == (120, 0.0, 0.0, 120, None)


def test_fit_per_family_with_scaling_to_the_api_prompt() -> None:
    # The model counts 2 blocks of 1 token; the API billed 4 prompt tokens: a hit block scales to 2 tokens.
    events = [CacheEvent(0, 0, [1, 2], 2, model="claude-haiku"), CacheEvent(100, 100, [1, 2], 2, model="claude-haiku")]
    billed = [BilledRequest("haiku", 4, 0, 1.0), BilledRequest("haiku", 4, 4, 101.0)]
    result = effective_eviction_time(events, billed, block_size=1, ttls=(60, 90, 120, None))
    assert result is not None
    (fit,) = result.fits
    assert (fit.family, fit.requests, fit.billed_hit_rate) == ("haiku", 2, 0.5)
    assert (fit.refresh.ttl_s, fit.refresh.range_low_s, fit.refresh.range_high_s, fit.refresh.error) == (120, 120, None, 0.0)
    assert fit.no_refresh is not None and fit.no_refresh.ttl_s == 120
    assert [row.refresh_hit_rate for row in result.rows] == [0.0, 0.0, 0.5, 0.5]
    assert [row.prefill_amplification for row in result.rows] == [2.0, 2.0, 1.0, 1.0]
    assert effective_eviction_time(events, [BilledRequest("haiku", None, None, 1.0)] * 2, block_size=1) is None


def _eviction(db: Path, jsonl: Path, out: Path) -> dict:
    result = CliRunner().invoke(main, [str(db), "--conversation-id", "combined", "--projects-path", str(jsonl),
                                       "--text-only", "--output-dir", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["reports"][0]["eviction_time"]


def test_known_api_ttl_is_recovered_within_one_sweep_step(tmp_path: Path) -> None:
    generate_example(tmp_path, variant="fixed", scale=0.05, api_cache_ttl_s=120)
    eviction = _eviction(tmp_path / "requests.db", tmp_path / "jsonl", tmp_path / "out")
    fits = {fit["family"]: fit for fit in eviction["fits"]}
    assert [fit["family"] for fit in eviction["fits"]] == ["haiku", "opus", "all"]
    for family in ("opus", "all"):
        refresh = fits[family]["refresh"]
        assert abs(refresh["ttl_s"] - 120) <= SWEEP_STEP_S
        assert (refresh["ttl_s"], refresh["range_low_s"], refresh["range_high_s"]) == (120, 120, 300)
    assert fits["all"]["billed_hit_rate"] == pytest.approx(0.905846, abs=1e-6)
    assert fits["all"]["refresh"]["error"] == pytest.approx(-0.015033, abs=1e-6)
    # The sub-agents re-use their prefixes within seconds: any TTL explains their reads.
    assert (fits["haiku"]["refresh"]["range_low_s"], fits["haiku"]["refresh"]["range_high_s"]) == (30, None)
    assert len(eviction["rows"]) == len(EVICTION_TTLS_S)


def test_a_ttl_between_the_captures_gaps_is_bounded_not_pinned(tmp_path: Path) -> None:
    # The example's parent has no re-use gap between 5.5 min and the end: a 600 s TTL is only bounded below.
    generate_example(tmp_path, variant="fixed", scale=0.05, api_cache_ttl_s=600)
    refresh = {fit["family"]: fit for fit in _eviction(tmp_path / "requests.db", tmp_path / "jsonl",
                                                       tmp_path / "out")["fits"]}["all"]["refresh"]
    assert (refresh["ttl_s"], refresh["range_low_s"], refresh["range_high_s"]) == (330, 330, None)


def test_real_proxy_fixture_eviction_time(fixture_db: Path, fixture_dir: Path, tmp_path: Path) -> None:
    eviction = _eviction(fixture_db, fixture_dir / "jsonl", tmp_path / "out")
    fits = {fit["family"]: fit for fit in eviction["fits"]}
    refresh = fits["all"]["refresh"]
    assert (fits["all"]["requests"], refresh["ttl_s"], refresh["range_low_s"], refresh["range_high_s"]) == (39, 30, 30, None)
    assert fits["all"]["billed_hit_rate"] == pytest.approx(0.879, abs=5e-4)
    assert refresh["error"] == pytest.approx(-0.0198, abs=5e-4)


def test_no_refresh_model_is_skipped_past_its_budget() -> None:
    events = [CacheEvent(0, 0, [1, 2], 2), CacheEvent(50, 50, [1, 2], 2)]
    billed = [BilledRequest("haiku", 2, 0, 1.0), BilledRequest("haiku", 2, 2, 51.0)]
    result = effective_eviction_time(events, billed, block_size=1, ttls=(60, None), max_no_refresh_cells=7)
    assert result is not None
    assert result.fits[0].no_refresh is None and result.fits[0].refresh.ttl_s == 60
    assert {row.no_refresh_hit_rate for row in result.rows} == {None}
    assert effective_eviction_time(events, billed, block_size=1, ttls=(60, None),
                                   max_no_refresh_cells=8).fits[0].no_refresh is not None
