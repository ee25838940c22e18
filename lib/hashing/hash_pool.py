"""Hashing request prompts in worker processes, with results identical to one process (docs/hashing.md).

Shared by the trace builder, the validator and the visualizer (`--workers N`). Requests are cut
into chunks of consecutive requests (at least `chunk_requests`, cut preferably where a new group
starts or the prompt shrinks, e.g. after a compaction or at a sub-agent, so a chunk starting
mid-conversation re-tokenizes little history); each worker hashes whole chunks with its own
memoized `RequestHasher` and database connection. A prompt's tokens and block keys depend only on
its body and the salt, never on what a worker's memo holds, so with one salt for every process the
results are the same for any worker count; they come back in request order. Block keys travel as
the part that differs from the previous request of the chunk, so the pipe carries roughly the
unique content, not every request's whole history.
"""
from __future__ import annotations

import os
import secrets
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Iterator, Optional, Sequence

from lib.db import open_proxy_db
from lib.hashing.block_hashes import DEFAULT_BLOCK_SIZE, SALT_BYTES, RequestHashes, chained_prefix
from lib.problems import ProblemCounter
from lib.records import ProxyRequest
from lib.hashing.request_hashing import HashedRequest, RequestHasher, iter_bodies
from lib.hashing.tokenizer import LazyEncoder
from lib.worker_guard import guard_worker

# Below this many requests a chunk is not cut (per-task overhead); a chunk this many times longer is
# cut even where the cut re-tokenizes the conversation's history in the next chunk's worker.
CHUNK_REQUESTS = 64
MAX_CHUNK_FACTOR = 8

Group = Callable[[ProxyRequest], Hashable]
# (problem reason or None, hashed prompt or None) per request, as a chunk's worker returns them.
_Result = tuple[Optional[str], Optional[HashedRequest]]
_worker: dict[str, Any] = {}


@dataclass(frozen=True)
class HashSettings:
    """What every process needs to hash identically: one salt text for all of them."""

    salt: str
    block_size: int = DEFAULT_BLOCK_SIZE
    tokenizer: str = "cl100k_base"
    keep_boundaries: bool = False


def run_salt(salt: Optional[str]) -> str:
    """The given salt, or one random salt for the whole run (workers drawing their own would disagree)."""
    return salt if salt is not None else secrets.token_hex(SALT_BYTES)


@dataclass(frozen=True)
class _RowRef:
    """What hashing needs of a request: picklable, unlike ProxyRequest's lazy body loader."""

    request_id: str
    row_id: int


def _make_hasher(settings: HashSettings, encoder: Any = None) -> RequestHasher:
    return RequestHasher(block_size=settings.block_size, salt=settings.salt, tokenizer=settings.tokenizer,
                         encoder=encoder, keep_boundaries=settings.keep_boundaries)


def _init_worker(parent_pid: int, db_path: str, settings: HashSettings) -> None:
    guard_worker(parent_pid)
    _worker["proxy"] = open_proxy_db(db_path)
    _worker["hasher"] = _make_hasher(settings)


def _hash_chunk(hasher: RequestHasher, proxy: Any, requests: Sequence[Any]) -> tuple[list[_Result], tuple[int, int]]:
    """Each request's (problem, prompt) and the (tokens requested, tokens tokenized) it took."""
    stats = hasher.stats
    before = (stats.tokens_requested, stats.tokens_tokenized)
    results = [hasher.hash_raw(raw) for _, raw in iter_bodies(proxy, requests)]
    return results, (stats.tokens_requested - before[0], stats.tokens_tokenized - before[1])


def _worker_chunk(refs: list[_RowRef]) -> tuple[list[tuple[Optional[str], Optional[tuple]]], tuple[int, int]]:
    """A worker's task: hash one chunk and pack its results for the pipe."""
    results, counts = _hash_chunk(_worker["hasher"], _worker["proxy"], refs)
    return _pack(results), counts


def _pack(results: list[_Result]) -> list[tuple[Optional[str], Optional[tuple]]]:
    """Results with each prompt's keys reduced to (shared prefix length, keys after it)."""
    packed: list[tuple[Optional[str], Optional[tuple]]] = []
    previous: list[bytes] = []
    for reason, prompt in results:
        if prompt is None:
            packed.append((reason, None))
            continue
        hashes = prompt.hashes
        shared = chained_prefix(previous, hashes.block_keys)
        packed.append((reason, (shared, hashes.block_keys[shared:], hashes.token_count, hashes.tail_key,
                                prompt.tool_tokens, prompt.system_tokens, prompt.breakpoints,
                                prompt.last_message_types, prompt.all_message_types, prompt.boundaries,
                                prompt.billing_header)))
        previous = hashes.block_keys
    return packed


def _unpack(packed: list[tuple[Optional[str], Optional[tuple]]]) -> list[_Result]:
    """The inverse of `_pack`; consecutive prompts share their common key objects."""
    results: list[_Result] = []
    previous: list[bytes] = []
    for reason, fields in packed:
        if fields is None:
            results.append((reason, None))
            continue
        shared, tail_keys, token_count, tail_key, *rest = fields
        keys = previous[:shared]
        keys += tail_keys  # one copy of the shared part, where `+` would make two
        results.append((reason, HashedRequest(RequestHashes(token_count, keys, tail_key), *rest)))
        previous = keys
    return results


def _prompt_tokens(request: ProxyRequest) -> int:
    return request.usage.prompt_tokens if request.usage else 0


def _chunks(requests: Sequence[ProxyRequest], size: int, group: Optional[Group]) -> list[slice]:
    """Consecutive runs of >= `size` requests, cut where the next chunk re-tokenizes little history."""
    cuts = [0]
    for index in range(1, len(requests)):
        length = index - cuts[-1]
        if length < size:
            continue
        previous, request = requests[index - 1], requests[index]
        cheap = (group is not None and group(previous) != group(request)) or \
            _prompt_tokens(request) * 2 < _prompt_tokens(previous)
        if cheap or length >= size * MAX_CHUNK_FACTOR:
            cuts.append(index)
    cuts.append(len(requests))
    return [slice(start, end) for start, end in zip(cuts, cuts[1:]) if end > start]


def _grouped(requests: list[ProxyRequest], group: Group) -> list[ProxyRequest]:
    """Requests ordered by group (groups in order of first appearance), stable within a group."""
    first: dict[Hashable, int] = {}
    keys = [first.setdefault(group(request), len(first)) for request in requests]
    return [request for _, _, request in sorted(zip(keys, range(len(requests)), requests), key=lambda item: item[:2])]


class HashPool:
    """Hashes requests in `workers` processes (or in this one for 1), identically for any count.

    The pool starts at construction: each worker loads the tokenizer as it starts, while the
    caller reads its inputs. `hasher` is this process's own (its encoder loads only if this
    process tokenizes).
    """

    def __init__(self, db_path: str, settings: HashSettings, *, workers: int = 1,
                 chunk_requests: Optional[int] = None) -> None:
        self.db_path = db_path
        self.settings = settings
        self.chunk_requests = chunk_requests if chunk_requests is not None else CHUNK_REQUESTS
        self.hasher = _make_hasher(settings, LazyEncoder(settings.tokenizer))
        self.tokens_requested = 0
        self.tokens_tokenized = 0
        # Opened here also to fail early (InputError) on a bad path, before any worker tries it.
        self._proxy = open_proxy_db(db_path)
        self._pool: Optional[ProcessPoolExecutor] = None
        self._stopping: Optional[threading.Thread] = None
        if workers > 1:
            self._pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                             initargs=(os.getpid(), db_path, settings))
            # The first submit starts every worker (fork); each loads its tokenizer now.
            self._pool.submit(os.getpid)

    def __enter__(self) -> HashPool:
        return self

    def __exit__(self, error_type: Any, error: Any, traceback: Any) -> None:
        self.close(abort=error_type is not None)

    def release(self) -> None:
        """No more work will come: the workers are stopped in the background while this process goes
        on (e.g. writes the last results); `close` waits until they have exited and been reaped."""
        if self._pool is not None and self._stopping is None:
            self._stopping = threading.Thread(target=self._pool.shutdown, name="hash-pool-release")
            self._stopping.start()

    def close(self, *, abort: bool = False) -> None:
        """Stop the workers (at once when `abort`) and close this process's connection."""
        if self._stopping is not None:
            self._stopping.join()
            self._stopping = None
        elif self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=abort)
        self._pool = None
        self._proxy.close()

    def _results(self, requests: Sequence[ProxyRequest], group: Optional[Group]
                 ) -> Iterator[tuple[ProxyRequest, Optional[HashedRequest], Optional[str]]]:
        chunks = _chunks(requests, self.chunk_requests, group)
        if self._pool is None:
            outputs: Iterable = (_hash_chunk(self.hasher, self._proxy, requests[chunk]) for chunk in chunks)
        else:
            tasks = [[_RowRef(r.request_id, r.row_id) for r in requests[chunk]] for chunk in chunks]
            # map hands chunks to whichever worker is free and returns them in submission order.
            outputs = ((_unpack(packed), counts) for packed, counts in self._pool.map(_worker_chunk, tasks))
        for chunk, (results, (requested, tokenized)) in zip(chunks, outputs):
            self.tokens_requested += requested
            self.tokens_tokenized += tokenized
            for request, (reason, prompt) in zip(requests[chunk], results):
                yield request, prompt, reason

    def hash_requests(self, requests: Sequence[ProxyRequest], problems: ProblemCounter, *,
                      group: Optional[Group] = None) -> Iterator[tuple[ProxyRequest, Optional[HashedRequest]]]:
        """(request, hashed prompt or None when its body is unusable) in the order given.

        `group` (e.g. the conversation) marks where chunks can be cut cheaply; problems are
        counted as results are consumed.
        """
        for request, prompt, reason in self._results(requests, group):
            if reason is not None:
                problems.add(reason, request.request_id)
            yield request, prompt

    def hash_all(self, requests: Iterable[ProxyRequest], problems: ProblemCounter, *, group: Optional[Group] = None,
                 progress: Optional[Callable[[Iterable, int], Iterable]] = None) -> dict[str, HashedRequest]:
        """Hashed prompts keyed by request id, hashed group by group; problems counted in the given order."""
        given = list(requests)
        ordered = given if group is None else _grouped(given, group)
        hashed: dict[str, HashedRequest] = {}
        reasons: dict[str, str] = {}
        results: Iterable = self._results(ordered, group)
        if progress is not None:
            results = progress(results, len(ordered))
        for request, prompt, reason in results:
            if prompt is not None:
                hashed[request.request_id] = prompt
            if reason is not None:
                reasons[request.request_id] = reason
        for request in given:
            if request.request_id in reasons:
                problems.add(reasons[request.request_id], request.request_id)
        return {request.request_id: hashed[request.request_id] for request in given if request.request_id in hashed}
