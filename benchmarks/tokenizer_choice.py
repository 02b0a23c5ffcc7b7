"""Which tokenizer for my text? char, gpt2 and a learnt BPE (two sizes), each trained for the same
wall-clock budget, compared by validation bits per byte.

    python benchmarks/tokenizer_choice.py [--budget 120] [--threads 1] [--text divina_commedia.txt|PATH]

Each tokenizer trains configs/dante_cpu.yaml's model (4 layers, 128 wide, context 64 tokens, batch
12) through `mypt fit`. The budget is made equal by measuring first: a short run times the median
step of each tokenizer's model (its embedding and output layer grow with the vocabulary), then the
real run gets max_steps = budget / step time, so its cosine schedule ends where the time does.
Time is the training process's CPU time with one torch thread: on an idle core that is the
wall-clock time, and on a machine shared with other jobs it stays steady where wall time does not.
Validation loss is per token, and a token is one character for char but several for a BPE, so
they compare only per byte of text: mypt's val/bpb (the validation's nats / ln 2 / the UTF-8 bytes
of the windows it scored), or where a version of mypt does not log it, val loss / ln 2 x the
validation split's tokens/byte, which estimates the same figure. Writes benchmarks/results/tokenizers.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from common import REPO, find_text
from training import _cwd, _env, _quiet, run_mypt

CONFIG = REPO / "configs" / "dante_cpu.yaml"
TOKENIZERS = {
    "char": ["--data.tokenizer", "char"],
    "gpt2": ["--data.tokenizer", "gpt2"],
    "bpe-1k": ["--data.tokenizer", "bpe", "--data.vocab_size", "1024"],
    "bpe-4k": ["--data.tokenizer", "bpe", "--data.vocab_size", "4096"],
}
CALIBRATION_STEPS, CALIBRATION_WARMUP = 30, 5
VAL_BATCHES = 50  # fixed windows at the end of each run: 50 x 12 x 64 tokens


class Recorder(pl.Callback):
    """Step times (CPU and wall), the final val/loss, and the facts of the data and model."""

    def __init__(self) -> None:
        self.step_times: list[float] = []  # CPU seconds of this process
        self.wall_times: list[float] = []
        self._last = self._last_wall = 0.0
        self.val_loss: float | None = None
        self.val_bpb: float | None = None  # mypt's own val/bpb, where this version logs it
        self.facts: dict[str, Any] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        val = [int(i) for i in dm.val_tokens]
        val_bytes = len(dm.tokenizer.decode(val).encode("utf-8"))
        self.facts = {
            "vocab_size": pl_module.model.config.vocab_size,
            "params": pl_module.model.num_params(),
            "val_tokens": len(val),
            "val_bytes": val_bytes,
            "tokens_per_byte": len(val) / val_bytes,
        }
        self._last, self._last_wall = time.process_time(), time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        now, now_wall = time.process_time(), time.perf_counter()
        self.step_times.append(now - self._last)
        self.wall_times.append(now_wall - self._last_wall)
        self._last, self._last_wall = now, now_wall

    def on_validation_end(self, trainer: pl.Trainer, *args: Any) -> None:
        metrics = trainer.callback_metrics  # once, after the last step
        self.val_loss = float(metrics["val/loss"])
        self.val_bpb = float(metrics["val/bpb"]) if "val/bpb" in metrics else None


def fit(text: Path, name: str, extra: list[str], steps: int, tmp: Path) -> Recorder:
    recorder = Recorder()
    args = ["--config", str(CONFIG), "--data.input_file", str(text), "--model_name", name, *extra]
    args += ["--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps)]
    args += ["--trainer.limit_val_batches", str(VAL_BATCHES), "--dashboard.max_new_tokens", "0"]
    with _quiet(), _env(MYPT_CACHE_DIR=str(tmp / "cache")), _cwd(str(tmp)):
        run_mypt(args, recorder)
    return recorder


def measure(text: Path, budget: float, tmp: Path, only: list[str]) -> dict[str, dict]:
    results = {}
    for name in only:
        extra = TOKENIZERS[name]
        calibration = fit(text, f"{name}-calibration", extra, CALIBRATION_STEPS, tmp)
        step_s = statistics.median(calibration.step_times[CALIBRATION_WARMUP:])
        steps = max(CALIBRATION_STEPS, int(budget / step_s))
        print(f"{name}: {step_s * 1000:.1f} CPU ms/step -> {steps} steps for {budget:.0f} s", file=sys.stderr)
        run = fit(text, name, extra, steps, tmp)
        facts = run.facts
        train_s = sum(run.step_times)
        tokens = steps * 12 * 64
        results[name] = {
            **facts,
            "steps": steps,
            "train_s": round(train_s, 1),
            "train_wall_s": round(sum(run.wall_times), 1),
            "tokens_per_s": round(tokens / train_s),
            "bytes_per_s": round(tokens / train_s / facts["tokens_per_byte"]),
            "val_loss": run.val_loss,
            # mypt's val/bpb counts the bytes of the very windows validated; without it, the mean
            # loss per token times the validation split's tokens per byte estimates the same
            "val_bpb": run.val_bpb or run.val_loss / math.log(2) * facts["tokens_per_byte"],
        }
    return results


def table(results: dict[str, dict]) -> str:
    rows = [("tokenizer", "vocab", "params", "tokens/byte", "steps", "CPU s", "tokens/s", "bytes/s",
             "val loss", "val bpb")]  # fmt: skip
    for name, r in results.items():
        rows.append(
            (
                name,
                f"{r['vocab_size']:,}",
                f"{r['params'] / 1e6:.2f}M",
                f"{r['tokens_per_byte']:.3f}",
                f"{r['steps']:,}",
                f"{r['train_s']:.0f}",
                f"{r['tokens_per_s']:,}",
                f"{r['bytes_per_s']:,}",
                f"{r['val_loss']:.3f}",
                f"{r['val_bpb']:.3f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=120.0, help="training CPU seconds per tokenizer")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)"
    )
    parser.add_argument("--text", default="divina_commedia.txt", help="a file, or a name in data/")
    parser.add_argument("--only", nargs="+", choices=list(TOKENIZERS), default=list(TOKENIZERS))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "tokenizers.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    text = Path(args.text) if Path(args.text).is_file() else find_text(args.text)
    with tempfile.TemporaryDirectory() as tmp:
        results = measure(text, args.budget, Path(tmp), args.only)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"text": args.text, "budget_s": args.budget, "threads": args.threads,
                                    "results": results}, indent=2) + "\n")  # fmt: skip
    print(
        f"{args.text}, configs/dante_cpu.yaml, {args.budget:.0f} s of training each, {args.threads} thread(s)"
    )
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
