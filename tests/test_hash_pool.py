"""HashPool: where worker processes get their tokenizer from."""
from __future__ import annotations

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


def test_released_workers_exit_while_this_process_goes_on(tmp_path: Path):
    db = make_proxy_db(tmp_path / "requests.db")
    with HashPool(str(db), HashSettings(salt="s"), workers=2) as pool:
        assert sorted(pool.map(abs, [-2, -1])) == [1, 2]
        workers = list(pool._pool._processes.values())
        assert len(workers) == 2 and all(worker.is_alive() for worker in workers)
        pool.release()
        for worker in workers:
            worker.join(timeout=30)
        assert not any(worker.is_alive() for worker in workers)
        with pytest.raises(RuntimeError, match="shutdown"):
            pool.map(abs, [1])
