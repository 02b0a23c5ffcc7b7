"""Training throughput: `mypt fit` (the real LightningCLI path) against the plain loop, side by side.

Lightning owns its loop, so the plain loops ride inside it: a callback times every mypt step (the
interval between two consecutive ends of a training batch, so data loading, every hook, logging,
the progress bar, validation and checkpointing all count) and, every `block` steps, runs `block`
steps of each plain loop. The runs alternate in one process, so machine noise hits all of them
alike. Throughput is the median over the timed steps after warm-up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import yaml
from common import find_text, peak_rss_mb
from plain_loop import PlainTrainer, split_tokens

from mypt import precision
from mypt.config import ARCHITECTURE_KEYS
from mypt.model import GPTConfig
from mypt.train_cli import MyptCLI

logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # banners would break up the table


def load_config(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


class Interleave(pl.Callback):
    """Times each mypt step and runs the guest loops between blocks of mypt steps.

    The first step after each switch is dropped (its caches are cold from the other runs), and the
    guests take turns in a rotating order, so no run always follows the same one.
    """

    def __init__(self, guests: dict[str, PlainTrainer], block: int) -> None:
        self.guests, self.block = guests, block
        self.times: dict[str, list[tuple[float, float]]] = {"mypt": [], **{name: [] for name in guests}}
        self._last: tuple[float, float] | None = None
        self._switched = True
        self._turn = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        now = (time.perf_counter(), time.process_time())
        if self._last is not None and not self._switched:
            self.times["mypt"].append((now[0] - self._last[0], now[1] - self._last[1]))
        self._switched = False
        if self.guests and trainer.global_step % self.block == 0:
            names = list(self.guests)
            self._turn += 1
            for name in names[self._turn % len(names) :] + names[: self._turn % len(names)]:
                self.times[name] += self.guests[name].timed_steps(self.block)[1:]
            self._switched = True
            now = (time.perf_counter(), time.process_time())
        self._last = now


def run_mypt(args: list[str], callback: pl.Callback) -> None:
    """`mypt fit ARGS` in this process, exactly as the console command builds it, plus `callback`."""

    class TimedCLI(MyptCLI):
        def instantiate_trainer(self, **kwargs: Any) -> Any:
            return super().instantiate_trainer(callbacks=[callback], **kwargs)

    TimedCLI(args=["fit", *args])


def summarize(times: list[tuple[float, float]], warmup: int, tokens_per_step: int) -> dict:
    wall = [w for w, _ in times[warmup:]]
    cpu = [c for _, c in times[warmup:]]
    return {
        "steps": len(wall),
        "median_ms": 1000 * statistics.median(wall),
        "tokens_per_sec": tokens_per_step / statistics.median(wall),
        "cpu_tokens_per_sec": tokens_per_step / statistics.median(cpu),  # per CPU-second of this process
        "mean_tokens_per_sec": tokens_per_step * len(wall) / sum(wall),  # validation and saves included
    }


def mypt_choice(cfg: dict, mypt_args: tuple[str, ...] = ()) -> precision.SpeedChoice:
    """The precision and compile `mypt fit --config CFG MYPT_ARGS` uses on this machine."""
    given = dict(zip(mypt_args[::2], mypt_args[1::2], strict=False))
    compile_arg = given.get("--model.compile")
    return precision.choose(
        precision.device_type("auto"),
        given.get("--trainer.precision", cfg.get("trainer", {}).get("precision")),
        None if compile_arg is None else compile_arg == "true",
        n_embd=cfg["model"]["n_embd"],
        tokens_per_step=cfg["data"]["batch_size"] * cfg["model"]["block_size"],
    )


def plain_amp(precision_name: str) -> str | None:
    """The plain loop's `amp` for a Lightning precision: the same autocast dtype."""
    if precision_name.startswith("bf16"):
        return "bf16"
    return "fp16" if precision_name.startswith("16") else None


def plain_trainers(
    cfg: dict,
    steps: int,
    save_dir: Path,
    guests: dict[str, dict],
    text: Path | None = None,
    amp: str | None = None,
) -> dict[str, PlainTrainer]:
    """One PlainTrainer per guest (name -> options), set up as `mypt fit --config` sets up mypt
    (on `text`, default the config's corpus); `amp` (PlainTrainer's: None, "bf16" or "fp16") unless a
    guest says otherwise."""
    model, data, trainer = cfg["model"], cfg["data"], cfg["trainer"]
    text = text or find_text(Path(data["input_file"]).name)
    train, val, vocab = split_tokens(str(text), data["tokenizer"])
    # every architecture key the config sets: configs/dante.yaml trains with dropout 0.2
    config = GPTConfig(
        vocab_size=vocab, **{k: v for k, v in model.items() if k in ARCHITECTURE_KEYS and k != "vocab_size"}
    )
    common = {
        "batch_size": data["batch_size"],
        "max_steps": steps,
        # the recipe keys the config sets; the others are the plain loop's copies of mypt's defaults
        **{
            k: model[k]
            for k in ("learning_rate", "optimizer", "muon_lr_ratio", "lr_schedule", "decay_ratio")
            if k in model
        },
        "warmup_steps": model.get("warmup_steps", 100),
        "val_interval": trainer.get("val_check_interval", 250),
        "val_batches": trainer.get("limit_val_batches", 50),
        "save_dir": save_dir,
    }
    return {
        name: PlainTrainer(config, train, val, **{**common, "amp": amp, **options})
        for name, options in guests.items()
    }


def compare(
    config_file: Path,
    steps: int,
    block: int,
    warmup: int,
    guests: dict[str, dict],
    mypt_args: tuple[str, ...] = (),
) -> dict:
    """mypt for `steps` steps with `config_file`, interleaved with one plain loop per entry of
    `guests` (name -> PlainTrainer options; in the precision mypt uses unless they say otherwise);
    returns throughput per name."""
    config_file = config_file.resolve()
    cfg = load_config(config_file)
    text = find_text(Path(cfg["data"]["input_file"]).name)
    amp = plain_amp(mypt_choice(cfg, mypt_args).precision)
    with tempfile.TemporaryDirectory() as tmp, _quiet(), _env(MYPT_CACHE_DIR=f"{tmp}/cache"), _cwd(tmp):
        timer = Interleave(plain_trainers(cfg, steps, Path(tmp), guests, amp=amp), block)
        args = ["--config", str(config_file), "--data.input_file", str(text), "--model_name", "bench"]
        run_mypt([*args, "--trainer.max_steps", str(steps), *mypt_args], timer)
    tokens = cfg["data"]["batch_size"] * cfg["model"]["block_size"]
    return {name: summarize(times, warmup, tokens) for name, times in timer.times.items()}


@contextlib.contextmanager
def _quiet():
    """Lightning's banners and the progress bar go to /dev/null (they are still drawn: that cost counts)."""
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        yield


@contextlib.contextmanager
def _cwd(path: str):
    """`mypt fit` writes checkpoints/ and logs/ under the current folder."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def _env(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def rss_child(kind: str, config_file: Path, steps: int) -> None:
    """Entry of `python training.py rss mypt|plain CONFIG STEPS`: train alone, print peak RSS in MB."""
    if kind == "mypt":
        compare(config_file, steps, block=steps + 1, warmup=0, guests={})
    else:
        with tempfile.TemporaryDirectory() as tmp, _env(MYPT_CACHE_DIR=f"{tmp}/cache"):
            plain_trainers(load_config(config_file), steps, Path(tmp), {"plain": {}})["plain"].timed_steps(
                steps
            )
    print(f"{peak_rss_mb():.1f}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "rss":
        rss_child(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit("usage: training.py rss mypt|plain CONFIG STEPS")
