"""JSONL-only traces: requests rebuilt from the logs (lib/hashing/jsonl_requests.py, jsonl_layout.py;
lib/traces/jsonl_only.py)."""
from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from build_minimal_traces import main
from jsonl_builders import (SESSION, agent_result, assistant, tool_result, user_prompt, write_jsonl)
from lib.capture.jsonl_conversations import read_log_group
from lib.capture.jsonl_files import discover_logs, group_logs
from lib.synthetic.example import generate_example
from lib.hashing.jsonl_requests import rebuild_calls
from lib.validate.matching import trace_lanes
from lib.validate.trace_files import check_directory


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def line(entry: dict, uuid: str, parent: str | None) -> dict:
    return {**entry, "uuid": uuid, "parentUuid": parent}


def usage(entry: dict, prompt: tuple[int, int, int], output: int = 10) -> dict:
    entry["message"]["usage"] = {"input_tokens": prompt[0], "cache_read_input_tokens": prompt[1],
                                 "cache_creation_input_tokens": prompt[2], "output_tokens": output}
    return entry


def session(path: Path) -> Path:
    """A prompt, a call split over two lines with two parallel tools whose results are chained in call
    order (the later one first in time), a second call, then a compaction and a call after it."""
    return write_jsonl(path / f"{SESSION}.jsonl", [
        line(user_prompt("2026-01-01T10:00:00.000Z"), "u1", None),
        usage(line(assistant("msg_1", "2026-01-01T10:00:02.000Z", types=("thinking",), stop_reason=None,
                             output_tokens=1), "a1", "u1"), (3, 0, 2000), 1),
        usage(line(assistant("msg_1", "2026-01-01T10:00:03.000Z", types=("tool_use", "tool_use"),
                             stop_reason="tool_use", output_tokens=50), "a1b", "a1"), (3, 0, 2000), 50),
        line(tool_result("toolu_x", "2026-01-01T10:00:05.500Z"), "r1", "a1b"),
        {"type": "progress", "uuid": "p1", "parentUuid": "r1", "timestamp": "2026-01-01T10:00:04.000Z",
         "sessionId": SESSION, "data": {"type": "hook_progress"}},
        line(tool_result("toolu_y", "2026-01-01T10:00:04.200Z"), "r2", "p1"),
        usage(line(assistant("msg_2", "2026-01-01T10:00:07.000Z"), "a2", "r2"), (3, 2000, 400)),
        {"type": "system", "subtype": "compact_boundary", "uuid": "c1", "parentUuid": None, "logicalParentUuid": "a2",
         "sessionId": SESSION, "timestamp": "2026-01-01T10:05:00.000Z", "content": "Conversation compacted"},
        line({**user_prompt("2026-01-01T10:05:00.100Z"), "isCompactSummary": True}, "s1", "c1"),
        usage(line(assistant("msg_3", "2026-01-01T10:05:03.000Z"), "a3", "s1"), (3, 2000, 300)),
    ])


def test_each_call_is_rebuilt_from_its_parent_uuid_chain(tmp_path: Path) -> None:
    session(tmp_path)
    (files,) = group_logs(discover_logs(tmp_path)).values()
    conversation, problems = read_log_group(files)
    calls = rebuild_calls(conversation, files)
    assert problems.as_dict() == {}
    assert {mid: [line.uuid for line in call.prompt] for mid, call in calls.items()} == {
        "msg_1": ["u1"], "msg_2": ["u1", "a1", "a1b", "r1", "r2"], "msg_3": ["s1"]}
    # Sent after the latest line since the previous answer (r1, though chained before r2), done at its last line.
    assert (calls["msg_2"].sent_at, calls["msg_1"].completed_at) == (utc("2026-01-01T10:00:05.500Z"),
                                                                     utc("2026-01-01T10:00:03Z"))
    assert calls["msg_1"].sent_at == utc("2026-01-01T10:00:00Z")
    assert (calls["msg_2"].last_message_types, calls["msg_2"].all_message_types) == (
        ("tool_result",), ("text", "thinking", "tool_result", "tool_use"))


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_blocks_follow_the_chain_and_in_is_the_api_prompt_size(tmp_path: Path) -> None:
    session(tmp_path / "logs")
    code, out, _ = run("--jsonl-dir", str(tmp_path / "logs"), "--output-dir", str(tmp_path / "out"),
                       "--block-size", "100")
    assert code == 0 and "Route JSONL-only" in out and "api_time and ttft are absent" in out
    requests = json.loads((tmp_path / "out" / f"{SESSION}.json").read_text())["requests"]
    assert [(r["t"], r["in"], r["think_time"], r["type"], r["stop"]) for r in requests] == [
        (0, 2003, 0, "s", "tool_use"), (5.5, 2403, 2.5, "s", "end_turn"), (300.1, 2303, 293.1, "s", "end_turn")]
    assert all("api_time" not in r and "ttft" not in r for r in requests)
    first, second, third = (r["hash_ids"] for r in requests)
    # The prefix is what the first prompt's visible text (2 tokens) does not explain: 2001 tokens, 20 blocks.
    assert second[:len(first)] == first and len(second) == 24
    assert third[:20] == first[:20] and not set(third[20:]) & set(second)  # after the compaction: only the prefix
    assert [row["tokenizer_tokens"] for row in sidecar(tmp_path / "out")] == [None, None, None]
    # No timing in the logs: 0 errors, one warning per missing field (api_time, and ttft when streamed).
    check = check_directory(tmp_path / "out")
    assert check.errors == [] and [(p.where, p.code) for p in check.warnings] == [
        (f"requests[{i}]", code) for i in range(3) for code in ("missing_api_time", "missing_ttft")]


def test_sub_agents_of_one_kind_share_their_prefix_blocks(tmp_path: Path) -> None:
    write_jsonl(tmp_path / f"{SESSION}.jsonl", [
        line(user_prompt("2026-01-01T10:00:00Z"), "u1", None),
        usage(line(assistant("msg_p1", "2026-01-01T10:00:01Z", stop_reason="tool_use",
                             agent_calls=[("toolu_a", "Agent", "Explore", "A"), ("toolu_b", "Agent", "Explore", "B"),
                                          ("toolu_c", "Agent", "Plan", "C")]), "a1", "u1"), (3, 0, 3000)),
        *(line(tool_result(tool, "2026-01-01T10:00:30Z", agent_result(agent)), f"r-{tool}", "a1")
          for tool, agent in (("toolu_a", "aa"), ("toolu_b", "ab"), ("toolu_c", "ac"))),
    ])
    for agent in ("aa", "ab", "ac"):
        write_jsonl(tmp_path / SESSION / "subagents" / f"agent-{agent}.jsonl", [
            line(user_prompt("2026-01-01T10:00:02Z", agent_id=agent), f"{agent}-u", None),
            usage(line(assistant(f"msg_{agent}", "2026-01-01T10:00:04Z", agent_id=agent, model="claude-haiku-4-5"),
                       f"{agent}-a", f"{agent}-u"), (3, 0, 1200)),
        ])
    code, _, _ = run("--jsonl-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--include-subagents",
                     "--block-size", "100")
    assert code == 0
    requests = json.loads((tmp_path / "out" / f"{SESSION}.json").read_text())["requests"]
    markers = {r["subagent_type"] + r["agent_id"][-1]: r["requests"][0]["hash_ids"] for r in requests[1:]}
    assert markers["Explorea"][:11] == markers["Exploreb"][:11]
    assert not set(markers["Planc"]) & set(markers["Explorea"] + requests[0]["hash_ids"])


def test_a_db_only_option_without_a_db_is_an_input_error(tmp_path: Path) -> None:
    session(tmp_path)
    code, _, err = run("--jsonl-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--index-db", "x.db")
    assert code == 2 and err == "Error: --index-db needs a DB: without one the requests come from the JSONL logs alone\n"


def test_a_log_folder_without_logs_is_an_input_error_as_with_a_db(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = run("--jsonl-dir", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "out"))
    assert (code, err) == (2, f"Error: {tmp_path / 'empty'}: no Claude Code JSONL logs found\n")
    assert not (tmp_path / "out").exists()


def sidecar(directory: Path) -> list[dict]:
    return [json.loads(row) for path in sorted((directory / "_sidecar").glob("*.jsonl"))
            for row in path.read_text().splitlines()]


def simulated_and_api(directory: Path) -> tuple[int, int, int, int]:
    hits = blocks = 0
    for path in sorted(directory.glob("*.json")):
        for lane in trace_lanes(path.name, directory, json.loads(path.read_text())).lanes.values():
            hits += sum(r.hit_blocks for r in lane)
            blocks += sum(r.blocks for r in lane)
    rows = sidecar(directory)
    return hits, blocks, sum(r["usage"]["cache_read_input_tokens"] for r in rows), sum(r["api_prompt_tokens"] for r in rows)


def lanes(document: dict) -> list[tuple]:
    """(lane, model, stop, out, output types) of every request, and each marker's type, in file order."""
    rows = []
    for entry in document["requests"]:
        if entry["type"] == "subagent":
            rows.append(("marker", entry["agent_id"], entry["subagent_type"], len(entry["requests"])))
            rows += [(entry["agent_id"], r["model"], r["stop"], r["out"], r["output_types"]) for r in entry["requests"]]
        else:
            rows.append(("parent", entry["model"], entry["stop"], entry["out"], entry["output_types"]))
    return rows


def times(document: dict) -> list[float]:
    return [t for entry in document["requests"]
            for t in ([entry["t"], *(r["t"] for r in entry["requests"])] if entry["type"] == "subagent" else [entry["t"]])]


def test_fixture_jsonl_only_matches_the_full_run(fixture_db: Path, fixture_dir: Path, tmp_path: Path) -> None:
    logs = shutil.copytree(fixture_dir / "jsonl", tmp_path / "jsonl")
    common = ["--jsonl-dir", str(logs), "--include-subagents", "--salt", "s", "-q"]
    assert run(str(fixture_db), "--output-dir", str(tmp_path / "full"), *common)[0] == 0
    assert run("--output-dir", str(tmp_path / "logs_only"), *common)[0] == 0
    (name,) = [path.name for path in (tmp_path / "full").glob("*.json")]
    full, only = (json.loads((tmp_path / run_dir / name).read_text()) for run_dir in ("full", "logs_only"))
    assert lanes(only) == lanes(full) and len(lanes(full)) == 40
    assert [r["message_id"] for r in sidecar(tmp_path / "logs_only")] == [r["message_id"] for r in sidecar(tmp_path / "full")]
    assert all(r["in"] == r["api_prompt_tokens"] for r in sidecar(tmp_path / "logs_only"))
    # One sub-agent call reached the proxy 1.6 s after the last log line before it; the rest agree within 8 ms.
    offsets = sorted(round(abs(a - b), 3) for a, b in zip(times(full), times(only)))
    assert offsets[-1] == 1.603 and offsets[-2] == 0.008
    assert simulated_and_api(tmp_path / "full") == (2663, 3050, 193841, 220295)  # 87.3 % and 88.0 %
    assert simulated_and_api(tmp_path / "logs_only") == (3015, 3426, 193841, 220295)  # 88.0 %


def test_example_jsonl_only_matches_the_full_run(example_db: Path, tmp_path: Path) -> None:
    logs = Path(__file__).resolve().parent.parent / "examples" / "jsonl"
    common = ["--jsonl-dir", str(logs), "--include-subagents", "--salt", "s", "-q"]
    assert run(str(example_db), "--output-dir", str(tmp_path / "full"), *common)[0] == 0
    assert run("--output-dir", str(tmp_path / "logs_only"), *common)[0] == 0
    (name,) = [path.name for path in (tmp_path / "full").glob("*.json")]
    full, only = (json.loads((tmp_path / run_dir / name).read_text()) for run_dir in ("full", "logs_only"))
    assert lanes(only) == lanes(full) and len(lanes(full)) == 94
    assert all(r["in"] == r["api_prompt_tokens"] for r in sidecar(tmp_path / "logs_only"))
    # A cleaned old-proxy capture: each row is the replay the proxy sent after the client's streaming
    # request had run (up to 28 s later); the logs keep the client's own send times.
    offsets = sorted(round(abs(a - b), 3) for a, b in zip(times(full), times(only)))
    assert sum(offset > 1 for offset in offsets) == 16 and offsets[-1] == 23.676
    # A cleaned old-proxy capture: the logs name the replay, whose usage read its deleted twin's write
    # (99.6 % billed); only the DB route estimates the first send's (docs/validate.md#old-proxy-captures).
    assert simulated_and_api(tmp_path / "full") == (42568, 47504, 3560615, 3573645)  # 89.6 % and 99.6 %
    assert simulated_and_api(tmp_path / "logs_only") == (50014, 55794, 3560615, 3573645)  # 89.6 %


def test_fixed_capture_jsonl_only_times_within_a_second(tmp_path: Path) -> None:
    """Where each row is the client's own request (a fixed proxy), the logs' times agree with the DB's."""
    generate_example(tmp_path / "capture", variant="fixed", scale=0.05)
    common = ["--jsonl-dir", str(tmp_path / "capture" / "jsonl"), "--include-subagents", "--salt", "s", "-q"]
    assert run(str(tmp_path / "capture" / "requests.db"), "--output-dir", str(tmp_path / "full"), *common)[0] == 0
    assert run("--output-dir", str(tmp_path / "logs_only"), *common)[0] == 0
    (name,) = [path.name for path in (tmp_path / "full").glob("*.json")]
    full, only = (json.loads((tmp_path / run_dir / name).read_text()) for run_dir in ("full", "logs_only"))
    assert lanes(only) == lanes(full)
    assert max(round(abs(a - b), 3) for a, b in zip(times(full), times(only))) == 0.7


@pytest.mark.parametrize("anonymize, route", [(False, "sidecar"), (True, "plan")])
def test_validator_without_a_db_compares_with_the_usage_the_logs_record(fixture_dir: Path, tmp_path: Path,
                                                                        anonymize: bool, route: str) -> None:
    from validate_trace_cache import main as validate_main

    logs = shutil.copytree(fixture_dir / "jsonl", tmp_path / "jsonl")
    out = tmp_path / "traces"
    assert run("--jsonl-dir", str(logs), "--output-dir", str(out), "--include-subagents", "-q",
               *(["--anonymize"] if anonymize else []))[0] == 0
    result = CliRunner().invoke(validate_main, [str(out), "--jsonl-dir", str(logs), "--json", "--min-accuracy", "99"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)["schema"]
    assert (schema["errors"], schema["warnings"]) == (0, 74)  # 37 requests, each without api_time and ttft
    strict = CliRunner().invoke(validate_main, [str(out), "--strict"])
    assert strict.exit_code == 1 and "warning" in strict.stderr
    report = json.loads(result.stdout)["versus_api"]
    (trace,) = report["traces"]
    assert (trace["route"], trace["matched"], trace["sim_hit_blocks"], trace["sim_blocks"]) == (route, 37, 3015, 3426)
    assert (report["overall"]["api_read_tokens"], report["overall"]["api_prompt_tokens"]) == (193841, 220295)
    assert report["api_model"] == {"requests": 0, "fields": [], "totals_reasons": []}
    assert json.loads(result.stdout)["stats"]["traces"][0]["api_time_s"] is None
    text = CliRunner().invoke(validate_main, [str(out), "--jsonl-dir", str(logs)])
    assert "API figures are the usage the JSONL logs recorded: logs of an old-proxy capture" in text.stdout
    refused = CliRunner().invoke(validate_main, [str(out), "--jsonl-dir", str(logs), "--max-error", "5"])
    assert refused.exit_code == 2 and "--max-error needs --db" in refused.stderr


def test_token_count_tokenizer_without_a_db_is_a_usage_error(tmp_path: Path) -> None:
    """The route always writes the API's prompt size: asking for tokenizer counts is refused, api accepted."""
    session(tmp_path)
    code, _, err = run("--jsonl-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--token-count", "tokenizer")
    assert (code, err) == (2, "Error: --token-count tokenizer needs a DB: without one `in` is the API prompt size the "
                              "logs record (docs/jsonl.md); use --token-count api or drop the option (see --help)\n")
    assert not (tmp_path / "out").exists()
    code, _, err = run("--jsonl-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--token-count", "api", "-q")
    assert code == 0, err
    requests = json.loads((tmp_path / "out" / f"{SESSION}.json").read_text())["requests"]
    assert [r["in"] for r in requests] == [2003, 2403, 2303]


@pytest.fixture(scope="module")
def fixed_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`examples/generate_example.py --variant fixed --scale 0.2`: one streaming row per turn, so the DB's
    usage and the logs' are the same."""
    folder = tmp_path_factory.mktemp("fixed")
    generate_example(folder, variant="fixed", scale=0.2)
    return folder


def validate_with_db(traces: Path, capture: Path, db: Path) -> dict:
    from validate_trace_cache import main as validate_main

    result = CliRunner().invoke(validate_main, [str(traces), "--db", str(db), "--jsonl-dir", str(capture / "jsonl"), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["versus_api"]


@pytest.mark.parametrize("anonymize, route, lost_reason", [(False, "sidecar", "sidecar_message_id_not_in_db"),
                                                            (True, "plan", "turn_not_in_db")])
def test_validator_with_a_db_matches_jsonl_only_traces_through_the_message_index(
        fixed_capture: Path, tmp_path: Path, anonymize: bool, route: str, lost_reason: str) -> None:
    """The sidecar (or the plan) names log calls by message id; the message index takes each to its DB row
    (before: 0 of 90 matched, every request `sidecar_id_not_in_db`)."""
    out = tmp_path / "traces"
    assert run("--jsonl-dir", str(fixed_capture / "jsonl"), "--output-dir", str(out), "--include-subagents", "-q",
               *(["--anonymize"] if anonymize else []))[0] == 0
    assert json.loads((out / "_sidecar" / "manifest.json").read_text())["route"] == "JSONL-only"
    report = validate_with_db(out, fixed_capture, fixed_capture / "requests.db")
    (trace,) = report["traces"]
    assert (trace["route"], trace["requests"], trace["matched"]) == (route, 90, 90)
    # 91.1 % simulated against 91.4 % billed (accuracy 99.6 %); the API model runs on the DB's bodies.
    assert (trace["sim_hit_blocks"], trace["sim_blocks"], trace["api_read_tokens"], trace["api_prompt_tokens"]) == \
        (12758, 14009, 822488, 899597)
    assert report["problems"] == {} and report["api_model"]["requests"] == 90
    # A call whose proxy row is gone is counted, the other 89 still match.
    db = Path(shutil.copy(fixed_capture / "requests.db", tmp_path / "requests.db"))
    (log,) = [path for path in (fixed_capture / "jsonl").glob("*.jsonl") if not path.name.startswith("agent-")]
    gone = next(entry["message"]["id"] for entry in map(json.loads, log.read_text().splitlines())
                if entry.get("type") == "assistant")
    with sqlite3.connect(db) as connection:
        assert connection.execute("DELETE FROM requests WHERE response LIKE ?", (f'%"{gone}"%',)).rowcount == 1
    report = validate_with_db(out, fixed_capture, db)
    assert (report["traces"][0]["matched"], {name: entry["count"] for name, entry in report["problems"].items()}) == \
        (89, {lost_reason: 1})


@pytest.mark.parametrize("with_db", [True, False], ids=["built-with-db", "built-jsonl-only"])
@pytest.mark.parametrize("anonymize", [False, True], ids=["plain", "anonymized"])
def test_validator_counts_a_truncated_log_line_once_as_the_builder_does(fixed_capture: Path, tmp_path: Path,
                                                                       with_db: bool, anonymize: bool) -> None:
    """A half-written last line (a session mid-write) is `truncated_jsonl_line` x1 in the builder's summary and
    in the validator's, with --db or without (before: not counted with --db when every trace matched by
    sidecar ids, counted twice without --db on anonymized traces)."""
    from validate_trace_cache import main as validate_main

    logs = shutil.copytree(fixed_capture / "jsonl", tmp_path / "jsonl")
    (log,) = [path for path in logs.glob("*.jsonl") if not path.name.startswith("agent-")]
    lines = len(log.read_bytes().splitlines())
    with log.open("ab") as stream:
        stream.write(b'{"type":"user","uuid":"half')
    out = tmp_path / "traces"
    code, stdout, err = run(*([str(fixed_capture / "requests.db")] if with_db else []), "--jsonl-dir", str(logs),
                            "--output-dir", str(out), "--include-subagents", "--json",
                            *(["--anonymize"] if anonymize else []))
    assert code == 0, err
    assert json.loads(stdout)["problems"]["truncated_jsonl_line"]["count"] == 1
    expected = {"count": 1, "examples": [f"{log.name}:{lines + 1}"]}
    for db in (["--db", str(fixed_capture / "requests.db")], []):
        result = CliRunner().invoke(validate_main, [str(out), *db, "--jsonl-dir", str(logs), "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)["versus_api"]
        assert report["problems"] == {"truncated_jsonl_line": expected}
        assert report["overall"]["matched"] == 90


@pytest.mark.parametrize("anonymize", [False, True], ids=["sidecar-ids", "anonymized"])
def test_validator_with_a_db_refuses_a_log_folder_without_logs(fixed_capture: Path, tmp_path: Path,
                                                               anonymize: bool) -> None:
    """Given --jsonl-dir, the logs are read even when the sidecar ids match every request: a wrong folder
    is an input error, not a run that silently ignores it."""
    from validate_trace_cache import main as validate_main

    out = tmp_path / "traces"
    assert run(str(fixed_capture / "requests.db"), "--jsonl-dir", str(fixed_capture / "jsonl"), "--output-dir", str(out),
               "-q", *(["--anonymize"] if anonymize else []))[0] == 0
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(validate_main, [str(out), "--db", str(fixed_capture / "requests.db"),
                                                "--jsonl-dir", str(tmp_path / "empty")])
    assert (result.exit_code, result.stderr) == (2, f"Error: {tmp_path / 'empty'}: no Claude Code JSONL logs found\n")


def test_block_keys_reused_from_the_previous_call_equal_keys_computed_afresh():
    """BlockLayout reuses the previous call's keys over the spans both start with; a shorter prompt, an
    extended one and a diverging one get exactly the keys a layout that saw no earlier call gives."""
    from lib.hashing.jsonl_layout import BlockLayout

    calls = [([(b"p", 10), (b"a", 10)], 20), ([(b"p", 10), (b"a", 10), (b"b", 10)], 30),
             ([(b"p", 10), (b"a", 10), (b"b", 10)], 9), ([(b"p", 10), (b"a", 10), (b"b", 10)], 37),
             ([(b"p", 10), (b"x", 10)], 23)]
    layout = BlockLayout(4, {})
    seen = [layout._keys(spans, total, b"pad") for spans, total in calls]
    assert seen == [BlockLayout(4, {})._keys(spans, total, b"pad") for spans, total in calls]
    assert [len(hashes.block_keys) for hashes in seen] == [5, 7, 2, 9, 5]
    assert seen[1].block_keys[:5] == seen[0].block_keys and seen[4].block_keys[:2] == seen[0].block_keys[:2]
    assert seen[4].block_keys[2] != seen[0].block_keys[2]
