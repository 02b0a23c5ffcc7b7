"""Does `mypt fit` learn what the plain loop learns? Validation loss of both at the same steps.

    python benchmarks/convergence.py [--config configs/dante_cpu.yaml] [--max_steps N]
    python benchmarks/convergence.py --precision_gap [--max_steps 300]   # bf16 vs float32, 4 x 256

Both start from the same weights (seed 1337), draw the same batches and validate on the same
windows, in the precision `mypt fit` chooses, so with dropout 0 their curves should agree to float
rounding. Takes minutes on a CPU (2000 steps each for configs/dante_cpu.yaml); writes
benchmarks/results/convergence.json.

`--precision_gap` trains a 4 x 256 model with `mypt fit` twice, in bf16-mixed and in float32, from the
same weights on the same batches: bf16 must not cost quality (validation losses within 0.02).
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
from training import _cwd, _env, _quiet, load_config, mypt_choice, plain_amp, plain_trainers, run_mypt

# the model of the bf16-vs-float32 comparison: configs/dante_cpu.yaml made 4 x 256 wide
GAP_MODEL = ("--model.n_layer", "4", "--model.n_head", "4", "--model.n_embd", "256")


class ValLosses(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if not trainer.sanity_checking:
            self.losses.append((trainer.global_step, float(trainer.callback_metrics["val/loss"])))


def curves(
    config_file: Path,
    max_steps: int | None = None,
    val_interval: int | None = None,
    text: Path | None = None,
    mypt_args: tuple[str, ...] = (),
    plain: bool = True,
) -> dict:
    """{"mypt": [(step, val_loss)], "plain": [(step, val_loss)]} for one config (on `text`, default the
    config's corpus; `plain` False: mypt's only)."""
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
            *mypt_args,
        ]
        run_mypt(args, recorder)
        result = {"mypt": recorder.losses}
        if plain:
            amp = plain_amp(mypt_choice(cfg, mypt_args).precision)
            trainer = plain_trainers(cfg, steps, Path(tmp), {"plain": {}}, text, amp)["plain"]
            for _ in range(steps):
                trainer.step()
            result["plain"] = trainer.val_losses
    return result


def precision_gap(config_file: Path, max_steps: int = 300, val_interval: int = 100) -> dict:
    """Validation losses of `mypt fit` in bf16-mixed and in float32 (a 4 x 256 model by default),
    same weights and batches; `gap` is the largest difference at any evaluation."""
    runs = {
        name: curves(
            config_file, max_steps, val_interval, None, (*GAP_MODEL, "--trainer.precision", name), False
        )["mypt"]
        for name in ("bf16-mixed", "32-true")
    }
    gap = max(abs(a - b) for (_, a), (_, b) in zip(runs["bf16-mixed"], runs["32-true"], strict=True))
    return {"bf16": runs["bf16-mixed"], "float32": runs["32-true"], "gap": gap, "steps": max_steps}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "dante_cpu.yaml")
    parser.add_argument("--max_steps", type=int, help="default: the config's trainer.max_steps")
    parser.add_argument("--val_interval", type=int, help="default: the config's trainer.val_check_interval")
    parser.add_argument(
        "--precision_gap", action="store_true", help="bf16 vs float32 of a 4 x 256 model instead"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "convergence.json")
    args = parser.parse_args()
    if args.precision_gap:
        result = precision_gap(args.config, args.max_steps or 300, args.val_interval or 100)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_name("precision_gap.json").write_text(json.dumps(result, indent=2) + "\n")
        print("step  bf16 val/loss  float32 val/loss  difference")
        for (step, bf16), (_, fp32) in zip(result["bf16"], result["float32"], strict=True):
            print(f"{step:>4}  {bf16:13.4f}  {fp32:16.4f}  {bf16 - fp32:+10.4f}")
        print(f"largest gap {result['gap']:.4f} (target <= 0.02)")
        return 0
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
