"""Running a pure function in a forked child that inherits its inputs.

A process pool must pickle a task's arguments; the visualizer's cache models take every request's
block ids (millions of them), so sending them costs about what the model saves. A forked child
already has them in memory (copy-on-write) and sends back only its small result. Where fork is
unavailable or fails the function simply runs in this process; the result is the same.
"""
from __future__ import annotations

import os
import pickle
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class ForkedCall(Generic[T]):
    """`function(*args, **kwargs)` computed in a forked child; `result()` waits for it."""

    def __init__(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> None:
        self._pid = 0
        if not hasattr(os, "fork"):
            self._payload = _outcome(function, args, kwargs)
            return
        read_end, write_end = os.pipe()
        try:
            pid = os.fork()
        except OSError:  # no process to spare (e.g. a process limit): compute here, same result
            os.close(read_end)
            os.close(write_end)
            self._payload = _outcome(function, args, kwargs)
            return
        if pid == 0:  # the child: compute, write, leave without running the parent's exit handlers
            status = 1
            try:
                os.close(read_end)
                with os.fdopen(write_end, "wb") as stream:
                    stream.write(_outcome(function, args, kwargs))
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        self._pid = pid
        self._read_end = read_end
        self._payload = b""

    def result(self) -> T:
        """The function's return value; its exception is raised here."""
        if self._pid:
            with os.fdopen(self._read_end, "rb") as stream:
                self._payload = stream.read()
            _, status = os.waitpid(self._pid, 0)
            self._pid = 0
            if not self._payload:
                raise RuntimeError(f"forked computation died (exit status {os.waitstatus_to_exitcode(status)})")
        is_value, value = pickle.loads(self._payload)
        if not is_value:
            raise value
        return value


def _outcome(function: Callable[..., Any], args: tuple, kwargs: dict) -> bytes:
    """(True, result) or (False, the exception), pickled."""
    try:
        return pickle.dumps((True, function(*args, **kwargs)), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:  # noqa: BLE001 - re-raised in the parent by result()
        try:
            return pickle.dumps((False, error), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - an unpicklable exception still reaches the parent
            return pickle.dumps((False, RuntimeError(f"{type(error).__name__}: {error}")))
