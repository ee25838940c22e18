"""lib/report/forked.py: a function computed in a forked child returns, raises and fails like a local call."""
from __future__ import annotations

import os

import numpy as np
import pytest

from lib.report.forked import ForkedCall


def _summary(values: np.ndarray, *, scale: int) -> tuple[int, int]:
    return int(values.sum()) * scale, os.getpid()


def _fail(message: str) -> None:
    raise ValueError(message)


class _Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("cannot pickle this")


def _fail_unpicklably() -> None:
    raise _Unpicklable("local state")


def _die() -> None:
    os._exit(3)


def test_the_child_inherits_its_inputs_and_returns_the_result():
    values = np.arange(1_000_000, dtype=np.int64)
    total, child_pid = ForkedCall(_summary, values, scale=2).result()
    assert total == 999_999_000_000
    assert child_pid != os.getpid()


def test_several_children_run_at_once_and_results_come_back_to_the_right_call():
    calls = [ForkedCall(_summary, np.full(10, index), scale=1) for index in range(4)]
    assert [call.result()[0] for call in reversed(calls)] == [30, 20, 10, 0]


def test_an_exception_is_raised_in_the_parent():
    with pytest.raises(ValueError, match="bad input"):
        ForkedCall(_fail, "bad input").result()


def test_an_unpicklable_exception_still_reaches_the_parent():
    with pytest.raises(RuntimeError, match="_Unpicklable: local state"):
        ForkedCall(_fail_unpicklably).result()


def test_a_child_that_dies_is_reported():
    with pytest.raises(RuntimeError, match="exit status 3"):
        ForkedCall(_die).result()


def test_without_a_process_to_spare_the_call_runs_here(monkeypatch: pytest.MonkeyPatch):
    def refuse() -> int:
        raise BlockingIOError("Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refuse)
    total, pid = ForkedCall(_summary, np.arange(4), scale=3).result()
    assert (total, pid) == (18, os.getpid())


def test_here_computes_in_this_process_with_the_same_interface():
    total, pid = ForkedCall.here(_summary, np.arange(4), scale=2).result()
    assert (total, pid) == (12, os.getpid())
    failing = ForkedCall.here(_fail, "raised at result()")
    with pytest.raises(ValueError, match="raised at result"):
        failing.result()
