"""HashPool: where worker processes get their tokenizer from."""
from __future__ import annotations

import resource
from pathlib import Path

import pytest

from lib import tokenizer
from lib.hash_pool import HashPool, HashSettings
from tests.proxy_builders import make_proxy_db


def worker_tokenizer_loads(_: object) -> tuple[int, int]:
    """In a worker: (loads this process's encoder cache has seen, encoders it holds)."""
    info = tokenizer._load_offline.cache_info()
    return info.misses, info.currsize


@pytest.mark.parametrize("share", [True, False])
def test_a_shared_tokenizer_is_loaded_once_before_the_workers_fork(share: bool, tmp_path: Path):
    db = make_proxy_db(tmp_path / "requests.db")
    tokenizer._load_offline.cache_clear()
    with HashPool(str(db), HashSettings(salt="s"), workers=2, share_tokenizer=share) as pool:
        here = tokenizer._load_offline.cache_info()
        in_workers = list(pool.map(worker_tokenizer_loads, range(2)))
    if share:
        # The workers' caches are this process's, copied by fork: no load of their own.
        assert (here.misses, here.currsize) == (1, 1)
        assert set(in_workers) == {(1, 1)}
    else:
        assert (here.misses, here.currsize) == (0, 0)
        assert set(in_workers) == {(1, 1)}


def burn(count: int) -> int:
    return sum(range(count))


def test_released_workers_exit_while_this_process_goes_on_and_are_reaped_on_close(tmp_path: Path):
    db = make_proxy_db(tmp_path / "requests.db")
    pool = HashPool(str(db), HashSettings(salt="s"), workers=2)
    assert list(pool.map(burn, [2_000_000, 2_000_000])) == [burn(2_000_000)] * 2
    workers = list(pool._pool._processes.values())
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    pool.release()
    pool.close()
    # Reaped by this process once close() returns, so their CPU time counts as its children's (a
    # benchmark's wait4 sees it), rather than exiting on their own after this process has gone.
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before > 0.02
    assert [worker.exitcode for worker in workers] == [0, 0]
