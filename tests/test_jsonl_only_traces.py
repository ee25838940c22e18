"""JSONL-only traces: requests rebuilt from the logs (lib/hashing/jsonl_requests.py, jsonl_layout.py;
lib/traces/jsonl_only.py)."""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from build_minimal_traces import main
from jsonl_builders import (SESSION, agent_result, assistant, tool_result, user_prompt, write_jsonl)
from lib.capture.jsonl_conversations import read_log_group
from lib.capture.jsonl_files import discover_logs, group_logs
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
    # The generator waits a drawn think time after tool results before sending, which its logs do not show.
    offsets = sorted(round(abs(a - b), 3) for a, b in zip(times(full), times(only)))
    assert sum(offset > 1 for offset in offsets) == 16 and offsets[-1] == 23.676
    # A cleaned old-proxy capture: the logs name the replay, whose usage read its deleted twin's write
    # (99.6 % billed); only the DB route estimates the first send's (docs/validate.md#old-proxy-captures).
    assert simulated_and_api(tmp_path / "full") == (42568, 47504, 3560615, 3573645)  # 89.6 % and 99.6 %
    assert simulated_and_api(tmp_path / "logs_only") == (50014, 55794, 3560615, 3573645)  # 89.6 %


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
