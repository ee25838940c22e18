"""lib/capture/response_parser.py: the `response` column, SSE chunks, and the proxy's misleading synthesized body."""
from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from lib.records import Usage
from lib.capture.response_parser import parse_response, parse_stream_chunks
from tests.proxy_builders import (
    client_exchanges,
    error_response,
    jsonl_output_types,
    manifest_turns,
    message_response,
    sse_chunks,
    streaming_response,
)


def test_non_streaming_message_gives_body_facts_and_timing() -> None:
    facts = parse_response(message_response("msg_A", request_id="req_A", content_types=("thinking", "text", "tool_use", "text")))
    assert facts.kind == "ok"
    assert (facts.status, facts.is_streaming, facts.message_id, facts.model) == (200, False, "msg_A", "claude-opus-4-6")
    assert facts.stop_reason == "tool_use"
    assert facts.output_types == ("thinking", "text", "tool_use")
    assert facts.usage == Usage(input_tokens=1, cache_read_input_tokens=6182, cache_creation_input_tokens=0,
                                output_tokens=227, cache_creation_5m_tokens=0, cache_creation_1h_tokens=0)
    assert facts.api_time_s == pytest.approx(3.548)
    assert facts.ttft_s == pytest.approx(0.650)
    assert facts.anthropic_request_id == "req_A"
    assert facts.completed_at == datetime(2026, 11, 30, 3, 24, 12, tzinfo=timezone.utc)
    assert facts.problems == ()


def test_streaming_facts_come_from_chunks_not_the_synthesized_body() -> None:
    raw = streaming_response("msg_S", block_types=("thinking", "text", "tool_use", "text"), stop_reason="tool_use")
    assert json.loads(raw)["body"]["stop_reason"] == ""
    facts = parse_response(raw)
    assert facts.kind == "ok"
    assert facts.stop_reason == "tool_use"
    assert facts.output_types == ("thinking", "text", "tool_use")
    assert (facts.input_tokens, facts.cache_read_tokens, facts.cache_creation_tokens) == (3, 5000, 100)
    assert (facts.cache_creation_5m_tokens, facts.cache_creation_1h_tokens) == (100, 0)
    assert facts.output_tokens == 42
    assert facts.api_time_s == pytest.approx(4.187)
    assert facts.ttft_s == pytest.approx(1.105)
    assert facts.completed_at == datetime(2026, 11, 29, 19, 20, 54, tzinfo=timezone(timedelta(hours=-8)))


def test_ttft_falls_back_to_envoy_time_then_to_none() -> None:
    assert parse_response(streaming_response("m", server_timing_ms=None, envoy_ms=880)).ttft_s == pytest.approx(0.88)
    assert parse_response(streaming_response("m", server_timing_ms=None, envoy_ms=None)).ttft_s is None


def test_one_broken_chunk_keeps_every_other_fact_and_is_counted() -> None:
    chunks = sse_chunks("msg_B", block_types=("text", "tool_use"), stop_reason="tool_use")
    chunks.insert(2, 'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_de')
    facts = parse_response(streaming_response("msg_B", chunks=chunks))
    assert facts.problems == ("broken_stream_chunk",)
    assert (facts.message_id, facts.stop_reason, facts.output_types) == ("msg_B", "tool_use", ("text", "tool_use"))
    assert facts.output_tokens == 42
    assert parse_stream_chunks(chunks)["broken"] == 1


def test_missing_message_start_uses_body_id_and_delta_usage() -> None:
    facts = parse_response(streaming_response("msg_NS", with_start=False, stop_reason="end_turn"))
    assert facts.problems == ("missing_message_start",)
    assert (facts.message_id, facts.model, facts.stop_reason) == ("msg_NS", "claude-opus-4-6", "end_turn")
    assert (facts.input_tokens, facts.cache_read_tokens, facts.cache_creation_tokens, facts.output_tokens) == (3, 5000, 100, 42)
    assert facts.cache_creation_5m_tokens is None


def test_missing_message_delta_leaves_stop_reason_and_output_unknown() -> None:
    facts = parse_response(streaming_response("msg_ND", with_delta=False))
    assert facts.problems == ("missing_message_delta",)
    assert facts.stop_reason == ""
    assert facts.output_tokens is None
    assert (facts.input_tokens, facts.cache_read_tokens) == (3, 5000)


def test_null_usage_fields_fall_back_to_the_delta_or_stay_unknown() -> None:
    start = {"input_tokens": None, "cache_creation_input_tokens": None, "cache_read_input_tokens": 70, "output_tokens": None}
    delta = {"input_tokens": 9, "output_tokens": None}
    facts = parse_response(streaming_response("msg_N", start_usage=start, delta_usage=delta))
    assert (facts.input_tokens, facts.cache_read_tokens, facts.cache_creation_tokens) == (9, 70, None)
    assert facts.output_tokens is None


def test_error_row_is_an_error_not_a_turn() -> None:
    facts = parse_response(error_response(529, request_id="req_E"))
    assert (facts.kind, facts.status, facts.message_id, facts.anthropic_request_id) == ("error", 529, None, "req_E")
    assert facts.usage is None
    assert facts.api_time_s == pytest.approx(0.603)


def test_mid_stream_error_event_without_delta_is_an_error() -> None:
    chunks = sse_chunks("msg_X", with_delta=False)[:2] + ['data: {"type":"error","error":{"type":"overloaded_error"}}']
    facts = parse_response(streaming_response("msg_X", chunks=chunks))
    assert facts.kind == "error"
    assert "stream_error_event" in facts.problems


@pytest.mark.parametrize(
    ("raw", "kind", "problems"),
    [
        (None, "pending", ()),
        ('{"statusCode":200,"headers":{', "unparsable", ("broken_response_json",)),
        ("[1, 2]", "unparsable", ("response_not_an_object",)),
        ('{"statusCode":200,"bodyText":"<html>","isStreaming":false}', "unparsable", ("no_message_body",)),
        ('{"headers":{},"body":{"id":"msg_1"}}', "unparsable", ("missing_status_code",)),
    ],
)
def test_unusable_responses_are_classified_and_named(raw, kind, problems) -> None:
    facts = parse_response(raw)
    assert (facts.kind, facts.problems, facts.message_id) == (kind, problems, None)


def test_event_lines_kept_by_a_patched_proxy_are_ignored() -> None:
    chunks = []
    for line in sse_chunks("msg_E", block_types=("tool_use",), stop_reason="tool_use"):
        chunks += ["event: " + json.loads(line[len("data: "):])["type"], line]
    facts = parse_response(streaming_response("msg_E", chunks=chunks))
    assert (facts.problems, facts.stop_reason, facts.output_types) == ((), "tool_use", ("tool_use",))


def test_fixture_streaming_rows_match_the_client_ground_truth(fixture_dir) -> None:
    """Stop reasons per manifest.json, output types per the JSONL, stream/status per client_exchanges."""
    turns = manifest_turns(fixture_dir)
    types = jsonl_output_types(fixture_dir)
    exchanges = {e["msg_id"]: e for e in client_exchanges(fixture_dir) if e.get("msg_id")}
    connection = sqlite3.connect(f"file:{fixture_dir / 'requests.db'}?mode=ro", uri=True)
    rows = connection.execute("SELECT response FROM requests ORDER BY rowid").fetchall()
    connection.close()
    facts = [parse_response(raw) for (raw,) in rows]
    streamed = [f for f in facts if f.kind == "ok" and f.is_streaming]
    assert len(streamed) == 38
    synthesized_stops = {json.loads(raw)["body"]["stop_reason"] for (raw,) in rows if '"isStreaming":true' in raw and '"body"' in raw}
    assert synthesized_stops == {""}
    for fact in streamed:
        exchange = exchanges[fact.message_id]
        assert (exchange["stream"], exchange["status"]) == (True, 200)
        if fact.message_id in turns:
            assert fact.stop_reason == turns[fact.message_id]["stop_reason"]
            assert fact.output_types == types[fact.message_id]
        assert fact.stop_reason in {"tool_use", "end_turn"}
        assert fact.output_tokens and fact.output_tokens > 0
    assert sum(1 for f in streamed if f.message_id in turns) == 37
    assert [f.status for f in facts if f.kind == "error"] == [529]
