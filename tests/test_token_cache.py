"""Tokenise once, memory-map after: the cache is keyed by content and tokenizer, and reused."""

from __future__ import annotations

import numpy as np
import pytest

from mypt import token_cache
from mypt.corpus import iter_text_chunks
from mypt.errors import MyptError
from mypt.token_cache import load_tokens
from mypt.tokenizer import CharTokenizer, GPT2Tokenizer


def count_encodes(monkeypatch) -> list[str]:
    """The source of every cache entry written (one per file tokenised)."""
    calls: list[str] = []
    original = token_cache._write_entry

    def counting(cache, key, file, *args):
        calls.append(file.path.name)
        return original(cache, key, file, *args)

    monkeypatch.setattr(token_cache, "_write_entry", counting)
    return calls


def test_second_load_reuses_the_cache(text_file, tmp_path, monkeypatch):
    calls = count_encodes(monkeypatch)
    first = load_tokens(text_file, "char", cache_dir=tmp_path / "c")
    mtime = first.path.stat().st_mtime_ns
    second = load_tokens(text_file, "char", cache_dir=tmp_path / "c")
    assert (first.hit, second.hit) == (False, True)
    assert len(calls) == 1  # tokenised once
    assert second.path.stat().st_mtime_ns == mtime  # the array file was not rewritten
    assert isinstance(second.tokens, np.memmap) and second.tokens.dtype == np.uint16
    assert np.array_equal(first.tokens, second.tokens)
    text = text_file.read_text(encoding="utf-8")
    assert second.tokenizer.decode(second.tokens[:200].tolist()) == text[:200]


def test_edited_file_or_other_tokenizer_is_tokenised_again(text_file, tmp_path):
    a = load_tokens(text_file, "char", cache_dir=tmp_path / "c")
    b = load_tokens(text_file, "gpt2", cache_dir=tmp_path / "c")
    assert not b.hit and a.path != b.path
    text_file.write_text(text_file.read_text(encoding="utf-8") + "nuovo verso\n", encoding="utf-8")
    c = load_tokens(text_file, "char", cache_dir=tmp_path / "c")
    assert not c.hit and len(c.tokens) == len(a.tokens) + len("nuovo verso\n")


def test_chunked_tokenisation_equals_whole_text(text_file, tmp_path, monkeypatch):
    monkeypatch.setattr(token_cache, "CHUNK_BYTES", 1000)  # force many chunks
    text = text_file.read_text(encoding="utf-8")
    chars = load_tokens(text_file, "char", cache_dir=tmp_path / "c")
    assert chars.tokens.tolist() == CharTokenizer.from_text(text).encode(text)
    gpt2 = load_tokens(text_file, "gpt2", cache_dir=tmp_path / "c")
    assert gpt2.tokens.tolist() == GPT2Tokenizer().encode(text)
    assert "".join(iter_text_chunks(text_file, 1000)) == text


def test_saved_tokenizer_is_used_and_unknown_characters_named(text_file, tmp_path):
    tok = CharTokenizer(sorted(set(text_file.read_text(encoding="utf-8")) | {"@"}))
    cache = load_tokens(text_file, "char", tokenizer=tok, cache_dir=tmp_path / "c")
    assert cache.tokenizer is tok
    with pytest.raises(MyptError, match="not in the model's vocabulary"):
        load_tokens(text_file, "char", tokenizer=CharTokenizer(["a", "b"]), cache_dir=tmp_path / "c")


def test_damaged_cache_entry_is_rebuilt(text_file, tmp_path):
    first = load_tokens(text_file, "char", cache_dir=tmp_path / "c")
    first.path.with_suffix(".json").write_text("{broken")
    again = load_tokens(text_file, "char", cache_dir=tmp_path / "c")
    assert not again.hit and np.array_equal(first.tokens, again.tokens)
