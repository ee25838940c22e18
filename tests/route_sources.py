"""Inputs of the route conformance checks: a log folder without a DB, and what the logs name.

The bench generator (bench/synthetic_capture.py) starts its sessions one after another in two
slots below ~156 MB (a third slot from there) and every session runs 100+ turns, so one capture
holds three sessions with sub-agents only from ~200 MB (~1,100 rows): far too many requests for
AIPerf to replay in the conformance step. Three small captures of different seeds, copied into one
folder as a user's `~/.claude/projects` holds sessions of several days, give four sessions, three
with sub-agents (two of them spawned together), every sub-agent finished before its session's next
turn. (A capture cut while sub-agents run ends its trace with their markers: AIPerf 0.13 then
never completes their last requests, whichever route built the trace; docs/traces.md.)
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench.synthetic_capture import generate_capture

# (seed, payload bytes): the smallest captures of these seeds whose sessions have finished sub-agents.
LOGS_ONLY_CAPTURES = ((16, 5_000_000), (18, 2_000_000), (46, 2_000_000))


def logs_only_folder(work: Path) -> Path:
    """The merged log folder of the bench captures (their requests.db deleted): `work/jsonl`."""
    for seed, payload_bytes in LOGS_ONLY_CAPTURES:
        capture = work / f"capture-{seed}"
        generate_capture(capture, target_bytes=payload_bytes, seed=seed)
        (capture / "requests.db").unlink()
        shutil.copytree(capture / "jsonl", work / "jsonl", dirs_exist_ok=True)
        shutil.rmtree(capture)
    return work / "jsonl"


def log_sessions(jsonl_dir: Path) -> dict[str, set[str]]:
    """Each `sessionId` the logs' lines name, with the sub-agent ids (`agentId`) its lines name."""
    sessions: dict[str, set[str]] = {}
    for path in sorted(jsonl_dir.rglob("*.jsonl")):
        for text in path.read_text(encoding="utf-8").splitlines():
            entry = json.loads(text) if text.strip() else {}
            if isinstance(entry, dict) and entry.get("sessionId"):
                agents = sessions.setdefault(entry["sessionId"], set())
                if entry.get("agentId"):
                    agents.add(entry["agentId"])
    return sessions
