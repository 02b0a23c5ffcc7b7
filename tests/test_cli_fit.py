"""`mypt fit` end to end through the entry point: a usable bundle and TensorBoard logs."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import TINY, run_mypt_subprocess
from lightning.pytorch.accelerators import CPUAccelerator
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

from mypt import bundle
from mypt.config import NANOGPT, GPTConfig
from mypt.train_cli import MyptCLI, world_size_line


def test_fit_writes_a_complete_bundle(mypt, text_file):
    r = mypt(
        "fit", *TINY, "--data.input_file", text_file, "--model_name", "tiny", "--trainer.max_steps", "30"
    )
    assert r.code == 0, r
    path = Path("checkpoints/tiny")
    assert {p.name for p in path.iterdir()} == {*bundle.BUNDLE_FILES, bundle.MANIFEST_FILE, bundle.BEST_DIR}
    config = json.loads((path / "config.json").read_text())
    assert list(config) == list(bundle.CONFIG_KEYS)  # the design note's keys, then the architecture options
    vocab_size = len(set(text_file.read_text(encoding="utf-8")))  # the text's distinct characters
    assert config == {"batch_size": 4, "block_size": 16, "vocab_size": vocab_size, "n_embd": 32,
                      "n_head": 2, "n_layer": 2, "dropout": 0.0, "bias": False, "device": "cpu",
                      **{k: getattr(GPTConfig(), k) for k in NANOGPT}}  # fmt: skip
    chars = json.loads((path / "tokenizer.json").read_text())
    assert chars["token_kind"] == "char" and len(chars["chars"]) == config["vocab_size"]
    state = json.loads((path / "training_state.json").read_text())
    assert state["step"] == 30 and state["optimizer_file"] == "optimizer.pt"
    assert state["training_config"] == {"max_iters": 30, "eval_interval": 10, "eval_iters": 2,
                                         "learning_rate": 0.004, "start_step": 0}  # fmt: skip
    assert state["data"]["sha256"] == bundle.sha256_file(text_file)
    assert state["seed"] == 1337 and state["init_from"] is None and len(state["history"]) == 1
    weights = torch.load(path / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in weights.values())
    torch.load(path / "optimizer.pt", weights_only=True)  # plain containers only
    assert state["val_loss"] < 4.0  # learning: log(vocab) is about 4.3 for this text
    events = list(Path("logs/tiny").glob("events.out.tfevents.*"))
    assert events, "TensorBoard logs go to logs/<model_name>/ (no version_N folder)"


def test_gpt2_tokenizer_fit(mypt, text_file):
    r = mypt("fit", *TINY, "--data.input_file", text_file, "--data.tokenizer", "gpt2", "--model_name", "bpe",
             "--trainer.max_steps", "4")  # fmt: skip
    assert r.code == 0, r
    config = json.loads(Path("checkpoints/bpe/config.json").read_text())
    assert config["vocab_size"] == 50304
    assert json.loads(Path("checkpoints/bpe/tokenizer.json").read_text()) == {"token_kind": "gpt2"}


def test_console_entry_point_runs_and_errors_are_one_line(tmp_path, text_file):
    r = run_mypt_subprocess(
        "fit", *TINY, "--data.input_file", text_file, "--trainer.max_steps", "3", cwd=tmp_path
    )
    assert r.code == 0, r
    assert "mypt: model name dante (from --data.input_file" in r.out  # dante.txt: no --model_name
    assert (tmp_path / "checkpoints" / "dante" / "model.pt").is_file()
    r = run_mypt_subprocess("fit", *TINY, "--data.input_file", tmp_path / "missing.txt", "--model_name", "other",
                            cwd=tmp_path)  # fmt: skip
    assert r.code != 0 and "Traceback" not in r.err
    assert r.err.strip().splitlines() == [
        f"mypt: error: input file {tmp_path / 'missing.txt'} does not exist"
    ]


def _logged_steps(folder: str, tag: str) -> list[int]:
    events = EventAccumulator(folder, size_guidance={"tensors": 0})
    events.Reload()
    return [e.step for e in events.Tensors(tag)] if tag in events.Tags()["tensors"] else []


def test_a_second_text_a_finished_model_and_a_restart(mypt, text_file, tmp_path):
    """The default model name comes from the text (not `model`, which the first text took); a model
    at max_steps ends in one line without training; --restart sets the old logs aside with the old
    bundle, so no step is logged twice; log_every_n_steps 0 (Lightning's "no logging") trains."""
    other = tmp_path / "notes.txt"
    other.write_text(text_file.read_text(encoding="utf-8")[::-1], encoding="utf-8")
    r = mypt("fit", *TINY, "--data.input_file", other, "--trainer.max_steps", "4",
             "--trainer.log_every_n_steps", "1")  # fmt: skip
    assert r.code == 0, r
    assert "model name notes" in r.out and bundle.is_bundle(Path("checkpoints/notes"))
    assert _logged_steps("logs/notes", "train/loss") == [0, 1, 2, 3]

    def files() -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in Path("checkpoints/notes").rglob("*") if p.is_file()}

    before = files()
    r = mypt("fit", *TINY, "--data.input_file", other, "--trainer.max_steps", "4")
    assert r.code == 0, r
    assert r.out.strip().splitlines()[-1] == (
        "mypt: checkpoints/notes is already at step 4 of --trainer.max_steps 4: nothing to train "
        "(raise --trainer.max_steps to continue it, or give another --model_name)"
    ), r
    assert "Resuming" not in r.out  # fit never started
    assert files() == before

    r = mypt("fit", *TINY, "--data.input_file", other, "--trainer.max_steps", "4", "--trainer.log_every_n_steps",
             "0", "--restart", "true")  # fmt: skip
    assert r.code == 0, r
    assert "mypt: the old TensorBoard logs of notes are kept at logs/notes.replaced-" in r.err, r
    assert len(list(Path("checkpoints").glob("notes.replaced-*"))) == 1
    (old_logs,) = Path("logs").glob("notes.replaced-*")
    assert _logged_steps(str(old_logs), "train/loss") == [0, 1, 2, 3]
    assert _logged_steps("logs/notes", "train/loss") == []  # the new run logged nothing, as asked


class GradNormAtStep(pl.Callback):
    def __init__(self, out_file: str) -> None:
        """Records the norm of the gradients each optimizer step used (after clipping).

        Args:
            out_file: JSON file for the list of norms, one per step.
        """
        self.out_file = out_file
        self.norms: list[float] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        def record(optimizer, args, kwargs) -> None:
            grads = [
                p.grad.float() for g in optimizer.param_groups for p in g["params"] if p.grad is not None
            ]
            self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

        trainer.optimizers[0].register_step_post_hook(record)  # grads as the step used them

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        Path(self.out_file).write_text(json.dumps(self.norms))


def test_mixed_precision_with_fused_adamw_clips_gradients(mypt, text_file, tmp_path):
    """The README's GPU advice (--trainer.precision bf16-mixed) with mypt's defaults (fused AdamW,
    gradient_clip_val 1.0): Lightning refuses to clip for a fused optimizer; mypt clips itself, so
    the run trains and every step's gradient has at most the clipping norm. (fp16's loss-scaler
    path, unscale then clip, needs a GPU here: on a CPU Lightning turns 16-mixed into bf16;
    test_module.py checks it with a real GradScaler.)"""
    probe = {
        "class_path": "test_cli_fit.GradNormAtStep",
        "init_args": {"out_file": str(tmp_path / "norms.json")},
    }
    r = mypt("fit", *TINY, "--data.input_file", text_file, "--model_name", "amp", "--trainer.max_steps", "12",
             "--trainer.precision", "bf16-mixed", "--trainer.gradient_clip_val", "0.05",
             "--model.optimizer", "adamw",  # fused AdamW alone (Muon + AdamW steps unfused, as one)
             "--trainer.callbacks", json.dumps([probe]))  # fmt: skip
    assert r.code == 0, r
    norms = json.loads((tmp_path / "norms.json").read_text())
    assert len(norms) == 12 and max(norms) <= 0.05 * 1.001, norms
    state = bundle.load_training_state(Path("checkpoints/amp"))
    assert state["step"] == 12 and math.isfinite(state["val_loss"])


def test_evaluating_and_sampling_use_one_device_unless_asked(text_file, monkeypatch):
    """On a machine with 4 devices Lightning's devices="auto" starts 4 processes. fit keeps that
    convention and says so at the start; validate, test and predict take one device unless
    --trainer.devices asks for more."""
    monkeypatch.setattr(CPUAccelerator, "auto_device_count", staticmethod(lambda: 4))
    monkeypatch.setattr(MyptCLI, "_run_subcommand", lambda self, subcommand: None)  # build, do not run

    def trainer(*args: str) -> pl.Trainer:
        return MyptCLI(args=[*args, "--data.input_file", str(text_file), "--data.batch_size", "6"]).trainer

    for subcommand in ("validate", "test", "predict"):
        assert trainer(subcommand).num_devices == 1, subcommand
    assert trainer("validate", "--trainer.devices", "2").num_devices == 2
    fit = trainer("fit")
    assert fit.num_devices == 4
    assert world_size_line(fit, 6).startswith("DDP over 4 processes: 4 x 6 sequences per step (24 in all")


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU 16-mixed is float16")
def test_16_mixed_on_a_cpu_is_said_once_as_what_runs(mypt, text_file):
    """A CPU has no float16 autocast: Lightning would run bf16-mixed and warn. mypt runs bf16-mixed,
    says so in its one precision line, records it, and Lightning has nothing to warn about."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = mypt("fit", *TINY, "--data.input_file", text_file, "--model_name", "half", "--trainer.max_steps", "2",
                 "--trainer.precision", "16-mixed")  # fmt: skip
    assert r.code == 0, r
    assert not [w for w in caught if "16-mixed" in str(w.message)], [str(w.message) for w in caught]
    assert "  on 1 x cpu, precision bf16-mixed (" in r.out
    (line,) = [line for line in r.out.splitlines() if line.startswith("mypt: precision ")]
    assert line.startswith(
        "mypt: precision bf16-mixed (16-mixed given: a CPU has no float16 autocast), compile off (automatic) on cpu: "
    ), line
    assert "bf16 does not pay" not in line and "matmuls" not in line  # no automatic precision to explain
    choice = bundle.load_training_state(Path("checkpoints/half"))["precision_choice"]
    assert choice["precision"] == "bf16-mixed" and choice["automatic"] == ["compile"], choice


def test_evaluations_say_what_they_evaluate_and_samples_are_labelled(mypt, text_file):
    """validate names the model and step it evaluates (the best model's too); predict labels each
    sample with its prompt and seed; fewer prompts than processes run on as many processes as there
    are prompts (Lightning's sampler would leave a process without any and fail)."""
    r = mypt("fit", *TINY, "--data.input_file", text_file, "--model_name", "ev", "--trainer.max_steps", "20")
    assert r.code == 0, r
    best = bundle.read_best(Path("checkpoints/ev"))
    r = mypt("validate", "ev", "--best", "--trainer.enable_progress_bar", "false")
    assert r.code == 0, r
    assert r.out.startswith(
        f"mypt: validating the best model of checkpoints/ev: checkpoints/ev/best, step {best['step']} "
        f"(val loss {best['val_loss']:.4f} when kept)\n"
    ), r.out
    r = mypt("validate", "ev", "--trainer.enable_progress_bar", "false")
    assert r.code == 0 and r.out.startswith("mypt: validating checkpoints/ev at step 20\n"), r.out

    prompts = ["--data.prompts", '["Nel", "Amor"]', "--trainer.enable_progress_bar", "false"]
    r = mypt("predict", "ev", *prompts)
    assert r.code == 0, r
    samples = [mypt("generate", "ev", "--prompt", prompt, "--seed", str(seed)).out.rstrip("\n")
               for seed, prompt in enumerate(["Nel", "Amor"])]  # fmt: skip
    assert r.out == (
        f"=== sample 1 of 2: prompt 'Nel', seed 0 ===\n{samples[0]}\n\n"
        f"=== sample 2 of 2: prompt 'Amor', seed 1 ===\n{samples[1]}\n"
    ), r.out
    r = mypt("predict", "ev", "--data.prompts", '["Nel"]', "--trainer.enable_progress_bar", "false",
             "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu")  # fmt: skip
    assert r.code == 0, r
    assert "mypt: 1 prompt: sampling on 1 process, not 2" in r.err, r
    assert r.out == f"=== sample 1 of 1: prompt 'Nel', seed 0 ===\n{samples[0]}\n", r.out
