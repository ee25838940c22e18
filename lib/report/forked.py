"""Running a pure function in a forked child that inherits its inputs.

A process pool must pickle a task's arguments; the visualizer's cache models take every request's
block ids (millions of them), so sending them costs about what the model saves. A forked child
already has them in memory (copy-on-write) and sends back only its small result. Where fork is
unavailable or fails the function simply runs in this process; the result is the same.
"""
from __future__ import annotations

import os
import pickle
from typing import Any, Callable, Generic, Optional, TypeVar

from lib.worker_guard import guard_worker

T = TypeVar("T")


class ForkedCall(Generic[T]):
    """`function(*args, **kwargs)` computed in a forked child; `result()` waits for it."""

    def __init__(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> None:
        self._pid = 0
        self._outcome: Optional[tuple[bool, Any]] = None
        if not hasattr(os, "fork"):
            self._outcome = _attempt(function, args, kwargs)
            return
        read_end, write_end = os.pipe()
        parent_pid = os.getpid()
        try:
            pid = os.fork()
        except OSError:  # no process to spare (e.g. a process limit): compute here, same result
            os.close(read_end)
            os.close(write_end)
            self._outcome = _attempt(function, args, kwargs)
            return
        if pid == 0:  # the child: compute, write, leave without running the parent's exit handlers
            status = 1
            try:
                os.close(read_end)
                guard_worker(parent_pid)
                with os.fdopen(write_end, "wb") as stream:
                    stream.write(_pickled(_attempt(function, args, kwargs)))
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        self._pid = pid
        self._read_end = read_end

    @classmethod
    def here(cls, function: Callable[..., T], *args: Any, **kwargs: Any) -> ForkedCall[T]:
        """The same call computed in this process, now (nothing forked or pickled)."""
        call = cls.__new__(cls)
        call._pid = 0
        call._outcome = _attempt(function, args, kwargs)
        return call

    def result(self) -> T:
        """The function's return value; its exception is raised here."""
        if self._outcome is None:
            with os.fdopen(self._read_end, "rb") as stream:
                payload = stream.read()
            _, status = os.waitpid(self._pid, 0)
            self._pid = 0
            if not payload:
                raise RuntimeError(f"forked computation died (exit status {os.waitstatus_to_exitcode(status)})")
            self._outcome = pickle.loads(payload)
        is_value, value = self._outcome
        if not is_value:
            raise value
        return value


def _attempt(function: Callable[..., Any], args: tuple, kwargs: dict) -> tuple[bool, Any]:
    """(True, result) or (False, the exception)."""
    try:
        return True, function(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - re-raised by result()
        return False, error


def _pickled(outcome: tuple[bool, Any]) -> bytes:
    """`outcome` for the pipe; what cannot be pickled still reaches the parent as an error."""
    try:
        return pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:  # noqa: BLE001
        failure = outcome[1] if not outcome[0] else error
        return pickle.dumps((False, RuntimeError(f"{type(failure).__name__}: {failure}")))
