"""Final validation, bits per byte, the best model kept beside the latest bundle, early stopping.

One overfitting run (a wide model on 1.5 KB of text, validated every 20 steps, 210 steps) feeds
most checks: each test works on its own copy of what it left on disk.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURE_TEXT, TINY, dante_text
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

from mypt import bundle
from mypt.cli import main

# the excerpt kept in tests/ (the same text wherever the suite runs), without its accents
ASCII_TEXT = "".join(c for c in FIXTURE_TEXT.read_text(encoding="utf-8") if ord(c) < 128)[:1500]
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


# ---------------------------------------------------------------------------------- the best model


def _best_json() -> dict:
    return json.loads(Path("checkpoints/over/best/best.json").read_text())


def test_the_best_model_is_kept_beside_the_latest_bundle(overfit, mypt):
    """The run overfits: its best (the lowest val/loss in TensorBoard) is kept in best/, strictly
    better than the last, and gives that loss again under `mypt validate --best`; the bundle itself
    keeps the design note's five files and their meaning."""
    info = bundle.get_model_info("over")
    best, state = info["best"], info["training_state"]
    val = _scalars("over", "val/loss")
    low_step, low_loss = min(val, key=lambda point: point[1])
    assert (best["step"], best["val_loss"]) == (low_step, pytest.approx(low_loss, rel=1e-6))
    assert best["val_loss"] < state["val_loss"] and best["step"] < state["step"] == 210
    assert best["run"] == 1 and best["val_bpb"] == pytest.approx(best["val_loss"] / math.log(2), rel=1e-5)
    assert best["path"] == str(Path("checkpoints/over/best"))
    assert {p.name for p in Path("checkpoints/over/best").iterdir()} == {
        *bundle.BEST_FILES,
        bundle.MANIFEST_FILE,
    }
    assert set(info["files"]) == {*bundle.BUNDLE_FILES, bundle.MANIFEST_FILE}
    manifest = json.loads(Path("checkpoints/over/manifest.json").read_text())
    assert set(manifest["files"]) == set(bundle.BUNDLE_FILES) and manifest["step"] == 210

    r = mypt("validate", "--ckpt_path", "over", "--best", "--trainer.enable_progress_bar", "false")
    assert r.code == 0, r
    line = next(line for line in r.out.splitlines() if "val/loss" in line)
    assert float(re.findall(r"\d+\.\d+", line)[0]) == pytest.approx(best["val_loss"], rel=1e-5)

    # the run said where its bundle would be, and ended with one line on what it left
    assert f"mypt: training {Path('checkpoints/over')} (a new model): " in overfit
    end = [line for line in overfit.splitlines() if line.startswith("mypt: bundle ")]
    assert end == [
        f"mypt: bundle {Path('checkpoints/over')} at step 210 (val loss {state['val_loss']:.4f}, "
        f"{state['val_bpb']:.4f} bits per byte); best model: step {best['step']}, val loss "
        f"{best['val_loss']:.4f}, in {Path('checkpoints/over/best')}; next: mypt generate over --best"
    ]


def test_list_inspect_generate_and_export_know_the_best(overfit, mypt, tmp_path):
    best = _best_json()
    state = _state()
    r = mypt("list")
    assert r.code == 0, r
    header, row = r.out.strip().split("\n")
    assert header.split()[:6] == ["NAME", "STEP", "VAL", "LOSS", "BPB", "BEST@STEP"]
    assert row.split()[:5] == [
        "over", "210", f"{state['val_loss']:.4f}", f"{state['val_bpb']:.4f}", f"{best['val_loss']:.4f}@{best['step']}"
    ]  # fmt: skip

    r = mypt("inspect", "over")
    assert r.code == 0, r
    assert f"Best model: step {best['step']}, val loss {best['val_loss']:.4f}" in r.out
    assert "  best/model.pt " in r.out and "  best/best.json " in r.out
    risen = state["val_loss"] - best["val_loss"]
    assert f"val loss has risen {risen:.4f} since step {best['step']}: overfitting" in r.out

    import torch

    latest, _, _ = bundle.load_model("over")
    kept, _, _ = bundle.load_model("over", best=True)
    assert not torch.equal(latest.lm_head.weight, kept.lm_head.weight)
    args = ("--prompt", "ROMEO", "--max_new_tokens", "30", "--seed", "3")
    r = mypt("generate", "over", "--best", *args)
    assert r.code == 0 and r.out.startswith("ROMEO"), r
    from mypt.sampling import sample

    assert r.out.rstrip("\n") == sample(kept, bundle.load_tokenizer(Path("checkpoints/over/best")), "ROMEO", 30,
                                        0.8, 200, 3).rstrip("\n")  # fmt: skip

    pytest.importorskip("transformers")
    from safetensors.torch import load_file

    r = mypt("export", "over", "--best", "hf_best")
    assert r.code == 0, r
    exported = load_file(tmp_path / "hf_best" / "model.safetensors")
    # the default architecture exports to Qwen3ForCausalLM, whose token embedding is model.embed_tokens
    assert torch.equal(exported["model.embed_tokens.weight"], kept.transformer.wte.weight)


def test_a_resumed_run_keeps_the_best_and_early_stopping_ends_it(overfit, mypt):
    """Resumed with a patience of 2, the run goes on overfitting: it stops after two validations
    that do not beat the kept best, says so, records it, and leaves the best model as it was."""
    kept = {p.name: p.read_bytes() for p in Path("checkpoints/over/best").iterdir()}
    best = _best_json()
    r = mypt("fit", "--ckpt_path", "checkpoints/over", "--trainer.max_steps", "1000",
             "--early_stopping.patience", "2")  # fmt: skip
    assert r.code == 0, r
    state = _state()
    assert state["step"] == 240  # 220 and 240 did not beat the kept best: patience counts from it
    lines = [line for line in r.out.splitlines() if line.startswith("mypt: early stopping")]
    assert lines == [
        f"mypt: early stopping at step {state['step']}: val/loss has not improved for 2 validations "
        f"(patience 2); the best model (step {best['step']}, val loss {best['val_loss']:.4f}) is kept at "
        f"{Path('checkpoints/over/best')}"
    ]
    assert (
        state["history"][-1]["stopped"]
        == "early stopping: val/loss has not improved for 2 validations (patience 2)"
    )
    assert state["history"][0]["stopped"] == "max_steps 210 reached"
    assert {p.name: p.read_bytes() for p in Path("checkpoints/over/best").iterdir()} == kept


# ---------------------------------------------------------------------------------- bad input


def _error(r) -> str:
    lines = [line for line in r.err.strip().splitlines() if line.strip()]
    assert r.code == 2 and lines and lines[-1].startswith("mypt: error: ") and "Traceback" not in r.err, r
    return lines[-1]


def test_a_damaged_best_model_is_ignored_with_a_warning_and_replaced(overfit, mypt):
    """A truncated best/model.pt: readers warn and go on with the latest; --best refuses; a resumed
    run keeps a new best from its first validation; nothing else is touched."""
    best_model = Path("checkpoints/over/best/model.pt")
    best_model.write_bytes(best_model.read_bytes()[:1000])
    latest = {p.name: p.read_bytes() for p in Path("checkpoints/over").iterdir() if p.is_file()}
    for args in (("inspect", "over"), ("list",)):
        r = mypt(*args)
        assert r.code == 0, r
        assert "mypt: warning: the best model in checkpoints/over/best is ignored:" in r.err, r
        assert "truncated or replaced" in r.err
    assert mypt("generate", "over", "--max_new_tokens", "5").code == 0
    assert "truncated or replaced" in _error(mypt("generate", "over", "--best"))
    assert {p.name: p.read_bytes() for p in Path("checkpoints/over").iterdir() if p.is_file()} == latest

    r = mypt("fit", "--ckpt_path", "checkpoints/over", "--trainer.max_steps", "220")
    assert r.code == 0 and "the best model in checkpoints/over/best is ignored" in r.err, r
    assert _best_json()["step"] == 220 and _best_json()["run"] == 2


def test_fine_tuning_starts_its_own_best_and_a_bundle_without_one_refuses_best(overfit, mypt):
    """A fine-tune from the best model records it as its parent; with --keep_best false it keeps
    none, and --best on it says so. (With gradient accumulation, to check the final validation.)"""
    best_step = _best_json()["step"]
    r = mypt("fit", *TINY, "--model.n_embd", "128", "--model.n_head", "4", "--model.block_size", "32",
             "--data.input_file", "notes.txt", "--model.init_from", "checkpoints/over/best", "--model_name", "child",
             "--trainer.max_steps", "3", "--keep_best", "false", "--trainer.accumulate_grad_batches", "2")  # fmt: skip
    assert r.code == 0, r
    # the final validation comes after the last step's last accumulated batch, not before its update
    assert _state("child")["step"] == 3 and _state("child")["val_loss"] is not None
    assert _state("child")["init_from"] == {"path": str(Path("checkpoints/over/best")), "step": best_step}
    assert not Path("checkpoints/child/best").exists()
    line = _error(mypt("generate", "child", "--best"))
    assert "checkpoints/child has no best model yet" in line
    line = _error(mypt("validate", "--ckpt_path", "child", "--best"))
    assert "has no best model yet" in line
    assert "--best is for validate, test and predict" in _error(mypt("fit", "--ckpt_path", "over", "--best"))
    assert "--best needs the bundle" in _error(mypt("test", "--best"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--early_stopping.patience", "-1"], "--early_stopping.patience must not be negative, got -1"),
        (["--early_stopping.min_delta", "-0.1"], "--early_stopping.min_delta must not be negative, got -0.1"),
        (["--trainer.callbacks+", "ModelCheckpoint"], "mypt does not use Lightning's ModelCheckpoint"),
        (["--trainer.enable_checkpointing", "true"], "keeps the model with the lowest val loss in"),
    ],
    ids=["negative-patience", "negative-min-delta", "model-checkpoint", "enable-checkpointing"],
)
def test_bad_early_stopping_and_checkpoint_settings(mypt, text_file, args, message):
    r = mypt("fit", *TINY, "--data.input_file", text_file, "--trainer.max_steps", "5", *args)
    assert message in _error(r)
    assert not Path("checkpoints").exists()


def test_evaluation_needs_the_weights_alone(overfit, mypt):
    """validate/test/predict read config.json, model.pt and tokenizer.json: a best model's folder, a
    folder holding only those three, or a bundle whose optimizer.pt is damaged, which `inspect` shows
    with the damage named; resuming it is what fails, with a way forward."""
    quiet = ("--trainer.enable_progress_bar", "false")
    best = _best_json()
    r = mypt("validate", "checkpoints/over/best", *quiet)
    assert r.code == 0, r
    assert f"mypt: validating {Path('checkpoints/over/best')} at step {best['step']}" in r.out, r.out
    line = next(line for line in r.out.splitlines() if "val/loss" in line)
    assert float(re.findall(r"\d+\.\d+", line)[0]) == pytest.approx(best["val_loss"], rel=1e-5)

    Path("plain").mkdir()
    for name in (bundle.CONFIG_FILE, bundle.MODEL_FILE, bundle.TOKENIZER_FILE):
        shutil.copy(Path("checkpoints/over") / name, Path("plain") / name)
    for command in ("validate", "test"):
        r = mypt(command, "plain/", "--data.input_file", "notes.txt", *quiet)
        assert r.code == 0 and f"{command.replace('validate', 'val')}/loss" in r.out, r
    Path("notes.txt").rename("notes.moved")  # sampling reads no text: the prompts and the tokenizer
    r = mypt("predict", "plain/", "--data.prompts", '["ROMEO"]', *quiet)
    assert r.code == 0 and "ROMEO" in r.out, r
    Path("notes.moved").rename("notes.txt")

    optimizer = Path("checkpoints/over/optimizer.pt")
    optimizer.write_bytes(optimizer.read_bytes()[:1000])
    r = mypt("inspect", "over")
    assert r.code == 0 and "Last recorded training step: 210" in r.out, r
    assert "optimizer.pt is 1000 bytes but manifest.json says" in r.out and "cannot resume" in r.out, r.out
    r = mypt("list")
    assert r.code == 0 and "over  (cannot resume: " in r.out and "unreadable" not in r.out, r
    r = mypt("validate", "over", *quiet)
    assert r.code == 0 and "val/loss" in r.out, r
    line = _error(mypt("fit", "--ckpt_path", "over", "--trainer.max_steps", "220"))
    assert "optimizer.pt is 1000 bytes" in line and "--model.init_from checkpoints/over" in line
