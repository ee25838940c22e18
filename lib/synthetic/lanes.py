"""Conversation lanes of the example capture: message history, prompt layout, API calls and their timing.

A lane is one sequential conversation (the parent, one sub-agent, or a one-off utility call).
`Lane.send` snapshots the prompt for one API call, draws its timing, and appends the assistant
reply to the history, so the plan of the whole capture is a list of `ApiCall`s.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

from lib.synthetic.proxy_response import ApiUsage, random_token
from lib.synthetic.usage import PromptCacheSim, PromptLayout, TokenMeter

OPUS = "claude-opus-4-6"
HAIKU = "claude-haiku-4-5-20251001"
SONNET = "claude-sonnet-4-5-20250929"
# Decode speeds (tokens/s) and time-to-first-token ranges (s) that give the seed's api_time/ttft spread.
SPEED_TPS = {OPUS: 56.0, HAIKU: 95.0, SONNET: 70.0}
TTFT_RANGE_S = {OPUS: (1.4, 3.5), HAIKU: (0.6, 1.6), SONNET: (1.0, 2.5)}
# Old proxy (docs/inputs.md): the client gives up on the stream once its first events arrive and replays
# it 0-30 s after the first send, usually within the second; the twin still runs to completion
# upstream, and its prompt-cache write is readable by then, so the replay reads it.
REPLAY_GAP_S = (0.1, 0.8)
LONG_CALL_S = 10.0


class IdSource:
    """Anthropic-style ids (msg_, toolu_, req_) from one seeded stream."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def message(self) -> str:
        """A `msg_01…` id."""
        return "msg_01" + random_token(self.rng, 22)

    def tool_use(self) -> str:
        """A `toolu_01…` id."""
        return "toolu_01" + random_token(self.rng, 22)

    def request(self) -> str:
        """A `req_011C…` id (the `Request-Id` header)."""
        return "req_011C" + random_token(self.rng, 20)


class _SentRequest:
    """What a sent request (an API call or its old-proxy twin) derives from its start, duration and usage."""

    start_s: float
    api_ms: int
    message_id: str
    usage: Optional[ApiUsage]

    @property
    def end_s(self) -> float:
        """Completion time upstream (epoch seconds)."""
        return self.start_s + self.api_ms / 1000

    @property
    def simulated_usage(self) -> ApiUsage:
        """The usage `simulate_usage` gave this request."""
        if self.usage is None:
            raise ValueError(f"{self.message_id}: usage not simulated yet")
        return self.usage


@dataclass
class Twin(_SentRequest):
    """The old proxy's streaming artifact: sent first, abandoned by the client, then replayed."""

    start_s: float
    api_ms: int
    ttft_ms: int
    message_id: str
    request_id: str
    usage: Optional[ApiUsage] = None


@dataclass
class ApiCall(_SentRequest):
    """One logical API call (the row a JSONL `message.id` points at), plus its twin under the old proxy."""

    lane: "Lane"
    n_messages: int
    pieces: int
    breakpoints: list[int]
    cc_block: Optional[int]
    content: list[dict]
    stop_reason: str
    output_tokens: int
    start_s: float
    ttft_ms: int
    api_ms: int
    message_id: str
    request_id: str
    twin: Optional[Twin] = None
    usage: Optional[ApiUsage] = None
    model: str = ""  # the lane's model when the call was planned (a `/model` switch changes the lane's)

    def api_message(self) -> dict:
        """The API message as Claude Code logs it in JSONL (usage must be simulated first)."""
        usage = self.usage.upstream() if self.usage else {}
        message = {"model": self.model, "id": self.message_id, "type": "message", "role": "assistant",
                   "content": self.content, "stop_reason": self.stop_reason, "stop_sequence": None, "usage": usage}
        if "context-management" in self.lane.beta:
            message["context_management"] = {"applied_edits": []}
        return message


@dataclass
class Lane:
    """One sequential conversation and its request template."""

    name: str
    model: str
    meter: TokenMeter
    timing: random.Random
    ids: IdSource
    clock_s: float
    tools: Optional[list[dict]] = None
    system: Optional[list[dict]] = None
    ttl_s: float = 300.0
    beta: str = ""
    max_tokens: int = 32000
    temperature: Optional[float] = None
    message_cache_control: Optional[dict] = None
    client_extras: dict = field(default_factory=dict)
    old_proxy: bool = False
    streams: bool = True
    messages: list[dict] = field(default_factory=list)
    calls: list[ApiCall] = field(default_factory=list)
    log: list[tuple[str, float, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.layout = PromptLayout(self.meter)
        self.layout.extend(self.tools or [])
        self.layout.extend(self.system or [])
        self._first_piece: list[int] = []

    def add_message(self, role: str, content: Any) -> None:
        """Append a message to the history (and its content blocks to the prompt layout)."""
        self._first_piece.append(self.layout.piece_count)
        self.messages.append({"role": role, "content": content})
        self.layout.extend(content if isinstance(content, list) else [content])

    def _breakpoints(self, cc_block: Optional[int]) -> list[int]:
        offset = len(self.tools or [])
        points = [offset + index + 1 for index, block in enumerate(self.system or []) if block.get("cache_control")]
        if cc_block is not None:
            content = self.messages[-1]["content"]
            points.append(self._first_piece[-1] + (cc_block % len(content)) + 1)
        return points

    def send(self, content: list[dict], stop_reason: str, *, think_s: float, cc_block: Optional[int] = -1) -> ApiCall:
        """Plan one API call on the current history; the reply joins the history (without `caller`)."""
        if self.message_cache_control is None:
            cc_block = None
        before = self.layout.piece_count
        breakpoints = self._breakpoints(cc_block)
        history = [{key: value for key, value in block.items() if key != "caller"} for block in content]
        self.add_message("assistant", history)
        output_tokens = max(1, sum(self.meter.text(_generated_text(block)) for block in content))
        ready = self.clock_s + think_s
        twin = None
        low, high = TTFT_RANGE_S[self.model]
        ttft_ms = int(self.timing.uniform(low, high) * 1000)
        api_ms = ttft_ms + int(output_tokens / SPEED_TPS[self.model] * 1000) + self.timing.randint(40, 400)
        if self.old_proxy and self.streams:
            twin_ttft_ms = int(self.timing.uniform(low, high) * 1000)
            twin = Twin(ready, api_ms - ttft_ms + twin_ttft_ms, twin_ttft_ms, self.ids.message(), self.ids.request())
            gap_s = twin_ttft_ms / 1000 + self.timing.uniform(*REPLAY_GAP_S)
            if api_ms / 1000 > LONG_CALL_S:
                gap_s = max(gap_s, min(28.0, api_ms / 1000) * self.timing.uniform(0.3, 0.9))
            ready += gap_s
        call = ApiCall(self, len(self.messages) - 1, before, breakpoints, cc_block, content, stop_reason,
                       output_tokens, ready, ttft_ms, api_ms, self.ids.message(), self.ids.request(), twin,
                       model=self.model)
        self.calls.append(call)
        self.log.append(("call", call.end_s, call))
        self.clock_s = call.end_s
        return call

    def prompt(self, api_content: Any, logged: Any, *, at_s: float) -> None:
        """A typed prompt (or task prompt): `api_content` goes to the API, `logged` to the JSONL."""
        self.add_message("user", api_content)
        self.log.append(("prompt", at_s, logged))

    def results(self, outcomes: list[tuple[dict, Any]], *, tool_s: float, notices: tuple[str, ...] = ()) -> None:
        """Tool results of the last call, batched into one user message, after `tool_s` seconds of execution.

        `notices`: task notifications that arrived meanwhile; Claude Code folds them into the same
        message after the results (logged as `queued_command` attachments)."""
        self.clock_s += tool_s
        self.add_message("user", [block for block, _ in outcomes] + [{"type": "text", "text": text} for text in notices])
        for outcome in outcomes:
            self.log.append(("result", self.clock_s, outcome))
        for text in notices:
            self.log.append(("queued", self.clock_s, text))

    def tool_use(self, name: str, tool_input: dict) -> dict:
        """A tool_use block as the API returns it."""
        return {"type": "tool_use", "id": self.ids.tool_use(), "name": name, "input": tool_input,
                "caller": {"type": "direct"}}


def _generated_text(block: dict) -> str:
    if block["type"] == "tool_use":
        return json.dumps(block["input"], separators=(",", ":"), ensure_ascii=False)
    return block.get("thinking") or block.get("text") or ""


def simulate_usage(calls: list[ApiCall], cache: PromptCacheSim) -> None:
    """Fill `usage` of calls and of their old-proxy twins, in start order, from the shared prompt cache.

    A write is readable from the writer's first token (docs/cache-models.md, 'Time and concurrency'), so an
    old-proxy replay, sent after its twin's first events, reads what the twin wrote: its usage
    says "almost all cached", as on real old-proxy captures.
    """
    sends: list[tuple[float, ApiCall, Any]] = [(call.start_s, call, call) for call in calls]
    sends += [(call.twin.start_s, call, call.twin) for call in calls if call.twin is not None]
    for start_s, call, send in sorted(sends, key=lambda item: (item[0], item[2] is item[1])):
        lane = call.lane
        send.usage = cache.request(
            lane.layout, model=call.model, pieces=call.pieces, breakpoints=call.breakpoints, start=start_s,
            visible_at=start_s + send.ttft_ms / 1000, ttl_s=lane.ttl_s,
            overhead_tokens=1 + int(start_s * 1000) % 5, output_tokens=call.output_tokens)


def client_body(call: ApiCall, *, stream: bool, max_tokens: int) -> dict:
    """What Claude Code sent for this call: history up to the call, cache_control on one block of the last message."""
    lane = call.lane
    messages = lane.messages[:call.n_messages]
    if call.cc_block is not None and lane.message_cache_control is not None:
        last = messages[-1]
        content = list(last["content"])
        content[call.cc_block] = {**content[call.cc_block], "cache_control": lane.message_cache_control}
        messages = messages[:-1] + [{"role": last["role"], "content": content}]
    body: dict[str, Any] = {"model": call.model, "messages": messages, "max_tokens": max_tokens}
    if lane.temperature is not None:
        body["temperature"] = lane.temperature
    if lane.system is not None:
        body["system"] = lane.system
    if stream:
        body["stream"] = True
    if lane.tools is not None:
        body["tools"] = lane.tools
    return body


def epoch_to_datetime(seconds: float) -> datetime:
    """An aware UTC datetime (millisecond precision, as the logs keep)."""
    return datetime.fromtimestamp(round(seconds, 3), tz=timezone.utc)
