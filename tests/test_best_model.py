"""Final validation, bits per byte, the best model kept beside the latest bundle, early stopping.

One overfitting run (a wide model on 2.5 KB of text, validated every 20 steps, 210 steps) feeds
most checks: each test works on its own copy of what it left on disk.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path

import pytest
from conftest import SHARED_DATA, TINY, dante_text
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

from mypt import bundle
from mypt.cli import main

ASCII_TEXT = (
    (SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:2500]
    if (SHARED_DATA / "tinyshakespeare.txt").is_file()
    else "".join(c for c in dante_text(3000) if ord(c) < 128)[:2500]
)
# wide for its text: the validation loss falls, then rises
OVERFIT = [
    *TINY, "--model.n_embd", "128", "--model.n_head", "4", "--model.block_size", "32",
    "--data.batch_size", "16", "--model.learning_rate", "5e-3", "--model.min_lr_ratio", "1",
    "--trainer.val_check_interval", "20", "--trainer.max_steps", "210", "--model_name", "over",
]  # fmt: skip


def _run(*args: str) -> tuple[int, str, str]:
    """`mypt ARGS` in this process, outside a test's capsys (for module-scoped fixtures)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The overfitting run's folder (checkpoints/, logs/, the text) and its stdout."""
    folder = tmp_path_factory.mktemp("overfit")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("MYPT_CACHE_DIR", str(folder / "token_cache"))
        Path("notes.txt").write_text(ASCII_TEXT, encoding="utf-8")
        code, out, err = _run("fit", *OVERFIT, "--data.input_file", "notes.txt")
    assert code == 0, err[-3000:]
    return folder, out


@pytest.fixture
def overfit(overfit_run: tuple[Path, str]) -> str:
    """This test's own copy of the overfitting run, in its working folder; returns the run's stdout."""
    folder, out = overfit_run
    for name in ("checkpoints", "logs", "notes.txt"):
        source = folder / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, name)
    return out


def _state(name: str = "over") -> dict:
    return json.loads(Path(f"checkpoints/{name}/training_state.json").read_text())


def _scalars(name: str, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(f"logs/{name}", size_guidance={"tensors": 0})
    events.Reload()
    return [(e.step, float(make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]


# ---------------------------------------------------------------------- final validation, bpb


def test_every_fit_ends_with_a_validation_at_its_own_step(overfit):
    """210 steps, validation every 20: the last validation is at 210, logged at the bundle's step."""
    state = _state()
    val = _scalars("over", "val/loss")
    assert [step for step, _ in val] == [*range(20, 201, 20), 210]
    assert state["step"] == 210
    assert state["val_loss"] == pytest.approx(val[-1][1], rel=1e-6)
    assert state["history"][-1]["val_loss"] == state["val_loss"]


def test_bits_per_byte_of_a_char_model_on_ascii_text_is_the_loss_over_ln2(overfit):
    """One token = one byte for ASCII text: bpb = nats per token / ln 2, at every validation."""
    state = _state()
    assert state["val_bpb"] == pytest.approx(state["val_loss"] / math.log(2), rel=1e-5)
    assert state["history"][-1]["val_bpb"] == state["val_bpb"]
    loss, bpb = _scalars("over", "val/loss"), _scalars("over", "val/bpb")
    assert [s for s, _ in bpb] == [s for s, _ in loss]
    assert all(
        b == pytest.approx(v / math.log(2), rel=1e-5) for (_, v), (_, b) in zip(loss, bpb, strict=True)
    )


def test_bits_per_byte_of_a_gpt2_model_by_hand(mypt, tmp_path):
    """GPT-2 tokens span several bytes (and Dante's accents two bytes a character): bpb is the
    validation's nats / ln 2 / the bytes its target windows decode to, computed here independently."""
    import tiktoken
    import torch

    from mypt.data import TextDataModule
    from mypt.tokenizer import GPT2Tokenizer

    text = tmp_path / "dante.txt"
    text.write_text(dante_text(20_000), encoding="utf-8")
    r = mypt("fit", *TINY, "--data.input_file", text, "--data.tokenizer", "gpt2", "--model_name", "g",
             "--trainer.max_steps", "3")  # fmt: skip
    assert r.code == 0, r
    state = _state("g")
    model, _, _ = bundle.load_model("g")
    data = TextDataModule(str(text), tokenizer="gpt2", batch_size=4, block_size=16)
    data.setup("validate")
    encoding: tiktoken.Encoding = GPT2Tokenizer().encoding
    nats, n_bytes = 0.0, 0
    for x, y in itertools.islice(data.val_dataloader(), 2):  # limit_val_batches 2
        with torch.no_grad():
            _, loss = model(x, y)
        nats += float(loss) * y.numel()
        n_bytes += len(encoding.decode_bytes(y.flatten().tolist()))
    assert n_bytes > 2 * 4 * 16  # several bytes per token
    assert state["val_loss"] == pytest.approx(nats / (2 * 4 * 16), rel=1e-5)
    assert state["val_bpb"] == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-5)
