"""Percentiles and summary rows for the statistics tables (docs/validate.md#statistics-table, docs/visualizer.md).

Percentiles use linear interpolation between closest ranks, numpy's default 'linear' method
(Hyndman & Fan type 7): for sorted values x of length n, P(q) sits at rank h = (n − 1)·q/100
and is x[⌊h⌋] + (h − ⌊h⌋)·(x[⌊h⌋+1] − x[⌊h⌋]). This is what trace publishers' README tables
use (pandas/numpy defaults), so the validator's table reproduces theirs. Pure Python, so the
result does not depend on the numpy version, and empty input gives None rather than NaN
(NaN is not valid JSON).
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

SUMMARY_KEYS = ("min", "p25", "median", "p75", "max", "mean")


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0 ≤ q ≤ 100) by linear interpolation; ValueError on empty input."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    return percentile_of_sorted(ordered, q)


def percentile_of_sorted(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (0 ≤ q ≤ 100) of already-sorted, non-empty values."""
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    fraction = rank - low
    return float(ordered[low] + fraction * (ordered[high] - ordered[low]))


def percentiles(values: Iterable[float], qs: Sequence[float] = (10, 50, 90)) -> dict[str, Optional[float]]:
    """{'p10': …, 'p50': …, 'p90': …} for the given percentiles; None for each when empty."""
    ordered = sorted(values)
    return {_label(q): (percentile_of_sorted(ordered, q) if ordered else None) for q in qs}


def _label(q: float) -> str:
    """'p10' for 10, 'p99.9' for 99.9."""
    return f"p{q:g}"


def summarize(values: Iterable[float]) -> dict[str, Optional[float]]:
    """Min / P25 / Median / P75 / Max / Mean (the README table's columns); None each when empty."""
    ordered = sorted(values)
    if not ordered:
        return dict.fromkeys(SUMMARY_KEYS)
    return {
        "min": float(ordered[0]),
        "p25": percentile_of_sorted(ordered, 25),
        "median": percentile_of_sorted(ordered, 50),
        "p75": percentile_of_sorted(ordered, 75),
        "max": float(ordered[-1]),
        "mean": math.fsum(ordered) / len(ordered),
    }
