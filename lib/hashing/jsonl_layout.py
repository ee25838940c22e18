"""Block keys of a call rebuilt from the JSONL logs, in API token positions (docs/jsonl.md).

Shared by the JSONL-only trace route and the visualizer without a DB. First comes the tools + system
prefix the logs never show, one stable block chain per (agent kind, model family) sized from the
usage, then the call's prompt lines, each holding the tokens the usage says it added the first time
a call sent it. Two calls therefore share exactly the blocks of the prompt lines they share, as their
prompts share a prefix on the API.
"""
from __future__ import annotations

import hashlib

from lib.capture.jsonl_conversations import Conversation
from lib.hashing.block_hashes import RequestHashes
from lib.hashing.jsonl_requests import PromptLine, RebuiltCall
from lib.hashing.request_hashing import HashedRequest
from lib.hashing.tokenizer import Encoder, model_family

MAIN_AGENT_KIND = "main"
UNTYPED_AGENT_KIND = "subagent"  # a sub-agent whose type no call or .meta.json names


def agent_kind(conversation: Conversation, agent_id: str) -> str:
    """`main` for a session's own call, else the sub-agent's type (the key of its prefix chain)."""
    if not agent_id:
        return MAIN_AGENT_KIND
    link = next((link for link in conversation.links if link.agent_id == agent_id), None)
    return (link.subagent_type if link else "") or UNTYPED_AGENT_KIND


def prefix_sizes(conversations: dict[str, Conversation], calls: dict[str, RebuiltCall],
                 encoder: Encoder, block_size: int) -> dict[tuple[str, str], int]:
    """Tokens of the unseen tools + system prefix per (agent kind, model family).

    A lane's first call shows the least besides the prefix (its first prompt, counted with the
    tokenizer): its prompt total minus those tokens bounds the prefix from above; the smallest bound
    over the lanes of one kind is the part they can all share. The prefix also ends within the first
    call's full blocks: AIPerf's weka_trace loader rejects a trace whose declared prefix needs more
    blocks than its first request has (docs/traces.md)."""
    sizes: dict[tuple[str, str], int] = {}
    for conversation in conversations.values():
        for turns in (conversation.turns, *conversation.subagents.values()):
            first = next((calls[turn.message_id] for turn in turns if turn.message_id in calls), None)
            if first is None or first.turn.usage is None:
                continue
            visible = len(encoder.encode("\n".join(line.text for line in first.prompt)))
            key = (agent_kind(conversation, first.turn.agent_id), model_family(first.turn.model))
            total = first.turn.usage.prompt_tokens
            bound = max(0, min(total - visible, total // block_size * block_size))
            sizes[key] = min(sizes.get(key, bound), bound)
    return sizes


class BlockLayout:
    """Block keys in API token positions: the prefix chain, then each prompt line at its first length."""

    def __init__(self, block_size: int, prefix_sizes: dict[tuple[str, str], int]) -> None:
        self.block_size = block_size
        self.prefix_sizes = prefix_sizes
        self.line_tokens: dict[str, int] = {}  # prompt line uuid → tokens it added when first sent
        # The previous call's spans and full-block keys: a call extends its predecessor's prompt, so
        # the blocks inside their common spans are the same keys (computed once, not once per call).
        self.last_spans: list[tuple[bytes, int]] = []
        self.last_keys: list[bytes] = []

    def request(self, call: RebuiltCall, conversation: Conversation) -> HashedRequest:
        """The call's blocks; a line first sent by this call gets its share of the tokens it added."""
        turn = call.turn
        total = turn.usage.prompt_tokens if turn.usage else 0
        kind, family = agent_kind(conversation, turn.agent_id), model_family(turn.model)
        prefix = self.prefix_sizes.get((kind, family), 0)
        spans: list[tuple[bytes, int]] = [(f"prefix\0{kind}\0{family}".encode(), prefix)]
        new = [line for line in call.prompt if line.uuid not in self.line_tokens]
        known = sum(self.line_tokens[line.uuid] for line in call.prompt if line.uuid in self.line_tokens)
        self._apportion(new, max(0, total - prefix - known))
        spans += [(line.uuid.encode(), self.line_tokens[line.uuid]) for line in call.prompt]
        hashes = self._keys(spans, total, f"pad\0{turn.message_id}".encode())
        return HashedRequest(hashes, prefix, 0, (), call.last_message_types, call.all_message_types)

    def _apportion(self, lines: list[PromptLine], tokens: int) -> None:
        """Split the tokens a call added among its new prompt lines, by their content size."""
        weights = [max(1, line.size) for line in lines]
        total_weight, given, running = sum(weights), 0, 0
        for line, weight in zip(lines, weights):
            running += weight
            share = tokens * running // total_weight - given
            self.line_tokens[line.uuid] = share
            given += share

    def _keys(self, spans: list[tuple[bytes, int]], total: int, pad: bytes) -> RequestHashes:
        """Chained keys of the `total // block_size` full blocks, each keyed on the span holding its last
        token; positions past the spans (a prompt larger than its lines explain) are this call's own."""
        keys = self.last_keys[:min(self._shared_blocks(spans), total // self.block_size)]
        previous = keys[-1] if keys else b""
        span, span_end = 0, spans[0][1]
        for block in range(len(keys), total // self.block_size):
            last = (block + 1) * self.block_size - 1
            while span < len(spans) and last >= span_end:
                span += 1
                span_end += spans[span][1] if span < len(spans) else 0
            owner = spans[span][0] if span < len(spans) else pad
            previous = hashlib.blake2b(previous + owner + block.to_bytes(4, "big"), digest_size=16).digest()
            keys.append(previous)
        tail = None
        if total % self.block_size:
            tail = hashlib.blake2b(previous + b"tail" + pad, digest_size=16).digest()
        self.last_spans, self.last_keys = spans, keys
        return RequestHashes(total, keys, tail)

    def _shared_blocks(self, spans: list[tuple[bytes, int]]) -> int:
        """How many leading blocks this call shares with the previous one: those whose last token lies
        in the spans both calls start with (a block's key depends only on the spans up to its end)."""
        shared_end = 0
        for mine, previous in zip(spans, self.last_spans):
            if mine != previous:
                break
            shared_end += mine[1]
        return min(shared_end // self.block_size, len(self.last_keys))
