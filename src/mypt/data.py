"""Text in, batches out: the LightningDataModule that owns the corpus and its tokenisation."""

from __future__ import annotations

import hashlib
import re
import urllib.request
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from mypt.bpe import check_vocab_size, sample_chunks, train_bpe
from mypt.bundle import read_json
from mypt.errors import MyptError
from mypt.token_cache import TokenCache, check_text_file, iter_text_chunks, load_tokens
from mypt.tokenizer import TOKENIZER_KINDS, CharTokenizer, Tokenizer, UnknownCharacter, tokenizer_from_dict

MAX_CHARACTERS_SHOWN = 5  # of the characters a saved vocabulary lacks, the most frequent are named
DEFAULT_BPE_VOCAB_SIZE = 4096
_GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_GUTENBERG_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)


def strip_gutenberg(text: str) -> str:
    """The book without Project Gutenberg's licence header and footer, when they are present."""
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip("\r\n") + "\n" if (start or end) else text


def _window_rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def _windows(tokens: np.ndarray, starts: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
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


class TextDataModule(pl.LightningDataModule):
    def __init__(
        self,
        input_file: str | None = None,
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
    ) -> None:
        """A UTF-8 text file, tokenised once and served as random windows.

        Args:
            input_file: Path of the training text (UTF-8).
            tokenizer: ``char`` (vocabulary = the text's characters), ``gpt2`` (tiktoken's GPT-2 BPE) or
                ``bpe`` (a byte-level BPE of ``vocab_size`` tokens learnt from the training split).
            batch_size: Windows per batch.
            block_size: Tokens per window (linked from ``model.block_size``).
            train_split: Fraction of the tokens, from the start, used for training; the rest validates.
            seed: Seed of the window sampler.
            url: Where to download ``input_file`` from when it is missing.
            sha256: Expected sha256 of the downloaded file.
            tokenizer_file: A saved tokenizer.json to use instead of building one (resume, fine-tune).
            cache_dir: Folder of the token cache (default ``$MYPT_CACHE_DIR`` or ``~/.cache/mypt/tokens``).
            prompts: Texts that ``mypt predict`` continues, one sample each (default: one newline).
            vocab_size: Tokens of a ``bpe`` tokenizer (default 4096); the model's vocab_size is this
                rounded up to a multiple of 64. Fixed once trained: a resume or fine-tune keeps it.
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
        self._cache: TokenCache | None = None
        self._train: RandomWindows | None = None

    # -- the corpus -------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Download the text when it is missing and a URL is configured."""
        if self.input_file is None:
            raise MyptError("no input text: set --data.input_file (or give a config that does)")
        path = Path(self.input_file)
        if path.exists() or not self.url:
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

    def _load(self) -> TokenCache:
        if self._cache is None:
            self._check_settings()
            self.prepare_data()
            saved = self._saved_tokenizer()
            tokenizer = saved or (self._train_bpe() if self.tokenizer_kind == "bpe" else None)
            try:
                self._cache = load_tokens(self.input_file, self.tokenizer_kind, tokenizer, self.cache_dir)
            except UnknownCharacter:
                raise self._outside_the_vocabulary(saved) from None
            n = len(self._cache.tokens)
            need = self.block_size + 1
            n_train = int(n * self.train_split)
            if n_train < need or n - n_train < need:
                raise MyptError(
                    f"input file {self.input_file} has {n} tokens: too short for block_size {self.block_size} "
                    f"(each of the train and validation splits needs at least {need} tokens)"
                )
        return self._cache

    def _outside_the_vocabulary(self, tokenizer: CharTokenizer) -> MyptError:
        """Every character of the text that the saved char vocabulary lacks, and what to do about it."""
        counts = tokenizer.unknown_characters(iter_text_chunks(Path(self.input_file)))
        shown = ", ".join(f"{ch!r} ({n}x)" for ch, n in counts.most_common(MAX_CHARACTERS_SHOWN))
        more = len(counts) - MAX_CHARACTERS_SHOWN
        parent = Path(self.tokenizer_file).parent
        return MyptError(
            f"{self.input_file} has {len(counts)} character{'s' if len(counts) != 1 else ''} that the char "
            f"vocabulary of {parent} lacks: {shown}{f' and {more} more' if more > 0 else ''}. A char "
            "vocabulary cannot grow: train a new model on this text (another --model_name, without "
            "--ckpt_path or --model.init_from), or use a byte-level tokenizer (--data.tokenizer gpt2)"
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
                    f"--data.vocab_size sets the size of a bpe tokenizer; the {self.tokenizer_kind} "
                    "tokenizer's vocabulary is fixed (use --data.tokenizer bpe to learn one)"
                )
            check_vocab_size(self.bpe_vocab_size)

    def _train_bpe(self) -> Tokenizer:
        """A BPE learnt from the training split: the first train_split of the text's bytes (the token
        split falls at nearly the same place)."""
        path = Path(self.input_file)
        check_text_file(path)
        train_bytes = int(path.stat().st_size * self.train_split)
        vocab_size = self.bpe_vocab_size or DEFAULT_BPE_VOCAB_SIZE
        return train_bpe(sample_chunks(iter_text_chunks(path), train_bytes), vocab_size, train_bytes)

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
                f"--data.vocab_size {self.bpe_vocab_size} conflicts with the saved tokenizer ({n_tokens} "
                f"tokens in {self.tokenizer_file}): a trained model's tokenizer cannot change; to learn "
                "another, train a new model (--model_name NEW_NAME)"
            )
        return tokenizer

    @property
    def tokenizer(self) -> Tokenizer:
        return self._load().tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def input_sha256(self) -> str:
        return self._load().sha256

    def settings(self) -> dict:
        """The data settings a bundle records (training_state.json `data`)."""
        return {
            "input_file": self.input_file,
            "input_path": str(Path(self.input_file).resolve()),  # for a resume from another folder
            "sha256": self.input_sha256,
            "tokenizer": self.tokenizer_kind,
            "batch_size": self.batch_size,
            "block_size": self.block_size,
            "train_split": self.train_split,
            "seed": self.seed,
            "url": self.url,
            "n_tokens": len(self._load().tokens),
        }

    # -- Lightning hooks --------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        tokens = self._load().tokens
        n_train = int(len(tokens) * self.train_split)
        self.train_tokens, self.val_tokens = tokens[:n_train], tokens[n_train:]

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
