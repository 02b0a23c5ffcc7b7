"""Learn a byte-level BPE from the user's text with Hugging Face `tokenizers` (`--data.tokenizer bpe`).

GPT-2's recipe, sized to the text: the same pre-tokenizer (GPT-2's split into words, numbers,
punctuation and spaces, over UTF-8 bytes), the 256 byte symbols as the alphabet, `<|endoftext|>`
as special token 0, then merges of the most frequent adjacent pair until `vocab_size` tokens.
Training is deterministic: the same text and vocab_size give a byte-identical tokenizer.json.

A very large training split is sampled: BPE_SAMPLE_BYTES of it, as evenly spaced chunks, rather
than all of it. The merges of a vocabulary of a few thousand tokens come from the most frequent
pairs, which a sample of that size already ranks as the whole corpus would.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator

import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from mypt.corpus import flag
from mypt.errors import MyptError
from mypt.tokenizer import BYTE_ALPHABET, EOT_TEXT, BPETokenizer

SPECIAL_TOKENS = (EOT_TEXT,)
MIN_VOCAB_SIZE = len(BYTE_ALPHABET) + len(SPECIAL_TOKENS) + 1  # the bytes, the specials, one merge
MAX_VOCAB_SIZE = 1 << 16  # token ids are stored as uint16 in the token cache
BPE_SAMPLE_BYTES = 256 << 20  # the most text a BPE is learnt from (evenly spaced chunks)
TOKENS_PER_BYTE_BYTES = 8 << 20  # tokens/byte (shown by `mypt inspect`) measured on this much of it
PROGRESS_BYTES = 16 << 20  # training texts above this size show `tokenizers`' progress bars on a terminal


def check_vocab_size(vocab_size: int) -> None:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise MyptError(f"{flag('vocab_size')} must be an integer, got {vocab_size!r}")
    if not MIN_VOCAB_SIZE <= vocab_size <= MAX_VOCAB_SIZE:
        raise MyptError(
            f"{flag('vocab_size')} {vocab_size} is out of range for a byte-level BPE: it needs at least "
            f"{MIN_VOCAB_SIZE} (256 bytes, {EOT_TEXT}, one merge) and at most {MAX_VOCAB_SIZE}"
        )


def sample_chunks(
    chunks: Iterable[str], text_bytes: int, sample_bytes: int = BPE_SAMPLE_BYTES
) -> Iterator[str]:
    """The first `text_bytes` of the text as it arrives in chunks; when that is more than
    `sample_bytes`, every k-th chunk only (k = text_bytes / sample_bytes, rounded up)."""
    stride = max(1, -(-text_bytes // sample_bytes))
    seen = 0
    for i, chunk in enumerate(chunks):
        if seen >= text_bytes:
            return
        raw = chunk.encode("utf-8")
        if seen + len(raw) > text_bytes:  # the last piece: cut at a character boundary
            chunk = raw[: text_bytes - seen].decode("utf-8", errors="ignore")
        if i % stride == 0:
            yield chunk
        seen += len(raw)


def train_bpe(texts: Iterable[str], vocab_size: int, text_bytes: int | None = None) -> BPETokenizer:
    """A byte-level BPE of exactly `vocab_size` tokens learnt from `texts` (pieces of one text, in
    order). `text_bytes` is the size of the text they were sampled from, recorded and shown."""
    check_vocab_size(vocab_size)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    probe: list[str] = []  # the first TOKENS_PER_BYTE_BYTES, encoded afterwards for tokens/byte
    sampled = 0

    def counted() -> Iterator[str]:
        nonlocal sampled
        for text in texts:
            if sampled < TOKENS_PER_BYTE_BYTES:
                probe.append(text)
            sampled += len(text.encode("utf-8"))
            yield text

    big = (text_bytes or 0) > PROGRESS_BYTES
    source = f"{_size(text_bytes)} of training text" if text_bytes else "the training text"
    if (text_bytes or 0) > BPE_SAMPLE_BYTES:
        source += f" (a sample of {_size(BPE_SAMPLE_BYTES)})"
    if big:  # a line before work that takes a while; a small text gets the closing line only
        _say(f"mypt: learning a {vocab_size}-token byte-level BPE from {source} ...")
    start = time.perf_counter()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=sorted(BYTE_ALPHABET),
        show_progress=big and sys.stderr.isatty(),
    )
    tokenizer.train_from_iterator(counted(), trainer=trainer)
    learnt = tokenizer.get_vocab_size(with_added_tokens=True)
    if learnt < vocab_size:
        merges = learnt - MIN_VOCAB_SIZE + 1
        if merges <= 0:
            raise MyptError(
                f"the training text is too small to learn any BPE merge: use more text or {flag('tokenizer')} char"
            )
        raise MyptError(
            f"{flag('vocab_size')} {vocab_size} is more than this text supports: it runs out of pairs to merge "
            f"after {merges} merges, so at most {learnt} tokens; choose {flag('vocab_size')} {learnt} or less"
        )
    hf_json = json.loads(tokenizer.to_str())
    n_probe = sum(len(text.encode("utf-8")) for text in probe)
    n_ids = sum(len(e.ids) for e in tokenizer.encode_batch_fast(probe))
    trained_on = {
        "text_bytes": text_bytes if text_bytes is not None else sampled,
        "sample_bytes": sampled,
        "tokens_per_byte": round(n_ids / n_probe, 4) if n_probe else None,
        "tokenizers_version": tokenizers.__version__,
    }
    _say(
        f"mypt: learnt a {vocab_size}-token byte-level BPE from {source} in {time.perf_counter() - start:.1f} s "
        f"({trained_on['tokens_per_byte']} tokens/byte)"
    )
    return BPETokenizer(hf_json, trained_on)


def _size(n: int | None) -> str:
    n = n or 0
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


def _say(line: str) -> None:
    """One line on stderr, from the first process only (every rank trains the same tokenizer)."""
    if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
        print(line, file=sys.stderr, flush=True)
