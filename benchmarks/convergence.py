"""Does `mypt fit` learn what the plain loop learns? Validation loss of both at the same steps.

    python benchmarks/convergence.py [--config configs/dante_cpu.yaml] [--max_steps N]

Both start from the same weights (seed 1337), draw the same batches and validate on the same
windows, so with dropout 0 their curves should agree to float rounding. Takes minutes on a CPU
(2000 steps each for configs/dante_cpu.yaml); writes benchmarks/results/convergence.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from common import REPO, find_text
from training import _cwd, _env, _quiet, load_config, plain_trainers, run_mypt


class ValLosses(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if not trainer.sanity_checking:
            self.losses.append((trainer.global_step, float(trainer.callback_metrics["val/loss"])))


def curves(
    config_file: Path, max_steps: int | None = None, val_interval: int | None = None, text: Path | None = None
) -> dict:
    """{"mypt": [(step, val_loss)], "plain": [(step, val_loss)]} for one config (on `text`, default the
    config's corpus)."""
    config_file = config_file.resolve()
    cfg = load_config(config_file)
    steps = max_steps or cfg["trainer"]["max_steps"]
    cfg["trainer"]["val_check_interval"] = val_interval or cfg["trainer"]["val_check_interval"]
    text = text or find_text(Path(cfg["data"]["input_file"]).name)
    recorder = ValLosses()
    with tempfile.TemporaryDirectory() as tmp, _quiet(), _env(MYPT_CACHE_DIR=f"{tmp}/cache"), _cwd(tmp):
        args = ["--config", str(config_file), "--data.input_file", str(text), "--model_name", "convergence"]
        args += [
            "--trainer.max_steps",
            str(steps),
            "--trainer.val_check_interval",
            str(cfg["trainer"]["val_check_interval"]),
        ]
        run_mypt(args, recorder)
        plain = plain_trainers(cfg, steps, Path(tmp), {"plain": {}}, text)["plain"]
        for _ in range(steps):
            plain.step()
    return {"mypt": recorder.losses, "plain": plain.val_losses}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "dante_cpu.yaml")
    parser.add_argument("--max_steps", type=int, help="default: the config's trainer.max_steps")
    parser.add_argument("--val_interval", type=int, help="default: the config's trainer.val_check_interval")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "convergence.json")
    args = parser.parse_args()
    result = curves(args.config, args.max_steps, args.val_interval)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plain = dict(result["plain"])
    print("step  mypt val/loss  plain val/loss  difference")
    for step, loss in result["mypt"]:
        other = plain.get(step)
        diff = f"{loss - other:+.4f}" if other is not None else ""
        print(f"{step:>4}  {loss:13.4f}  {other if other is not None else float('nan'):14.4f}  {diff:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
