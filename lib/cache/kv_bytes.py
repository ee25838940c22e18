"""KV-cache bytes per token from a model's geometry, and capacities in bytes (docs/cache-models.md#kv-bytes-per-token).

Standard attention (MHA / GQA) keeps a key and a value vector per KV head in every layer:
    bytes/token = 2 × layers × kv_heads × head_dim × dtype_bytes.
Multi-head latent attention (MLA, DeepSeek-V2/V3) keeps one compressed latent plus the decoupled
RoPE key per layer, shared by K and V:
    bytes/token = layers × (kv_lora_rank + qk_rope_head_dim) × dtype_bytes.
Only layers that keep the whole context count: a sliding-window layer (gpt-oss alternates them)
holds at most its window per sequence, so it adds a constant per request, not per cached token.

Presets take the fields of each model's public `config.json` on Hugging Face (num_hidden_layers,
num_key_value_heads, head_dim or hidden_size / num_attention_heads, kv_lora_rank, qk_rope_head_dim,
layer_types) with a 16-bit KV cache (the models' bf16 dtype); an FP8 cache is dtype_bytes=1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

GIB = 1 << 30


@dataclass(frozen=True)
class KVGeometry:
    """The KV-cache shape of one model; `mla_dim` (latent + rope key) replaces heads × head_dim × 2."""

    name: str
    layers: int
    kv_heads: int = 0
    head_dim: int = 0
    dtype_bytes: int = 2
    mla_dim: int = 0
    source: str = ""

    @property
    def bytes_per_token(self) -> int:
        """KV bytes one cached token occupies across all (full-context) layers."""
        if self.mla_dim:
            return self.layers * self.mla_dim * self.dtype_bytes
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    def describe(self) -> str:
        """`llama-3.1-70b: 80 layers × 8 KV heads × 128 × 2 B × 2 (K,V) = 327,680 B/token`."""
        if self.mla_dim:
            shape = f"{self.layers} layers × MLA {self.mla_dim} × {self.dtype_bytes} B"
        elif self.layers:
            shape = f"{self.layers} layers × {self.kv_heads} KV heads × {self.head_dim} × {self.dtype_bytes} B × 2 (K,V)"
        else:
            return f"{self.name}: {self.bytes_per_token:,} B/token"
        return f"{self.name}: {shape} = {self.bytes_per_token:,} B/token"


@dataclass(frozen=True)
class CustomBytes(KVGeometry):
    """A model given only as bytes per token (`--kv-bytes-per-token`)."""

    given_bytes_per_token: int = 0

    @property
    def bytes_per_token(self) -> int:
        return self.given_bytes_per_token


_HF = "config.json of huggingface.co/"
PRESETS: dict[str, KVGeometry] = {g.name: g for g in (
    KVGeometry("llama-3.1-8b", 32, 8, 128, source=_HF + "meta-llama/Llama-3.1-8B (head_dim = 4096 / 32)"),
    KVGeometry("llama-3.1-70b", 80, 8, 128, source=_HF + "meta-llama/Llama-3.1-70B (head_dim = 8192 / 64)"),
    KVGeometry("qwen2.5-7b", 28, 4, 128, source=_HF + "Qwen/Qwen2.5-7B-Instruct (head_dim = 3584 / 28)"),
    KVGeometry("qwen2.5-72b", 80, 8, 128, source=_HF + "Qwen/Qwen2.5-72B-Instruct (head_dim = 8192 / 64)"),
    KVGeometry("qwen3-32b", 64, 8, 128, source=_HF + "Qwen/Qwen3-32B (head_dim field)"),
    KVGeometry("deepseek-v3", 61, mla_dim=512 + 64,
               source=_HF + "deepseek-ai/DeepSeek-V3 (kv_lora_rank 512 + qk_rope_head_dim 64)"),
    KVGeometry("gpt-oss-20b", 12, 8, 64,
               source=_HF + "openai/gpt-oss-20b (24 layers, the 12 full_attention ones; 12 use a 128-token window)"),
    KVGeometry("gpt-oss-120b", 18, 8, 64,
               source=_HF + "openai/gpt-oss-120b (36 layers, the 18 full_attention ones; 18 use a 128-token window)"),
)}
DEFAULT_PRESET = "llama-3.1-70b"
_GEOMETRY_KEYS = ("layers", "kv_heads", "head_dim", "dtype_bytes", "mla_dim")


def parse_geometry(text: str) -> KVGeometry:
    """`layers=32,kv_heads=8,head_dim=128[,dtype_bytes=2]` or `layers=61,mla_dim=576`; ValueError if bad."""
    values: dict[str, int] = {}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in _GEOMETRY_KEYS:
            raise ValueError(f"expected key=value with keys {', '.join(_GEOMETRY_KEYS)}, got {part!r}")
        try:
            values[key] = int(value)
        except ValueError:
            raise ValueError(f"{key} must be an integer, got {value.strip()!r}") from None
        if values[key] <= 0:
            raise ValueError(f"{key} must be positive, got {values[key]}")
    if "layers" not in values or not ("mla_dim" in values or {"kv_heads", "head_dim"} <= values.keys()):
        raise ValueError("give layers and either kv_heads and head_dim, or mla_dim")
    return KVGeometry("custom", **values, source="given geometry")


def resolve_model(preset: Optional[str], *, geometry: Optional[str] = None,
                  bytes_per_token: Optional[int] = None) -> KVGeometry:
    """The model capacities are converted with: explicit bytes, else a geometry, else a preset."""
    if bytes_per_token is not None:
        return CustomBytes("custom", 0, given_bytes_per_token=bytes_per_token, source="given bytes per token")
    if geometry is not None:
        return parse_geometry(geometry)
    name = (preset or DEFAULT_PRESET).lower()
    if name not in PRESETS:
        raise ValueError(f"unknown model {preset!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def tokens_to_gib(tokens: Optional[int], bytes_per_token: int) -> Optional[float]:
    """Tokens × bytes/token in GiB (2^30 bytes); None stays None."""
    return None if tokens is None else tokens * bytes_per_token / GIB


def gib_to_blocks(gib: float, bytes_per_token: int, block_size: int) -> int:
    """Whole blocks of `block_size` tokens that fit in `gib` GiB."""
    return math.floor(gib * GIB / (bytes_per_token * block_size)) if bytes_per_token else 0
