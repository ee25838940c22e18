"""HashPool: where worker processes get their tokenizer from, and how they end."""
from __future__ import annotations

import resource
from pathlib import Path

from lib.hashing import tokenizer
from lib.hashing.hash_pool import HashPool, HashSettings
from tests.proxy_builders import make_proxy_db


def worker_tokenizer_loads(_: object) -> tuple[int, int]:
    """In a worker: (loads this process's encoder cache has seen, encoders it holds)."""
    info = tokenizer._load_offline.cache_info()
    return info.misses, info.currsize


def test_each_worker_loads_its_own_tokenizer_and_this_process_none(tmp_path: Path):
    db = make_proxy_db(tmp_path / "requests.db")
    tokenizer._load_offline.cache_clear()
    with HashPool(str(db), HashSettings(salt="s"), workers=2) as pool:
        in_workers = list(pool._pool.map(worker_tokenizer_loads, range(2)))
        here = tokenizer._load_offline.cache_info()
    assert (here.misses, here.currsize) == (0, 0)
    assert set(in_workers) == {(1, 1)}


def burn(count: int) -> int:
    return sum(range(count))


def test_released_workers_exit_while_this_process_goes_on_and_are_reaped_on_close(tmp_path: Path):
    db = make_proxy_db(tmp_path / "requests.db")
    pool = HashPool(str(db), HashSettings(salt="s"), workers=2)
    assert list(pool._pool.map(burn, [2_000_000, 2_000_000])) == [burn(2_000_000)] * 2
    workers = list(pool._pool._processes.values())
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    pool.release()
    pool.close()
    # Reaped by this process once close() returns, so their CPU time counts as its children's (a
    # benchmark's wait4 sees it), rather than exiting on their own after this process has gone.
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before > 0.02
    assert [worker.exitcode for worker in workers] == [0, 0]
