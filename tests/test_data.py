"""The DataModule: positional split, seeded windows, resume position, download of a missing text."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY

from mypt.corpus import strip_gutenberg
from mypt.data import FixedWindows, RandomWindows, TextDataModule
from mypt.errors import MyptError


def make(text_file, **kwargs) -> TextDataModule:
    dm = TextDataModule(input_file=str(text_file), batch_size=4, block_size=16, **kwargs)
    dm.setup("fit")
    return dm


def test_split_is_positional_90_10(text_file):
    dm = make(text_file)
    text = text_file.read_text(encoding="utf-8")
    assert len(dm.train_tokens) == int(len(text) * 0.9)
    assert dm.tokenizer.decode(dm.val_tokens[:50].tolist()) == text[int(len(text) * 0.9) :][:50]
    assert dm.vocab_size == len(set(text))


def test_windows_are_targets_shifted_by_one_and_seeded(text_file):
    dm = make(text_file)
    x, y = next(iter(RandomWindows(dm.train_tokens, 4, 16, seed=1)))
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    again = next(iter(RandomWindows(dm.train_tokens, 4, 16, seed=1)))
    other = next(iter(RandomWindows(dm.train_tokens, 4, 16, seed=2)))
    assert torch.equal(x, again[0]) and not torch.equal(x, other[0])


def test_batch_stream_resumes_at_a_position_and_differs_per_rank(text_file):
    dm = make(text_file)
    stream = iter(RandomWindows(dm.train_tokens, 4, 16, seed=1))
    batches = [next(stream)[0] for _ in range(6)]
    later = RandomWindows(dm.train_tokens, 4, 16, seed=1)
    later.start_batch = 4
    assert torch.equal(next(iter(later))[0], batches[4])  # a resume draws what the whole run drew
    rank1 = RandomWindows(dm.train_tokens, 4, 16, seed=1)
    rank1.rank = 1
    assert not torch.equal(next(iter(rank1))[0], batches[0])


def test_validation_windows_are_the_same_every_time(text_file):
    """Every evaluation sees the same windows, through the DataLoader Lightning iterates, even while
    the global RNGs move on between evaluations (training draws from them)."""
    dm = make(text_file)

    def evaluation() -> list[torch.Tensor]:
        return [x for x, _ in dm.val_dataloader()]

    first = evaluation()
    torch.rand(100)
    np.random.rand(100)
    second = evaluation()
    assert len(first) == len(second) > 1
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0], first[1])  # different windows within one evaluation
    val = FixedWindows(dm.val_tokens, 4, 16, seed=1, n_batches=3)
    other_seed = FixedWindows(dm.val_tokens, 4, 16, seed=2, n_batches=3)
    assert len(val) == 3 and not torch.equal(val[0][0], other_seed[0][0])


def test_strip_gutenberg():
    text = (
        "The Project Gutenberg eBook of X\nlicence...\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\n"
        "Nel mezzo del cammin\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\nmore licence\n"
    )
    assert strip_gutenberg(text) == "Nel mezzo del cammin\n"
    assert strip_gutenberg("plain text\n") == "plain text\n"


def test_missing_file_is_downloaded_from_url_and_checked(tmp_path):
    source = tmp_path / "remote.txt"
    body = "*** START OF THE PROJECT GUTENBERG EBOOK X ***\n" + "Nel mezzo del cammin di nostra vita\n" * 20
    source.write_text(body + "*** END OF THE PROJECT GUTENBERG EBOOK X ***\n", encoding="utf-8")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    target = tmp_path / "data" / "dante.txt"
    dm = TextDataModule(
        input_file=str(target), url=source.as_uri(), sha256=digest, batch_size=2, block_size=8
    )
    assert dm.vocab_size > 0
    assert (
        target.read_text(encoding="utf-8").startswith("Nel mezzo") and "GUTENBERG" not in target.read_text()
    )
    bad = TextDataModule(input_file=str(tmp_path / "x.txt"), url=source.as_uri(), sha256="0" * 64)
    with pytest.raises(MyptError, match="does not match the configured sha256"):
        bad.prepare_data()


def test_the_url_downloads_the_configs_own_text_only(mypt, tmp_path):
    source = tmp_path / "remote.txt"
    source.write_text("Nel mezzo del cammin di nostra vita\n" * 20, encoding="utf-8")
    config = tmp_path / "cfg.yaml"
    config.write_text(f"data:\n  input_file: data/dante.txt\n  url: {source.as_uri()}\n")
    args = ("fit", "--config", config, *TINY, "--model.block_size", "4096", "--model_name", "m")
    for named, error in (
        ("notes/*.md", "input file pattern 'notes/*.md' matches no file"),
        ("notes/", "input file notes/ does not exist"),
        ("other.txt", "input file other.txt does not exist"),
    ):
        r = mypt(*args, "--data.input_file", named)
        assert r.code == 2 and r.err == f"mypt: error: {error}\n", (named, r)
        assert "downloading" not in r.out and sorted(p.name for p in tmp_path.iterdir()) == [
            "cfg.yaml",
            "remote.txt",
        ], (named, r)
    for named in ("notes/*.md", "notes/", ["data/dante.txt"]):  # a url given with them: no target either
        TextDataModule(input_file=named, url=source.as_uri()).prepare_data()
        assert not Path("notes").exists() and not Path("data").exists(), named
    r = mypt(*args)  # the config's own input_file: downloaded (then too short for this block_size)
    assert "downloading" in r.out and "too short for block_size 4096" in r.err, r
    assert Path("data/dante.txt").read_text(encoding="utf-8") == source.read_text(encoding="utf-8")


def test_too_short_text_is_refused(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("abc" * 10, encoding="utf-8")
    with pytest.raises(MyptError, match="too short for block_size 16"):
        make(short)


def test_uint16_tokens_for_gpt2(text_file):
    dm = make(text_file, tokenizer="gpt2")
    assert dm.vocab_size == 50304 and dm.train_tokens.dtype == np.uint16
