"""Claude Code's billing header (lib/capture/billing_header.py): dropped before hashing as the API does, so a
value changing on every request moves no hash id; counted in every tool's summary, never shown."""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lib.capture.billing_header import BillingHeaderTally, split_billing_header
from lib.synthetic.example import generate_example
from tests.test_body_layout import TOOLS, assistant, go_json, hasher, user

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "examples" / "generate_example.py"
# The script must import this checkout's lib/, not whichever copy is pip-installed.
SCRIPT_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

HEADER = "x-anthropic-billing-header: cc_version=2.1.83.00c; cc_entrypoint=cli; cch=bcede;"
IDENTITY = {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}
SALT = "billing-header"
# The fixture's stored form of the header, with the per-request parts as groups 2 and 4.
STORED_HEADER = re.compile(r"(x-anthropic-billing-header: cc_version=[0-9.]+\.)([0-9a-f]{3})(; cc_entrypoint=[^;]*; cch=)"
                           r"([0-9a-f]{5})(;)")


def header(tag: str) -> str:
    return f"x-anthropic-billing-header: cc_version=2.1.83.{tag[:3]}; cc_entrypoint=cli; cch={tag[3:8]};"


def system(tag: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": header(tag)}, IDENTITY]


def body(messages: list[Any], system_value: Any, *, system_first: bool = False) -> bytes:
    fields: dict[str, Any] = {"model": "claude-opus-4-6"}
    if system_first:
        fields["system"] = system_value
    fields.update(messages=messages, max_tokens=32000)
    if not system_first:
        fields["system"] = system_value
    return go_json({**fields, "stream": True, "tools": TOOLS})


def per_request_conversation(turns: int, *, system_first: bool = False, as_string: bool = False) -> list[bytes]:
    """A conversation whose header takes a new value on every request, as Claude Code's does."""
    history: list[dict[str, Any]] = []
    bodies = []
    for turn in range(turns):
        history = [user(m["content"][0]["text"]) if m["role"] == "user" else m for m in history]
        history.append(user(f"question {turn}", marked=True))
        tag = hashlib.sha256(str(turn).encode()).hexdigest()
        value = f"{header(tag)}\nYou are Claude Code." if as_string else system(tag)
        bodies.append(body(history, value, system_first=system_first))
        history.append(assistant(f"answer {turn}"))
    return bodies


# --- recognizing and dropping ---------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    HEADER,
    "x-anthropic-billing-header: cc_version=2.1.153.d02; cc_entrypoint=sdk-cli; cch=1a2b3;",
    "x-anthropic-billing-header: cc_version=2.1.37.3a3; cc_entrypoint=claude-vscode;",
    "x-anthropic-billing-header: cc_version=2.1.29.abc;",
])
def test_the_header_block_is_dropped_in_every_shape(line: str) -> None:
    assert split_billing_header([{"type": "text", "text": line}, IDENTITY]) == ([IDENTITY], line)
    # Some clients put it as the first line of a longer block, or of a string system.
    merged = [{"type": "text", "text": f"{line}\nYou are Claude Code.", "cache_control": {"type": "ephemeral"}}]
    assert split_billing_header(merged) == ([IDENTITY], line)
    assert split_billing_header(f"{line}\nYou are Claude Code.") == ("You are Claude Code.", line)
    assert split_billing_header(line) == ("", line)


def test_anything_else_is_left_alone() -> None:
    quoted = f"The header looks like {HEADER}"
    for value in (None, "", [], "You are Claude Code.", [IDENTITY, {"type": "text", "text": HEADER}],
                  [{"type": "text", "text": quoted}], [{"type": "image", "text": HEADER}], [" " + HEADER]):
        assert split_billing_header(value) == (value, None)


def test_bodies_differing_only_in_the_header_hash_alike_and_like_no_header() -> None:
    messages = [user("hello", marked=True)]
    plain = hasher().hash_raw(body(messages, [IDENTITY]))[1]
    for tagged in (body(messages, system("00cbcede")), body(messages, system("5f1a90e2")),
                   body(messages, f"{header('00cbcede')}\nYou are Claude Code.")):
        reason, prompt = hasher().hash_raw(tagged)
        assert reason is None and prompt.billing_header is not None
        if isinstance(json.loads(tagged)["system"], list):
            assert (prompt.hashes, prompt.system_tokens, prompt.breakpoints) == (plain.hashes, plain.system_tokens,
                                                                                  plain.breakpoints)
    assert plain.billing_header is None


def test_a_header_quoted_in_a_message_is_hashed_as_content() -> None:
    quoted = body([user(HEADER, marked=True)], [IDENTITY])
    other = body([user(header("5f1a90e2"), marked=True)], [IDENTITY])
    first, second = hasher().hash_raw(quoted)[1], hasher().hash_raw(other)[1]
    assert first.billing_header is None and first.hashes.block_keys != second.hashes.block_keys


# --- the body-reuse memo -------------------------------------------------------------------------


@pytest.mark.parametrize("system_first, as_string", [(False, False), (True, False), (False, True)],
                         ids=["system after messages", "system before messages", "string system"])
def test_a_per_request_header_keeps_the_body_reuse_and_reports_each_bodys_own_value(system_first: bool,
                                                                                    as_string: bool) -> None:
    bodies = per_request_conversation(6, system_first=system_first, as_string=as_string)
    shared = hasher()
    for raw in bodies:
        result = shared.hash_raw(raw)
        assert result == hasher().hash_raw(raw)
        stored = json.loads(raw)["system"]
        assert result[1].billing_header == (stored.split("\n")[0] if as_string else stored[0]["text"])
    assert shared.reader.reused == 5
    constant = [re.sub(rb"cc_version=[^;]*; cc_entrypoint=cli; cch=[0-9a-f]*;",
                       b"cc_version=2.1.83.000; cc_entrypoint=cli; cch=00000;", raw) for raw in bodies]
    assert [shared.hash_raw(raw)[1].hashes for raw in bodies] == [hasher().hash_raw(raw)[1].hashes for raw in constant]


def test_a_header_of_another_length_or_an_ambiguous_one_is_parsed_whole() -> None:
    history = [user("one", marked=True)]
    first = body(history, system("00cbcede"))
    longer = body(history + [assistant("two"), user("three", marked=True)],
                  [{"type": "text", "text": header("00cbcede") + " extra=1;"}, IDENTITY])
    # Same length, but bytes that are not a header line's (invalid UTF-8 here): the full parse decides.
    broken = first.replace(b"cch=bcede", b"cch=bc\xffde")
    shared = hasher()
    for raw in (first, longer, broken):
        assert shared.hash_raw(raw) == hasher().hash_raw(raw)
    assert shared.reader.reused == 0
    # The same text again outside the messages: its place in the bytes is not certain, no layout.
    twice = go_json({"model": "m", "messages": history, "system": system("00cbcede"),
                     "metadata": {"note": header("00cbcede")}})
    shared = hasher()
    shared.hash_raw(twice)
    assert shared.reader.reuse(twice) is None


# --- the summaries' counts -----------------------------------------------------------------------


def test_the_tally_tells_constant_from_per_request_and_never_shows_a_value() -> None:
    constant, varied, unknown = BillingHeaderTally(), BillingHeaderTally(), BillingHeaderTally()
    for index in range(4):
        constant.add(header("00cbcede"), "parent")
        constant.add(header("b4963377"), "agent")
        varied.add(header(f"{index:08x}"), "parent")
        unknown.add(header(f"{index:08x}"), None)
    constant.add(None, "quota")
    assert constant.describe() == ("Billing header (x-anthropic-billing-header) in 8 of 9 requests, 2 distinct values, "
                                   "constant within each lane; dropped before hashing, as the API does.")
    assert varied.describe() == ("Billing header (x-anthropic-billing-header) in 4 of 4 requests, 4 distinct values, it "
                                 "varied: a new value on 3 of 3 requests that followed another of their lane; dropped "
                                 "before hashing, as the API does.")
    assert "4 distinct values (no two requests of one known lane to compare)" in unknown.describe()
    assert varied.as_dict() == {"name": "x-anthropic-billing-header", "requests": 4, "of_requests": 4,
                                "distinct_values": 4, "varied": True, "changed_within_lane": 3,
                                "compared_within_lane": 3, "handling": "dropped before hashing"}
    assert (constant.as_dict()["varied"], unknown.as_dict()["varied"]) == (False, None)
    assert BillingHeaderTally().describe() == ""


# --- the tools on real captures ------------------------------------------------------------------


def invoke(module: str, *arguments: Any) -> str:
    result = CliRunner().invoke(importlib.import_module(module).main, [str(a) for a in arguments],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def run_pipeline(db: Path, jsonl: Path, out: Path, *extra: str) -> dict[str, Any]:
    """The three hashing tools on one capture: their text summaries and --json summaries."""
    traces = out / "traces"
    builder = ["build_minimal_traces", db, "--jsonl-dir", jsonl, "--output-dir", traces, "--include-subagents",
               "--salt", SALT, *extra]
    validator = ["validate_trace_cache", traces, "--db", db, "--jsonl-dir", jsonl]
    visualizer = ["complete_cache_visualizer", db, "--conversation-id", "combined", "--output", out / "combined.html",
                  "--projects-path", jsonl, "--text-only"]
    runs = {"builder_text": invoke(*builder), "builder": json.loads(invoke(*builder, "--json")),
            "validator_text": invoke(*validator), "validator": json.loads(invoke(*validator, "--json")),
            "visualizer_text": invoke(*visualizer), "visualizer": json.loads(invoke(*visualizer, "--json"))}
    runs["traces"] = {path.name: path.read_bytes() for path in sorted(traces.glob("*.json"))}
    return runs


def per_request_copy(fixture_dir: Path, target: Path) -> Path:
    """A copy of the fixture DB whose headers get a new suffix and `cch` per request (equal length)."""
    db = target / "requests.db"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fixture_dir / "requests.db", db)
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT id, body FROM requests").fetchall()
        changed = 0
        for row_id, stored in rows:
            tag = hashlib.sha256(row_id.encode()).hexdigest()
            new, count = STORED_HEADER.subn(f"\\g<1>{tag[:3]}\\g<3>{tag[3:8]}\\g<5>", stored, count=1)
            connection.execute("UPDATE requests SET body = ? WHERE id = ?", (new, row_id))
            changed += count
    assert (len(rows), changed) == (40, 39)
    return db


@pytest.fixture(scope="module")
def fixture_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    from tests.conftest import FIXTURE_DIR

    if not (FIXTURE_DIR / "requests.db").is_file():
        pytest.skip("../shared/fixtures/real-proxy-fixed is absent")
    root = tmp_path_factory.mktemp("billing-fixture")
    constant_db = root / "constant" / "requests.db"
    constant_db.parent.mkdir()
    shutil.copyfile(FIXTURE_DIR / "requests.db", constant_db)
    per_request_db = per_request_copy(FIXTURE_DIR, root / "per-request")
    return {name: run_pipeline(db, FIXTURE_DIR / "jsonl", db.parent / "out")
            for name, db in (("constant", constant_db), ("per-request", per_request_db))}


def test_fixture_with_a_per_request_header_scores_like_the_constant_one(fixture_runs: dict[str, dict[str, Any]]) -> None:
    figures = {}
    for name, runs in fixture_runs.items():
        overall = runs["validator"]["versus_api"]["overall"]
        report = runs["visualizer"]["reports"][0]
        figures[name] = (overall["sim_hit_blocks"], overall["sim_blocks"], round(overall["sim_pct"], 1),
                         round(overall["api_pct"], 1), round(overall["accuracy_pct"], 1),
                         round(report["api_model_hit_rate"], 3), round(report["ttl_model_hit_rate"], 3))
        assert ("Overall (1 trace(s), 37 reqs, 37 matched): simulated (prefix model) 87.3%, API billed 88.0%, "
                "accuracy 99.2%") in runs["validator_text"]
    # Before the header was dropped, per-request values gave simulated 52.2 % (1,606/3,076 blocks).
    assert figures["per-request"] == figures["constant"] == (2663, 3050, 87.3, 88.0, 99.2, 0.886, 0.859)
    assert fixture_runs["per-request"]["traces"] == fixture_runs["constant"]["traces"]


def test_fixture_summaries_name_the_header_and_that_it_varied(fixture_runs: dict[str, dict[str, Any]]) -> None:
    runs = fixture_runs["per-request"]
    varied = ("Billing header (x-anthropic-billing-header) in 37 of 37 requests, 37 distinct values, it varied: a new "
              "value on 33 of 33 requests that followed another of their lane; dropped before hashing, as the API does.")
    assert runs["builder_text"].rstrip().endswith(varied)
    assert varied in runs["validator_text"].splitlines()
    assert ("Billing header (x-anthropic-billing-header) in 38 of 39 requests, 38 distinct values, it varied: a new "
            "value on 33 of 33 requests") in runs["visualizer_text"]
    counts = {"name": "x-anthropic-billing-header", "requests": 37, "of_requests": 37, "distinct_values": 37,
              "varied": True, "changed_within_lane": 33, "compared_within_lane": 33, "handling": "dropped before hashing"}
    assert runs["builder"]["billing_header"] == runs["validator"]["versus_api"]["billing_header"] == counts
    assert runs["visualizer"]["billing_header"] | {"requests": 37, "of_requests": 37, "distinct_values": 37} == counts
    constant = fixture_runs["constant"]
    assert ("in 37 of 37 requests, 4 distinct values, constant within each lane; dropped before hashing"
            in constant["builder_text"])
    assert constant["builder"]["billing_header"]["varied"] is False


def test_anonymized_output_never_holds_a_header_value(fixture_dir: Path, tmp_path: Path) -> None:
    db = per_request_copy(fixture_dir, tmp_path / "capture")
    out = tmp_path / "out"
    stdout = invoke("build_minimal_traces", db, "--jsonl-dir", fixture_dir / "jsonl", "--output-dir", out,
                    "--include-subagents", "--anonymize", "--format", "both", "--mooncake-sessions", "--json")
    assert json.loads(stdout)["billing_header"]["distinct_values"] == 37
    for text in [stdout] + [path.read_text() for path in out.rglob("*") if path.is_file()]:
        assert "cc_version" not in text and "cch=" not in text


def test_example_with_a_per_request_header_hashes_like_the_constant_one(tmp_path: Path) -> None:
    runs = {}
    for mode in ("constant", "per-request"):
        folder = tmp_path / mode
        if mode == "constant":
            generate_example(folder, variant="fixed", seed=7, scale=0.05)
        else:  # through the generator's command line
            subprocess.run([sys.executable, str(GENERATOR), "--variant", "fixed", "--billing-header", mode,
                            "--scale", "0.05", "--output-dir", str(folder), "-q"], check=True, env=SCRIPT_ENV)
        with sqlite3.connect(folder / "requests.db") as connection:
            headers = [json.loads(stored)["system"][0]["text"] for (stored,) in connection.execute(
                "SELECT body FROM requests ORDER BY rowid") if "system" in json.loads(stored)]
        runs[mode] = (run_pipeline(folder / "requests.db", folder / "jsonl", folder / "out"), headers)
    (constant, constant_headers), (per_request, per_request_headers) = runs["constant"], runs["per-request"]
    assert (len(constant_headers), len(set(constant_headers)), len(set(per_request_headers))) == (91, 2, 91)
    assert per_request["traces"] == constant["traces"]
    for runs_of in (constant, per_request):
        overall = runs_of["validator"]["versus_api"]["overall"]
        assert (overall["sim_hit_blocks"], overall["sim_blocks"], round(overall["sim_pct"], 1),
                round(overall["api_pct"], 1), round(overall["accuracy_pct"], 1)) == (6288, 6867, 91.6, 92.2, 99.3)
    assert per_request["builder"]["billing_header"]["varied"] and not constant["builder"]["billing_header"]["varied"]
