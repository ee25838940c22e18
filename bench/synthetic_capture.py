"""Large synthetic captures in the real proxy format, for benchmarks (issue 6).

Many concurrent Claude Code sessions of 100–1,000 turns are simulated cheaply: every message is
built once and serialized once to the proxy's JSON (Go-style escapes, sorted content keys), and a
request body is the join of its history's strings, so the cost per row is linear in its own size.
Text comes from a fixed pool of generated blocks (a unique header line keeps every tool result
distinct, like real file reads), token counts from a bytes/token estimate instead of a tokenizer.
Rows stream through `CaptureWriter` in arrival order; JSONL lines are appended as their rows are
written, so a capture cut at the size budget is consistent between DB and logs.
"""
from __future__ import annotations

import heapq
import math
import random
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import orjson

from lib.synthetic.jsonl_writer import JsonlSession, new_uuid
from lib.synthetic.proxy_response import ApiReply, ApiUsage, error_response, proxy_response, random_token
from lib.synthetic.proxy_db_writer import (BETA_MAIN, BETA_SUBAGENT, BETA_UTILITY, CaptureWriter, ProxyRow, go_json,
                                hashed_api_key, proxy_body, request_headers, sorted_keys)
from lib.synthetic.lanes import IdSource
from lib.synthetic.prompts import EXPLORE_TOOLS, PARENT_TOOLS, explore_system, parent_system, tool_definitions
from lib.synthetic.filler_text import prose, python_module

OPUS = "claude-opus-4-6"
HAIKU = "claude-haiku-4-5-20251001"
UTC_OFFSET = timedelta(hours=-4)
START = datetime(2026, 3, 2, 13, 0, 0, tzinfo=timezone.utc)
API_KEY_HASH = hashed_api_key("sk-ant-api03-bench-key-not-real")
REPLAY_MAX_TOKENS = 21333
# Bytes of compact JSON per API token: a cheap stand-in for a tokenizer (English prose and code).
BYTES_PER_TOKEN = 4.2
POOL_BLOCKS = 384
SIZE_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9}
# Per-turn probabilities of the rarer events (errors and pending rows stay a fraction of a percent).
P_AGENT_TURN = 0.03
P_END_TURN = 0.08
P_ERROR = 0.006
P_PENDING = 0.003
P_OLD_PROXY = 0.3
READ_TOOLS = ("Read", "Bash", "Grep", "Glob", "Edit")
AGENT_CAP_TOKENS = 120_000


def parse_size(text: str) -> int:
    """`200MB`, `1GB`, `4GB`, `500KB` → bytes (decimal units)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMG]B)\s*", text.upper())
    if not match:
        raise ValueError(f"size {text!r} is not like 200MB or 1GB")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2)])


def concurrency_for(target_bytes: int) -> int:
    """Sessions running at once: grows with the size so larger captures hold more conversations."""
    return max(2, round(math.sqrt(target_bytes / 25e6)))


class TextPool:
    """A fixed pool of prose and code blocks; content is cut from it instead of drawn per request."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"{seed}:pool")
        self.blocks = []
        for index in range(POOL_BLOCKS):
            chars = int(rng.lognormvariate(7.3, 0.8)) + 200
            if index % 2:
                self.blocks.append(python_module(rng, f"src/pkg{index % 17}/mod{index}.py", chars))
            else:
                self.blocks.append(prose(rng, chars))
        self.signatures = [random_token(rng, rng.randint(280, 420)) for _ in range(32)]

    def text(self, rng: random.Random, chars: int) -> str:
        """About `chars` characters: consecutive pool blocks from a random start, trimmed."""
        start = rng.randrange(len(self.blocks))
        parts, total = [], 0
        while total < chars:
            block = self.blocks[(start + len(parts)) % len(self.blocks)]
            parts.append(block)
            total += len(block) + 1
        return "\n".join(parts)[:chars]


def _tokens(text_bytes: int) -> int:
    return max(1, int(text_bytes / BYTES_PER_TOKEN))


@dataclass
class _Static:
    """Per-run constants: serialized tools and system prompts, the text pool."""

    seed: int
    pool: TextPool
    parent_tools: str = ""
    parent_system: str = ""
    agent_tools: str = ""
    agent_system: str = ""
    parent_fixed_tokens: int = 0
    agent_fixed_tokens: int = 0

    @classmethod
    def build(cls, seed: int) -> "_Static":
        static = cls(seed, TextPool(seed))
        parent = proxy_body({"model": OPUS, "messages": [], "system": parent_system(1.0, seed),
                             "tools": tool_definitions(PARENT_TOOLS, 1.0, seed)})
        agent = proxy_body({"model": HAIKU, "messages": [], "system": explore_system(1.0, seed),
                            "tools": tool_definitions(EXPLORE_TOOLS, 1.0, seed)})
        static.parent_tools, static.parent_system = go_json(parent["tools"]), go_json(parent["system"])
        static.agent_tools, static.agent_system = go_json(agent["tools"]), go_json(agent["system"])
        static.parent_fixed_tokens = _tokens(len(static.parent_tools) + len(static.parent_system))
        static.agent_fixed_tokens = _tokens(len(static.agent_tools) + len(static.agent_system))
        return static


@dataclass
class _Message:
    """One history message: its stored-form dict (for the cache_control copy) and its JSON text."""

    stored: dict
    text: str
    tokens: int


def _message(role: str, content: list[dict]) -> _Message:
    stored = {"role": role, "content": sorted_keys(content)}
    text = go_json(stored)
    return _Message(stored, text, _tokens(len(text)))


def _with_cache_control(message: _Message) -> str:
    """The last message as Claude Code sends it: cache_control on its last block (kept by the proxy)."""
    content = list(message.stored["content"])
    content[-1] = sorted_keys({**content[-1], "cache_control": {"type": "ephemeral"}})
    return go_json({"role": message.stored["role"], "content": content})


@dataclass
class _Spec:
    """One row to render, with the JSONL lines that become true once it is stored."""

    start_s: float
    lane: "_Lane"
    history: tuple[str, ...]
    reply: Optional[ApiReply]
    is_streaming: bool
    max_tokens: int
    outcome: str = "ok"  # ok | error | pending
    retry_count: int = 0
    jsonl: list[tuple[Path, Callable[[], dict]]] = field(default_factory=list)


@dataclass
class _Lane:
    """One sequential conversation (parent or sub-agent): its request template and history."""

    model: str
    tools: str
    system: str
    fixed_tokens: int
    beta: str
    session: JsonlSession
    jsonl_path: Path
    is_old_proxy: bool
    clock_s: float = 0.0
    messages: list[_Message] = field(default_factory=list)

    def prompt_tokens(self) -> int:
        """Estimated API prompt size of the current history."""
        return self.fixed_tokens + sum(message.tokens for message in self.messages)

    def body(self, history: tuple[str, ...], *, is_streaming: bool, max_tokens: int) -> str:
        """The stored body (docs/inputs.md#stored-request-body key order) by joining pre-serialized parts."""
        stream = ',"stream":true' if is_streaming else ""
        return (f'{{"model":"{self.model}","messages":[{",".join(history)}],"max_tokens":{max_tokens},'
                f'"system":{self.system}{stream},"tools":{self.tools}}}')


class _Session:
    """A parent conversation with sub-agents, yielding row specs in time order."""

    def __init__(self, static: _Static, number: int, start_s: float, jsonl_dir: Path) -> None:
        self.static = static
        self.rng = random.Random(f"{static.seed}:session:{number}")
        self.ids = IdSource(self.rng)
        self.number = number
        self.turns = int(math.exp(self.rng.uniform(math.log(100), math.log(1000))))
        self.cap_tokens = self.rng.randint(150_000, 200_000)
        self.is_old_proxy = self.rng.random() < P_OLD_PROXY
        session_id = new_uuid(self.rng)
        self.project = jsonl_dir / f"-home-dev-project{number % 7}"
        self.cwd = f"/home/dev/project{number % 7}"
        self.prompt_id = new_uuid(self.rng)
        self.parent = _Lane(OPUS, static.parent_tools, static.parent_system, static.parent_fixed_tokens, BETA_MAIN,
                            JsonlSession(self.rng, session_id, self.cwd, self.prompt_id),
                            self.project / f"{session_id}.jsonl", self.is_old_proxy, start_s)

    # --- content ---------------------------------------------------------------------------------

    def _tool_output(self, label: str) -> str:
        # Mostly small outputs, a few large file reads (log-normal, capped like Claude Code's Read).
        chars = min(60_000, int(self.rng.lognormvariate(7.6, 1.0)) + 80)
        return f"{label} [{new_uuid(self.rng)}]\n" + self.static.pool.text(self.rng, chars)

    def _assistant_blocks(self, tool: Optional[str]) -> list[dict]:
        blocks: list[dict] = []
        if self.rng.random() < 0.3:
            blocks.append({"type": "thinking", "thinking": self.static.pool.text(self.rng, self.rng.randint(200, 2000)),
                           "signature": self.rng.choice(self.static.pool.signatures)})
        if tool is None or self.rng.random() < 0.5:
            chars = self.rng.randint(60, 400) if tool else self.rng.randint(400, 3000)
            blocks.append({"type": "text", "text": self.static.pool.text(self.rng, chars)})
        if tool is not None:
            path = f"{self.cwd}/src/pkg{self.rng.randrange(17)}/mod{self.rng.randrange(POOL_BLOCKS)}.py"
            tool_input = {"file_path": path} if tool != "Bash" else {"command": f"pytest -q {path}", "description": "Run tests"}
            blocks.append({"type": "tool_use", "id": self.ids.tool_use(), "name": tool, "input": tool_input})
        return blocks

    def _reply(self, lane: _Lane, content: list[dict], stop_reason: str, start_s: float) -> ApiReply:
        """The API's answer with usage from the estimate: history cached, the newest message created."""
        prompt = lane.prompt_tokens()
        newest = lane.messages[-1].tokens if lane.messages else prompt
        created = min(prompt, newest + self.rng.randint(0, 40))
        output = _tokens(len(orjson.dumps(content)))
        usage = ApiUsage(input_tokens=self.rng.randint(1, 6), cache_read_input_tokens=prompt - created,
                         cache_creation_5m=created if lane.model == HAIKU else 0,
                         cache_creation_1h=created if lane.model != HAIKU else 0, output_tokens=output)
        ttft_ms = int(self.rng.uniform(0.6, 3.5) * 1000)
        speed = 95.0 if lane.model == HAIKU else 56.0
        return ApiReply(model=lane.model, message_id=self.ids.message(), request_id=self.ids.request(),
                        content=content, stop_reason=stop_reason, usage=usage, started_at=_at(start_s),
                        ttft_ms=ttft_ms, response_time_ms=ttft_ms + int(output / speed * 1000) + self.rng.randint(40, 400),
                        context_management=lane.beta != BETA_UTILITY)

    # --- one API call, with its rows --------------------------------------------------------------

    def _call(self, lane: _Lane, content: list[dict], stop_reason: str, pending_lines: list) -> Iterator[_Spec]:
        """Rows of one logical call (error/pending retry, old-proxy twin) and the assistant JSONL line."""
        history = tuple(message.text for message in lane.messages[:-1]) + (_with_cache_control(lane.messages[-1]),)
        retry = 0
        roll = self.rng.random()
        if roll < P_ERROR + P_PENDING:
            failed = self._reply(lane, content, stop_reason, lane.clock_s)
            spec = _Spec(lane.clock_s, lane, history, failed, True, 32000, "error" if roll < P_ERROR else "pending",
                         jsonl=pending_lines[:])
            pending_lines.clear()
            yield spec
            lane.clock_s += self.rng.uniform(1.0, 8.0)
            retry = 1
        if lane.is_old_proxy:
            twin = self._reply(lane, content, stop_reason, lane.clock_s)
            yield _Spec(lane.clock_s, lane, history, twin, True, 32000, retry_count=retry, jsonl=pending_lines[:])
            pending_lines.clear()
            lane.clock_s += self.rng.uniform(0.1, 0.8)
        reply = self._reply(lane, content, stop_reason, lane.clock_s)
        is_streaming = not lane.is_old_proxy
        message = {"model": reply.model, "id": reply.message_id, "type": "message", "role": "assistant",
                   "content": content, "stop_reason": stop_reason, "stop_sequence": None, "usage": reply.usage.upstream()}
        at = _at(reply.completed_at.timestamp())
        lines = pending_lines[:] + [(lane.jsonl_path, lambda: lane.session.assistant(message, reply.request_id, at))]
        pending_lines.clear()
        yield _Spec(lane.clock_s, lane, history, reply, is_streaming, 32000 if is_streaming else REPLAY_MAX_TOKENS,
                    retry_count=retry, jsonl=lines)
        lane.clock_s = reply.completed_at.timestamp()
        lane.messages.append(_message("assistant", content))

    def _user(self, lane: _Lane, content: list[dict], line: Callable[[], dict], pending_lines: list) -> None:
        lane.messages.append(_message("user", content))
        pending_lines.append((lane.jsonl_path, line))

    def _compact_if_full(self, lane: _Lane, cap_tokens: int) -> None:
        """Claude Code's auto-compaction: the history becomes one summary message (a major reset)."""
        if lane.prompt_tokens() <= cap_tokens:
            return
        summary = "This session is being continued from a previous conversation.\n" + self.static.pool.text(self.rng, 24_000)
        # The pending user message (a prompt or tool results) follows the summary in the same message.
        pending_user = lane.messages[-1].stored["content"]
        lane.messages[:] = [_message("user", [{"type": "text", "text": summary}, *pending_user])]

    # --- the session -------------------------------------------------------------------------------

    def specs(self) -> Iterator[_Spec]:
        """Every row of the session in start order (sub-agent rows interleaved by time)."""
        parent, rng = self.parent, self.rng
        yield from self._quota_probe()
        pending: list = []
        typed = self._typed_prompt()
        at = _at(parent.clock_s)
        self._user(parent, [{"type": "text", "text": typed}],
                   lambda typed=typed, at=at: parent.session.user_prompt(typed, at), pending)
        for _ in range(self.turns):
            if rng.random() < P_AGENT_TURN:
                yield from self._agent_turn(pending)
            elif rng.random() < P_END_TURN:
                yield from self._call(parent, self._assistant_blocks(None), "end_turn", pending)
                parent.clock_s += rng.uniform(20.0, 300.0)
                typed = self._typed_prompt()
                at = _at(parent.clock_s)
                self._user(parent, [{"type": "text", "text": typed}],
                           lambda typed=typed, at=at: parent.session.user_prompt(typed, at), pending)
            else:
                blocks = self._assistant_blocks(rng.choice(READ_TOOLS))
                yield from self._call(parent, blocks, "tool_use", pending)
                self._tool_result(parent, blocks[-1], pending)
            self._compact_if_full(parent, self.cap_tokens)

    def _typed_prompt(self) -> str:
        return f"Task {new_uuid(self.rng)[:8]}: " + self.static.pool.text(self.rng, self.rng.randint(80, 1200))

    def _tool_result(self, lane: _Lane, tool_use: dict, pending: list) -> None:
        lane.clock_s += self.rng.uniform(0.2, 4.0)
        output = self._tool_output(f"{tool_use['name']} {tool_use['input'].get('file_path', '')}")
        block = {"tool_use_id": tool_use["id"], "type": "tool_result", "content": output, "is_error": False}
        at = _at(lane.clock_s)
        structured = {"stdout": output[:200], "stderr": "", "interrupted": False, "isImage": False}
        self._user(lane, [block], lambda: lane.session.tool_results([block], structured, at), pending)

    def _quota_probe(self) -> Iterator[_Spec]:
        """Claude Code's start-up quota check: haiku, max_tokens 1, not in any JSONL (unlinked)."""
        start_s = self.parent.clock_s - 2.0
        probe = _Lane(HAIKU, "[]", "[]", 10, BETA_UTILITY, self.parent.session, self.parent.jsonl_path, False, start_s)
        probe.messages.append(_message("user", [{"type": "text", "text": "quota"}]))
        reply = self._reply(probe, [{"type": "text", "text": "#"}], "max_tokens", start_s)
        yield _Spec(start_s, probe, (probe.messages[0].text,), reply, False, 1)

    def _agent_turn(self, pending: list) -> Iterator[_Spec]:
        """The parent launches 1–3 Explore agents in one message; they run concurrently, then report."""
        parent, rng = self.parent, self.rng
        count = rng.randint(1, 3)
        blocks = self._assistant_blocks(None)
        launches = []
        for _ in range(count):
            task = "Explore " + self.static.pool.text(rng, rng.randint(200, 800))
            launches.append({"type": "tool_use", "id": self.ids.tool_use(), "name": "Agent",
                             "input": {"description": "Explore the code", "prompt": task, "subagent_type": "Explore"}})
        yield from self._call(parent, blocks + launches, "tool_use", pending)
        spawn_s = parent.clock_s
        agents = [self._agent(launch, spawn_s + rng.uniform(0.0, 0.3)) for launch in launches]
        yield from heapq.merge(*(agent.specs() for agent in agents), key=lambda spec: spec.start_s)
        results = []
        for launch, agent in zip(launches, agents):
            report = agent.report
            results.append(({"tool_use_id": launch["id"], "type": "tool_result",
                             "content": [{"type": "text", "text": report}]},
                            {"status": "completed", "prompt": launch["input"]["prompt"], "agentId": agent.agent_id,
                             "content": [{"type": "text", "text": report}], "totalDurationMs": int((agent.lane.clock_s - spawn_s) * 1000),
                             "totalTokens": agent.total_tokens, "totalToolUseCount": agent.tool_uses, "usage": {}}))
        parent.clock_s = max(agent.lane.clock_s for agent in agents) + 0.05
        for block, structured in results:
            at = _at(parent.clock_s)
            self._user(parent, [block], lambda block=block, structured=structured, at=at:
                       parent.session.tool_results([block], structured, at), pending)
            # Several results of one message arrive as one user message in the API history.
        if len(results) > 1:
            merged = [message.stored["content"][0] for message in parent.messages[-len(results):]]
            del parent.messages[-len(results):]
            parent.messages.append(_message("user", merged))

    def _agent(self, launch: dict, start_s: float) -> "_AgentRun":
        agent_id = "a" + f"{self.rng.getrandbits(64):016x}"
        session = JsonlSession(self.rng, self.parent.session.session_id, self.cwd, self.prompt_id, agent_id=agent_id)
        lane = _Lane(HAIKU, self.static.agent_tools, self.static.agent_system, self.static.agent_fixed_tokens,
                     BETA_SUBAGENT, session, self.project / self.parent.session.session_id / "subagents" / f"agent-{agent_id}.jsonl",
                     self.is_old_proxy, start_s)
        return _AgentRun(self, lane, agent_id, launch["input"]["prompt"], self.rng.randint(5, 40))


class _AgentRun:
    """One sub-agent's calls on its own clock; after `specs()` is exhausted, `report` and totals are set."""

    def __init__(self, session: _Session, lane: _Lane, agent_id: str, task: str, turns: int) -> None:
        self.session, self.lane, self.agent_id, self.task, self.turns = session, lane, agent_id, task, turns
        self.report, self.total_tokens, self.tool_uses = "", 0, 0

    def specs(self) -> Iterator[_Spec]:
        """The agent's rows in start order: a Read/Grep loop, then the final report (end_turn)."""
        owner, lane, task, at = self.session, self.lane, self.task, _at(self.lane.clock_s)
        pending: list = []
        owner._user(lane, [{"type": "text", "text": task}], lambda: lane.session.user_prompt(task, at), pending)
        for _ in range(self.turns - 1):
            blocks = owner._assistant_blocks(owner.rng.choice(READ_TOOLS[:3]))
            yield from owner._call(lane, blocks, "tool_use", pending)
            owner._tool_result(lane, blocks[-1], pending)
            self.tool_uses += 1
            owner._compact_if_full(lane, AGENT_CAP_TOKENS)
        self.report = owner.static.pool.text(owner.rng, owner.rng.randint(1500, 6000))
        yield from owner._call(lane, [{"type": "text", "text": self.report}], "end_turn", pending)
        self.total_tokens = lane.prompt_tokens()


def _at(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(round(epoch_s, 3), tz=timezone.utc)


def _slot(static: _Static, slot: int, slots: int, jsonl_dir: Path) -> Iterator[_Spec]:
    """Sessions back to back in one concurrency slot, staggered start; endless (the budget stops it)."""
    rng = random.Random(f"{static.seed}:slot:{slot}")
    clock_s = START.timestamp() + slot * rng.uniform(60.0, 900.0)
    number = slot
    while True:
        session = _Session(static, number, clock_s, jsonl_dir)
        yield from session.specs()
        clock_s = session.parent.clock_s + rng.uniform(30.0, 1800.0)
        number += slots


@dataclass
class CaptureSummary:
    """What one generation wrote."""

    db_path: str
    jsonl_dir: str
    rows: int = 0
    db_bytes: int = 0
    payload_bytes: int = 0
    sessions: int = 0
    jsonl_files: int = 0
    errors: int = 0
    pending: int = 0
    elapsed_s: float = 0.0


class _Renderer:
    """Turns specs into proxy rows (rendering randomness in write order, so output is deterministic)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"{seed}:render")

    def row(self, spec: _Spec) -> ProxyRow:
        lane = spec.lane
        body = lane.body(spec.history, is_streaming=spec.is_streaming, max_tokens=spec.max_tokens)
        headers = go_json(request_headers(content_length=len(body), api_key_hash=API_KEY_HASH, beta=lane.beta,
                                          retry_count=spec.retry_count))
        reply = spec.reply
        if spec.outcome == "pending":
            response = None
        elif spec.outcome == "error":
            response = error_response(status=529, request_id=reply.request_id, started_at=reply.started_at,
                                      response_time_ms=reply.ttft_ms, rng=self.rng, is_streaming=spec.is_streaming,
                                      utc_offset=UTC_OFFSET)
        else:
            response = proxy_response(reply, self.rng, is_streaming=spec.is_streaming, utc_offset=UTC_OFFSET)
        return ProxyRow(id=f"{self.rng.getrandbits(64):016x}", arrived_at=_at(spec.start_s), utc_offset=UTC_OFFSET,
                        headers=headers, body=body, model=lane.model, response=response)


def generate_capture(output_dir: str | Path, *, target_bytes: int, seed: int = 1,
                     progress: Optional[Callable[[int], None]] = None) -> CaptureSummary:
    """Write `requests.db` and `jsonl/` (about `target_bytes` of row payload) into `output_dir`."""
    started = time.perf_counter()
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    db_path, jsonl_dir = output / "requests.db", output / "jsonl"
    temp_path = output / ".requests.db.tmp"
    temp_path.unlink(missing_ok=True)
    _clear_jsonl(jsonl_dir)
    static = _Static.build(seed)
    slots = concurrency_for(target_bytes)
    stream = heapq.merge(*(_slot(static, slot, slots, jsonl_dir) for slot in range(slots)), key=lambda spec: spec.start_s)
    summary = CaptureSummary(str(db_path), str(jsonl_dir))
    renderer = _Renderer(seed)
    sessions: set[str] = set()
    with CaptureWriter(temp_path, batch_rows=100) as writer:
        for spec in stream:
            row = renderer.row(spec)
            writer.add(row)
            for path, line in spec.jsonl:
                _append_jsonl(path, line())
            summary.rows += 1
            summary.errors += spec.outcome == "error"
            summary.pending += spec.outcome == "pending"
            sessions.add(spec.lane.session.session_id)
            summary.payload_bytes += len(row.body) + len(row.headers) + len(row.response or "")
            if progress is not None:
                progress(summary.payload_bytes)
            if summary.payload_bytes >= target_bytes:
                break
    temp_path.replace(db_path)
    summary.db_bytes = db_path.stat().st_size
    summary.sessions = len(sessions)
    summary.jsonl_files = sum(1 for _ in jsonl_dir.rglob("*.jsonl"))
    summary.elapsed_s = round(time.perf_counter() - started, 2)
    return summary


def _clear_jsonl(jsonl_dir: Path) -> None:
    """Start from an empty log folder: lines are appended, and stale sessions would link to this DB."""
    if jsonl_dir.exists():
        for path in sorted(jsonl_dir.rglob("*.jsonl")):
            path.unlink()


def _append_jsonl(path: Path, line: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as stream:
        stream.write(orjson.dumps(line) + b"\n")
