"""Token counts and an Anthropic-like prompt cache for the example generator's `usage` numbers.

Counts are per prompt piece (one tool, one system block, one message content block), computed
once when the piece is appended, so a request's size is a lookup, never a re-tokenization.
The cache follows docs/cache-models.md#anthropic-api-model: entries at `cache_control` breakpoints, reads at the longest live
entry within a 20-piece lookback of a breakpoint, writes readable from the writer's first token (so
requests sent together miss each other, while an old-proxy replay reads its twin's write), TTL
refreshed on read, one cache shared by every conversation.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from lib.synthetic.proxy_response import ApiUsage

# Claude's tokenizer counts ~15-20 % more than cl100k_base (docs/hashing.md#tokenizer); one fixed factor keeps counts deterministic.
API_TOKEN_FACTOR = 1.17
LOOKBACK_PIECES = 20
TTL_5M_S = 300.0
TTL_1H_S = 3600.0
_DROPPED_KEYS = frozenset({"cache_control", "signature"})


def tiktoken_counter() -> Callable[[str], int]:
    """A cl100k_base token counter, loaded offline through lib.hashing.tokenizer."""
    from lib.hashing.tokenizer import load_encoder  # loads tiktoken; only the generator needs it

    encoder = load_encoder("cl100k_base")
    return lambda text: len(encoder.encode(text))


def _normalized(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _normalized(item) for key, item in value.items() if key not in _DROPPED_KEYS}
    if isinstance(value, list):
        return [_normalized(item) for item in value]
    return value


class TokenMeter:
    """API-token counts of prompt pieces: cl100k count of the normalized compact JSON × the factor."""

    def __init__(self, count: Callable[[str], int], *, factor: float = API_TOKEN_FACTOR) -> None:
        self._count = count
        self.factor = factor

    def piece(self, value: Any) -> tuple[int, bytes]:
        """(API tokens, normalized bytes) of one piece; the bytes identify it in prefix keys."""
        encoded = json.dumps(_normalized(value), separators=(",", ":"), sort_keys=True).encode()
        return round(self._count(encoded.decode()) * self.factor), encoded

    def text(self, text: str) -> int:
        """API tokens of plain text (output token counts)."""
        return round(self._count(text) * self.factor)


class PromptLayout:
    """A growing prompt: cumulative token positions and chained prefix keys after each piece."""

    def __init__(self, meter: TokenMeter) -> None:
        self._meter = meter
        self.positions: list[int] = [0]
        self.keys: list[bytes] = [b""]

    def extend(self, pieces: Iterable[Any]) -> None:
        """Append pieces (tools, system blocks, content blocks) in prompt order."""
        for value in pieces:
            tokens, encoded = self._meter.piece(value)
            self.positions.append(self.positions[-1] + tokens)
            self.keys.append(hashlib.blake2b(self.keys[-1] + encoded, digest_size=16).digest())

    @property
    def piece_count(self) -> int:
        """Pieces appended so far (a request covers a prefix of them)."""
        return len(self.positions) - 1


@dataclass
class _Entry:
    visible_at: float
    expires_at: float
    ttl_s: float


class PromptCacheSim:
    """The shared prompt cache across all conversations of the capture."""

    def __init__(self) -> None:
        # Keyed by (model, prefix key): a model never reads another model's entries.
        self._entries: dict[tuple[str, bytes], _Entry] = {}

    def warm(self, model: str, key: bytes, at: float, ttl_s: float) -> None:
        """Pretend another session wrote this prefix at `at` (tools+system are warm in real captures)."""
        self._entries[(model, key)] = _Entry(at, at + ttl_s, ttl_s)

    def request(self, layout: PromptLayout, *, model: str, pieces: int, breakpoints: list[int], start: float,
                visible_at: float, ttl_s: float, overhead_tokens: int, output_tokens: int) -> ApiUsage:
        """Usage of one request covering `pieces` pieces with cache_control after each breakpoint piece."""
        read = 0
        for breakpoint in breakpoints:
            for boundary in range(breakpoint, max(0, breakpoint - LOOKBACK_PIECES) - 1, -1):
                entry = self._live((model, layout.keys[boundary]), start)
                if entry is not None:
                    entry.expires_at = start + entry.ttl_s
                    read = max(read, layout.positions[boundary])
                    break
        last = layout.positions[breakpoints[-1]] if breakpoints else 0
        for breakpoint in breakpoints:
            key = (model, layout.keys[breakpoint])
            entry = self._entries.get(key)
            if entry is None or entry.expires_at < start:
                self._entries[key] = _Entry(visible_at, start + ttl_s, ttl_s)
            else:
                # A concurrent identical write: the earliest writer makes it readable.
                entry.visible_at = min(entry.visible_at, visible_at)
                entry.expires_at = max(entry.expires_at, start + ttl_s)
        creation = max(0, last - read)
        uncached = layout.positions[pieces] - max(last, read) + overhead_tokens
        long_lived = ttl_s >= TTL_1H_S
        return ApiUsage(input_tokens=uncached, cache_read_input_tokens=read,
                        cache_creation_5m=0 if long_lived else creation,
                        cache_creation_1h=creation if long_lived else 0, output_tokens=output_tokens)

    def _live(self, key: tuple[str, bytes], at: float) -> Optional[_Entry]:
        entry = self._entries.get(key)
        if entry is None or entry.visible_at > at or entry.expires_at < at:
            return None
        return entry
