"""The example generator writes the real proxy's format (checked against the fixture) deterministically."""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from lib.synthetic.proxy_response import error_response
from lib.synthetic.proxy_db_writer import go_json, proxy_body
from lib.synthetic.example import generate_example
from lib.timestamps import parse_timestamp

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


SMALL = 0.05
TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d([+-]\d\d:\d\d|Z)$")
CREATED_AT_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def _rows(db: Path) -> list[sqlite3.Row]:
    connection = sqlite3.connect(db)
    connection.row_factory = sqlite3.Row
    rows = connection.execute("SELECT rowid, * FROM requests ORDER BY rowid").fetchall()
    connection.close()
    return rows


def _schema(db: Path) -> list[tuple]:
    connection = sqlite3.connect(db)
    schema = connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall()
    connection.close()
    return schema


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small captures of all three variants."""
    folders = {}
    for variant in ("cleaned", "fixed", "old"):
        folder = tmp_path_factory.mktemp(variant)
        generate_example(folder, variant=variant, seed=7, scale=SMALL)
        folders[variant] = folder
    return folders


def _fixture_row(fixture_dir: Path, *, streaming: bool) -> dict:
    """The fixture's first 200 row: streaming with tools (a turn), or non-streaming (the quota probe)."""
    for row in _rows(fixture_dir / "requests.db"):
        response = json.loads(row["response"])
        body = json.loads(row["body"])
        if response["statusCode"] == 200 and response["isStreaming"] == streaming and ("tools" in body) == streaming:
            return {"row": row, "response": response, "body": body}
    raise LookupError("fixture lacks such a row")


def _first_row(db: Path, *, streaming: bool, with_tools: bool = True) -> dict:
    for row in _rows(db):
        response = json.loads(row["response"])
        body = json.loads(row["body"])
        if response["isStreaming"] == streaming and ("tools" in body) == with_tools:
            return {"row": row, "response": response, "body": body}
    raise LookupError("no such row")


def test_shipped_schema_equals_the_real_proxy_schema(fixture_dir: Path) -> None:
    shipped = EXAMPLES_DIR / "requests.db"
    if not shipped.is_file():
        pytest.skip("examples/requests.db not generated yet")
    # The proxy's own table; the example also ships our index tables (see the next test).
    proxy_schema = [entry for entry in _schema(shipped) if entry[2] == "requests"]
    assert proxy_schema == _schema(fixture_dir / "requests.db")


def test_shipped_example_is_indexed_so_the_walkthrough_writes_nothing(tmp_path: Path) -> None:
    """`make example` runs the seed's index commands on examples/requests.db: in a fresh clone (new
    paths, new mtimes) they must find nothing new and leave the tracked file byte-identical."""
    from build_conversation_index import main as build_conversation_index
    from build_message_index import main as build_message_index

    shipped = EXAMPLES_DIR / "requests.db"
    if not shipped.is_file():
        pytest.skip("examples/requests.db not generated yet")
    clone = tmp_path / "clone" / "examples"
    clone.mkdir(parents=True)
    shutil.copyfile(shipped, clone / "requests.db")
    shutil.copytree(EXAMPLES_DIR / "jsonl", clone / "jsonl")
    for path in (clone / "jsonl").iterdir():  # a checkout writes new mtimes
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    before = (clone / "requests.db").read_bytes()
    runner = CliRunner()
    first = runner.invoke(build_message_index, [str(clone / "requests.db")])
    assert first.exit_code == 0 and "up to date: nothing new to do" in first.output
    second = runner.invoke(build_conversation_index, [str(clone / "requests.db"), "--projects-path", str(clone / "jsonl")])
    assert second.exit_code == 0 and "1 of them identical to the index (nothing written)" in second.output
    assert (clone / "requests.db").read_bytes() == before


def test_generated_schema_equals_the_real_proxy_schema(fixture_dir: Path, variants: dict[str, Path]) -> None:
    for folder in variants.values():
        assert _schema(folder / "requests.db") == _schema(fixture_dir / "requests.db")


def test_column_formats_match_the_proxy(variants: dict[str, Path]) -> None:
    for folder in variants.values():
        for row in _rows(folder / "requests.db"):
            assert re.fullmatch(r"[0-9a-f]{16}", row["id"])
            assert TIMESTAMP_RE.match(row["timestamp"])
            assert CREATED_AT_RE.match(row["created_at"])
            local = parse_timestamp(row["timestamp"])
            assert local.utcoffset() == timedelta(hours=-4)
            assert local.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") == row["created_at"]
            assert (row["method"], row["endpoint"], row["prompt_grade"]) == ("POST", "/v1/messages", None)
            assert row["model"] == row["original_model"] == row["routed_model"]
            assert row["content_type"] == "application/json"
            assert TIMESTAMP_RE.match(json.loads(row["response"])["completedAt"])


def test_request_headers_have_the_fixture_names(fixture_dir: Path, variants: dict[str, Path]) -> None:
    expected = list(json.loads(_rows(fixture_dir / "requests.db")[5]["headers"]))
    for row in _rows(variants["old"] / "requests.db"):
        headers = json.loads(row["headers"])
        assert list(headers) == expected
        assert headers["X-Api-Key"][0].startswith("sha256:")
        assert headers["User-Agent"][0].startswith("claude-cli/2.1.")
        assert row["user_agent"] == headers["User-Agent"][0]


@pytest.mark.parametrize("streaming", [True, False])
def test_response_layout_equals_the_fixture(fixture_dir: Path, variants: dict[str, Path], streaming: bool) -> None:
    real = _fixture_row(fixture_dir, streaming=streaming)
    ours = _first_row(variants["old"] / "requests.db", streaming=streaming, with_tools=streaming)
    assert list(ours["response"]) == list(real["response"])
    assert list(ours["response"]["headers"]) == list(real["response"]["headers"])
    assert list(ours["response"]["body"]) == list(real["response"]["body"])
    if streaming:
        # The synthesized usage omits zero cache fields, so compare the order of the keys present.
        order = ["input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"]
        assert list(ours["response"]["body"]["usage"]) == [key for key in order if key in ours["response"]["body"]["usage"]]
        assert list(real["response"]["body"]["usage"]) == [key for key in order if key in real["response"]["body"]["usage"]]
    else:
        assert list(ours["response"]["body"]["usage"]) == list(real["response"]["body"]["usage"])


def test_request_body_key_order_equals_the_fixture(fixture_dir: Path, variants: dict[str, Path]) -> None:
    real = _fixture_row(fixture_dir, streaming=True)["body"]
    ours = _first_row(variants["fixed"] / "requests.db", streaming=True)["body"]
    assert list(ours) == list(real)
    assert [list(block) for block in ours["system"]] == [list(block) for block in real["system"]]
    assert list(ours["tools"][0]) == list(real["tools"][0]) == ["name", "description", "input_schema"]
    assert list(ours["tools"][0]["input_schema"]) == list(real["tools"][0]["input_schema"])


def test_sse_chunks_have_the_fixture_shapes(fixture_dir: Path, variants: dict[str, Path]) -> None:
    def shapes(chunks: list[str]) -> set[tuple]:
        found = set()
        for chunk in chunks:
            assert chunk.startswith("data: ")
            event = json.loads(chunk[6:])
            found.add((event["type"], (event.get("delta") or {}).get("type"), (event.get("content_block") or {}).get("type"),
                       tuple(event)))
        return found

    real = set()
    for row in _rows(fixture_dir / "requests.db"):
        real |= shapes(json.loads(row["response"]).get("streamingChunks") or [])
    ours = set()
    for row in _rows(variants["fixed"] / "requests.db"):
        response = json.loads(row["response"])
        chunks = response.get("streamingChunks") or []
        ours |= shapes(chunks)
        if chunks:
            assert 'data: {"type": "ping"}' in chunks
            start = json.loads(chunks[0][6:])["message"]
            assert list(start) == ["model", "id", "type", "role", "content", "stop_reason", "stop_sequence", "usage"]
    assert ours <= real
    assert ("content_block_delta", "signature_delta", None, ("type", "index", "delta")) in ours


def test_fixed_variant_body_is_the_proxy_synthesis(variants: dict[str, Path]) -> None:
    stop_reasons = set()
    for row in _rows(variants["fixed"] / "requests.db"):
        response = json.loads(row["response"])
        if not response["isStreaming"]:
            assert json.loads(row["body"])["max_tokens"] == 1
            continue
        body = response["body"]
        assert body["stop_reason"] == ""
        assert list(body) == sorted(body)
        delta = json.loads(response["streamingChunks"][-2][6:])
        assert delta["type"] == "message_delta"
        stop_reasons.add(delta["delta"]["stop_reason"])
        texts = [json.loads(chunk[6:])["delta"]["text"] for chunk in response["streamingChunks"]
                 if '"text_delta"' in chunk]
        assert body["content"] == ([{"type": "text", "text": "".join(texts)}] if texts else None)
        assert body["usage"]["output_tokens"] == delta["usage"]["output_tokens"]
        assert all(value for key, value in body["usage"].items() if key.startswith("cache_"))
    assert stop_reasons == {"tool_use", "end_turn"}


def test_old_variant_has_every_turn_twice(variants: dict[str, Path]) -> None:
    rows = _rows(variants["old"] / "requests.db")
    streaming = [row for row in rows if json.loads(row["body"]).get("stream")]
    replays = [row for row in rows if not json.loads(row["body"]).get("stream") and json.loads(row["body"])["max_tokens"] != 1]
    assert len(streaming) == len(replays) == (len(rows) - 1) // 2
    for replay in replays:
        body = json.loads(replay["body"])
        at = parse_timestamp(replay["timestamp"])
        twins = [row for row in streaming if json.loads(row["body"])["messages"] == body["messages"]
                 and timedelta(0) <= at - parse_timestamp(row["timestamp"]) <= timedelta(seconds=30)]
        assert len(twins) == 1
        assert json.loads(twins[0]["body"])["max_tokens"] in (32000, 512)
        assert body["max_tokens"] in (21333, 512)


def test_cleaned_variant_keeps_only_non_streaming_rows(variants: dict[str, Path]) -> None:
    rows = _rows(variants["cleaned"] / "requests.db")
    assert len(rows) == 92
    assert not any(json.loads(row["response"])["isStreaming"] for row in rows)
    assert sum(1 for row in rows if json.loads(row["body"])["messages"] == [{"role": "user", "content": "quota"}]) == 1


def test_generation_is_deterministic(tmp_path: Path, variants: dict[str, Path]) -> None:
    generate_example(tmp_path, variant="old", seed=7, scale=SMALL)
    assert (tmp_path / "requests.db").read_bytes() == (variants["old"] / "requests.db").read_bytes()
    ours = sorted(path.name for path in (tmp_path / "jsonl").iterdir())
    assert ours == sorted(path.name for path in (variants["old"] / "jsonl").iterdir())
    for name in ours:
        assert (tmp_path / "jsonl" / name).read_bytes() == (variants["old"] / "jsonl" / name).read_bytes()


def _response_message_ids(db: Path) -> set[str]:
    ids = set()
    for row in _rows(db):
        response = json.loads(row["response"])
        ids.add(response["body"]["id"])
    return ids


def _jsonl_assistant_ids(folder: Path) -> list[str]:
    ids = []
    for path in folder.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry["type"] == "assistant":
                ids.append(entry["message"]["id"])
    return ids


@pytest.mark.parametrize("variant", ["cleaned", "fixed", "old"])
def test_every_jsonl_message_id_is_in_the_db(variants: dict[str, Path], variant: str) -> None:
    ids = _jsonl_assistant_ids(variants[variant] / "jsonl")
    assert len(ids) == 90
    assert set(ids) <= _response_message_ids(variants[variant] / "requests.db")


def test_shipped_example_is_small_and_linked() -> None:
    db = EXAMPLES_DIR / "requests.db"
    if not db.is_file():
        pytest.skip("examples/requests.db not generated yet")
    assert db.stat().st_size < 20 * 1024 * 1024
    ids = _jsonl_assistant_ids(EXAMPLES_DIR / "jsonl")
    assert len(ids) == 90 and set(ids) <= _response_message_ids(db)


def test_subagents_start_in_one_second_with_the_seed_request_counts(variants: dict[str, Path]) -> None:
    firsts, counts = [], []
    for path in sorted((variants["fixed"] / "jsonl").glob("agent-*.jsonl")):
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assistants = [line for line in lines if line["type"] == "assistant"]
        counts.append(len(assistants))
        firsts.append(lines[0]["timestamp"][:19])
    assert sorted(counts) == [14, 21, 23, 26]
    assert len(set(firsts)) == 1


def test_go_json_escapes_html_but_keeps_unicode() -> None:
    assert go_json({"a": "<x> & \u2192 é"}) == '{"a":"\\u003cx\\u003e \\u0026 \u2192 é"}'


def test_proxy_body_reserializes_like_the_proxy() -> None:
    client = {"metadata": {"user_id": "u"}, "stream": False, "thinking": {"type": "adaptive"}, "max_tokens": 5,
              "messages": [{"content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}], "role": "user"}],
              "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
              "tools": [{"name": "T", "description": "d", "cache_control": {"type": "ephemeral"},
                         "input_schema": {"$schema": "x", "type": "object", "properties": {"b": {"type": "string"}},
                                          "additionalProperties": False}}],
              "model": "m"}
    assert go_json(proxy_body(client)) == (
        '{"model":"m","messages":[{"role":"user","content":[{"cache_control":{"type":"ephemeral"},"text":"hi",'
        '"type":"text"}]}],"max_tokens":5,"system":[{"text":"s","type":"text","cache_control":{"type":"ephemeral"}}],'
        '"tools":[{"name":"T","description":"d","input_schema":{"type":"object","properties":{"b":{"type":"string"}}}}]}')


def test_stored_bodies_never_hold_raw_html_characters(variants: dict[str, Path]) -> None:
    for row in _rows(variants["fixed"] / "requests.db"):
        assert not set("<>&") & set(row["body"])
        assert "\\u003c" in row["body"] or "tools" not in json.loads(row["body"])


def test_timestamps_use_the_proxy_offset_and_start_in_march(variants: dict[str, Path]) -> None:
    first = _rows(variants["cleaned"] / "requests.db")[0]["timestamp"]
    assert parse_timestamp(first) > datetime(2026, 3, 25, tzinfo=timezone.utc)
    assert first.startswith("2026-03-25T15:")


def test_error_rows_have_the_fixture_layout(fixture_dir: Path) -> None:
    real = next(json.loads(row["response"]) for row in _rows(fixture_dir / "requests.db")
                if json.loads(row["response"])["statusCode"] == 529)
    ours = json.loads(error_response(status=529, request_id="req_011CX", started_at=datetime(2026, 3, 25, tzinfo=timezone.utc),
                                     response_time_ms=603, rng=random.Random(1), is_streaming=True,
                                     utc_offset=timedelta(hours=-4)))
    assert list(ours) == list(real)
    assert list(ours["headers"]) == list(real["headers"])
    assert json.loads(ours["bodyText"])["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize("option", ["--scale", "--api-cache-ttl"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_generator_refuses_non_finite_numbers(option: str, value: str, tmp_path: Path) -> None:
    from examples.generate_example import main as generate

    result = CliRunner().invoke(generate, [option, value, "--output-dir", str(tmp_path)])
    # inf is out of --scale's range before it is non-finite; nan passes every range comparison.
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output
    assert not (tmp_path / "requests.db").exists()
