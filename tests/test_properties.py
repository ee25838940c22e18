"""Property-based tests the module suites do not already cover (hypothesis, derandomized, fast).

Already proven elsewhere and not repeated here: shared token prefix ⇔ shared key prefix
(tests/test_hashing.py), hit rate monotone in TTL (tests/test_cache_models.py), monotone in
capacity and LRU ≤ OPT (tests/test_capacity_models.py). Added: a changed segment gives every
later block a key the original request never had; and the parsers of untrusted input (responses,
proxy rows, JSONL lines, timestamps) never raise on generated malformed input (docs/reliability.md#bad-input).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lib.capture.jsonl_conversations import read_conversation
from lib.capture.jsonl_files import LogFile, iter_entries
from lib.problems import ProblemCounter
from lib.capture.proxy_reader import count_request_problems, parse_proxy_row_with_facts
from lib.capture.response_parser import KIND_ERROR, KIND_OK, KIND_PENDING, KIND_UNPARSABLE, ResponseFacts, parse_response
from lib.timestamps import parse_timestamp, to_epoch
from tests.test_hashing import common_prefix, make_hasher, seg

FAST = settings(max_examples=100, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
KINDS = {KIND_OK, KIND_ERROR, KIND_PENDING, KIND_UNPARSABLE}

# --- chained hashing ---------------------------------------------------------------------------

WORDS = st.lists(st.sampled_from("abcde"), min_size=1, max_size=6).map(" ".join)


@FAST
@given(segments=st.lists(WORDS, min_size=1, max_size=6), data=st.data(), block_size=st.integers(1, 3))
def test_changing_a_segment_gives_every_later_block_a_new_key(segments: list[str], data: st.DataObject,
                                                             block_size: int) -> None:
    """From the block holding the first changed token on, no key of the changed request exists in the original."""
    changed_at = data.draw(st.integers(0, len(segments) - 1))
    replacement = data.draw(WORDS.filter(lambda text: text != segments[changed_at]))
    edited = [*segments[:changed_at], replacement, *segments[changed_at + 1:]]
    hasher = make_hasher(block_size=block_size)
    original = hasher.hash_request([seg(text) for text in segments]).block_keys
    changed = hasher.hash_request([seg(text) for text in edited]).block_keys
    tokens = [word for text in segments for word in text.split()]
    edited_tokens = [word for text in edited for word in text.split()]
    first_block = common_prefix(tokens, edited_tokens) // block_size
    assert changed[:first_block] == original[:first_block]
    assert not set(changed[first_block:]) & set(original)


# --- parsers never raise -------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
RESPONSE_KEYS = ("statusCode", "headers", "body", "bodyText", "responseTime", "streamingChunks", "isStreaming",
                 "completedAt")
EVENT_TYPES = ("message_start", "content_block_start", "content_block_delta", "message_delta", "message_stop",
               "error", "ping")
MESSAGE_KEYS = ("id", "model", "content", "stop_reason", "usage", "type")
USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens",
              "cache_creation")


def shaped(keys: tuple[str, ...], values: st.SearchStrategy = JSON) -> st.SearchStrategy[dict]:
    """Dicts with the real key names and arbitrary values: reaches the deep type-confusion paths."""
    return st.dictionaries(st.sampled_from(keys), values, max_size=len(keys))


USAGE = shaped(USAGE_KEYS, JSON | st.integers(-5, 10**6))
MESSAGE = shaped(MESSAGE_KEYS, JSON | USAGE)
EVENT = st.builds(lambda kind, extra: {"type": kind, **extra}, st.sampled_from(EVENT_TYPES),
                  shaped(("message", "usage", "delta", "content_block", "index"), JSON | MESSAGE | USAGE))
CHUNK = st.one_of(EVENT.map(lambda event: "data: " + json.dumps(event)), st.text(max_size=20),
                  EVENT.map(lambda event: "data: " + json.dumps(event)[:-1]), JSON)
HEADERS = st.dictionaries(st.sampled_from(("Request-Id", "Server-Timing", "X-Envoy-Upstream-Service-Time",
                                           "X-Stainless-Retry-Count", "X-Claude-Code-Session-Id")),
                          st.lists(st.text(max_size=12) | st.sampled_from(["1", "²", "٣", "dur=1.5"]), max_size=2) | JSON,
                          max_size=5)
RESPONSE = shaped(RESPONSE_KEYS, JSON | MESSAGE | HEADERS | st.lists(CHUNK, max_size=6)
                  | st.sampled_from([200, 529, "200", True]))
COLUMN_TEXT = st.one_of(
    st.none(), st.integers(), st.floats(), st.text(max_size=30), st.binary(max_size=20),
    JSON.map(json.dumps), RESPONSE.map(json.dumps), HEADERS.map(json.dumps), MESSAGE.map(json.dumps),
    # What open_proxy_db's decoder makes of invalid UTF-8: lone surrogates.
    st.binary(max_size=20).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
)


def _check_facts(facts: ResponseFacts) -> None:
    assert facts.kind in KINDS
    assert all(isinstance(problem, str) and problem for problem in facts.problems)
    assert isinstance(facts.stop_reason, str)


@FAST
@given(st.one_of(st.text(), st.binary(), JSON.map(json.dumps), RESPONSE.map(json.dumps)))
def test_parse_response_never_raises(raw: Any) -> None:
    """Any text, bytes, JSON or response-shaped JSON gives facts with named problems, never an exception."""
    _check_facts(parse_response(raw))


@FAST
@given(rowid=st.integers(0, 2**62), values=st.tuples(*([COLUMN_TEXT] * 6)))
@example(rowid=1, values=("id", "2026-03-25T15:42:09-04:00", '{"X-Stainless-Retry-Count":["²"]}', "{}", None, "m"))
def test_parse_proxy_row_never_raises(rowid: int, values: tuple) -> None:
    """Arbitrary column values (types, JSON, surrogates) become a request record with named problems."""
    problems = ProblemCounter()
    request, _ = parse_proxy_row_with_facts((rowid, *values))
    count_request_problems(problems, request.request_id, request.kind, request.problems)
    assert request.kind in KINDS
    assert request.timestamp.tzinfo is not None
    assert all(isinstance(problem, str) and problem for problem in request.problems)


JSONL_ENTRY = shaped(("type", "message", "timestamp", "sessionId", "agentId", "isSidechain", "requestId", "data",
                      "toolUseResult", "parentToolUseID"),
                     JSON | MESSAGE | st.sampled_from(["assistant", "user", "progress", "2026-03-25T19:42:08.300Z"]))
JSONL_LINE = st.one_of(JSONL_ENTRY.map(json.dumps), JSON.map(json.dumps), st.text(max_size=30),
                       JSONL_ENTRY.map(lambda entry: json.dumps(entry)[:-2]))


@FAST
@given(lines=st.lists(JSONL_LINE, max_size=8), raw_tail=st.binary(max_size=12))
def test_jsonl_reading_never_raises(tmp_path: Path, lines: list[str], raw_tail: bytes) -> None:
    """Arbitrary lines (broken, wrongly typed, invalid UTF-8, cut off) are read or counted, never fatal."""
    # One file rewritten per example: the test's tmp_path is shared by all examples.
    path = tmp_path / "11111111-2222-3333-4444-555555555555.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + b"\n" + raw_tail)
    problems = ProblemCounter()
    entries = list(iter_entries(path, problems))
    assert all(isinstance(entry, dict) for _, entry in entries)
    stat = path.stat()
    conversation = read_conversation([LogFile(path, path.stem, "", stat.st_size, stat.st_mtime_ns)], problems)
    assert all(turn.message_id for turn in conversation.turns)


@FAST
@given(st.one_of(st.text(max_size=40), st.from_regex(r"\A\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:?\d\d)?\Z")))
def test_timestamps_parse_to_aware_times_or_none(text: str) -> None:
    """Any string is an aware datetime with an epoch value, or None: never an exception."""
    parsed = parse_timestamp(text)
    assert parsed is None or (parsed.tzinfo is not None and isinstance(to_epoch(parsed), float))
