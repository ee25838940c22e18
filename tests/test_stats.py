"""Percentiles and summaries: linear interpolation as numpy's default, hand-computed (docs/validate.md#statistics-table)."""
from __future__ import annotations

import pytest

from lib.cache.percentiles import percentile, percentiles, summarize


def test_percentile_interpolates_between_closest_ranks():
    # rank = (4 - 1) * 0.25 = 0.75 → 10 + 0.75 * (20 - 10)
    assert percentile([40, 10, 30, 20], 25) == 17.5
    assert percentile([40, 10, 30, 20], 50) == 25.0
    assert percentile([1, 2, 3, 4, 5], 90) == pytest.approx(4.6)


def test_percentile_extremes_are_min_and_max():
    assert percentile([3, 1, 2], 0) == 1.0
    assert percentile([3, 1, 2], 100) == 3.0


def test_percentile_of_single_value_is_that_value():
    assert percentile([7], 37) == 7.0


def test_percentile_rejects_empty_and_out_of_range():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1], 101)


def test_summarize_gives_readme_table_columns():
    assert summarize([1, 2, 3, 4, 10]) == {
        "min": 1.0, "p25": 2.0, "median": 3.0, "p75": 4.0, "max": 10.0, "mean": 4.0,
    }


def test_summarize_of_nothing_is_all_none():
    assert summarize([]) == dict.fromkeys(["min", "p25", "median", "p75", "max", "mean"])


def test_percentiles_labels_and_values():
    # ranks 0.9, 4.5, 8.1 over 0..90 step 10
    assert percentiles(range(0, 100, 10)) == {"p10": 9.0, "p50": 45.0, "p90": pytest.approx(81.0)}
    assert percentiles([], (10, 99.9)) == {"p10": None, "p99.9": None}


def test_stats_matches_numpy_linear_method():
    numpy = pytest.importorskip("numpy")
    values = [5, 1, 9, 2, 2, 8, 13, 0.5]
    for q in (10, 25, 50, 75, 90):
        assert percentile(values, q) == pytest.approx(float(numpy.percentile(values, q)))
