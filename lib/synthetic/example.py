"""Turn the example scenario into files: `requests.db` rows per proxy variant and the JSONL logs.

Variants (docs/inputs.md#old-proxy-twins): `fixed` — one streaming row per turn; `old` — a streaming twin (max_tokens
32000) then the non-streaming replay (21333) the JSONL points at, whose usage reads what the twin
wrote; `cleaned` — the old capture with only the non-streaming rows kept (the shipped example, like
the user's own DB).

Billing headers (orthogonal to the variant): `constant` — one value per conversation (the shipped
example); `per-request` — derived from each body, as many Claude Code versions send it. The API
strips it before caching, so the usage numbers are the same either way.

Client headers (`client_headers`): the capture as Claude Code >= 2.1.86 sends it, every request with
`X-Claude-Code-Session-Id` (the JSONL `sessionId`) and a sub-agent's also with `X-Claude-Code-Agent-Id`
(its `agentId`); the version in the User-Agent, the billing header and the JSONL lines says so.
`omit` leaves the logs or the DB out, for the JSONL-only and DB-only routes.

Background agents (`background_agents`): the 4 agents launched in the background; the parent's
requests and log carry the launch acknowledgements and, later, each agent's `<task-notification>`
(a prompt when the parent was idle, an attachment after a tool result when it was busy).
"""
from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Iterator, Optional

from lib.synthetic.jsonl_writer import JsonlSession, new_uuid, progress_copy, write_jsonl
from lib.synthetic.proxy_response import ApiReply, proxy_response
from lib.synthetic.proxy_db_writer import (CLAUDE_CODE_VERSION, SESSION_HEADERS_VERSION, CaptureWriter, ProxyRow,
                                          client_content_length, go_json, hashed_api_key, proxy_body, request_headers,
                                          user_agent)
from lib.synthetic.lanes import ApiCall, Lane, client_body, epoch_to_datetime
from lib.synthetic.prompts import CWD, with_billing_version, with_per_request_billing
from lib.synthetic.scenario import Scenario, build_scenario
from lib.synthetic.usage import TokenMeter, tiktoken_counter

VARIANTS = ("cleaned", "fixed", "old")
BILLING_HEADERS = ("constant", "per-request")
OMITTABLE = ("logs", "db")
UTC_OFFSET = timedelta(hours=-4)
REPLAY_MAX_TOKENS = 21333
API_KEY_HASH = hashed_api_key("sk-ant-api03-example-key-not-real")
SLUG = "curious-mapping-heron"


def _row_plan(scenario: Scenario, variant: str) -> list[tuple[float, int, ApiCall, bool, bool]]:
    """(start, order, call, is_twin, is_streaming) for every row the variant stores, in arrival order."""
    plan: list[tuple[float, int, ApiCall, bool, bool]] = []
    for lane in scenario.lanes:
        for call in lane.calls:
            if not lane.streams:
                plan.append((call.start_s, len(plan), call, False, False))
            elif variant == "fixed":
                plan.append((call.start_s, len(plan), call, False, True))
            else:
                if variant == "old" and call.twin is not None:
                    plan.append((call.twin.start_s, len(plan), call, True, True))
                plan.append((call.start_s, len(plan), call, False, False))
    return sorted(plan)


def _row(call: ApiCall, *, is_twin: bool, is_streaming: bool, variant: str, billing_header: str,
         rng: random.Random, client_ids: Optional[tuple[str, Optional[str]]] = None) -> ProxyRow:
    """One stored row; `client_ids` (session id, sub-agent id or None) sends the newer client's headers."""
    lane: Lane = call.lane
    max_tokens = lane.max_tokens
    if variant != "fixed" and not is_streaming and lane.streams and max_tokens == 32000:
        max_tokens = REPLAY_MAX_TOKENS
    body = client_body(call, stream=is_streaming, max_tokens=max_tokens)
    if billing_header == "per-request":
        body = with_per_request_billing(body)
    session_id, agent_id = client_ids or (None, None)
    version = CLAUDE_CODE_VERSION if client_ids is None else SESSION_HEADERS_VERSION
    if client_ids is not None:
        body = with_billing_version(body, version)
    stored = go_json(proxy_body(body))
    extras = go_json(lane.client_extras)[1:-1] if lane.client_extras else ""
    headers = request_headers(content_length=client_content_length(stored, "," + extras if extras else ""),
                              api_key_hash=API_KEY_HASH, beta=lane.beta, client_user_agent=user_agent(version),
                              session_id=session_id, agent_id=agent_id)
    timing = call.twin if is_twin and call.twin else call
    reply = ApiReply(model=call.model, message_id=timing.message_id, request_id=timing.request_id,
                     content=call.content, stop_reason=call.stop_reason, usage=timing.simulated_usage,
                     started_at=epoch_to_datetime(timing.start_s), ttft_ms=timing.ttft_ms,
                     response_time_ms=timing.api_ms, context_management="context-management" in lane.beta)
    response = proxy_response(reply, rng, is_streaming=is_streaming, utc_offset=UTC_OFFSET)
    return ProxyRow(id=f"{rng.getrandbits(64):016x}", arrived_at=epoch_to_datetime(timing.start_s),
                    utc_offset=UTC_OFFSET, headers=go_json(headers), body=stored, model=call.model, response=response,
                    user_agent=user_agent(version))


def capture_rows(scenario: Scenario, variant: str, seed: int, billing_header: str = "constant",
                 client_headers: bool = False) -> Iterator[ProxyRow]:
    """The variant's rows in arrival order, built one at a time."""
    rng = random.Random(f"{seed}:rows:{variant}")
    # Quota probe, title request and parent send the session id alone; a sub-agent adds its own id.
    agent_ids = {lane.name: agent_id for lane, agent_id, _ in scenario.agents}
    for _, _, call, is_twin, is_streaming in _row_plan(scenario, variant):
        client_ids = (scenario.session_id, agent_ids.get(call.lane.name)) if client_headers else None
        yield _row(call, is_twin=is_twin, is_streaming=is_streaming, variant=variant, billing_header=billing_header,
                   rng=rng, client_ids=client_ids)


def _lane_lines(lane: Lane, session: JsonlSession) -> Iterator[tuple[float, dict]]:
    for kind, at_s, payload in lane.log:
        at = epoch_to_datetime(at_s)
        if kind == "snapshot":
            yield at_s, session.snapshot(new_uuid(session.rng), at)
        elif kind == "prompt":
            yield at_s, session.user_prompt(payload, at)
        elif kind == "call":
            yield at_s, session.assistant(payload.api_message(), payload.request_id, at)
        elif kind == "notification":
            yield at_s, session.user_prompt(payload, at)
        elif kind == "queued":
            yield at_s, session.queued_command(payload, at)
        elif kind in ("enqueue", "dequeue"):
            yield at_s, session.queue_operation(kind, at, payload)
        else:
            block, structured = payload
            yield at_s, session.tool_results([block], structured, at)


def write_jsonl_logs(scenario: Scenario, jsonl_dir: Path, seed: int, version: str = CLAUDE_CODE_VERSION) -> dict[str, int]:
    """Write `<sessionId>.jsonl` and `agent-<agentId>.jsonl` beside it (the older layout); line counts."""
    rng = random.Random(f"{seed}:jsonl")
    prompt_id = new_uuid(rng)
    counts: dict[str, int] = {}
    parent_session = JsonlSession(rng=rng, session_id=scenario.session_id, cwd=CWD, prompt_id=prompt_id, slug=SLUG,
                                  version=version)
    parent_lines = list(_lane_lines(scenario.parent, parent_session))
    launcher = next(line for _, line in parent_lines if line["type"] == "assistant"
                    and any(block.get("name") == "Agent" for block in line["message"]["content"]))
    progress: list[tuple[float, dict]] = []
    for lane, agent_id, tool_use in scenario.agents:
        session = JsonlSession(rng=rng, session_id=scenario.session_id, cwd=CWD, prompt_id=prompt_id,
                               agent_id=agent_id, slug=SLUG, version=version)
        lines = list(_lane_lines(lane, session))
        name = f"agent-{agent_id}.jsonl"
        counts[name] = write_jsonl(jsonl_dir / name, (line for _, line in lines))
        if scenario.background_agents:
            continue  # a background agent's messages go to its own file only: no agent_progress copies
        for index, (at_s, line) in enumerate(lines):
            progress_line = parent_session.agent_progress(
                agent_id=agent_id, copied=progress_copy(line), prompt=tool_use["input"]["prompt"] if index == 0 else "",
                parent_tool_use_id=tool_use["id"], tool_use_id=f"agent_{launcher['message']['id']}",
                at=epoch_to_datetime(at_s))
            progress_line["parentUuid"] = launcher["uuid"]
            progress.append((at_s, progress_line))
    merged = sorted(parent_lines + progress, key=lambda item: item[0])
    name = f"{scenario.session_id}.jsonl"
    counts[name] = write_jsonl(jsonl_dir / name, (line for _, line in merged))
    return counts


def generate_example(output_dir: str | Path, *, variant: str = "cleaned", seed: int = 7, scale: float = 1.0,
                     meter: Optional[TokenMeter] = None, model_switch: bool = False,
                     api_cache_ttl_s: Optional[float] = None, billing_header: str = "constant",
                     client_headers: bool = False, omit: Optional[str] = None, background_agents: bool = False) -> dict:
    """Write `requests.db` and `jsonl/` for one variant into `output_dir`; returns a summary.

    `model_switch` adds a last parent turn on another model (see `build_scenario`).
    `api_cache_ttl_s`: the TTL of the simulated API cache for every lane (default: 1 h for the
    main thread, 5 min for the others, as Claude Code asks).
    `client_headers`: the session and sub-agent headers of a newer Claude Code (see the module doc).
    `omit` ("logs" or "db") leaves that part out, removing a previous run's copy from `output_dir`.
    `background_agents`: the agents launched in the background (see the module doc).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    if billing_header not in BILLING_HEADERS:
        raise ValueError(f"unknown billing header mode {billing_header!r}; expected one of {BILLING_HEADERS}")
    if omit is not None and omit not in OMITTABLE:
        raise ValueError(f"unknown part to omit {omit!r}; expected one of {OMITTABLE}")
    output = Path(output_dir)
    scenario = build_scenario(seed, scale, meter or TokenMeter(tiktoken_counter()), old_proxy=variant != "fixed",
                              model_switch=model_switch, api_cache_ttl_s=api_cache_ttl_s,
                              background_agents=background_agents)
    db_path = output / "requests.db"
    rows = db_bytes = 0
    if omit == "db":
        # A previous run's DB beside these logs would be read as their capture.
        db_path.unlink(missing_ok=True)
    else:
        temp_path = output / ".requests.db.tmp"
        temp_path.unlink(missing_ok=True)
        with CaptureWriter(temp_path) as writer:
            writer.add_all(capture_rows(scenario, variant, seed, billing_header, client_headers))
        temp_path.replace(db_path)
        rows, db_bytes = writer.rows_written, db_path.stat().st_size
    jsonl_dir = output / "jsonl"
    # Stale logs of another seed would be linked to this DB by the index builders; the folder is ours.
    for stale in jsonl_dir.glob("*.jsonl"):
        stale.unlink()
    lines: dict[str, int] = {}
    if omit == "logs":
        if jsonl_dir.is_dir() and not any(jsonl_dir.iterdir()):
            jsonl_dir.rmdir()
    else:
        jsonl_dir.mkdir(parents=True, exist_ok=True)
        version = SESSION_HEADERS_VERSION if client_headers else CLAUDE_CODE_VERSION
        lines = write_jsonl_logs(scenario, jsonl_dir, seed, version)
    return _summary(scenario, variant, rows, db_bytes, lines) | {"billing_header": billing_header,
                                                                 "client_headers": client_headers, "omitted": omit,
                                                                 "background_agents": background_agents}


def _summary(scenario: Scenario, variant: str, rows: int, db_bytes: int, lines: dict[str, int]) -> dict:
    parent = scenario.parent.calls

    def cache_line(call: ApiCall) -> dict:
        usage = call.simulated_usage
        return {"in": usage.prompt_tokens, "cache_read": usage.cache_read_input_tokens,
                "cache_creation": usage.cache_creation_input_tokens, "input": usage.input_tokens,
                "hit_pct": round(100 * usage.cache_read_input_tokens / usage.prompt_tokens, 1)}

    return {
        "variant": variant, "rows": rows, "db_bytes": db_bytes, "jsonl_lines": lines,
        "session_id": scenario.session_id,
        "requests": {"parent": len(parent), **{agent_id: len(lane.calls) for lane, agent_id, _ in scenario.agents},
                     **{lane.name: len(lane.calls) for lane in scenario.utility}},
        "parent_calls": [cache_line(call) for call in parent],
        "agent_calls": {agent_id: [cache_line(call) for call in lane.calls] for lane, agent_id, _ in scenario.agents},
        "span_s": round(max(c.end_s for lane in scenario.lanes for c in lane.calls)
                        - min(c.start_s if c.twin is None else c.twin.start_s for lane in scenario.lanes for c in lane.calls), 1),
    }
