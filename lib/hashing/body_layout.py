"""Parsing a request body by reusing an earlier body of its conversation (SPEC §4 performance rule).

Consecutive requests of a conversation repeat its history byte for byte: a stored body is the
previous one with messages appended and the last message's cache_control moved. Once a body is
parsed and its messages located in its bytes (a `BodyLayout`), a later body that has the same
bytes up to the end of message j (j = 0: up to the array) and the same bytes from the `]` closing
the messages array to the end (tools, system...) holds that body's first j messages, then whatever
lies between: only that part is parsed. So parsing costs grow with the new content of a capture;
memcmp still touches every byte.

The result always equals parsing the whole body: a layout is kept only after checking that its
array is the top-level `messages` value (the head and the tail around it parse as the rest of
the object, with no second `messages` key), and what lies between must parse as a non-empty
run of array values. Anything else falls back to a full parse.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import orjson

_KEY = b'"messages":['
# Recent layouts kept: about the conversations and sub-agents a chunk of requests interleaves.
MAX_LAYOUTS = 8
# The proxy (Go's encoding/json) writes these as \u escapes where orjson writes the raw character.
_GO_ESCAPES = ((b"&", b"\\u0026"), (b"<", b"\\u003c"), (b">", b"\\u003e"),
               ("\u2028".encode(), b"\\u2028"), ("\u2029".encode(), b"\\u2029"))


@dataclass(slots=True, eq=False)
class BodyLayout:
    """Where a body's messages sit in its bytes, with what the caller derived from the body.

    `bounds[0]` is the offset just past the `[` opening the messages array, `bounds[i]` the
    offset just past message i's JSON; the last one is where the `]` closing the array sits.
    """

    raw: bytes
    bounds: list[int]
    derived: Any


@dataclass(frozen=True, slots=True)
class Reuse:
    """A body read against a layout: its first `kept` messages (maybe none: then only the bytes
    around the array are shared), then `new_messages`, parsed, ending at offset `close`."""

    layout: BodyLayout
    kept: int
    new_messages: list[Any]
    close: int


def _go_escaped(dumped: bytes) -> bytes:
    for character, escape in _GO_ESCAPES:
        if character in dumped:
            dumped = dumped.replace(character, escape)
    return dumped


def _length_at(raw: bytes, position: int, dumped: bytes) -> Optional[int]:
    """Length of `dumped` (orjson's bytes of a parsed value) as written in `raw` at `position`.

    The value reads back from either spelling; only its byte length matters, and it is trusted
    only where the bytes are equal.
    """
    if raw.startswith(dumped, position):
        return len(dumped)
    escaped = _go_escaped(dumped)
    if escaped is not dumped and raw.startswith(escaped, position):
        return len(escaped)
    return None


def locate_messages(raw: bytes, start: int, dumped: Sequence[bytes]) -> Optional[list[int]]:
    """End offsets of consecutive array values written from `start` (after `[` or a comma)."""
    ends: list[int] = []
    position = start
    for index, value in enumerate(dumped):
        if index:
            if raw[position : position + 1] != b",":
                return None
            position += 1
        length = _length_at(raw, position, value)
        if length is None:
            return None
        position += length
        ends.append(position)
    return ends


def _parses_around(raw: bytes, open_at: int, close: int) -> bool:
    """Whether the bytes before the array and after it are the rest of a top-level object
    whose only `messages` key is this array's."""
    try:
        head = orjson.loads(raw[:open_at] + b"[]}")
        tail = orjson.loads(b'{"":[' + raw[close:])
    except orjson.JSONDecodeError:
        return False
    return (isinstance(head, dict) and next(reversed(head), None) == "messages"
            and isinstance(tail, dict) and "messages" not in tail)


def layout_of(raw: bytes, dumped_messages: Sequence[bytes], derived: Any) -> Optional[BodyLayout]:
    """The layout of a fully parsed body whose messages orjson writes as `dumped_messages`."""
    open_at = raw.find(_KEY)
    if open_at < 0 or not dumped_messages:
        return None
    start = open_at + len(_KEY)
    ends = locate_messages(raw, start, dumped_messages)
    if ends is None or raw[ends[-1] : ends[-1] + 1] != b"]" or not _parses_around(raw, start - 1, ends[-1]):
        return None
    return BodyLayout(raw, [start, *ends], derived)


def _prefix_equal(raw: bytes, layout: memoryview, end: int) -> bool:
    return raw.startswith(layout[:end])


def _messages_equal(raw: bytes, old: memoryview, bounds: Sequence[int], count: int) -> bool:
    """Whether `raw` starts with the first `count` messages of `old` (and what precedes them).

    Message `count` alone is compared first: a failed probe then costs one message, not the body.
    """
    start, end = bounds[count - 1], bounds[count]
    return raw.startswith(old[start:end], start) and _prefix_equal(raw, old, start)


def _shared_messages(raw: bytes, old: memoryview, bounds: Sequence[int], high: int) -> int:
    """The largest j <= `high` with raw[:bounds[j]] == old[:bounds[j]] (true for j = 0).

    Probed from `high` down in doubling steps (usually only the last message or two changed),
    then bisected: the property holds for every j below one where it holds.
    """
    low, step = 0, 1
    while low < high:
        probe = max(low + 1, high - step + 1)
        if _messages_equal(raw, old, bounds, probe):
            low = probe
            break
        high, step = probe - 1, step * 2
    while low < high:
        probe = (low + high + 1) // 2
        if _messages_equal(raw, old, bounds, probe):
            low = probe
        else:
            high = probe - 1
    return low


def _shared(raw: bytes, layout: BodyLayout) -> Optional[tuple[int, int]]:
    """(messages shared, offset where the shared tail starts) of `raw` against `layout`, or None
    when the bytes before the array or from its `]` on differ."""
    old = memoryview(layout.raw)
    bounds = layout.bounds
    tail = old[bounds[-1] :]
    limit = len(raw) - len(tail)
    if limit < bounds[0] or not _prefix_equal(raw, old, bounds[0]) or not raw.endswith(tail):
        return None
    return _shared_messages(raw, old, bounds, bisect_right(bounds, limit) - 1), limit


def _read(raw: bytes, layout: BodyLayout, kept: int, limit: int) -> Optional[Reuse]:
    """The messages after the `kept` shared ones: what lies between must be a run of array values."""
    between = raw[layout.bounds[kept] : limit]
    if kept:
        if not between:
            return Reuse(layout, kept, [], limit)
        if between[:1] != b",":
            return None
        between = between[1:]
    try:
        new_messages = orjson.loads(b"[" + between + b"]")
    except orjson.JSONDecodeError:
        return None
    # Nothing (or only a comma) between would make the body invalid JSON or leave it without
    # messages: the full parse says which.
    return Reuse(layout, kept, new_messages, limit) if new_messages else None


class BodyReader:
    """Finds, among the recently laid-out bodies, the one the next body shares most messages with."""

    def __init__(self, max_layouts: int = MAX_LAYOUTS) -> None:
        self.max_layouts = max_layouts
        self._layouts: list[BodyLayout] = []
        self.reused = 0  # bodies read through a layout (for tests and profiles)

    def reuse(self, raw: bytes) -> Optional[Reuse]:
        """`raw` read against the layout it shares most messages with, or None (parse it whole).

        Bodies of other conversations with the same model, tools and system share the bytes
        around the array (0 messages), so every layout is tried; the most recent wins ties.
        """
        best: Optional[tuple[int, int, BodyLayout]] = None
        for layout in self._layouts:
            shared = _shared(raw, layout)
            if shared is not None and (best is None or shared[0] > best[0]):
                best = (*shared, layout)
        if best is None:
            return None
        found = _read(raw, best[2], best[0], best[1])
        self.reused += found is not None
        return found

    def remember(self, layout: BodyLayout, replaces: Optional[BodyLayout] = None) -> None:
        """Keep `layout` as the most recent (instead of `replaces`, an earlier body of its conversation)."""
        if replaces is not None and replaces in self._layouts:
            self._layouts.remove(replaces)
        self._layouts.insert(0, layout)
        del self._layouts[self.max_layouts :]
