"""lib/hashing/body_layout.py through RequestHasher.hash_raw: a body read against an earlier body of its
conversation hashes exactly like the same body parsed whole, and the shortcut is really taken."""
from __future__ import annotations

import json
import re
import sqlite3
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.hashing.body_layout import BodyReader, layout_of
from lib.hashing.request_hashing import RequestHasher

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_DB = ROOT.parent / "shared" / "fixtures" / "real-proxy-fixed" / "requests.db"
TOOLS = [{"name": "Read", "description": "Reads a file <path> & returns it", "input_schema": {"type": "object"}}]
SYSTEM = [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}]


class WordTokenizer:
    def encode(self, text: str) -> list[int]:
        return [zlib.crc32(word.encode()) for word in re.findall(r"\w+", text)]


def hasher() -> RequestHasher:
    return RequestHasher(block_size=4, salt="layout", encoder=WordTokenizer(), keep_boundaries=True)


def go_json(value: Any) -> bytes:
    """Compact JSON as the proxy (Go's encoding/json) writes it: raw UTF-8, <>& and U+2028/9 escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for character, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                              ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(character, escape)
    return text.encode()


def body(messages: list[Any], **extra: Any) -> bytes:
    return go_json({"model": "claude-opus-4-6", "messages": messages, "max_tokens": 32000,
                    "system": SYSTEM, "stream": True, "tools": TOOLS, **extra})


def user(text: str, *, marked: bool = False) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if marked:
        block["cache_control"] = {"type": "ephemeral"}
    return {"role": "user", "content": [block]}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text},
                                             {"type": "tool_use", "id": "t1", "name": "Read", "input": {"x": 1.5}}]}


def conversation(turns: int, tag: str = "") -> list[bytes]:
    """Claude Code's pattern: the last user message carries cache_control, moved on each turn."""
    history: list[dict[str, Any]] = []
    bodies = []
    for turn in range(turns):
        history = [user(m["content"][0]["text"]) if m["role"] == "user" else m for m in history]
        history.append(user(f"{tag} question {turn} <b>&amp; \u2028 ünïcode", marked=True))
        bodies.append(body(history))
        history.append(assistant(f"{tag} answer {turn} with 1e21 > 0"))
    return bodies


def assert_same_as_whole(bodies: list[bytes]) -> RequestHasher:
    """Hash `bodies` in order with one hasher and each with a fresh one; return the first."""
    shared = hasher()
    for raw in bodies:
        assert shared.hash_raw(raw) == hasher().hash_raw(raw)
    return shared


def test_a_conversation_is_read_against_its_previous_body():
    bodies = conversation(6)
    shared = assert_same_as_whole(bodies)
    assert shared.reader.reused == 5
    reason, prompt = shared.hash_raw(bodies[-1])
    assert reason is None and len(prompt.breakpoints) == 2 and prompt.all_message_types == ("text", "tool_use")


def test_interleaved_conversations_each_find_their_own_layout():
    lanes = [conversation(5, tag) for tag in ("a", "b", "c")]
    interleaved = [raw for turn in zip(*lanes) for raw in turn]
    # Only the first body is parsed whole: the first body of "b" and "c" shares the tools and
    # system (the bytes around the messages) with "a"'s.
    assert assert_same_as_whole(interleaved).reader.reused == 14


def test_the_shared_message_count_is_found_for_every_split():
    messages = [user(f"message {index}") for index in range(20)]
    base = body(messages)
    for kept in range(1, 21):
        edited = messages[:kept] + [user(f"edited {index}") for index in range(kept, 22)]
        reader = BodyReader()
        layout = layout_of(base, [json.dumps(m, separators=(",", ":")).encode() for m in messages], None)
        reader.remember(layout)
        reuse = reader.reuse(body(edited))
        assert reuse is not None and reuse.kept == kept and reuse.new_messages == edited[kept:]


def test_a_changed_tail_parses_whole_and_a_compaction_reuses_only_the_tail():
    bodies = conversation(3)
    changed_tools = body([user("question 0 <b>&amp; \u2028 ünïcode", marked=True)], tool_choice={"type": "auto"})
    compacted = body([user("summary of everything", marked=True)])
    shared = hasher()
    kept = []
    for raw in bodies + [changed_tools, compacted]:
        reuse = shared.reader.reuse(raw)
        kept.append(None if reuse is None else reuse.kept)
        assert shared.hash_raw(raw) == hasher().hash_raw(raw)
    assert kept == [None, 0, 2, None, 0]


def test_invalid_json_after_the_shared_prefix_is_not_accepted():
    first = body([user("one"), assistant("two")])
    ends_after_one = first.index(b',{"role":"assistant"')
    lone_comma = first[:ends_after_one] + b",]" + first[first.index(b'],"max_tokens"') + 1 :]
    truncated = first.replace(b'"two"}', b'"two"', 1)
    trailing = first.replace(b'],"max_tokens"', b',],"max_tokens"', 1)
    for broken in (lone_comma, truncated, trailing):
        shared = hasher()
        shared.hash_raw(first)
        assert shared.hash_raw(broken) == ("body_unparsable", None)


def test_a_second_messages_key_after_the_array_disables_the_layout():
    history = [user("one"), assistant("two")]
    raw = body(history)[:-1] + b',"messages":' + go_json(history) + b"}"
    longer = body(history + [user("three")])[:-1] + b',"messages":' + go_json(history) + b"}"
    shared = assert_same_as_whole([raw, longer])
    assert shared.reader.reused == 0


def test_pretty_printed_and_invalid_utf8_bodies_still_hash_like_a_whole_parse():
    history = [user("one"), assistant("two")]
    pretty = [json.dumps({"messages": history[:n], "tools": TOOLS}, indent=2).encode() for n in (1, 2)]
    broken_utf8 = [body(history), body(history + [user("three")]).replace(b"three", b"thr\xffee")]
    shared = assert_same_as_whole(pretty + broken_utf8)
    assert shared.reader.reused == 0
    assert hasher().hash_raw(broken_utf8[1])[0] is None


@settings(max_examples=40, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.text(max_size=12)), min_size=1, max_size=12))
def test_any_edit_sequence_hashes_like_a_whole_parse(edits):
    """Appends, truncations and edits of an earlier message, in any order."""
    history = [user("start")]
    bodies = []
    for action, text in edits:
        if action == 0:
            history.append(user(text, marked=True))
        elif action == 1:
            history.append(assistant(text))
        elif action == 2 and len(history) > 1:
            history = history[: len(history) // 2]
        else:
            history[len(history) // 2] = user(text)
        bodies.append(body(history))
    assert_same_as_whole(bodies)


@pytest.mark.skipif(not FIXTURE_DB.is_file(), reason="shared fixture absent")
def test_the_real_proxy_fixture_is_mostly_read_incrementally():
    with sqlite3.connect(f"file:{FIXTURE_DB}?mode=ro", uri=True) as connection:
        bodies = [raw for (raw,) in connection.execute("SELECT CAST(body AS BLOB) FROM requests ORDER BY rowid")]
    assert len(bodies) == 40
    shared = assert_same_as_whole(bodies)
    # Parsed whole: the quota and title calls and the first call of the parent and of the first
    # sub-agent; the other two first calls share the bytes around the messages with it but for
    # their billing headers. Every other body keeps all but the last message of its lane's
    # previous one (whose cache_control moved), the 529's retry all of them.
    assert shared.reader.reused == 36
