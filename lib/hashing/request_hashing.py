"""From proxy rows to hashed prompts: bodies read in batches, segments tokenized once (docs/hashing.md).

Shared by the trace builder, the validator and the visualizer (through lib/hashing/hash_pool.py, which
spreads the work over processes) so all three see identical token counts, block keys and
cache_control breakpoints for a request. Claude Code's billing header is dropped from `system`
first, as the API does (lib/capture/billing_header.py).
"""
from __future__ import annotations

import sqlite3
from collections import OrderedDict
from dataclasses import dataclass
from itertools import compress
from typing import Any, Iterator, Optional, Sequence, cast

import orjson
import xxhash

from lib.capture.billing_header import split_billing_header
from lib.hashing.body_layout import BodyLayout, BodyReader, Reuse, layout_of, locate_messages
from lib.db import decode_text, repair_text
from lib.hashing.block_hashes import (
    DEFAULT_BLOCK_SIZE, PrefixHasher, RequestHashes, SegmentTokenizer, make_salt, normalize_section, segment_digest,
)
from lib.records import ProxyRequest
from lib.hashing.tokenizer import load_encoder

BODY_BATCH_ROWS = 64
# The API honours at most 4 cache_control breakpoints per request (docs/cache-models.md#anthropic-api-model).
MAX_BREAKPOINTS = 4
# orjson writes at most this many levels of nesting (it reads 1024): a body nested deeper is skipped.
MAX_JSON_DEPTH = 254
# Normalized bytes kept by the section memo (LRU); ~the unique content a few conversations need.
DEFAULT_MAX_MEMO_BYTES = 128_000_000


@dataclass(frozen=True)
class HashedRequest:
    """One request's prompt as the cache models and traces see it."""

    hashes: RequestHashes
    tool_tokens: int
    system_tokens: int
    breakpoints: tuple[int, ...]
    last_message_types: tuple[str, ...]
    all_message_types: tuple[str, ...]
    # Token positions where sections and messages end, for the API model's lookback (docs/cache-models.md#anthropic-api-model);
    # kept only by a hasher made with keep_boundaries=True (the trace builder does not need them).
    boundaries: tuple[int, ...] = ()
    # The billing header line the body carried (dropped before hashing), for the summaries' counts.
    billing_header: Optional[str] = None

    @property
    def token_count(self) -> int:
        return self.hashes.token_count


def _content_types(message: Any) -> frozenset[str]:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return frozenset(("text",))
    if isinstance(content, list):
        return frozenset(block.get("type", "") for block in content if isinstance(block, dict) and block.get("type"))
    return frozenset()


def _compute_section(value: Any) -> _Section:
    """The uncached work of `RequestHasher._section`."""
    # orjson's result can sit in a much larger buffer (32 KB for a 3 KB output); the memo keeps
    # an exact-size copy, or it would hold ~10x the bytes it accounts for.
    segment = bytes(memoryview(normalize_section(value)))
    return _Section(segment, segment_digest(segment), _has_cache_control(value), _content_types(value))


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
    digest: bytes
    is_marked: bool
    content_types: frozenset[str]
    token_count: int = -1  # filled on first use by the owning RequestHasher's tokenizer


@dataclass(slots=True)
class _Prompt:
    """Per-section results of one body, in section order; the next body of its conversation
    reuses the leading part it shares (see lib/hashing/body_layout.py)."""

    fixed: int  # tools/system sections before the messages
    tool_tokens: int
    system_tokens: int
    sections: list[_Section]
    segments: list[bytes]
    digests: list[bytes]
    marks: list[bool]
    chain: list[bytes]  # the hasher's chain digests: root, then one per section
    types: list[frozenset[str]]  # content types of messages[: i + 1]
    positions: list[int]  # token offsets at section ends, filled as far as needed

    def extended(self, shared: int, kept: int, sections: list[_Section]) -> _Prompt:
        """The first `shared` sections (`kept` of them messages) followed by `sections`."""
        prompt = _Prompt(self.fixed, self.tool_tokens, self.system_tokens, self.sections[:shared],
                         self.segments[:shared], self.digests[:shared], self.marks[:shared],
                         self.chain[: shared + 1], self.types[:kept], self.positions[:shared])
        prompt.add(sections)
        return prompt

    def add(self, sections: list[_Section], *, messages: bool = True) -> None:
        """Append sections (`messages`: they are messages, whose content types count)."""
        self.sections += sections
        self.segments += [section.segment for section in sections]
        self.digests += [section.digest for section in sections]
        self.marks += [section.is_marked for section in sections]
        types = self.types
        for section in sections if messages else ():
            if not types:
                types.append(section.content_types)
            elif section.content_types <= types[-1]:
                types.append(types[-1])
            else:
                types.append(types[-1] | section.content_types)


class RequestHasher:
    """Hashes request bodies with one memoized tokenizer and prefix hasher for the whole run.

    Every request repeats its conversation's history, so the per-section work is memoized twice:
    a body extending a recent body of its conversation reuses that body's per-section results for
    the shared messages without parsing them (`BodyReader`), and any other section (normalization,
    the cache_control walk, content types) is looked up by the xxh3-128 of orjson's compact bytes
    of it (key order kept, one shortest text per float) in an LRU bounded by `max_memo_bytes`.
    Results are identical to computing everything each time.
    """

    def __init__(self, *, block_size: int = DEFAULT_BLOCK_SIZE, salt: Optional[str] = None, tokenizer: str = "cl100k_base",
                 encoder: Any = None, max_memo_bytes: int = DEFAULT_MAX_MEMO_BYTES,
                 keep_boundaries: bool = False) -> None:
        self.tokenizer = SegmentTokenizer(encoder if encoder is not None else load_encoder(tokenizer))
        self.hasher = PrefixHasher(self.tokenizer, salt=make_salt(salt), block_size=block_size)
        self.block_size = block_size
        self.max_memo_bytes = max_memo_bytes
        self.keep_boundaries = keep_boundaries
        self.reader = BodyReader()
        self._memo: OrderedDict[bytes, _Section] = OrderedDict()
        self._memo_bytes = 0

    @property
    def stats(self):
        return self.hasher.stats

    def _tokens(self, section: _Section) -> int:
        """Token count of a section, remembered on it (the memo belongs to this hasher's tokenizer)."""
        if section.token_count < 0:
            section.token_count = len(self.tokenizer.token_bytes(section.segment, section.digest)) // 4
        return section.token_count

    def _section(self, value: Any) -> tuple[_Section, Optional[bytes]]:
        """One section's results (memoized) and orjson's bytes of it (None if orjson cannot write it).

        Bodies are parsed by orjson, which rejects NaN and Infinity, so orjson's bytes (where a
        NaN would read `null`) identify the value exactly.
        """
        try:
            raw = orjson.dumps(value)
        except TypeError:  # JSONEncodeError, or the bare TypeError of orjson's recursion limit
            if _nesting_exceeds(value, MAX_JSON_DEPTH):
                raise _TooDeep from None
            # What orjson cannot write (lone surrogates, huge ints...) is rare: compute it directly.
            return _compute_section(value), None
        key = xxhash.xxh3_128_digest(raw)
        found = self._memo.get(key)
        if found is not None:
            self._memo.move_to_end(key)
            return found, raw
        section = _compute_section(value)
        cost = len(section.segment) + 64  # the entry's own overhead, so tiny sections still count
        if cost <= self.max_memo_bytes:
            self._memo[key] = section
            self._memo_bytes += cost
            while self._memo_bytes > self.max_memo_bytes:
                _, evicted = self._memo.popitem(last=False)
                self._memo_bytes -= len(evicted.segment) + 64
        return section, raw

    def hash_raw(self, raw: Optional[bytes]) -> tuple[Optional[str], Optional[HashedRequest]]:
        """(None, hashed prompt) of a stored body, or (why it is unusable, None).

        Sections are tools, system (without the billing header), then each message (docs/hashing.md#prompt-layout).
        Breakpoints are the token offsets at the end of each section or message that carries a
        `cache_control` (rounded to that segment's end: the API's exact offset inside a segment is
        not recoverable from segment-wise tokens); the last four are kept.
        """
        if raw is None:
            return "body_missing", None
        try:
            return self._hash_body(raw)
        except _TooDeep:
            return "body_too_deep", None

    def _hash_body(self, raw: bytes) -> tuple[Optional[str], Optional[HashedRequest]]:
        reuse = self.reader.reuse(raw)
        if reuse is not None:
            span = reuse.header_span
            header = raw[span[0] : span[1]].decode() if span is not None else None
            return None, self._hashed(self._extend(raw, reuse), header)
        body, reason = _parse_body(raw)
        if body is None:
            return reason, None
        system, header = split_billing_header(body.get("system"))
        prompt = _Prompt(0, 0, 0, [], [], [], [], [self.hasher.root], [], [])
        fixed: list[_Section] = []
        for name, value in (("tools", body.get("tools")), ("system", system)):
            if value:
                section, _ = self._section(value)
                fixed.append(section)
                if name == "tools":
                    prompt.tool_tokens = self._tokens(section)
                else:
                    prompt.system_tokens = self._tokens(section)
        prompt.add(fixed, messages=False)
        prompt.fixed = len(fixed)
        results = [self._section(message) for message in body["messages"]]
        prompt.add([section for section, _ in results])
        dumped = [value for _, value in results]
        if None not in dumped:
            layout = layout_of(raw, cast("list[bytes]", dumped), prompt, header)
            if layout is not None:
                self.reader.remember(layout)
        return None, self._hashed(prompt, header)

    def _extend(self, raw: bytes, reuse: Reuse) -> _Prompt:
        """The prompt of a body read against a layout; the body becomes a layout if located."""
        old, kept = reuse.layout, reuse.kept
        results = [self._section(message) for message in reuse.new_messages]
        prompt = old.derived.extended(old.derived.fixed + kept, kept, [section for section, _ in results])
        dumped = [value for _, value in results]
        start = old.bounds[kept] + (1 if kept else 0)  # past the comma after the last kept message
        ends = locate_messages(raw, start, cast("list[bytes]", dumped)) if None not in dumped else None
        if ends is not None and (ends[-1] if ends else old.bounds[kept]) == reuse.close:
            # With no message shared the old layout is another conversation's: it stays.
            self.reader.remember(BodyLayout(raw, old.bounds[: kept + 1] + ends, prompt, reuse.header_span),
                                 replaces=old if kept else None)
        return prompt

    def _hashed(self, prompt: _Prompt, billing_header: Optional[str]) -> HashedRequest:
        hashes = self.hasher.hash_request(prompt.segments, prompt.digests, prompt.chain)
        breakpoints: tuple[int, ...] = ()
        boundaries: tuple[int, ...] = ()
        # Without a breakpoint nothing is read or written, so the boundaries would go unused.
        if any(prompt.marks):
            positions = prompt.positions
            position = positions[-1] if positions else 0
            for section in prompt.sections[len(positions):]:
                position += self._tokens(section)
                positions.append(position)
            breakpoints = tuple(compress(positions, prompt.marks))[-MAX_BREAKPOINTS:]
            if self.keep_boundaries:
                boundaries = tuple(positions)
        messages = prompt.sections[prompt.fixed:]
        return HashedRequest(
            hashes=hashes,
            tool_tokens=prompt.tool_tokens,
            system_tokens=prompt.system_tokens,
            breakpoints=breakpoints,
            last_message_types=tuple(sorted(messages[-1].content_types)) if messages else (),
            all_message_types=tuple(sorted(prompt.types[-1])) if prompt.types else (),
            boundaries=boundaries,
            billing_header=billing_header,
        )


class _TooDeep(Exception):
    """A section nested deeper than MAX_JSON_DEPTH: its request is skipped as `body_too_deep`."""


def _nesting_exceeds(value: Any, limit: int) -> bool:
    """True when lists and dicts in `value` nest more than `limit` levels (iterative: no recursion limit)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def iter_bodies(proxy: sqlite3.Connection, requests: Sequence[ProxyRequest]
                ) -> Iterator[tuple[ProxyRequest, Optional[bytes]]]:
    """(request, its stored body's bytes or None), fetched in batches."""
    for start in range(0, len(requests), BODY_BATCH_ROWS):
        chunk = requests[start : start + BODY_BATCH_ROWS]
        marks = ",".join("?" * len(chunk))
        # As bytes: orjson parses UTF-8 directly, sparing the str decode and the repair scan (below).
        found = dict(proxy.execute(f"SELECT rowid, CAST(body AS BLOB) FROM requests WHERE rowid IN ({marks})",
                                   [r.row_id for r in chunk]))
        for request in chunk:
            yield request, found.get(request.row_id)


def _parse_body(raw: bytes) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """The parsed body (from its stored bytes), or None and the problem reason that makes it unusable."""
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
