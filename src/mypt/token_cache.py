"""Tokenise a text file once and keep the ids as a memory-mapped array.

The cache key is the file's sha256 plus the tokenizer's identity, so a second run on the same text
maps the array instead of tokenising again, and an edited file is tokenised afresh. The file is read
and encoded in chunks that end at a newline, so a corpus of any size never sits in memory as Python
objects: peak memory is a chunk batch, and the array itself is paged in by the OS.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mypt.bundle import sha256_file
from mypt.errors import MyptError
from mypt.tokenizer import CharTokenizer, Tokenizer, build_tokenizer, tokenizer_from_dict

CHUNK_BYTES = 1 << 20  # 1 MiB of text per chunk
CHUNKS_PER_BATCH = 16  # chunks handed to tiktoken's threaded batch encoder at once
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    env = os.environ.get("MYPT_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mypt" / "tokens"


def check_text_file(path: Path) -> None:
    if not path.exists():
        raise MyptError(f"input file {path} does not exist")
    if path.is_dir():
        raise MyptError(f"input file {path} is a directory, not a text file")
    if not path.is_file():
        raise MyptError(f"input file {path} is not a regular file")
    if path.stat().st_size == 0:
        raise MyptError(f"input file {path} is empty")


def iter_text_chunks(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """UTF-8 text in pieces that end at a newline (or at the end of the file)."""
    offset = 0
    rest = b""
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_bytes)
            data = rest + block
            if not block:
                if data:
                    yield _decode(data, path, offset)
                return
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            piece, rest = data[: cut + 1], data[cut + 1 :]
            yield _decode(piece, path, offset)
            offset += len(piece)


def _decode(data: bytes, path: Path, offset: int) -> str:
    if b"\x00" in data:
        raise MyptError(
            f"input file {path} looks binary (NUL byte at offset {offset + data.index(0)}), not text"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MyptError(
            f"input file {path} is not UTF-8 text (bad byte at offset {offset + e.start})"
        ) from None


def _batched(chunks: Iterator[str], n: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for chunk in chunks:
        batch.append(chunk)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _encoded_chunks(path: Path, tokenizer: Tokenizer) -> Iterator[np.ndarray]:
    """The ids of each chunk, in order. Char chunks are encoded one at a time (vectorised already,
    batching them would only hold more in memory); GPT-2 chunks go to tiktoken's threaded batch
    encoder CHUNKS_PER_BATCH at a time."""
    if isinstance(tokenizer, CharTokenizer):
        for chunk in iter_text_chunks(path):
            yield tokenizer.encode_array(chunk)
        return
    for batch in _batched(iter_text_chunks(path), CHUNKS_PER_BATCH):
        for ids in tokenizer.encode_batch(batch):
            yield np.asarray(ids)


class TokenCache:
    """Token ids of one text file under one tokenizer, memory-mapped from the cache folder."""

    def __init__(self, tokens: np.ndarray, tokenizer: Tokenizer, sha256: str, path: Path, hit: bool) -> None:
        self.tokens = tokens
        self.tokenizer = tokenizer
        self.sha256 = sha256
        self.path = path
        self.hit = hit  # True when this load reused an earlier tokenisation


def load_tokens(
    input_file: str | os.PathLike,
    tokenizer_kind: str,
    tokenizer: Tokenizer | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> TokenCache:
    """Token ids of `input_file`, tokenising only when no cached array matches.

    With `tokenizer` given (resume, fine-tune) its vocabulary is used; otherwise a new tokenizer of
    `tokenizer_kind` is built (char-level: from the file's characters).
    """
    path = Path(input_file)
    check_text_file(path)
    if tokenizer is None and tokenizer_kind not in ("char", "gpt2"):
        build_tokenizer(tokenizer_kind)  # raises the clear "unknown tokenizer" error
    digest = sha256_file(path)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = _cache_key(digest, tokenizer_kind, tokenizer)
    meta_file, bin_file = cache / f"{key}.json", cache / f"{key}.bin"
    if meta_file.is_file() and bin_file.is_file():
        try:
            meta = json.loads(meta_file.read_text())
            tokens = np.memmap(bin_file, dtype=meta["dtype"], mode="r", shape=(meta["n_tokens"],))
            return TokenCache(
                tokens, tokenizer or tokenizer_from_dict(meta["tokenizer"]), digest, bin_file, True
            )
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            pass  # a damaged cache entry is rebuilt below

    if tokenizer is None:
        if tokenizer_kind == "char":
            chars: set[str] = set()
            for chunk in iter_text_chunks(path):
                chars.update(chunk)
            tokenizer = CharTokenizer(sorted(chars))
        else:
            tokenizer = build_tokenizer(tokenizer_kind)
    dtype = np.uint16 if tokenizer.vocab_size <= 65536 else np.uint32
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MyptError(f"cannot create token cache folder {cache}: {e.strerror}") from None
    tmp = cache / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
    n_tokens = 0
    try:
        with open(tmp, "wb") as out:
            for ids in _encoded_chunks(path, tokenizer):
                ids.astype(dtype).tofile(out)
                n_tokens += len(ids)
        os.replace(tmp, bin_file)
        meta = {
            "version": CACHE_VERSION,
            "source": str(path),
            "sha256": digest,
            "dtype": np.dtype(dtype).name,
            "n_tokens": n_tokens,
            "tokenizer": tokenizer.to_dict(),
        }
        meta_tmp = cache / f".{key}.{uuid.uuid4().hex[:8]}.json.tmp"
        meta_tmp.write_text(json.dumps(meta))
        os.replace(meta_tmp, meta_file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tokens = np.memmap(bin_file, dtype=dtype, mode="r", shape=(n_tokens,)) if n_tokens else np.zeros(0, dtype)
    return TokenCache(tokens, tokenizer, digest, bin_file, False)


def _cache_key(digest: str, kind: str, tokenizer: Tokenizer | None) -> str:
    if tokenizer is not None:
        ident = json.dumps(tokenizer.to_dict(), sort_keys=True)
    else:
        ident = f"new:{kind}"  # a char vocabulary built from this very text
    return f"{digest[:32]}-{kind}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"
