"""Text in, batches out: the LightningDataModule that owns the corpus, its split and its windows.

The split. One document (a single text file) keeps the positional split: the first `train_split`
of its tokens train, the rest validates. Several documents are each split the same way (the first
90% of every input file trains, the last 10% validates; a JSONL or Parquet file counts as one, its
records joined), and the pieces are joined by the tokenizer's document separator, so validation is
drawn from every book rather than the tail of the last one. `--data.val_files` names a held-out set
instead: then every input file trains whole. Token shards whose name says val (nanoGPT's `val.bin`,
llm.c's `*_val_*.bin`) validate and the others train; shards without one are split like documents.
The joined streams are views over the memory-mapped arrays, never copies.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import urllib.request
import uuid
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset, IterableDataset

from mypt.bpe import BPE_SAMPLE_BYTES, check_vocab_size, sample_chunks, train_bpe
from mypt.bundle import read_json
from mypt.corpus import (
    InputFile,
    absolute_spec,
    combined_digest,
    file_digest,
    flag,
    is_glob,
    is_validation_shard,
    iter_texts,
    normalise_extensions,
    open_shard,
    resolve_inputs,
    strip_gutenberg,
)
from mypt.errors import MyptError
from mypt.token_cache import CHUNK_BYTES, default_cache_dir, load_corpus
from mypt.tokenizer import (
    TOKENIZER_KINDS,
    CharTokenizer,
    GPT2Tokenizer,
    Tokenizer,
    UnknownCharacter,
    tokenizer_from_dict,
)

SHARD_COUNT_TOKENS = 1 << 24  # ids counted at a time for a shard's text bytes (128 MB as int64)
MAX_CHARACTERS_SHOWN = 5  # of the characters a saved vocabulary lacks, the most frequent are named
DEFAULT_BPE_VOCAB_SIZE = 4096


def _window_rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


class Joined:
    """Several token arrays read as one stream, without copying them."""

    def __init__(self, pieces: list[np.ndarray]) -> None:
        self.pieces = [p for p in pieces if len(p)]
        self.ends = np.cumsum([len(p) for p in self.pieces])
        self.dtype = self.pieces[0].dtype

    def __len__(self) -> int:
        return int(self.ends[-1])

    def read(self, start: int, n: int) -> np.ndarray:
        """`n` tokens from position `start`, across pieces when the window crosses one."""
        i = int(np.searchsorted(self.ends, start, side="right"))
        out = []
        while n > 0:
            begin = int(self.ends[i - 1]) if i else 0
            piece = self.pieces[i][start - begin : start - begin + n]
            out.append(piece)
            n -= len(piece)
            start += len(piece)
            i += 1
        return out[0] if len(out) == 1 else np.concatenate(out)

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise IndexError("a joined token stream reads contiguous slices only")
        return self.read(start, max(0, stop - start))


def join(pieces: list[np.ndarray], eot_id: int | None) -> np.ndarray | Joined:
    """The pieces as one stream with the separator between them (one piece: itself)."""
    pieces = [p for p in pieces if len(p)]
    if len(pieces) <= 1:
        return pieces[0] if pieces else np.zeros(0, np.uint16)
    sep = [np.asarray([eot_id], dtype=pieces[0].dtype)] if eot_id is not None else []
    joined = [pieces[0]]
    for p in pieces[1:]:
        joined += [*sep, p]
    return Joined(joined)


def split(arrays: list[np.ndarray], fraction: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The first `fraction` of each array trains, the rest validates."""
    cuts = [int(len(a) * fraction) for a in arrays]
    return [a[:n] for a, n in zip(arrays, cuts, strict=True)], [
        a[n:] for a, n in zip(arrays, cuts, strict=True)
    ]


def _windows(tokens, starts: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(tokens, Joined):
        rows = np.stack([tokens.read(int(s), block_size + 1) for s in starts]).astype(np.int64)
    else:
        rows = np.asarray(tokens[starts[:, None] + np.arange(block_size + 1)], dtype=np.int64)
    batch = torch.from_numpy(rows)
    return batch[:, :-1].contiguous(), batch[:, 1:].contiguous()


def _private_generator() -> torch.Generator:
    """A DataLoader draws a base seed when it starts iterating; from its own generator that draw
    leaves the global torch RNG (dropout's) untouched, which an exact resume depends on."""
    return torch.Generator().manual_seed(0)


class RandomWindows(IterableDataset):
    """Endless training batches of random windows. Batch number n depends only on (seed, rank, n), so
    a resumed run draws exactly the batches an uninterrupted run would have drawn, and each
    data-parallel rank draws different ones."""

    def __init__(self, tokens: np.ndarray, batch_size: int, block_size: int, seed: int) -> None:
        self.tokens, self.batch_size, self.block_size, self.seed = tokens, batch_size, block_size, seed
        self.start_batch = 0
        self.rank = 0

    def __iter__(self):
        n = self.start_batch
        high = len(self.tokens) - self.block_size - 1
        while True:
            starts = _window_rng(self.seed, self.rank, n).integers(0, high + 1, size=self.batch_size)
            yield _windows(self.tokens, starts, self.block_size)
            n += 1


class FixedWindows(Dataset):
    """Validation batches: the same windows at every evaluation, so val/loss curves compare."""

    STREAM = 2**31 - 1

    def __init__(
        self, tokens: np.ndarray, batch_size: int, block_size: int, seed: int, n_batches: int
    ) -> None:
        self.tokens, self.batch_size, self.block_size, self.seed = tokens, batch_size, block_size, seed
        self.n_batches = n_batches

    def __len__(self) -> int:
        return self.n_batches

    def __getitem__(self, i: int):
        high = len(self.tokens) - self.block_size - 1
        starts = _window_rng(self.seed, self.STREAM, i).integers(0, high + 1, size=self.batch_size)
        return _windows(self.tokens, starts, self.block_size)


def _shard_text_bytes(tokens: np.ndarray, tokenizer: Tokenizer, digest: str, cache: Path) -> int:
    """The UTF-8 bytes of the text a GPT-2 token shard holds (its ids decoded; <|endoftext|> counts
    0), counted once per shard and remembered in the cache folder by the shard's sha256."""
    memo = cache / "text_bytes" / f"{digest[:32]}.json"
    try:
        return int(json.loads(memo.read_text())["text_bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    counts = np.zeros(len(tokenizer.token_byte_lengths()), dtype=np.int64)
    for start in range(0, len(tokens), SHARD_COUNT_TOKENS):  # a chunk at a time: the shard stays mapped
        chunk = np.asarray(tokens[start : start + SHARD_COUNT_TOKENS])
        counts += np.bincount(chunk, minlength=len(counts))[: len(counts)]
    n_bytes = int(counts @ np.asarray(tokenizer.token_byte_lengths(), dtype=np.int64))
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps({"text_bytes": n_bytes}))
        os.replace(tmp, memo)
    except OSError:
        pass  # the memo only saves time
    return n_bytes


class Inputs:
    """The corpus as loaded: each file's ids and digest, the tokenizer, and the train/val streams."""

    def __init__(
        self,
        files: list[InputFile],
        val_files: list[InputFile],
        arrays: list[np.ndarray],
        digests: list[str],
        tokenizer: Tokenizer,
        hit: bool,
        cache_dir: Path | None,
        text_bytes: list[int],
    ) -> None:
        self.files, self.val_files, self.arrays, self.digests = files, val_files, arrays, digests
        self.text_bytes = text_bytes  # per file: the UTF-8 bytes of its text (not its size on disk)
        self.tokenizer, self.hit, self.cache_dir = tokenizer, hit, cache_dir
        self.n_documents: int | None = None  # unknown for token shards
        self.train: np.ndarray | Joined = np.zeros(0, np.uint16)
        self.val: np.ndarray | Joined = np.zeros(0, np.uint16)

    @property
    def tokens(self) -> np.ndarray | Joined:
        """Every input's ids as one stream (the train and validation inputs, in order)."""
        return join(self.arrays, self.tokenizer.eot_id if self.files[0].kind != "shard" else None)

    @property
    def sha256(self) -> str:
        return combined_digest(self.digests)

    def records(self) -> list[dict]:
        """Per file: absolute path, bytes (of its text, UTF-8), file_bytes (on disk), sha256, and
        whether it validates (`val_files`)."""
        out = []
        files = self.files + self.val_files
        for i, (f, digest, n_bytes) in enumerate(zip(files, self.digests, self.text_bytes, strict=True)):
            entry = {
                "path": os.path.abspath(f.path),
                "bytes": n_bytes,
                "file_bytes": f.size,
                "sha256": digest,
            }
            if i >= len(self.files):
                entry["val"] = True
            out.append(entry)
        return out


class TextDataModule(pl.LightningDataModule):
    def __init__(
        self,
        input_file: str | list[str] | None = None,
        tokenizer: str = "char",
        batch_size: int = 32,
        block_size: int = 256,
        train_split: float = 0.9,
        seed: int = 1337,
        url: str | None = None,
        sha256: str | None = None,
        tokenizer_file: str | None = None,
        cache_dir: str | None = None,
        prompts: list[str] | None = None,
        vocab_size: int | None = None,
        val_files: str | list[str] | None = None,
        text_field: str = "text",
        extensions: list[str] | str | None = None,
    ) -> None:
        """Your corpus, tokenised once and served as random windows.

        Args:
            input_file: What to train on: a UTF-8 text file, a folder (walked recursively, keeping the
                files whose ending is in ``extensions``; hidden names skipped), a glob ('books/*.txt',
                quoted), or a list of these ([a.txt, notes/]). Each file (each JSONL/Parquet record) is
                a document; documents are joined by the tokenizer's separator.
            tokenizer: ``char`` (vocabulary = the text's characters), ``gpt2`` (tiktoken's GPT-2 BPE;
                token shards need it) or ``bpe`` (a byte-level BPE of ``vocab_size`` tokens learnt from
                the training split).
            batch_size: Windows per batch.
            block_size: Tokens per window (linked from ``model.block_size``).
            train_split: Fraction of each document's tokens, from its start, used for training; the rest
                validates (one text file: today's positional 90/10 split).
            seed: Seed of the window sampler.
            url: Where to download ``input_file`` from when it is missing: the one file configured
                beside it only (never a glob, a folder, a list, or an input_file given instead).
            sha256: Expected sha256 of the downloaded file.
            tokenizer_file: A saved tokenizer.json to use instead of building one (resume, fine-tune).
            cache_dir: Folder of the token cache (default ``$MYPT_CACHE_DIR`` or ``~/.cache/mypt/tokens``).
            prompts: Texts that ``mypt predict`` continues, one sample each (default: one newline).
            vocab_size: Tokens of a ``bpe`` tokenizer (default 4096); the model's vocab_size is this
                rounded up to a multiple of 64. Fixed once trained: a resume or fine-tune keeps it.
            val_files: A held-out validation set (same forms as input_file); then every input file
                trains whole.
            text_field: The field of JSONL records (the column of Parquet files) that holds the text.
            extensions: The file endings a folder walk keeps ('[.py, .md]'; a file or glob named
                directly is read whatever its ending). Default: .txt .text .md .markdown .rst .tex
                .org .adoc .asciidoc .jsonl .jsonl.gz .parquet .bin.
        """
        super().__init__()
        self.save_hyperparameters(ignore=["vocab_size"])  # the model logs its padded vocab_size
        self.input_file = input_file
        self.tokenizer_kind = tokenizer
        self.batch_size = batch_size
        self.block_size = block_size
        self.train_split = train_split
        self.seed = seed
        self.url = url
        self.sha256 = sha256
        self.tokenizer_file = tokenizer_file
        self.cache_dir = cache_dir
        self.prompts = prompts
        self.bpe_vocab_size = vocab_size  # `vocab_size` is the model's (linked to model.vocab_size)

        self.val_files = val_files
        self.text_field = text_field
        self.extensions = extensions
        self._inputs: Inputs | None = None
        self._train: RandomWindows | None = None

    # -- the corpus -------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Download the text when it is missing and a URL is configured: to one file only. A glob,
        a folder or a list is never a download's target (a glob that matches nothing is the
        resolver's error naming the pattern, not a file named `notes/*.md`)."""
        if self._sampling_only():
            return
        if self.input_file is None or self.input_file == []:
            raise MyptError(f"no input text: set {flag('input_file')} (or give a config that does)")
        if not isinstance(self.input_file, str) or not self.url:
            return
        path = Path(self.input_file)
        if is_glob(self.input_file) or self.input_file.endswith(("/", os.sep)) or os.path.lexists(path):
            return
        print(f"mypt: downloading {self.url} -> {path}")
        try:
            with urllib.request.urlopen(self.url, timeout=60) as response:
                raw = response.read()
        except OSError as e:
            raise MyptError(f"input file {path} is missing and downloading {self.url} failed: {e}") from None
        if self.sha256 and hashlib.sha256(raw).hexdigest() != self.sha256:
            raise MyptError(f"download from {self.url} does not match the configured sha256")
        text = strip_gutenberg(raw.decode("utf-8-sig"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def _load(self) -> Inputs:
        if self._inputs is None:
            self._check_settings()
            self.prepare_data()
            notes: list[str] = []
            files = resolve_inputs(self.input_file, notes, extensions=self.extensions)
            val_files = (
                resolve_inputs(self.val_files, notes, what="validation file", extensions=self.extensions)
                if self.val_files
                else []
            )
            named = {os.path.realpath(f.path): f.path for f in files}
            for f in val_files:
                if os.path.realpath(f.path) in named:
                    raise MyptError(f"{f.path} is named both as an input and as a validation file")
            if {f.kind == "shard" for f in files} != {f.kind == "shard" for f in val_files} and val_files:
                raise MyptError(
                    "validation files must be of the same kind as the inputs (token shards or documents)"
                )
            if rank_zero_only.rank == 0:
                for note in notes:
                    print(f"mypt: note: {note}", file=sys.stderr)
            inputs = (
                self._shards(files, val_files)
                if files[0].kind == "shard"
                else self._documents(files, val_files)
            )
            self._split(inputs)
            self._inputs = inputs
        return self._inputs

    def _documents(self, files: list[InputFile], val_files: list[InputFile]) -> Inputs:
        saved = self._saved_tokenizer()
        tokenizer = saved or (
            self._train_bpe(files, whole=bool(val_files)) if self.tokenizer_kind == "bpe" else None
        )
        try:
            corpus = load_corpus(
                files + val_files, self.tokenizer_kind, tokenizer, self.cache_dir, self.text_field
            )
        except UnknownCharacter:
            raise self._outside_the_vocabulary(saved, files + val_files) from None
        arrays = [f.tokens for f in corpus.files]
        digests = [f.sha256 for f in corpus.files]
        text_bytes = [f.n_bytes for f in corpus.files]
        inputs = Inputs(
            files, val_files, arrays, digests, corpus.tokenizer, corpus.hit, corpus.cache_dir, text_bytes
        )
        inputs.n_documents = sum(f.n_documents for f in corpus.files)
        return inputs

    def _shards(self, files: list[InputFile], val_files: list[InputFile]) -> Inputs:
        if not val_files and any(is_validation_shard(f.path) for f in files):
            # nanoGPT's val.bin, llm.c's *_val_*.bin: the held-out ids that came with the shards
            val_files = [f for f in files if is_validation_shard(f.path)]
            files = [f for f in files if not is_validation_shard(f.path)]
            if not files:
                raise MyptError(
                    "every token shard named is a validation shard (val.bin, *_val_*); name the train shards too"
                )
        all_files = files + val_files
        arrays = [open_shard(f.path) for f in all_files]
        if self.tokenizer_kind != "gpt2":
            raise MyptError(
                f"{files[0].path} is a token shard of GPT-2 ids: read it with {flag('tokenizer')} gpt2"
            )
        tokenizer = self._saved_tokenizer() or GPT2Tokenizer()
        cache = Path(self.cache_dir) if self.cache_dir else default_cache_dir()
        digests = [file_digest(f.path, cache) for f in all_files]
        text_bytes = [_shard_text_bytes(a, tokenizer, d, cache) for a, d in zip(arrays, digests, strict=True)]
        return Inputs(files, val_files, arrays, digests, tokenizer, True, None, text_bytes)

    def _split(self, inputs: Inputs) -> None:
        eot = inputs.tokenizer.eot_id if inputs.files[0].kind != "shard" else None  # shards carry their own
        n_train = len(inputs.files)
        if inputs.val_files:
            train, val = inputs.arrays[:n_train], inputs.arrays[n_train:]
        else:
            train, val = split(inputs.arrays, self.train_split)
        inputs.train, inputs.val = join(train, eot), join(val, eot)
        need = self.block_size + 1
        if len(inputs.train) < need or len(inputs.val) < need:
            what = (
                f"input file {self.input_file}"
                if len(inputs.arrays) == 1
                else f"the corpus ({len(inputs.arrays)} files)"
            )
            raise MyptError(
                f"{what} has {len(inputs.train) + len(inputs.val)} tokens ({len(inputs.train)} train, "
                f"{len(inputs.val)} validation): too short for block_size {self.block_size} "
                f"(each of the train and validation splits needs at least {need} tokens)"
            )

    def _outside_the_vocabulary(self, tokenizer: CharTokenizer, files: list[InputFile]) -> MyptError:
        """Every character of the corpus that the saved char vocabulary lacks, and what to do about it."""
        counts = tokenizer.unknown_characters(
            text for f in files for text in iter_texts(f, self.text_field, CHUNK_BYTES)
        )
        shown = ", ".join(f"{ch!r} ({n}x)" for ch, n in counts.most_common(MAX_CHARACTERS_SHOWN))
        more = len(counts) - MAX_CHARACTERS_SHOWN
        parent = Path(self.tokenizer_file).parent
        return MyptError(
            f"{self.input_file} has {len(counts)} character{'s' if len(counts) != 1 else ''} that the char "
            f"vocabulary of {parent} lacks: {shown}{f' and {more} more' if more > 0 else ''}. A char "
            "vocabulary cannot grow: train a new model on this text (another --model_name, without "
            f"--ckpt_path or --model.init_from), or use a byte-level tokenizer ({flag('tokenizer')} gpt2)"
        )

    def _check_settings(self) -> None:
        if self.tokenizer_kind not in TOKENIZER_KINDS:
            raise MyptError(
                f"unknown tokenizer {self.tokenizer_kind!r}; choose one of: {', '.join(TOKENIZER_KINDS)}"
            )
        for name in ("batch_size", "block_size"):
            if getattr(self, name) <= 0:
                raise MyptError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0.0 < self.train_split < 1.0:
            raise MyptError(f"train_split must be between 0 and 1, got {self.train_split}")
        if self.bpe_vocab_size is not None:
            if self.tokenizer_kind != "bpe":
                raise MyptError(
                    f"{flag('vocab_size')} sets the size of a bpe tokenizer; the {self.tokenizer_kind} "
                    f"tokenizer's vocabulary is fixed (use {flag('tokenizer')} bpe to learn one)"
                )
            check_vocab_size(self.bpe_vocab_size)
        normalise_extensions(self.extensions)  # a bad ending is said before any file is read

    def _train_bpe(self, files: list[InputFile], whole: bool) -> Tokenizer:
        """A BPE learnt from the training split: the first train_split of each document's bytes (the
        token split falls at nearly the same place), or every input whole beside --data.val_files;
        each document sampled in proportion to its share."""
        sizes = [f.size if f.kind == "text" else self._text_bytes(f) for f in files]
        shares = [size if whole else int(size * self.train_split) for size in sizes]
        total = max(1, sum(shares))
        vocab_size = self.bpe_vocab_size or DEFAULT_BPE_VOCAB_SIZE
        texts = (
            text
            for f, share in zip(files, shares, strict=True)
            for text in sample_chunks(
                iter_texts(f, self.text_field, CHUNK_BYTES), share, max(1, BPE_SAMPLE_BYTES * share // total)
            )
        )
        return train_bpe(texts, vocab_size, total)

    def _text_bytes(self, file: InputFile) -> int:
        """The UTF-8 bytes of a JSONL/Parquet file's records: its size on disk (compressed, or with the
        keys and escapes of JSON) would put the BPE's cut far from the token split's."""
        return sum(len(text.encode("utf-8")) for text in iter_texts(file, self.text_field, CHUNK_BYTES))

    @functools.cached_property
    def _saved(self) -> Tokenizer | None:
        """The saved tokenizer.json, read once (predict asks for it once a prompt)."""
        return self._saved_tokenizer()

    def _saved_tokenizer(self) -> Tokenizer | None:
        if self.tokenizer_file is None:
            return None
        tokenizer = tokenizer_from_dict(read_json(Path(self.tokenizer_file)), source=self.tokenizer_file)
        if tokenizer.kind != self.tokenizer_kind:
            raise MyptError(
                f"tokenizer is {self.tokenizer_kind!r} but the model was trained with {tokenizer.kind!r}; "
                "the tokenizer cannot change"
            )
        n_tokens = getattr(tokenizer, "n_tokens", None)
        if self.bpe_vocab_size is not None and self.bpe_vocab_size != n_tokens:
            raise MyptError(
                f"{flag('vocab_size')} {self.bpe_vocab_size} conflicts with the saved tokenizer ({n_tokens} "
                f"tokens in {self.tokenizer_file}): a trained model's tokenizer cannot change; to learn "
                "another, train a new model (--model_name NEW_NAME)"
            )
        return tokenizer

    @property
    def inputs(self) -> Inputs:
        return self._load()

    @property
    def tokenizer(self) -> Tokenizer:
        if self._inputs is None and self._sampling_only():
            return self._saved
        return self._load().tokenizer

    def _sampling_only(self) -> bool:
        """`mypt predict` of a trained model: its prompts and saved tokenizer are all it reads, so a
        folder of weights alone (best/, an import) needs no --data.input_file, and no text is read."""
        trainer = self.trainer
        return self.tokenizer_file is not None and trainer is not None and trainer.predicting

    @property
    def vocab_size(self) -> int:
        if self._inputs is None and self.tokenizer_file is not None:  # a trained model's, read before
            return self._saved.vocab_size  # the trainer exists: no text needed for it
        return self.tokenizer.vocab_size

    @property
    def input_sha256(self) -> str:
        return self._load().sha256

    def settings(self) -> dict:
        """The data settings a bundle records (training_state.json `data`)."""
        inputs = self._load()
        records = inputs.records()
        return {
            "input_file": self.input_file,
            "input_path": absolute_spec(self.input_file),  # for a resume from another folder
            "sha256": inputs.sha256,
            "tokenizer": self.tokenizer_kind,
            "batch_size": self.batch_size,
            "block_size": self.block_size,
            "train_split": self.train_split,
            "seed": self.seed,
            "url": self.url,
            "n_tokens": len(inputs.train) + len(inputs.val),
            "val_files": self.val_files,
            "text_field": self.text_field,
            "extensions": self.extensions,
            "n_files": len(records),
            "total_bytes": sum(r["bytes"] for r in records),  # of text, UTF-8: what bits per byte count
            "total_file_bytes": sum(r["file_bytes"] for r in records),
            "n_train_tokens": len(inputs.train),
            "n_val_tokens": len(inputs.val),
            "files": records,
        }

    # -- Lightning hooks --------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if self._sampling_only():
            return
        inputs = self._load()
        self.train_tokens, self.val_tokens = inputs.train, inputs.val

    def train_dataloader(self) -> DataLoader:
        self._train = RandomWindows(self.train_tokens, self.batch_size, self.block_size, self.seed)
        trainer = self.trainer
        if trainer is not None:
            # resume: continue the batch stream where the saved run stopped
            self._train.start_batch = trainer.global_step * trainer.accumulate_grad_batches
            self._train.rank = trainer.global_rank
        return DataLoader(self._train, batch_size=None, generator=_private_generator())

    def val_dataloader(self) -> DataLoader:
        windows = max(1, len(self.val_tokens) // (self.batch_size * self.block_size))
        n_batches = min(windows, 200)
        if self.trainer is not None and isinstance(self.trainer.limit_val_batches, int):
            n_batches = self.trainer.limit_val_batches  # eval_iters: the same fixed windows each time
        return DataLoader(
            FixedWindows(self.val_tokens, self.batch_size, self.block_size, self.seed, n_batches),
            batch_size=None,
            generator=_private_generator(),
        )

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        # (index, prompt): with several ranks each gets some prompts, and the index keeps their order
        return DataLoader(list(enumerate(self.prompts or ["\n"])), batch_size=None)
