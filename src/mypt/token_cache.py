"""Tokenise each input file once and keep its ids as a memory-mapped array.

Each file has its own cache entry, keyed by the file's sha256, its reader (and text field) and the
tokenizer's identity: a second run maps the arrays instead of tokenising again, and adding or editing
one file tokenises only that file (a char vocabulary that gains a character changes every id, so
then every file is tokenised again). Text files are read in ~1 MiB ranges cut where GPT-2's
pre-tokeniser splits anyway (`corpus.first_cut`), so the cached ids equal `encode` of the whole
document; on a large corpus the ranges go to a pool of processes, one per core. A JSONL or Parquet
file's records are encoded in batches and joined by the tokenizer's document separator. Nothing ever
holds the corpus in memory: peak memory is a few ranges, and the arrays are paged in by the OS.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np

from mypt.corpus import (
    InputFile,
    combined_digest,
    file_digest,
    iter_documents,
    read_text,
    resolve_inputs,
    text_ranges,
)
from mypt.errors import MyptError
from mypt.tokenizer import CharTokenizer, Tokenizer, build_tokenizer, tokenizer_from_dict

CHUNK_BYTES = 1 << 20  # 1 MiB of text per range
CHUNKS_PER_BATCH = 16  # ranges handed to tiktoken's threaded batch encoder at once (one process)
RECORD_BATCH_BYTES = 1 << 20  # JSONL/Parquet text encoded per batch
# Below this much text to tokenise one process does it: starting a pool (and building GPT-2's BPE
# in each worker, ~1 s) costs more than it saves.
PARALLEL_MIN_BYTES = 64 << 20
PROGRESS_MIN_BYTES = 32 << 20  # a progress bar for work that takes more than a second or two
CACHE_VERSION = 2


def default_cache_dir() -> Path:
    env = os.environ.get("MYPT_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mypt" / "tokens"


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


class TokenCache:
    """The token ids of one input file under one tokenizer, memory-mapped from the cache folder."""

    def __init__(
        self,
        tokens: np.ndarray,
        tokenizer: Tokenizer,
        sha256: str,
        path: Path,
        hit: bool,
        file: InputFile,
        n_documents: int = 1,
        n_bytes: int | None = None,
    ) -> None:
        self.tokens = tokens
        self.tokenizer = tokenizer
        self.sha256 = sha256
        self.path = path  # the cached array
        self.hit = hit  # True when this load reused an earlier tokenisation
        self.file = file
        self.n_documents = n_documents  # a text file is one; a JSONL/Parquet file, its records
        # the UTF-8 bytes of its text: a text file's size; a JSONL/Parquet file's records, counted as
        # they are read (its size on disk, compressed or with JSON's keys and escapes, is not its text)
        self.n_bytes = file.size if n_bytes is None else n_bytes


class CorpusTokens:
    """Every input file's ids, in order, under one tokenizer."""

    def __init__(self, files: list[TokenCache], tokenizer: Tokenizer, cache_dir: Path) -> None:
        self.files = files
        self.tokenizer = tokenizer
        self.cache_dir = cache_dir

    @property
    def hit(self) -> bool:
        return all(f.hit for f in self.files)

    @property
    def sha256(self) -> str:
        return combined_digest([f.sha256 for f in self.files])

    @property
    def n_tokens(self) -> int:
        return sum(len(f.tokens) for f in self.files)

    @property
    def n_bytes(self) -> int:
        """The UTF-8 bytes of the corpus's text."""
        return sum(f.n_bytes for f in self.files)


def load_tokens(
    input_file: str | os.PathLike,
    tokenizer_kind: str,
    tokenizer: Tokenizer | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> TokenCache:
    """Token ids of one text file, tokenising only when no cached array matches."""
    path = Path(input_file)
    if path.is_dir():
        raise MyptError(f"input file {path} is a directory, not a text file")
    files = resolve_inputs(str(path))
    return load_corpus(files, tokenizer_kind, tokenizer, cache_dir).files[0]


def load_corpus(
    files: list[InputFile],
    tokenizer_kind: str,
    tokenizer: Tokenizer | None = None,
    cache_dir: str | os.PathLike | None = None,
    text_field: str = "text",
    workers: int | None = None,
) -> CorpusTokens:
    """Token ids of every file (text, JSONL, Parquet), tokenising only the files no cached array
    matches. With `tokenizer` given (resume, fine-tune) its vocabulary is used; otherwise a new
    tokenizer of `tokenizer_kind` is built (char-level: from the corpus's characters)."""
    if tokenizer is None and tokenizer_kind not in ("char", "gpt2"):
        build_tokenizer(tokenizer_kind)  # raises the clear "unknown tokenizer" error
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MyptError(f"cannot create token cache folder {cache}: {e.strerror}") from None
    workers = workers or default_workers()
    digests = [file_digest(f.path, cache) for f in files]
    if tokenizer is None:
        if tokenizer_kind == "char":
            chars = _corpus_chars(files, digests, cache, text_field, workers)
            several = len(files) > 1 or files[0].kind != "text"
            tokenizer = CharTokenizer.from_chars(chars, separator=several)
        else:
            tokenizer = build_tokenizer(tokenizer_kind)
    # the tokenizer's kind and the hash of its tokenizer.json
    ident = f"{tokenizer.kind}-{hashlib.sha256(json.dumps(tokenizer.to_dict(), sort_keys=True).encode()).hexdigest()[:12]}"
    entries: list[TokenCache | None] = []
    todo: list[int] = []
    for i, (f, digest) in enumerate(zip(files, digests, strict=True)):
        entry = _cached(f, digest, cache, _key(f, digest, ident, text_field), tokenizer)
        entries.append(entry)
        if entry is None:
            todo.append(i)
    if todo:
        with _Progress(sum(files[i].size for i in todo), "tokenising") as progress:
            text = [i for i in todo if files[i].kind == "text"]
            for i, tokens, out in _encode_text_files(
                [files[i] for i in text], tokenizer, cache, ident, digests, text, workers, progress
            ):
                entries[i] = TokenCache(tokens, tokenizer, digests[i], out, False, files[i])
            for i in todo:
                if files[i].kind != "text":
                    key = _key(files[i], digests[i], ident, text_field)
                    count = [0, 0]
                    tokens, out = _write_entry(
                        cache, key, files[i], digests[i], tokenizer,
                        _encoded_records(files[i], tokenizer, text_field, progress, count), count,
                    )  # fmt: skip
                    entries[i] = TokenCache(
                        tokens, tokenizer, digests[i], out, False, files[i], count[0], count[1]
                    )
    return CorpusTokens([e for e in entries if e is not None], tokenizer, cache)


def _key(file: InputFile, digest: str, ident: str, text_field: str) -> str:
    """`<file sha256>-v<version><reader>[.<field>]-<tokenizer kind>-<tokenizer hash>`."""
    reader = f"v{CACHE_VERSION}{file.kind}"
    if file.kind in ("jsonl", "parquet"):
        reader += "." + hashlib.sha256(text_field.encode()).hexdigest()[:8]
    return f"{digest[:32]}-{reader}-{ident}"


def _cached(file: InputFile, digest: str, cache: Path, key: str, tokenizer: Tokenizer) -> TokenCache | None:
    meta_file, bin_file = cache / f"{key}.json", cache / f"{key}.bin"
    if not (meta_file.is_file() and bin_file.is_file()):
        return None
    try:
        meta = json.loads(meta_file.read_text())
        n = meta["n_tokens"]
        n_bytes = meta["text_bytes"] if file.kind in ("jsonl", "parquet") else file.size
        tokens = (
            np.memmap(bin_file, dtype=meta["dtype"], mode="r", shape=(n,))
            if n
            else np.zeros(0, meta["dtype"])
        )
        return TokenCache(
            tokens, tokenizer, digest, bin_file, True, file, meta.get("n_documents", 1), n_bytes
        )
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None  # a damaged cache entry is rebuilt (and one that predates `text_bytes`)


def _dtype(tokenizer: Tokenizer) -> type:
    return np.uint16 if tokenizer.vocab_size <= 65536 else np.uint32


def _write_entry(
    cache: Path,
    key: str,
    file: InputFile,
    digest: str,
    tokenizer: Tokenizer,
    pieces: Iterator[np.ndarray],
    n_documents: list[int] | None = None,
) -> tuple[np.ndarray, Path]:
    """Write the ids from `pieces` as the cache entry `key`, atomically; returns the mapped array.
    `n_documents`: [records, their text's UTF-8 bytes], filled in as `pieces` is read."""
    dtype = _dtype(tokenizer)
    meta_file, bin_file = cache / f"{key}.json", cache / f"{key}.bin"
    tmp = cache / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
    n_tokens = 0
    try:
        with open(tmp, "wb") as out:
            for ids in pieces:
                np.asarray(ids).astype(dtype, copy=False).tofile(out)
                n_tokens += len(ids)
        os.replace(tmp, bin_file)
        meta = {
            "version": CACHE_VERSION,
            "source": str(file.path),
            "reader": file.kind,
            "sha256": digest,
            "dtype": np.dtype(dtype).name,
            "n_tokens": n_tokens,
            "n_documents": n_documents[0] if n_documents else 1,
            "text_bytes": n_documents[1] if n_documents else file.size,
            "tokenizer": tokenizer.kind,  # its whole definition is in the key (a BPE is MBs)
        }
        meta_tmp = cache / f".{key}.{uuid.uuid4().hex[:8]}.json.tmp"
        meta_tmp.write_text(json.dumps(meta))
        os.replace(meta_tmp, meta_file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tokens = np.memmap(bin_file, dtype=dtype, mode="r", shape=(n_tokens,)) if n_tokens else np.zeros(0, dtype)
    return tokens, bin_file


# -- text files: ranges, in this process or a pool ----------------------------------------------


def _encode_text_files(
    files: list[InputFile],
    tokenizer: Tokenizer,
    cache: Path,
    ident: str,
    digests: list[str],
    indices: list[int],
    workers: int,
    progress: _Progress,
) -> Iterator[tuple[int, np.ndarray, Path]]:
    """(index, ids, cache file) of each text file, tokenised range by range: the ranges of every file
    form one stream, so a pool never waits at a file's end."""
    tasks = ((j, f.path, s, e) for j, f in enumerate(files) for s, e in text_ranges(f.path, CHUNK_BYTES))
    parallel = workers > 1 and sum(f.size for f in files) >= PARALLEL_MIN_BYTES
    pool = _pool(workers, _init_encoder, (tokenizer.to_dict(),)) if parallel else None
    try:
        results = (
            _ordered(pool, _encode_range, tasks, 2 * workers) if pool else _encode_here(tasks, tokenizer)
        )
        for j, group in itertools.groupby(results, key=lambda r: r[0]):
            i = indices[j]
            key = _key(files[j], digests[i], ident, "")
            pieces = _counted(((n, ids) for _, n, ids in group), progress)
            tokens, out = _write_entry(cache, key, files[j], digests[i], tokenizer, pieces)
            yield i, tokens, out
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _encode_here(tasks, tokenizer: Tokenizer):
    """One process: char ranges one at a time (vectorised already), GPT-2 ranges to tiktoken's
    threaded batch encoder CHUNKS_PER_BATCH at a time."""
    if isinstance(tokenizer, CharTokenizer):
        for j, path, start, end in tasks:
            yield j, end - start, tokenizer.encode_array(read_text(path, start, end))
        return
    batch: list[tuple[int, int, str]] = []
    for j, path, start, end in tasks:
        batch.append((j, end - start, read_text(path, start, end)))
        if len(batch) == CHUNKS_PER_BATCH:
            yield from _encode_batch(batch, tokenizer)
            batch = []
    yield from _encode_batch(batch, tokenizer)


def _encode_batch(batch: list[tuple[int, int, str]], tokenizer: Tokenizer):
    if batch:
        for (j, n, _), ids in zip(batch, tokenizer.encode_batch([t for _, _, t in batch]), strict=True):
            yield j, n, np.asarray(ids)


def _counted(pieces, progress: _Progress) -> Iterator[np.ndarray]:
    for n_bytes, ids in pieces:
        progress.update(n_bytes)
        yield ids


_worker_tokenizer: Tokenizer | None = None


def _init_encoder(tokenizer_dict: dict) -> None:
    global _worker_tokenizer  # one per worker process, built once
    _worker_tokenizer = tokenizer_from_dict(tokenizer_dict)


def _encode_range(j: int, path: Path, start: int, end: int) -> tuple[int, int, np.ndarray]:
    text = read_text(path, start, end)
    tok = _worker_tokenizer
    ids = tok.encode_array(text) if isinstance(tok, CharTokenizer) else np.asarray(tok.encode(text))
    return j, end - start, ids.astype(_dtype(tok), copy=False)


def _chars_of_range(i: int, path: Path, start: int, end: int) -> tuple[int, int, str]:
    return i, end - start, "".join(set(read_text(path, start, end)))


def _pool(workers: int, initializer=None, initargs=()) -> ProcessPoolExecutor:
    # forkserver: workers start from a clean process, not a fork of one holding torch's and
    # tiktoken's threads
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context(method), initializer=initializer, initargs=initargs
    )


def _ordered(pool: ProcessPoolExecutor, fn, args, window: int):
    """fn(*a) for each a, in order, with at most `window` in flight (memory stays a few ranges)."""
    pending: collections.deque[Future] = collections.deque()
    for a in args:
        pending.append(pool.submit(fn, *a))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# -- the char vocabulary ----------------------------------------------------------------------


def _corpus_chars(
    files: list[InputFile], digests: list[str], cache: Path, text_field: str, workers: int
) -> set[str]:
    """The characters of every file, each file's remembered in the cache beside its ids. Text
    files are read range by range, by a pool on a large corpus."""
    field = {f.kind: text_field if f.kind in ("jsonl", "parquet") else "" for f in files}
    memos = [
        cache / "chars" / f"{d[:32]}-{f.kind}-{field[f.kind]}.json"
        for f, d in zip(files, digests, strict=True)
    ]
    found: list[set[str] | None] = []
    for memo in memos:
        try:
            found.append(set(json.loads(memo.read_text())))
        except (OSError, ValueError, TypeError):
            found.append(None)
    todo = [i for i, chars in enumerate(found) if chars is None]
    text = [i for i in todo if files[i].kind == "text"]
    with _Progress(sum(files[i].size for i in todo), "reading characters") as progress:
        for i in todo:
            found[i] = set()
        tasks = ((i, files[i].path, s, e) for i in text for s, e in text_ranges(files[i].path, CHUNK_BYTES))
        if workers > 1 and sum(files[i].size for i in text) >= PARALLEL_MIN_BYTES:
            with _pool(workers) as pool:
                for i, n, chars in _ordered(pool, _chars_of_range, tasks, 2 * workers):
                    found[i].update(chars)
                    progress.update(n)
        else:
            for task in tasks:
                i, n, chars = _chars_of_range(*task)
                found[i].update(chars)
                progress.update(n)
        for i in todo:
            if files[i].kind != "text":
                for doc in iter_documents(files[i], text_field):
                    found[i].update(doc)
                progress.update(files[i].size)
    for i in todo:
        try:
            memos[i].parent.mkdir(parents=True, exist_ok=True)
            tmp = memos[i].with_name(f".{memos[i].name}.{uuid.uuid4().hex[:8]}")
            tmp.write_text(json.dumps(sorted(found[i])))
            os.replace(tmp, memos[i])
        except OSError:
            pass  # the memo only saves time
    return set().union(*found)


# -- JSONL and Parquet records ----------------------------------------------------------------


def _encoded_records(
    file: InputFile, tokenizer: Tokenizer, field: str, progress: _Progress, count: list[int]
) -> Iterator[np.ndarray]:
    """The records' ids joined by the separator (directly, for a vocabulary without one); `count`
    ends up holding the number of records and the UTF-8 bytes of their text."""
    sep = np.asarray([tokenizer.eot_id] if tokenizer.eot_id is not None else [], dtype=np.int64)
    first = True
    batch: list[str] = []
    size = 0
    for doc in iter_documents(file, field):
        batch.append(doc)
        n_bytes = len(doc.encode("utf-8"))
        count[0] += 1
        count[1] += n_bytes
        size += n_bytes
        if size >= RECORD_BATCH_BYTES:
            yield from _encode_records(batch, tokenizer, sep, first)
            first, batch, size = False, [], 0
    yield from _encode_records(batch, tokenizer, sep, first)
    progress.update(file.size)


def _encode_records(batch: list[str], tokenizer: Tokenizer, sep: np.ndarray, first: bool):
    if not batch:
        return
    if isinstance(tokenizer, CharTokenizer):
        encoded = [tokenizer.encode_array(d) for d in batch]
    else:
        encoded = [np.asarray(ids, dtype=np.int64) for ids in tokenizer.encode_batch(batch)]
    for j, ids in enumerate(encoded):
        if not (first and j == 0):
            yield sep
        yield ids


# -- progress ---------------------------------------------------------------------------------


class _Progress:
    """A progress bar (MB/s, ETA) on stderr for long work; nothing for short work."""

    def __init__(self, total_bytes: int, what: str) -> None:
        self.bar = None
        if total_bytes >= PROGRESS_MIN_BYTES and os.environ.get("LOCAL_RANK", "0") == "0":
            from tqdm import tqdm

            tty = sys.stderr.isatty()
            self.bar = tqdm(
                total=total_bytes, desc=f"mypt: {what}", unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, mininterval=0.5 if tty else 15, leave=False, dynamic_ncols=tty,
            )  # fmt: skip

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
