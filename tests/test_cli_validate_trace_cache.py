"""validate_trace_cache.py as a user runs it: the seed command, broken traces, gates, exit codes (docs/cli.md#exit-codes,
docs/validate.md)."""
from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from build_minimal_traces import main as build_main
from lib.synthetic.example import generate_example
from tests.validate_inputs import SEED_BUILD_OPTIONS, build_example_traces, published_corpus
from validate_trace_cache import main

SEED_ARGS = ["examples/traces/", "--db", "examples/requests.db", "--jsonl-dir", "examples/jsonl/"]
BLOCK = re.compile(
    r"^(?P<id>\S+) \((?P<n>\d+) reqs, (?P<m>\d+) matched\)\n"
    r"  Simulated \(prefix model, parent and sub-agent requests, blocks\): (?P<sim>[\d.]+)% \(([\d,]+)/([\d,]+) blocks\)\n"
    r"  API \(billed cache_read / prompt tokens\): (?P<api>[\d.]+)% \(([\d,]+)/([\d,]+) tokens\)\n"
    r"  Accuracy \(1 − \|simulated − API\| / API\): (?P<acc>[\d.]+)%$",
    re.MULTILINE,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_example_traces(tmp_path_factory.mktemp("built"))


@pytest.fixture
def workdir(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of examples/ (DB, JSONL, traces), and the current directory set to it."""
    shutil.copytree(built / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_help_shows_the_seed_command_and_common_options():
    code, out, _ = invoke("--help")
    assert code == 0
    assert "python3 validate_trace_cache.py examples/traces/" in out
    assert "--db examples/requests.db" in out and "--jsonl-dir examples/jsonl/" in out
    for option in ("--json", "--quiet", "--progress", "--debug", "--min-accuracy", "--max-error", "--csv"):
        assert option in out


def test_seed_command_prints_the_block_per_trace(workdir: Path):
    code, out, err = invoke(*SEED_ARGS)
    assert code == 0, err
    assert out.startswith("Schema check: 1 native file(s), 0 Mooncake file(s), 90 requests: no problems.")
    blocks = list(BLOCK.finditer(out))
    assert [b["id"] for b in blocks] == ["trace_0001"]
    for block in blocks:
        assert block["n"] == block["m"] == "90"
        # The cleaned example's API side is the estimate of docs/validate.md (its replays read their twins' writes).
        assert (block["sim"], block["api"], block["acc"]) == ("89.6", "89.0", "99.3")
    assert "Statistics (1 trace(s), parent requests only)" in out
    assert re.search(r"^cache_read +[\d,]+ +[\d,]+ +[\d.]+% +[\d.]+%", out, re.MULTILINE)
    assert "\nOverall (1 trace(s), 90 reqs, 90 matched): simulated (prefix model) 89.6%, API billed 89.0%, " \
           "accuracy 99.3%\n" in out


def test_every_hit_rate_says_what_it_measures(workdir: Path):
    code, out, _ = invoke(*SEED_ARGS)
    assert code == 0
    assert "Hit rates here: the trace prefix model (a request's leading blocks found in its previous request), " \
           "in blocks, parent requests only" in out
    assert "  Simulated (prefix model, parent and sub-agent requests, blocks): 89.6% (42,568/47,504 blocks)" in out
    assert "  API (billed cache_read / prompt tokens): 89.0% (3,181,137/3,573,645 tokens)" in out
    assert "API cache model hit rate (predicted cache_read / prompt, API tokens): 89.0% (billed 89.0%)" in out


def test_a_far_off_predicted_total_comes_with_its_reason(workdir: Path):
    code, out, _ = invoke(*SEED_ARGS)
    assert code == 0
    assert re.search(r"^input +\d+ +\d+ +[\d.]+% +[\d.]+% +0 +13,030$", out, re.MULTILINE)
    reason = next(line for line in out.splitlines() if line.startswith("Why input is predicted 0 but billed 13,030: "))
    assert "hashing places at the end of the message carrying it" in reason
    assert reason.endswith("The largest gap is one request (proxy row 90): +12,761 of the +13,030 tokens.")
    assert not any(line.startswith(("Why cache_read", "Why cache_creation")) for line in out.splitlines())
    code, out, _ = invoke(*SEED_ARGS, "--json")
    assert json.loads(out)["versus_api"]["api_model"]["totals_reasons"][0].startswith("input is predicted 0")


def test_one_trace_table_has_one_value_column(workdir: Path):
    code, out, _ = invoke(*SEED_ARGS)
    assert code == 0
    lines = out.splitlines()
    header = lines.index("Statistics (1 trace(s), parent requests only)") + 1
    assert lines[header].split() == ["Metric", "Value"]
    assert lines[header + 1].split() == ["Requests", "per", "trace", "6"]
    assert re.search(r"^Hit rate, conversation only \(%\) +77\.0$", out, re.MULTILINE)
    # The pooled rows are distributions over requests: they keep their columns.
    assert lines[lines.index("Pooled over all parent requests:") + 1].split() == ["Min", "P25", "Median", "P75", "Max", "Mean"]


def test_format_both_counts_requests_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    build_example_traces(tmp_path, "--format", "both")
    monkeypatch.chdir(tmp_path)
    code, out, _ = invoke("examples/traces/")
    assert code == 0
    assert out.startswith("Schema check: 1 native file(s), 1 Mooncake file(s), 90 requests and 90 Mooncake lines: "
                          "no problems.")
    assert "(90 requests and 90 Mooncake lines): no schema problems" in out


def test_json_and_csv_outputs(workdir: Path):
    code, out, _ = invoke(*SEED_ARGS, "--json", "--csv", "stats.csv")
    assert code == 0
    report = json.loads(out)
    assert report["schema"]["problems"] == []
    assert report["versus_api"]["overall"]["matched"] == 90
    rows = list(csv.DictReader((workdir / "stats.csv").open()))
    assert rows[0]["metric"] == "Requests per trace" and float(rows[0]["median"]) == 6


def test_stats_and_schema_work_without_a_db(workdir: Path):
    code, out, _ = invoke("examples/traces/")
    assert code == 0
    assert "Statistics (1 trace(s)" in out and "Simulated:" not in out


@pytest.mark.parametrize(("gate", "code", "reason"), [
    (["--min-accuracy", "50"], 0, None),
    (["--min-accuracy", "100"], 1, r"Check failed: overall accuracy [\d.]+% < --min-accuracy 100%"),
    (["--max-error", "50"], 0, None),
    (["--max-error", "0"], 1, r"Check failed: API model median \w+ error [\d.]+% > --max-error 0%"),
])
def test_accuracy_and_error_gates(workdir: Path, gate: list[str], code: int, reason: str):
    exit_code, _, err = invoke(*SEED_ARGS, *gate)
    assert exit_code == code
    if reason:
        assert re.fullmatch(reason + "\n", err)


def test_gate_without_db_and_missing_traces_exit_2(workdir: Path):
    code, _, err = invoke("examples/traces/", "--min-accuracy", "90")
    assert (code, err) == (2, "Error: --min-accuracy needs --db or --jsonl-dir, --max-error needs --db\n")
    code, _, err = invoke("nowhere/")
    assert (code, err) == (2, "Error: nowhere/: no such file or directory\n")


def _edit(workdir: Path, change: Callable[[dict], None]) -> None:
    path = workdir / "examples" / "traces" / "trace_0001.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def _copy_trace(workdir: Path, name: str, change: Callable[[dict], None]) -> None:
    traces = workdir / "examples" / "traces"
    document = json.loads((traces / "trace_0001.json").read_text())
    change(document)
    (traces / name).write_text(json.dumps(document))


def _marker_first(document: dict) -> None:
    index = next(i for i, r in enumerate(document["requests"]) if r["type"] == "subagent")
    document["requests"].insert(0, document["requests"].pop(index))


def _ceil_violation(workdir: Path) -> None:
    (workdir / "examples" / "traces" / "mooncake_trace.jsonl").write_text(
        '{"timestamp": 0, "input_length": 1000, "output_length": 5, "hash_ids": [1, 2]}\n'
        '{"timestamp": 9, "input_length": 1025, "output_length": 5, "hash_ids": [1, 2]}\n')


def _prefix_over(lane: dict, block_size: int = 64) -> None:
    """The lane's tools + system prefix one token past its first request's hash blocks."""
    lane["tool_tokens"] = len(lane["requests"][0]["hash_ids"]) * block_size - lane["system_tokens"] + 1


BREAKAGES = {
    "unknown field": (lambda w: _edit(w, lambda d: d["requests"][1].update(extra=1)),
                      "trace_0001.json: requests[1]: unknown field `extra`"),
    "null stop": (lambda w: _edit(w, lambda d: d["requests"][2].update(stop=None)),
                  "trace_0001.json: requests[2]: `stop` is null"),
    "marker first": (lambda w: _edit(w, _marker_first),
                     "trace_0001.json: requests[0]: first entry is a sub-agent marker"),
    "hash_ids length": (lambda w: _edit(w, lambda d: d["requests"][0]["hash_ids"].pop()),
                        "trace_0001.json: requests[0]: len(hash_ids) = 330 but in // block_size = 331"),
    "parent prefix over": (lambda w: _edit(w, _prefix_over),
                           "trace_0001.json: requests[0]: tools + system prefix needs ceil((16022 + 5163) / 64) = 332 "
                           "hash blocks but the lane's first request has 331"),
    "marker prefix over": (lambda w: _edit(w, lambda d: _prefix_over(d["requests"][4])),
                           "trace_0001.json: requests[4].requests[0]: tools + system prefix needs "
                           "ceil((8460 + 2613) / 64) = 174 hash blocks but the lane's first request has 173"),
    "duplicate id": (lambda w: _copy_trace(w, "trace_copy.json", lambda d: d["requests"].pop()),
                     "trace_copy.json: top level: duplicate trace id `trace_0001` (also in trace_0001.json)"),
    "broken JSON": (lambda w: (w / "examples" / "traces" / "broken.json").write_text('{"id": "x", "requests": ['),
                    "broken.json: file: not valid JSON"),
    "Mooncake ceil": (_ceil_violation, "mooncake_trace.jsonl: line 2: len(hash_ids) = 2 but ceil(input_length / 512) = 3"),
}


@pytest.mark.parametrize("name", list(BREAKAGES))
def test_broken_traces_name_file_request_and_rule_and_exit_1(workdir: Path, name: str):
    breakage, expected = BREAKAGES[name]
    breakage(workdir)
    code, out, err = invoke("examples/traces/")
    assert code == 1
    assert f"\n  {expected}" in out
    assert err.startswith("Check failed: ") and "schema error(s), first: " in err and err.count("\n") == 1


def test_prefix_rule_is_aiperfs_ceil_on_each_lanes_first_request(workdir: Path):
    # AIPerf's weka_trace takes ceil((tool_tokens + system_tokens) / block_size) blocks of the first
    # request: a prefix filling its 331 blocks exactly loads, one token more does not.
    _edit(workdir, lambda d: d.update(tool_tokens=331 * 64 - d["system_tokens"]))
    code, out, _ = invoke("examples/traces/", "--json")
    assert (code, json.loads(out)["schema"]["rules"]) == (0, {})
    _edit(workdir, lambda d: d.update(tool_tokens=d["tool_tokens"] + 1))
    _edit(workdir, lambda d: [_prefix_over(d["requests"][i]) for i in (3, 6)])
    code, out, _ = invoke("examples/traces/", "--json")
    schema = json.loads(out)["schema"]
    assert code == 1
    assert [(p["problem"].split(": ")[1], p["rule"]) for p in schema["problems"]] == [
        (where, "prefix_exceeds_first_request")
        for where in ("requests[0]", "requests[3].requests[0]", "requests[6].requests[0]")]
    assert schema["loads_in"] == {"kv-cache-tester": 1, "AIPerf weka_trace": 0}
    _, out, _ = invoke("examples/traces/")
    assert "\nLoads in: kv-cache-tester 1/1, AIPerf weka_trace 0/1 file(s)\n" in out


def test_prefix_rule_reads_the_earliest_request_and_relative_subagent_times(workdir: Path):
    def shuffle(document: dict) -> None:
        marker = document["requests"][3]
        _prefix_over(marker)
        # The first request moved last in the list (a `t_decreases` error): AIPerf still replays it
        # first (by `t`, read from the spawn when before the marker's), so the rule is broken there.
        marker["requests"].append(marker["requests"].pop(0))
        marker["requests"][-1]["t"] = 0.0

    _edit(workdir, shuffle)
    code, out, _ = invoke("examples/traces/", "--json")
    problems = json.loads(out)["schema"]["problems"]
    assert code == 1
    assert [(p["problem"].split(": ")[1], p["rule"]) for p in problems if p["severity"] == "error"] == [
        ("requests[3].requests[20]", "t_decreases"), ("requests[3].requests[20]", "prefix_exceeds_first_request")]


FIXTURE = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "real-proxy-fixed"


def _lane_margins(document: dict) -> list[int]:
    """Per lane (parent, then markers): the first request's hash blocks minus the declared prefix's."""
    lanes = [document] + [entry for entry in document["requests"] if entry["type"] == "subagent"]
    margins = []
    for lane in lanes:
        first = next(entry for entry in lane["requests"] if entry["type"] != "subagent")
        prefix = lane["tool_tokens"] + lane["system_tokens"]
        margins.append(len(first["hash_ids"]) - -(-prefix // document["block_size"]))
    return margins


# Our outputs' first requests often hold no more blocks than their prefix needs: the rule's boundary.
PREFIX_MARGINS = {"fixture": [3, 0, 0, 0], "jsonl-only": [0, 0, 0, 0, 0], "db-only": [6, 0, 0, 0, 0]}


@pytest.mark.parametrize("route", list(PREFIX_MARGINS))
def test_our_outputs_fit_the_prefix_rule_at_its_boundary(tmp_path: Path, route: str):
    if route == "fixture":
        if not (FIXTURE / "requests.db").is_file():
            pytest.skip("../shared/fixtures/real-proxy-fixed is absent")
        inputs = [str(FIXTURE / "requests.db"), "--jsonl-dir", str(FIXTURE / "jsonl")]
    else:
        generate_example(tmp_path / "capture", variant="fixed", scale=0.05)
        inputs = (["--jsonl-dir", str(tmp_path / "capture" / "jsonl")] if route == "jsonl-only" else
                  [str(tmp_path / "capture" / "requests.db"), "--db-only"])
    if route != "jsonl-only":  # the proxy DB stays untouched
        inputs += ["--index-db", str(tmp_path / "index.db")]
    traces = tmp_path / "traces"
    built = CliRunner().invoke(build_main, [*inputs, "--output-dir", str(traces), *SEED_BUILD_OPTIONS, "-q"])
    assert built.exit_code == 0, built.output
    path = traces / "trace_0001.json"
    code, out, err = invoke(str(traces), "--json")
    assert code == 0, err
    assert json.loads(out)["schema"]["errors"] == 0
    document = json.loads(path.read_text())
    assert _lane_margins(document) == PREFIX_MARGINS[route]
    tightest = PREFIX_MARGINS[route].index(0)
    lane = document if tightest == 0 else [e for e in document["requests"] if e["type"] == "subagent"][tightest - 1]
    _prefix_over(lane)
    path.write_text(json.dumps(document))
    code, out, _ = invoke(str(traces), "--json")
    schema = json.loads(out)["schema"]
    assert (code, schema["errors"], schema["rules"]["prefix_exceeds_first_request"]["count"]) == (1, 1, 1)
    assert schema["loads_in"]["AIPerf weka_trace"] == 0


WARNINGS = {
    "duplicate trace": (lambda w: _copy_trace(w, "trace_0002.json", lambda d: d.update(id="trace_0002")),
                        "duplicate_request_list",
                        "trace_0002.json: requests: duplicate trace: identical request list to trace_0001.json"),
    "missing api_time": (lambda w: _edit(w, lambda d: d["requests"][1].pop("api_time")), "missing_api_time",
                         "trace_0001.json: requests[1]: missing optional `api_time`"),
    "null counter": (lambda w: _edit(w, lambda d: d["requests"][3].update(duration_ms=None)), "null_marker_counter",
                     "trace_0001.json: requests[3]: `duration_ms` is null"),
}


@pytest.mark.parametrize("name", list(WARNINGS))
def test_warnings_are_counted_per_rule_and_fail_only_under_strict(workdir: Path, name: str):
    breakage, rule, expected = WARNINGS[name]
    breakage(workdir)
    code, out, _ = invoke("examples/traces/", "--json")
    schema = json.loads(out)["schema"]
    assert code == 0
    assert (schema["errors"], schema["warnings"]) == (0, 1)
    assert schema["rules"][rule]["count"] == 1 and schema["rules"][rule]["first"] == expected
    code, _, err = invoke("examples/traces/", "--strict")
    assert code == 1 and err == f"Check failed: 1 schema warning(s) under --strict, first: {expected}\n"


def test_published_format_corpus_loads_with_warnings_counted_per_rule(tmp_path: Path):
    corpus = published_corpus(tmp_path / "corpus")
    code, out, err = invoke(str(corpus), "--json")
    assert code == 0, err
    schema = json.loads(out)["schema"]
    assert (schema["native_files"], schema["errors"], schema["warnings"]) == (4, 0, 16)
    assert {rule: entry["count"] for rule, entry in schema["rules"].items()} == {
        "missing_api_time": 5, "missing_ttft": 4, "missing_think_time": 3, "null_marker_counter": 3,
        "duplicate_request_list": 1,
    }
    assert schema["loads_in"] == {"kv-cache-tester": 4, "AIPerf weka_trace": 4}
    code, out, _ = invoke(str(corpus))
    assert out.startswith("Schema check: 4 native file(s), 0 Mooncake file(s), 395 requests: 0 error(s), 16 warning(s)\n"
                          "  warning missing_api_time              5  ")
    code, _, err = invoke(str(corpus), "--strict")
    assert code == 1 and err.startswith("Check failed: 16 schema warning(s) under --strict, first: ")


@pytest.mark.parametrize("token_count", ["tokenizer", "api"])
def test_our_outputs_have_no_errors_or_warnings_and_load_everywhere(tmp_path: Path, token_count: str):
    workdir = build_example_traces(tmp_path, "--format", "both", "--mooncake-sessions", "--token-count", token_count)
    code, out, err = invoke(str(workdir / "examples" / "traces"), "--json", "--strict")
    assert code == 0, err
    schema = json.loads(out)["schema"]
    assert (schema["errors"], schema["warnings"], schema["rules"]) == (0, 0, {})
    assert schema["loads_in"] == {"kv-cache-tester": 1, "AIPerf weka_trace": 1, "AIPerf mooncake_trace": 2}
    assert (schema["session_rows_checked"], schema["session_rows_unchecked"]) == (90, 0)


def test_global_scope_loads_in_kv_cache_tester_only(tmp_path: Path):
    workdir = build_example_traces(tmp_path, "--global-hash-ids")
    code, out, _ = invoke(str(workdir / "examples" / "traces"))
    assert code == 0
    assert ("  warning global_hash_id_scope          1  loads in kv-cache-tester only: AIPerf's weka_trace and "
            "Dynamo's replay require `local`\n") in out
    assert "\nLoads in: kv-cache-tester 1/1, AIPerf weka_trace 0/1 file(s)\n" in out
    code, _, _ = invoke(str(workdir / "examples" / "traces"), "--strict")
    assert code == 1


def test_session_rows_with_the_previous_answer_in_their_delta_are_errors(tmp_path: Path):
    # The rows written before issue 13: input_length = in_i - in_(i-1), which AIPerf replays on
    # top of the previous answer as well. Rebuilt here from the native trace beside the file.
    traces = build_example_traces(tmp_path, "--format", "both", "--mooncake-sessions") / "examples" / "traces"
    path = traces / "mooncake_sessions.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    previous: dict[str, int] = {}
    replayed: dict[str, int] = {}
    for row in rows:
        # Recover each row's whole prompt from the correct file, then write the old delta.
        session = row["session_id"]
        whole = row["input_length"] if "timestamp" in row else replayed[session] + previous[session] + row["input_length"]
        old_delta = whole - replayed[session] if "delay" in row else whole
        replayed[session], previous[session] = whole, row["output_length"]
        row["input_length"] = old_delta
        row["hash_ids"] = row["hash_ids"][:1] * -(-old_delta // 512)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, out, err = invoke(str(traces), "--json")
    schema = json.loads(out)["schema"]
    assert code == 1
    assert schema["rules"]["session_arithmetic"]["count"] == 32
    assert schema["rules"]["session_arithmetic"]["first"] == (
        "mooncake_sessions.jsonl: line 88: session `trace_0001` replays 38,723 prompt tokens, the trace's request has "
        "37,814 (+2.4%)")
    assert schema["loads_in"]["AIPerf mooncake_trace"] == 1


def test_workers_give_the_same_report(workdir: Path, monkeypatch: pytest.MonkeyPatch):
    # Chunks of 3 requests: most start mid-conversation in a worker that has not seen the history.
    monkeypatch.setattr("lib.hashing.hash_pool.CHUNK_REQUESTS", 3)
    reports = []
    for workers in ("1", "2"):
        code, out, err = invoke(*SEED_ARGS, "--json", "--workers", workers)
        assert code == 0, err
        report = json.loads(out)
        del report["elapsed_s"]
        reports.append(report)
    assert reports[0] == reports[1]
    assert reports[0]["versus_api"]["api_model"]["requests"] > 0


def test_progress_shows_a_bar_over_the_requests_being_hashed(workdir: Path):
    code, out, err = invoke(*SEED_ARGS, "--progress")
    assert code == 0 and "Accuracy (1 − |simulated − API| / API): 99.3%" in out
    assert "hashing:" in err and "0/90 " in err  # a bar over the 90 matched requests, cleared at the end
    code, _, err = invoke(*SEED_ARGS)
    assert code == 0 and "hashing" not in err


def test_billed_misses_by_cause(workdir: Path):
    code, out, _ = invoke(*SEED_ARGS, "--json")
    assert code == 0
    causes = json.loads(out)["versus_api"]["billed_miss_causes"]
    # The 90 matched requests' cache creation + input (379,478 + 13,030; a cleaned capture: the estimate),
    # every token with a cause.
    assert causes == {"first_use": 311_976, "in_flight": 26_192, "partial_block": 3_522, "server_side": 1,
                      "ttl_expiry": 50_817}
    assert sum(causes.values()) == 379_478 + 13_030
    code, out, _ = invoke(*SEED_ARGS)
    assert "Billed misses by cause (API tokens, docs/cache-models.md#why-each-miss): first use (new content) 311,976" in out


@pytest.mark.parametrize(("value", "rule", "expected"), [
    (None, "missing_field", "trace_0001.json: top level: missing field `block_size`"),
    ("null", "null_field", "trace_0001.json: top level: `block_size` is null"),
    (0, "wrong_type", "trace_0001.json: top level: `block_size` must be a positive integer"),
], ids=["missing", "null", "zero"])
def test_a_broken_block_size_is_one_error_under_one_rule(workdir: Path, value: object, rule: str, expected: str):
    """A missing or null `block_size` is not also reported as a wrong type."""
    _edit(workdir, lambda d: d.pop("block_size") if value is None else d.update(block_size=None if value == "null" else value))
    code, out, _ = invoke("examples/traces/", "--json")
    schema = json.loads(out)["schema"]
    assert code == 1
    assert (schema["errors"], list(schema["rules"])) == (1, [rule])
    assert schema["rules"][rule]["first"] == expected
