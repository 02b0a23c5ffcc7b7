"""The measured rule behind `--model.size auto`: a grid of shapes trained for several time budgets.

    python benchmarks/sizing.py --grid quick      # the harness: one tiny budget, two shapes (a minute)
    python benchmarks/sizing.py --grid reduced    # 1/2/4 min on Dante (char), 3 depths; then the
                                                  # held-out check (~35 min on 2 cores)
    python benchmarks/sizing.py --grid full       # 2/5/15 min on Dante and Shakespeare, char and bpe,
                                                  # 6 depths; then the held-out check (hours: by hand)

Every run is the real `mypt fit` command in a child process, timed from outside (start-up and exit
included), with a fresh model, `--trainer.max_time` and the shape of one depth of mypt.sizing's dial
(`shape_for_depth`), time alone deciding (--trainer.max_steps -1). Its figure is the val bits per
byte of the best model it kept (what the user gets). From the grid:

- per budget, the best shape, its tokens for the budget D, the corpus's unique tokens U and the
  effective tokens D' (Muennighoff et al. 2023), and D'/N for its N non-embedding parameters;
- the fitted rule: TOKENS_PER_PARAM = the geometric mean of the best shapes' D'/N;
- LIGHTNING_SPEED (a run's tokens/s over the bare step timed at start-up) and TRAINING_SHARE (the
  share of the time after start-up that trains), from the runs' own records.

The held-out check: a text and budget not used in fitting (Shakespeare, bpe), every grid depth,
`--model.size auto`, and each shipped config (time alone), at the same budget. The source tree is
copied first, so that edits made while the grid runs do not change what it measures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, find_text

sys.path.insert(0, str(REPO / "src"))
from mypt.budget import max_time_text  # noqa: E402
from mypt.sizing import effective_tokens, shape_for_depth  # noqa: E402

GRIDS = {
    "quick": {"texts": [("divina_commedia.txt", "char")], "budgets": [30], "depths": [1, 2],
              "held_out": None},
    "reduced": {"texts": [("divina_commedia.txt", "char")], "budgets": [60, 120, 240], "depths": [1, 2, 3],
                "held_out": ("tinyshakespeare.txt", "bpe", 120, [1, 2, 3])},
    "full": {"texts": [("divina_commedia.txt", "char"), ("divina_commedia.txt", "bpe"),
                       ("tinyshakespeare.txt", "char")],
             "budgets": [120, 300, 900], "depths": [2, 3, 4, 6, 8, 10],
             "held_out": ("tinyshakespeare.txt", "bpe", 300, [2, 3, 4, 6, 8, 10])},
}  # fmt: skip
COMMON = [
    "--trainer.enable_progress_bar", "false", "--dashboard.max_new_tokens", "0", "--trainer.logger", "false",
    "--trainer.limit_val_batches", "20",
]  # fmt: skip
SHIPPED = ("configs/dante_cpu.yaml", "configs/shakespeare_gpt2.yaml", "configs/dante.yaml")
SHIPPED_REDUCED = SHIPPED[
    :2
]  # the design note's model takes 3.5 s a step here: no step fits a reduced budget


def fit(src: Path, work: Path, name: str, text: Path, tokenizer: str, budget: int, extra: list[str]) -> dict:
    """One `mypt fit` for `budget` seconds; its wall time, the bundle's records and the best val bpb."""
    args = [
        sys.executable,
        "-m",
        "mypt",
        "fit",
        *extra,
        "--model_name",
        name,
        "--data.input_file",
        str(text),
        "--data.tokenizer",
        tokenizer,
        "--trainer.max_time",
        max_time_text(budget),
        *COMMON,
    ]  # fmt: skip  (a --config first: later flags override it)
    # one thread: on the shared 2-core machine two threads oversubscribe the cores (a 4 x 128 step
    # measured 0.65 s on one thread, 4.5-13 s on two)
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.monotonic()
    proc = subprocess.run(args, cwd=work, capture_output=True, text=True, env=env)
    wall = time.monotonic() - start
    result: dict = {"name": name, "budget": budget, "wall": round(wall, 2), "rc": proc.returncode}
    if proc.returncode != 0:
        result["error"] = proc.stderr.strip().splitlines()[-1:] or proc.stdout[-300:]
        print(f"  {name}: failed: {result['error']}", flush=True)
        return result
    bundle = work / "checkpoints" / name
    state = json.loads((bundle / "training_state.json").read_text())
    config = json.loads((bundle / "config.json").read_text())
    best = json.loads((bundle / "best" / "best.json").read_text()) if (bundle / "best").is_dir() else {}
    tokens_per_step = config["batch_size"] * config["block_size"]
    spent = state["budget"]["spent_this_run"]
    result.update(
        shape=f"{config['n_layer']} x {config['n_embd']}, context {config['block_size']}, batch {config['batch_size']}",
        params=12 * config["n_layer"] * config["n_embd"] ** 2,
        steps=state["step"],
        tokens=state["step"] * tokens_per_step,
        tokens_per_second=state["step"] * tokens_per_step / max(spent["training"], 1e-9),
        unique_tokens=state["data"]["n_train_tokens"],
        val_bpb=state.get("val_bpb"),
        best_val_bpb=best.get("val_bpb", state.get("val_bpb")),
        spent=spent,
        stopped=state["history"][-1].get("stopped"),
        size_choice=state.get("size_choice"),
        lines=[line for line in proc.stdout.splitlines() if "time budget" in line or "size auto" in line],
    )
    print(
        f"  {name}: {result['shape']}: {result['steps']} steps, best val bpb {result['best_val_bpb']:.4f}, "
        f"wall {wall:.1f} s of {budget} s",
        flush=True,
    )
    return result


def fitted_rule(runs: list[dict]) -> dict:
    """Per (text, budget): the best shape and its effective tokens per parameter; their geometric mean."""
    best: dict[tuple, dict] = {}
    for run in runs:
        if run.get("rc") == 0 and run.get("best_val_bpb") is not None:
            key = (run["text"], run["tokenizer"], run["budget"])
            if key not in best or run["best_val_bpb"] < best[key]["best_val_bpb"]:
                best[key] = run
    ratios = []
    rows = []
    for key, run in sorted(best.items()):
        effective = effective_tokens(run["tokens"], run["unique_tokens"])
        ratio = effective / run["params"]
        ratios.append(ratio)
        rows.append({"text": key[0], "tokenizer": key[1], "budget": key[2], "shape": run["shape"],
                     "best_val_bpb": run["best_val_bpb"], "tokens": run["tokens"], "effective": effective,
                     "epochs": run["tokens"] / run["unique_tokens"], "params": run["params"], "ratio": ratio})  # fmt: skip
    geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios)) if ratios else None
    return {"best": rows, "tokens_per_param": geo}


def table(runs: list[dict]) -> str:
    lines = ["| text | budget | shape | params | steps | tokens/s | epochs | best val bpb | wall / budget |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in runs:
        if r.get("rc") != 0:
            lines.append(
                f"| {r['text']} {r['tokenizer']} | {r['budget']} s | {r['name']} | failed | | | | | |"
            )
            continue
        lines.append(
            f"| {r['text']} {r['tokenizer']} | {r['budget']} s | {r['shape']} | {r['params'] / 1e6:.2f} M | "
            f"{r['steps']:,} | {r['tokens_per_second'] / 1e3:.1f} k | {r['tokens'] / r['unique_tokens']:.1f} | "
            f"{r['best_val_bpb']:.4f} | {r['wall']:.1f} / {r['budget']} ({r['wall'] / r['budget'] - 1:+.1%}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--grid", choices=sorted(GRIDS), default="quick")
    parser.add_argument("--out", default="sizing_results.json")
    parser.add_argument("--skip_grid", action="store_true", help="the held-out check alone")
    parser.add_argument("--depths", type=int, nargs="+", help="the grid's depths instead of the preset's")
    parser.add_argument("--budgets", type=int, nargs="+", help="the grid's budgets (seconds) instead")
    parser.add_argument("--held_out", choices=["all", "auto", "none"], default="all")
    args = parser.parse_args()
    grid = dict(GRIDS[args.grid])
    grid["depths"] = args.depths or grid["depths"]
    grid["budgets"] = args.budgets or grid["budgets"]
    work = Path(tempfile.mkdtemp(prefix="mypt-sizing-"))
    src = work / "src"
    shutil.copytree(REPO / "src", src)  # the tree as it is now, whatever is edited meanwhile
    runs: list[dict] = []
    out = Path(args.out).resolve()

    def save(extra: dict | None = None) -> None:
        out.write_text(json.dumps({"grid": args.grid, "runs": runs, **(extra or {})}, indent=1))

    if not args.skip_grid:
        for text_name, tokenizer in grid["texts"]:
            text = find_text(text_name)
            for budget in grid["budgets"]:
                for depth in grid["depths"]:
                    shape = shape_for_depth(depth)
                    flags = [f"--{k}={v}" for k, v in shape.settings().items()]
                    name = f"grid-{text.stem}-{tokenizer}-{budget}-d{depth}"
                    run = fit(src, work, name, text, tokenizer, budget, [*flags, "--trainer.max_steps", "-1"])
                    runs.append({**run, "text": text.stem, "tokenizer": tokenizer, "depth": depth})
                    save()
    rule = fitted_rule(runs)
    held = {}
    if grid["held_out"] and args.held_out != "none":
        text_name, tokenizer, budget, depths = grid["held_out"]
        depths = depths if args.held_out == "all" else []
        text = find_text(text_name)
        held_runs = []
        for depth in depths:
            flags = [f"--{k}={v}" for k, v in shape_for_depth(depth).settings().items()]
            name = f"held-{text.stem}-{tokenizer}-{budget}-d{depth}"
            held_runs.append({**fit(src, work, name, text, tokenizer, budget, [*flags, "--trainer.max_steps", "-1"]),
                              "text": text.stem, "tokenizer": tokenizer, "depth": depth})  # fmt: skip
        auto = fit(src, work, f"held-{text.stem}-auto", text, tokenizer, budget, ["--model.size", "auto"])
        held_runs.append({**auto, "text": text.stem, "tokenizer": tokenizer, "depth": "auto"})
        for config in (SHIPPED if args.grid == "full" else SHIPPED_REDUCED) if args.held_out == "all" else ():
            name = f"held-{Path(config).stem}"
            # their intervals (200-250 steps) do not fit such a budget: one every 10 steps instead
            extra = ["--config", str(REPO / config), "--trainer.max_steps", "-1", "--data.url", "null",
                     "--trainer.val_check_interval", "10"]  # fmt: skip
            held_runs.append({**fit(src, work, name, text, tokenizer, budget, extra), "text": text.stem,
                              "tokenizer": tokenizer, "depth": config})  # fmt: skip
        grid_ok = [r for r in held_runs if isinstance(r["depth"], int) and r.get("rc") == 0]
        best_grid = min(grid_ok, key=lambda r: r["best_val_bpb"]) if grid_ok else None
        held = {"runs": held_runs, "best_grid": best_grid and best_grid["name"]}
        if best_grid and auto.get("rc") == 0:
            held["auto_over_best"] = auto["best_val_bpb"] / best_grid["best_val_bpb"] - 1
    walls = [r["wall"] / r["budget"] - 1 for r in runs + held.get("runs", []) if r.get("rc") == 0]
    summary = {
        "rule": rule,
        "held_out": held,
        "wall_over_budget": [min(walls), max(walls)] if walls else None,
    }
    save(summary)
    print("\n## grid\n" + table(runs))
    print("\nbest per budget: " + json.dumps(rule["best"], indent=1))
    print(f"fitted TOKENS_PER_PARAM (geometric mean): {rule['tokens_per_param']}")
    if held:
        print("\n## held out\n" + table(held["runs"]))
        print(f"auto vs best grid shape: {held.get('auto_over_best')}")
    print(f"wall time over budget: {summary['wall_over_budget']}")
    print(f"results: {out}; runs under {work}")


if __name__ == "__main__":
    main()
