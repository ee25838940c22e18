"""Parsing a request body by reusing an earlier body of its conversation (performance rule of
docs/hashing.md#work-grows-with-unique-content).

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

Claude Code's billing header (lib/capture/billing_header.py) may change on every request while the rest
of the body around the messages stays the same. A layout therefore records the header line's
bytes (`header_span`, only after checking that they are the system's header line); a later body
may hold any header line of the same length there, and the reader reports where. The header is
dropped before hashing, so what the caller derived from the rest still holds.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import orjson

from lib.capture.billing_header import PREFIX, RAW_LINE, split_billing_header

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
    header_span: Optional[tuple[int, int]] = None  # the billing header line, outside the messages


@dataclass(frozen=True, slots=True)
class Reuse:
    """A body read against a layout: its first `kept` messages (maybe none: then only the bytes
    around the array are shared), then `new_messages`, parsed, ending at offset `close`;
    `header_span` is where this body's billing header line is (when the layout has one)."""

    layout: BodyLayout
    kept: int
    new_messages: list[Any]
    close: int
    header_span: Optional[tuple[int, int]] = None


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


def _header_span(raw: bytes, open_at: int, close: int, header: str) -> Optional[tuple[int, int]]:
    """Where the body's billing header line `header` is written in `raw`: found unescaped exactly
    once outside the messages array, and proven to be the system's header line by parsing that
    side with other characters in its place. None when it cannot be located so."""
    line, prefix = header.encode(), PREFIX.encode()
    # A bare prefix could not be told apart from its stand-in below.
    if RAW_LINE.fullmatch(line) is None or len(line) == len(prefix):
        return None
    needle = b'"' + line
    found = [position + 1 for start, end in ((0, open_at), (close, len(raw)))
             for position in _occurrences(raw, needle, start, end)]
    if len(found) != 1:
        return None
    begin, finish = found[0], found[0] + len(line)
    stand_in = prefix + (b"_" if line.endswith(b"~") else b"~") * (len(line) - len(prefix))
    patched = raw[:begin] + stand_in + raw[finish:]
    try:
        side = orjson.loads(patched[:open_at] + b"[]}") if begin < open_at else orjson.loads(b'{"":[' + patched[close:])
    except orjson.JSONDecodeError:
        return None
    system = side.get("system") if isinstance(side, dict) else None
    return (begin, finish) if split_billing_header(system)[1] == stand_in.decode() else None


def _occurrences(raw: bytes, needle: bytes, start: int, end: int) -> list[int]:
    positions = []
    position = raw.find(needle, start, end)
    while position >= 0:
        positions.append(position)
        position = raw.find(needle, position + 1, end)
    return positions


def layout_of(raw: bytes, dumped_messages: Sequence[bytes], derived: Any,
              header: Optional[str] = None) -> Optional[BodyLayout]:
    """The layout of a fully parsed body whose messages orjson writes as `dumped_messages`;
    `header` is its billing header line (then None unless that line can be located)."""
    open_at = raw.find(_KEY)
    if open_at < 0 or not dumped_messages:
        return None
    start = open_at + len(_KEY)
    ends = locate_messages(raw, start, dumped_messages)
    if ends is None or raw[ends[-1] : ends[-1] + 1] != b"]" or not _parses_around(raw, start - 1, ends[-1]):
        return None
    span = None
    if header is not None:
        # Without its place, a later body with the same bytes could not tell its header.
        span = _header_span(raw, start - 1, ends[-1], header)
        if span is None:
            return None
    return BodyLayout(raw, [start, *ends], derived, span)


def _equal_at(raw: bytes, at: int, old: memoryview, start: int, end: int, span: Optional[tuple[int, int]]) -> bool:
    """Whether raw[at:] starts with old[start:end], where any billing header line of the same
    length may stand in for old's at `span` (which lies wholly inside or outside the range)."""
    if span is None or span[1] <= start or span[0] >= end:
        return raw.startswith(old[start:end], at)
    begin, finish = span
    shift = at - start
    return (raw.startswith(old[start:begin], at) and RAW_LINE.fullmatch(raw, begin + shift, finish + shift) is not None
            and raw.startswith(old[finish:end], finish + shift))


def _messages_equal(raw: bytes, old: memoryview, bounds: Sequence[int], count: int,
                    span: Optional[tuple[int, int]]) -> bool:
    """Whether `raw` starts with the first `count` messages of `old` (and what precedes them).

    Message `count` alone is compared first: a failed probe then costs one message, not the body.
    """
    start, end = bounds[count - 1], bounds[count]
    return raw.startswith(old[start:end], start) and _equal_at(raw, 0, old, 0, start, span)


def _shared_messages(raw: bytes, old: memoryview, bounds: Sequence[int], high: int,
                     span: Optional[tuple[int, int]]) -> int:
    """The largest j <= `high` with raw[:bounds[j]] == old[:bounds[j]] (true for j = 0).

    Probed from `high` down in doubling steps (usually only the last message or two changed),
    then bisected: the property holds for every j below one where it holds.
    """
    low, step = 0, 1
    while low < high:
        probe = max(low + 1, high - step + 1)
        if _messages_equal(raw, old, bounds, probe, span):
            low = probe
            break
        high, step = probe - 1, step * 2
    while low < high:
        probe = (low + high + 1) // 2
        if _messages_equal(raw, old, bounds, probe, span):
            low = probe
        else:
            high = probe - 1
    return low


def _shared(raw: bytes, layout: BodyLayout) -> Optional[tuple[int, int]]:
    """(messages shared, offset where the shared tail starts) of `raw` against `layout`, or None
    when the bytes before the array or from its `]` on differ."""
    old = memoryview(layout.raw)
    bounds, span = layout.bounds, layout.header_span
    limit = len(raw) - (len(old) - bounds[-1])
    if (limit < bounds[0] or not _equal_at(raw, 0, old, 0, bounds[0], span)
            or not _equal_at(raw, limit, old, bounds[-1], len(old), span)):
        return None
    return _shared_messages(raw, old, bounds, bisect_right(bounds, limit) - 1, span), limit


def _read(raw: bytes, layout: BodyLayout, kept: int, limit: int) -> Optional[Reuse]:
    """The messages after the `kept` shared ones: what lies between must be a run of array values."""
    between = raw[layout.bounds[kept] : limit]
    span = layout.header_span
    if span is not None and span[0] >= layout.bounds[-1]:
        shift = limit - layout.bounds[-1]  # the tail moved with the messages' length
        span = (span[0] + shift, span[1] + shift)
    if kept:
        if not between:
            return Reuse(layout, kept, [], limit, span)
        if between[:1] != b",":
            return None
        between = between[1:]
    try:
        new_messages = orjson.loads(b"[" + between + b"]")
    except orjson.JSONDecodeError:
        return None
    # Nothing (or only a comma) between would make the body invalid JSON or leave it without
    # messages: the full parse says which.
    return Reuse(layout, kept, new_messages, limit, span) if new_messages else None


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
