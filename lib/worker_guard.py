"""Worker processes that die with their parent and never hold the caller's pipes (docs/reliability.md).

A pool worker outlives a parent killed by a signal (SIGKILL, SIGTERM): it waits forever for work
on a queue whose other ends its sibling workers still hold. Re-parented to init, it keeps the
caller's stdout and stderr open, so a caller reading them to EOF hangs. Every worker (pool
initializer or forked child) therefore calls `guard_worker` first: its standard streams go to
/dev/null (results travel through the pool's own pipes), the kernel kills it when the parent
dies (Linux PR_SET_PDEATHSIG), and a watchdog thread ends it when its parent pid changes
(elsewhere, or if the parent died before the first was set).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1
WATCHDOG_INTERVAL_S = 0.2


def cpu_limit() -> int:
    """How many processes can run at once here: the CPUs this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def guard_worker(parent_pid: int) -> None:
    """Make this process (a worker of `parent_pid`) die with its parent and release the caller's pipes.

    A no-op in `parent_pid` itself (an initializer run in-process, as a stand-in pool does).
    """
    if os.getpid() == parent_pid:
        return
    _detach_standard_streams()
    _kill_on_parent_death()
    if os.getppid() != parent_pid:  # the parent died before the kernel could be told
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watchdog", daemon=True).start()


def _detach_standard_streams() -> None:
    """stdin, stdout and stderr to /dev/null, so the caller's pipes close when the parent's do."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    null = os.open(os.devnull, os.O_RDWR)
    for descriptor in (0, 1, 2):
        os.dup2(null, descriptor)
    if null > 2:
        os.close(null)


def _kill_on_parent_death() -> None:
    """Ask Linux to SIGKILL this process when the thread that forked it exits; elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no libc to call: the watchdog still ends the process
        pass


def _watch_parent(parent_pid: int) -> None:
    event = threading.Event()
    while not event.wait(WATCHDOG_INTERVAL_S):
        if os.getppid() != parent_pid:
            os._exit(1)
