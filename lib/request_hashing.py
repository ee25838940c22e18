"""From proxy rows to hashed prompts: bodies read in batches, segments tokenized once (SPEC §4).

Shared by the trace builder, the validator and the visualizer (through lib/hash_pool.py, which
spreads the work over processes) so all three see identical token counts, block keys and
cache_control breakpoints for a request.
"""
from __future__ import annotations

import sqlite3
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import orjson
import xxhash

from .db import decode_text, repair_text
from .hashing import PrefixHasher, RequestHashes, SegmentTokenizer, make_salt, normalize_section
from .records import ProxyRequest
from .tokenizer import load_encoder

BODY_BATCH_ROWS = 64
# The API honours at most 4 cache_control breakpoints per request (SPEC §6.4).
MAX_BREAKPOINTS = 4
# Normalized bytes kept by the section memo (LRU); ~the unique content a few conversations need.
DEFAULT_MAX_MEMO_BYTES = 128_000_000
# orjson writes NaN and ±Infinity as `null`; sections containing it are never memoized, so a NaN
# (possible in bodies parsed by json.loads) and a null can never share a memo entry.
_NULL = b"null"


@dataclass(frozen=True)
class HashedRequest:
    """One request's prompt as the cache models and traces see it."""

    hashes: RequestHashes
    tool_tokens: int
    system_tokens: int
    breakpoints: tuple[int, ...]
    last_message_types: tuple[str, ...]
    all_message_types: tuple[str, ...]
    # Token positions where sections and messages end, for the API model's lookback (SPEC §6.4);
    # kept only by a hasher made with keep_boundaries=True (the trace builder does not need them).
    boundaries: tuple[int, ...] = ()

    @property
    def token_count(self) -> int:
        return self.hashes.token_count


def _content_types(message: Any) -> list[str]:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return ["text"]
    if isinstance(content, list):
        return [block.get("type", "") for block in content if isinstance(block, dict) and block.get("type")]
    return []


def _compute_section(value: Any) -> _Section:
    """The uncached work of `RequestHasher._section`."""
    # orjson's result can sit in a much larger buffer (32 KB for a 3 KB output); the memo keeps
    # an exact-size copy, or it would hold ~10x the bytes it accounts for.
    segment = bytes(memoryview(normalize_section(value)))
    return _Section(segment, _has_cache_control(value), tuple(_content_types(value)))


def _has_cache_control(value: Any) -> bool:
    if isinstance(value, dict):
        return "cache_control" in value or any(_has_cache_control(v) for v in value.values() if isinstance(v, (dict, list)))
    if isinstance(value, list):
        return any(_has_cache_control(v) for v in value)
    return False


@dataclass(slots=True)
class _Section:
    """What hashing derives from one tools/system section or message, memoized by its raw JSON."""

    segment: bytes
    is_marked: bool
    content_types: tuple[str, ...]
    token_count: int = -1  # filled on first use by the owning RequestHasher's tokenizer


class RequestHasher:
    """Hashes request bodies with one memoized tokenizer and prefix hasher for the whole run.

    Every request repeats its conversation's history, so the per-section work (normalization, the
    cache_control walk, content types) is memoized too: orjson's compact bytes of a parsed section
    identify it exactly (key order kept, one shortest text per float), are produced in C, and key an
    LRU of `_Section`s bounded by `max_memo_bytes`. Results are identical to computing each time.
    """

    def __init__(self, *, block_size: int = 64, salt: Optional[str] = None, tokenizer: str = "cl100k_base",
                 encoder: Any = None, max_memo_bytes: int = DEFAULT_MAX_MEMO_BYTES,
                 keep_boundaries: bool = False) -> None:
        self.tokenizer = SegmentTokenizer(encoder if encoder is not None else load_encoder(tokenizer))
        self.hasher = PrefixHasher(self.tokenizer, salt=make_salt(salt), block_size=block_size)
        self.block_size = block_size
        self.max_memo_bytes = max_memo_bytes
        self.keep_boundaries = keep_boundaries
        self._memo: OrderedDict[bytes, _Section] = OrderedDict()
        self._memo_bytes = 0

    @property
    def stats(self):
        return self.hasher.stats

    def _tokens(self, section: _Section) -> int:
        """Token count of a section, remembered on it (the memo belongs to this hasher's tokenizer)."""
        if section.token_count < 0:
            section.token_count = len(self.tokenizer.token_bytes(section.segment)) // 4
        return section.token_count

    def _section(self, value: Any, nan_free: bool) -> _Section:
        """Normalized segment, cache_control flag and content types of one section (memoized)."""
        try:
            raw = orjson.dumps(value)
        except orjson.JSONEncodeError:
            # What orjson cannot write (lone surrogates, huge ints...) is rare: compute it directly.
            return _compute_section(value)
        # Scanning every message for "null" costs ~0.5 s per GB of bodies; orjson.loads rejects
        # NaN and Infinity, so a body it parsed (`nan_free`) cannot hold the ambiguity.
        if not nan_free and _NULL in raw:
            return _compute_section(value)
        key = xxhash.xxh3_128_digest(raw)
        found = self._memo.get(key)
        if found is not None:
            self._memo.move_to_end(key)
            return found
        section = _compute_section(value)
        cost = len(section.segment) + 64  # the entry's own overhead, so tiny sections still count
        if cost <= self.max_memo_bytes:
            self._memo[key] = section
            self._memo_bytes += cost
            while self._memo_bytes > self.max_memo_bytes:
                _, evicted = self._memo.popitem(last=False)
                self._memo_bytes -= len(evicted.segment) + 64
        return section

    def hash_body(self, body: dict[str, Any], *, nan_free: bool = False) -> HashedRequest:
        """Hash one request body parsed from JSON: sections tools, system, then each message (SPEC §4.1).

        Breakpoints are the token offsets at the end of each section or message that carries a
        `cache_control` (rounded to that segment's end: the API's exact offset inside a segment
        is not recoverable from segment-wise tokens); the last four are kept. `nan_free` says the
        body came from orjson.loads (no NaN or Infinity in it), which makes memo keys cheaper.
        """
        sections: list[_Section] = []
        tool_tokens = system_tokens = 0
        for name in ("tools", "system"):
            value = body.get(name)
            if value:
                section = self._section(value, nan_free)
                sections.append(section)
                if name == "tools":
                    tool_tokens = self._tokens(section)
                else:
                    system_tokens = self._tokens(section)
        messages = body.get("messages") or []
        if not isinstance(messages, list):
            messages = []
        all_types: set[str] = set()
        last_types: tuple[str, ...] = ()
        for message in messages:
            section = self._section(message, nan_free)
            sections.append(section)
            all_types.update(section.content_types)
            last_types = section.content_types
        hashes = self.hasher.hash_request([section.segment for section in sections])
        breakpoints: list[int] = []
        boundaries: list[int] = []
        # Without a breakpoint nothing is read or written, so the boundaries would go unused.
        if any(section.is_marked for section in sections):
            position = 0
            for section in sections:
                position += self._tokens(section)
                if section.is_marked:
                    breakpoints.append(position)
                if self.keep_boundaries:
                    boundaries.append(position)
        return HashedRequest(
            hashes=hashes,
            tool_tokens=tool_tokens,
            system_tokens=system_tokens,
            breakpoints=tuple(breakpoints[-MAX_BREAKPOINTS:]),
            last_message_types=tuple(sorted(set(last_types))),
            all_message_types=tuple(sorted(all_types)),
            boundaries=tuple(boundaries),
        )


def iter_bodies(proxy: sqlite3.Connection, requests: Sequence[ProxyRequest]
                ) -> Iterator[tuple[ProxyRequest, Optional[dict[str, Any]], Optional[str]]]:
    """(request, parsed body, None) or (request, None, why the body is unusable), fetched in batches."""
    for start in range(0, len(requests), BODY_BATCH_ROWS):
        chunk = requests[start : start + BODY_BATCH_ROWS]
        marks = ",".join("?" * len(chunk))
        # As bytes: orjson parses UTF-8 directly, sparing the str decode and the repair scan (below).
        found = dict(proxy.execute(f"SELECT rowid, CAST(body AS BLOB) FROM requests WHERE rowid IN ({marks})",
                                   [r.row_id for r in chunk]))
        for request in chunk:
            body, reason = _parse_body(found.get(request.row_id))
            yield request, body, reason


def _parse_body(raw: Optional[bytes]) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """The parsed body (from its stored bytes), or None and the problem reason that makes it unusable."""
    if raw is None:
        return None, "body_missing"
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            # orjson rejects invalid UTF-8: it is replaced as the message index did (which also
            # counted it, as a row problem), then parsed again.
            body = orjson.loads(repair_text(decode_text(raw))[0])
        except orjson.JSONDecodeError:
            return None, "body_unparsable"
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
        return None, "body_without_messages"
    return body, None
