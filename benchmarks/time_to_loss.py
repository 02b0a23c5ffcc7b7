"""Time to loss: nanoGPT's recipe against mypt's default on the same text and shape, and an ablation.

    python benchmarks/time_to_loss.py              # every run (about 10 CPU minutes on one thread)
    python benchmarks/time_to_loss.py --part PART  # one share: target, ablation1, ablation2 or sweep
    python benchmarks/time_to_loss.py --quick      # nanoGPT for 1,000 steps, no ablation (about 2.5 minutes)
    python benchmarks/time_to_loss.py --part cost  # step costs alone, each architecture option off in turn

Tiny Shakespeare, characters (data/ or ../shared/data; tests/data's excerpt when neither has it), the
shape of nanoGPT's CPU recipe: 4 layers x 4 heads x 128 wide, context 64, batch 12. Every run is the
same loop around mypt's own parts (mypt.model, mypt.optim's optimizers, mypt.schedule's schedules,
gradient clipping at 1.0 as `mypt fit`; benchmarks/training.py measures `mypt fit` itself against
such a loop), on the same batches from the same seed, and ends with the loss on every window of the
10% validation split (float32, so that precision changes the training, not the measurement).

- nanoGPT: its architecture (config.NANOGPT), AdamW 1e-3 with cosine decay over 2,000 steps,
  float32: configs/nanogpt_cpu.yaml. Its final val loss is the target.
- mypt: the defaults (GPTConfig's architecture, GPTModule's optimizer, schedule and LRs, the
  precision mypt.precision picks for this shape on this machine).
- time to target: mypt's default trained for several budgets; the first budget whose final val loss
  reaches nanoGPT's (interpolated between the two budgets around it), start-up included (building
  the model and the optimizer), as a fraction of nanoGPT's time.
- equal time: nanoGPT's recipe and mypt's default given the same budget (EQUAL_TIME x nanoGPT's
  time); the ablation turns each default off in turn at that budget, and the sweep moves the LRs and
  the schedule's settings.

Time is this thread's CPU time on one thread (torch.set_num_threads(1)), not the wall clock: on a
machine shared with other jobs the wall clock counts their work too, while the CPU time of the
thread counts this one's (on an idle machine the two agree). Each run's steps are set from its step
cost measured before (so its schedule ends where its budget does), and the runs advance in turns of
`TURN` steps, so a slower spell of the machine falls on all of them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from common import REPO
from plain_loop import split_tokens, windows

from mypt import precision
from mypt.config import NANOGPT
from mypt.model import GPTConfig
from mypt.module import GPTModule
from mypt.optim import set_lr
from mypt.schedule import lr_at, new_schedule

SHAPE = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64}
BATCH = 12
# the design note's model (configs/dante.yaml's shape), for `--part cost --shape design_note`; batch 12
DESIGN_NOTE = {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256}
SEED = 1337
TURN = 10  # steps a run takes before the next one's turn
KEPT = False  # whether freed memory is kept for the next step (main sets it as `mypt fit` does)
# the equal-time budget, as a fraction of nanoGPT's time; and the budgets of mypt's default around it
# from which the time to nanoGPT's loss is interpolated
EQUAL_TIME = 0.2
CURVE = (0.12, 0.16, 0.25)
NANOGPT_RECIPE = {
    "optimizer": "adamw", "learning_rate": 1e-3, "lr_schedule": "cosine", "warmup_steps": 100, "min_lr_ratio": 0.1,
}  # fmt: skip


def defaults() -> dict:
    """GPTModule's defaults: the recipe (and architecture) a new model gets."""
    import inspect

    return {
        k: p.default
        for k, p in inspect.signature(GPTModule.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


@dataclass
class Arm:
    """One training run: architecture and recipe changes against mypt's default."""

    name: str
    arch: dict = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)
    amp: str | None = "auto"  # "auto": mypt's automatic choice; None: float32; "bf16"
    budget: float = 1.0  # x the equal-time budget (ignored when steps is given)
    steps: int | None = None

    def settings(self) -> tuple[GPTConfig, dict]:
        d = defaults()
        config = GPTConfig(
            **{**{k: d[k] for k in d if k in GPTConfig.__dataclass_fields__}, **SHAPE, **self.arch}
        )
        recipe = {k: d[k] for k in ("optimizer", "learning_rate", "muon_lr_ratio", "muon_momentum", "lr_schedule",
                                    "decay_ratio", "warmup_steps", "min_lr_ratio", "weight_decay", "beta1", "beta2")}  # fmt: skip
        return config, {**recipe, **self.recipe}

    def cost_key(self) -> str:
        config, recipe = self.settings()
        return json.dumps([config.to_dict(), recipe["optimizer"], self.amp], sort_keys=True)


def nanogpt(name: str, **kw) -> Arm:
    return Arm(name, arch=dict(NANOGPT), recipe=dict(NANOGPT_RECIPE), amp=None, **kw)


class Run:
    """An arm built and stepped; its CPU seconds counted from the start of building it."""

    def __init__(
        self,
        arm: Arm,
        data: tuple,
        vocab: int,
        max_steps: int,
        amp: str | None,
        val_windows: int | None = None,
    ) -> None:
        started = time.thread_time()
        self.arm, self.max_steps, self.step_count = arm, max_steps, 0
        self.train_tokens, self.val_tokens = data
        config, r = arm.settings()
        config.vocab_size = vocab
        torch.manual_seed(SEED)
        module = GPTModule(
            **{k: getattr(config, k) for k in config.to_dict()}, **{k: v for k, v in r.items()}, compile=False
        )
        self.model = module.model
        self.model.train()
        self.optimizer = module.configure_optimizers()
        self.schedule = new_schedule(
            max_steps,
            r["learning_rate"],
            r["min_lr_ratio"],
            r["warmup_steps"],
            r["lr_schedule"],
            r["decay_ratio"],
        )
        self.amp, self.val_windows = amp, val_windows
        self.cpu = time.thread_time() - started  # start-up: model and optimizer
        self.startup = self.cpu
        self.step_cpu: list[float] = []

    def step(self) -> None:
        started = time.thread_time()
        set_lr(self.optimizer, lr_at(self.step_count, self.schedule))
        x, y = windows(self.train_tokens, BATCH, SHAPE["block_size"], SEED, 0, self.step_count)
        with torch.autocast("cpu", torch.bfloat16, enabled=self.amp == "bf16"):
            _, loss = self.model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        spent = time.thread_time() - started
        self.cpu += spent
        self.step_cpu.append(spent)

    @property
    def done(self) -> bool:
        return self.step_count >= self.max_steps

    @torch.no_grad()
    def val_loss(self) -> float:
        """Mean loss over every non-overlapping window of the validation split (float32)."""
        self.model.eval()
        block, tokens = SHAPE["block_size"], torch.from_numpy(self.val_tokens.astype(np.int64))
        n = min((len(tokens) - 1) // block, self.val_windows or len(tokens))
        x, y = tokens[: n * block].view(n, block), tokens[1 : n * block + 1].view(n, block)
        total = 0.0
        for i in range(0, n, 256):
            total += float(self.model(x[i : i + 256], y[i : i + 256])[1]) * len(x[i : i + 256])
        self.model.train()
        return total / n


def round_robin(runs: list[Run]) -> None:
    turn = 0
    while not all(r.done for r in runs):
        turn += 1
        live = [r for r in runs if not r.done]
        for run in live[turn % len(live) :] + live[: turn % len(live)]:  # no run always follows the same one
            for _ in range(min(TURN, run.max_steps - run.step_count)):
                run.step()


def arms(part: str) -> list[Arm]:
    """The runs at the equal-time budget. part: "smoke" (benchmarks/run.py --quick: the harness runs),
    "quick" (make bench), "target" (nanoGPT's recipe and the default), "ablation1" and "ablation2" (an
    option off each), "sweep" (the LRs and the schedule's settings), "all"."""
    d = defaults()
    ablation = [
        Arm("optimizer adamw, learning_rate 4e-3", recipe={"optimizer": "adamw", "learning_rate": 4e-3}),
        Arm("lr_schedule cosine", recipe={"lr_schedule": "cosine"}),
        Arm("pos_emb learned", arch={"pos_emb": "learned"}),
        Arm("norm layernorm", arch={"norm": "layernorm"}),
        Arm("qk_norm false", arch={"qk_norm": False}),
        Arm("mlp relu2", arch={"mlp": "relu2"}),
        Arm("mlp gelu", arch={"mlp": "gelu"}),
        Arm("tie_embeddings true", arch={"tie_embeddings": True}),
        Arm("zero_init_proj false", arch={"zero_init_proj": False}),
        Arm("precision 32-true", amp=None),
    ]
    lr, ratio, decay = d["learning_rate"], d["muon_lr_ratio"], d["decay_ratio"]
    sweep = [
        # AdamW's LR (embeddings, head, norms) halved and doubled, Muon's kept
        Arm(f"learning_rate {lr / 2:g} (Muon's kept)", recipe={"learning_rate": lr / 2, "muon_lr_ratio": ratio * 2}),
        Arm(f"learning_rate {lr * 2:g} (Muon's kept)", recipe={"learning_rate": lr * 2, "muon_lr_ratio": ratio / 2}),
        Arm(f"Muon lr {lr * ratio / 2:g}", recipe={"muon_lr_ratio": ratio / 2}),
        Arm(f"Muon lr {lr * ratio * 2:g}", recipe={"muon_lr_ratio": ratio * 2}),
        Arm(f"decay_ratio {decay / 2:g}", recipe={"decay_ratio": decay / 2}),
        Arm(f"decay_ratio {min(1.0, decay * 1.5):g}", recipe={"decay_ratio": min(1.0, decay * 1.5)}),
        Arm(f"warmup_steps {d['warmup_steps'] // 4}", recipe={"warmup_steps": d["warmup_steps"] // 4}),
    ]  # fmt: skip
    base = [Arm("mypt default"), nanogpt("nanoGPT recipe")]
    return {
        "smoke": base,
        "quick": base,
        "target": base,
        "ablation1": [base[0], *ablation[:5]],
        "ablation2": [base[0], *ablation[5:]],
        "sweep": [base[0], *sweep],
        "all": base + ablation + sweep,
    }[part]


def find_shakespeare() -> Path:
    for folder in (REPO / "data", REPO.parent / "shared" / "data"):
        if (folder / "tinyshakespeare.txt").is_file():
            return folder / "tinyshakespeare.txt"
    return REPO / "tests" / "data" / "inferno_excerpt.txt"  # a smaller stand-in: the harness still runs


def step_costs(
    arms_: list[Arm], data: tuple, vocab: int, turns: int, amp_of
) -> tuple[dict[str, float], dict[str, float]]:
    """Each arm's median step and its start-up (CPU seconds), by cost_key; the steps measured in turns
    of 4, the first turn a warm-up."""
    kinds = {a.cost_key(): a for a in arms_}
    probes = {k: Run(a, data, vocab, 10**6, amp_of(a)) for k, a in kinds.items()}
    for _ in range(turns):
        for probe in probes.values():
            for _ in range(4):
                probe.step()
    cost = {k: statistics.median(p.step_cpu[4:]) for k, p in probes.items()}
    return cost, {k: p.startup for k, p in probes.items()}


def paired_costs(arms_: list[Arm], data: tuple, vocab: int, rounds: int, amp_of) -> dict[str, dict]:
    """Each arm's median step (CPU seconds) and its cost against the first arm as the median of paired
    ratios: the arms take one step each in turn, the order rotating every round, and each round's
    steps are compared with one another, so a slower spell of a shared machine falls on both sides of
    every ratio (medians of whole runs taken apart moved the modern block's ratio by +-0.03 between
    runs). The first 4 rounds are a warm-up."""
    probes = [Run(a, data, vocab, 10**6, amp_of(a)) for a in arms_]
    for i in range(rounds + 4):
        order = probes[i % len(probes) :] + probes[: i % len(probes)]
        for probe in order:
            probe.step()
    out = {}
    for arm, probe in zip(arms_, probes, strict=True):
        pairs = [s / b for s, b in zip(probe.step_cpu[4:], probes[0].step_cpu[4:], strict=True)]
        out[arm.name] = {"step_s": statistics.median(probe.step_cpu[4:]), "ratio": statistics.median(pairs)}
    return out


def measure_costs(rounds: int = 150, options_too: bool = True) -> dict:
    """The architecture's share of a step: nanoGPT's block against mypt's default block, both with
    AdamW in float32, beside a second nanoGPT (the run's noise floor: 1.000 on a quiet machine); then
    (options_too) the default with each architecture option switched to nanoGPT's in turn."""
    train_tokens, val_tokens, vocab = split_tokens(str(find_shakespeare()), "char")
    data = (train_tokens, val_tokens)
    adamw = {"optimizer": "adamw"}
    options = {
        "positions learned": {"pos_emb": "learned"}, "LayerNorm": {"norm": "layernorm"},
        "no QK-norm": {"qk_norm": False}, "GELU MLP": {"mlp": "gelu"}, "tied head": {"tie_embeddings": True},
    }  # fmt: skip
    head = [
        nanogpt("nanoGPT"),
        Arm("modern block", recipe=adamw, amp=None),
        nanogpt("nanoGPT again (noise floor)"),
    ]
    costs = paired_costs(head, data, vocab, rounds, lambda arm: arm.amp)
    if options_too:  # one option each: a shorter pairing of its own, against nanoGPT's block again
        the_arms = [nanogpt("nanoGPT")] + [
            Arm(f"modern block, {name}", arch=arch, recipe=adamw, amp=None) for name, arch in options.items()
        ]
        costs |= {
            k: v
            for k, v in paired_costs(the_arms, data, vocab, rounds // 3, lambda a: a.amp).items()
            if k != "nanoGPT"
        }
    return {
        "part": "cost",
        "shape": dict(SHAPE),
        "threads": torch.get_num_threads(),
        "freed_memory_kept": KEPT,
        "rounds": rounds,
        "step_ms": {name: 1e3 * c["step_s"] for name, c in costs.items()},
        "ratio_vs_nanogpt": {name: c["ratio"] for name, c in costs.items()},
    }


def measure(part: str) -> dict:
    if part == "cost":  # the design note's shape: 4-5 s a step on one thread, so the two blocks alone
        return measure_costs() if SHAPE["n_embd"] == 128 else measure_costs(rounds=12, options_too=False)
    text = find_shakespeare()
    train_tokens, val_tokens, vocab = split_tokens(str(text), "char")
    data = (train_tokens, val_tokens)
    choice = precision.choose(
        "cpu", None, None, n_embd=SHAPE["n_embd"], tokens_per_step=BATCH * SHAPE["block_size"]
    )
    auto = "bf16" if choice.precision.startswith("bf16") else None
    amp_of = lambda arm: auto if arm.amp == "auto" else arm.amp  # noqa: E731
    # quick (make bench): nanoGPT for 1,000 steps, so that mypt's default gets past its warm-up in the
    # budgets measured (about 2.5 CPU minutes in all); smoke: the harness only
    nanogpt_steps = {"smoke": 20, "quick": 1000}.get(part, 2000)
    the_arms = arms(part)

    # step costs, measured in turns (a few throwaway steps of each distinct architecture x optimizer)
    modern_fp32 = Arm("modern block, AdamW, float32", recipe={"optimizer": "adamw"}, amp=None)
    adamw_default = Arm("AdamW, mypt default otherwise", recipe={"optimizer": "adamw"})
    kinds = {a.cost_key(): a for a in [*the_arms, nanogpt("nanoGPT"), modern_fp32, adamw_default]}
    cost, startup = step_costs(list(kinds.values()), data, vocab, 2 if part == "smoke" else 4, amp_of)
    nano_key = nanogpt("nanoGPT").cost_key()
    nanogpt_time = startup[nano_key] + nanogpt_steps * cost[nano_key]
    equal_time = {"quick": 0.25}.get(part, EQUAL_TIME) * nanogpt_time

    def steps_for(arm: Arm, budget: float) -> int:
        key = arm.cost_key()
        return max(1, int((budget - startup[key]) / cost[key]))

    val_windows = 64 if part == "smoke" else None  # smoke: the harness only, not a figure
    runs, curve = [], []
    if part in ("smoke", "quick", "target", "all"):
        runs.append(Run(nanogpt("nanoGPT, full run"), data, vocab, nanogpt_steps, None, val_windows))
        fractions = {"smoke": (0.5,), "quick": (0.18, 0.35)}.get(part, CURVE)
        curve = [
            Run(Arm(f"mypt default, {f:g} x nanoGPT's time"), data, vocab, steps_for(Arm("d"), f * nanogpt_time),
                auto, val_windows)
            for f in fractions
        ]  # fmt: skip
        runs += curve
    equal = [Run(a, data, vocab, steps_for(a, equal_time), amp_of(a), val_windows) for a in the_arms]
    runs += equal
    started = time.perf_counter()
    round_robin(runs)
    wall = time.perf_counter() - started
    results = {r.arm.name: {"steps": r.step_count, "cpu_s": r.cpu, "val_loss": r.val_loss()} for r in runs}
    tokens = BATCH * SHAPE["block_size"]
    out = {
        "part": part,
        "text": str(text.relative_to(REPO.parent) if text.is_relative_to(REPO.parent) else text),
        "threads": torch.get_num_threads(),
        "precision_auto": choice.precision,
        "defaults": {k: v for k, v in defaults().items() if k not in ("init_from", "compile")},
        "equal_time_cpu_s": equal_time,
        # the architecture alone: both with AdamW in float32, in paired steps
        "step_cost_ratio_modern_vs_nanogpt_fp32": paired_costs(
            [nanogpt("nanoGPT"), modern_fp32], data, vocab, 4 if part == "smoke" else 40, lambda arm: arm.amp
        )[modern_fp32.name]["ratio"],
        "step_cost_ratio_muon_vs_adamw": cost[Arm("d").cost_key()] / cost[adamw_default.cost_key()],
        "tokens_per_s": {a.name: tokens / cost[k] for k, a in kinds.items()},
        "runs": results,
        "wall_s": wall,
    }
    default = results["mypt default"]["val_loss"]
    out["ablation"] = {r.arm.name: results[r.arm.name]["val_loss"] - default for r in equal}
    if curve:
        nano = results["nanoGPT, full run"]
        target = nano["val_loss"]
        points = sorted(
            (r.cpu, results[r.arm.name]["val_loss"])
            for r in [*curve, *equal]
            if r.arm.name.startswith("mypt default")
        )
        reach = None
        for (t0, l0), (t1, l1) in itertools.pairwise(points):
            if l0 > target >= l1:
                reach = t0 + (t1 - t0) * (l0 - target) / (l0 - l1)
                break
        if reach is None and points and points[0][1] <= target:
            reach = points[0][0]  # reached at the shortest budget measured: an upper bound
        out |= {
            "nanogpt_steps": nanogpt_steps,
            "target_val_loss": target,
            "nanogpt_cpu_s": nano["cpu_s"],
            "time_to_target_cpu_s": reach,
            "time_to_target_ratio": None if reach is None else reach / nano["cpu_s"],
            "curve": points,
            "equal_time_gap": results["nanoGPT recipe"]["val_loss"] - default,
        }
    return out


def print_report(out: dict) -> None:
    if out["part"] == "cost":
        kept = "kept (as mypt fit does)" if out["freed_memory_kept"] else "glibc's default"
        print(
            f"step costs at {out['shape']['n_layer']} x {out['shape']['n_embd']}, context {out['shape']['block_size']}, "
            f"batch {BATCH}, AdamW, float32, {out['threads']} thread; freed memory {kept}"
        )
        print(f"  (the ratios: medians of {out['rounds']} paired steps; the options', of a third as many)")
        for name, ms in out["step_ms"].items():
            print(f"  {name:40s} {ms:7.2f} ms  {out['ratio_vs_nanogpt'][name]:5.3f} x nanoGPT's")
        print("  (target for the modern block: <= 1.15 x)")
        return
    print(
        f"time to loss ({out['part']}) on {out['text']}, {out['threads']} thread, CPU seconds of the thread"
    )
    if "target_val_loss" in out:
        print(
            f"  nanoGPT recipe, {out['nanogpt_steps']} steps: val loss {out['target_val_loss']:.4f} in {out['nanogpt_cpu_s']:.1f} s"
        )
        if out["time_to_target_cpu_s"] is not None:
            print(
                f"  mypt default reaches it in {out['time_to_target_cpu_s']:.1f} s: {out['time_to_target_ratio']:.2f} x (target <= 0.33)"
            )
        else:
            print("  mypt default did not reach it in the budgets measured")
        print(
            f"  equal time {out['equal_time_cpu_s']:.1f} s: nanoGPT recipe - mypt default = {out['equal_time_gap']:+.4f} (target >= 0.05)"
        )
    print(
        f"  step cost, modern block / nanoGPT's, both AdamW in float32: {out['step_cost_ratio_modern_vs_nanogpt_fp32']:.2f} (target <= 1.15)"
    )
    print(
        f"  step cost, Muon + AdamW / AdamW alone, mypt's default otherwise: {out['step_cost_ratio_muon_vs_adamw']:.2f}"
    )
    print(f"  {'run':44s} {'steps':>6s} {'CPU s':>7s} {'val loss':>9s} {'vs default':>10s}")
    for name, r in out["runs"].items():
        delta = out["ablation"].get(name)
        print(
            f"  {name:44s} {r['steps']:6d} {r['cpu_s']:7.1f} {r['val_loss']:9.4f} {'' if delta is None else f'{delta:+10.4f}'}"
        )
    print("  tokens/s: " + ", ".join(f"{name} {v:,.0f}" for name, v in out["tokens_per_s"].items()))
    print(f"  (wall clock {out['wall_s']:.0f} s for the runs)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="nanoGPT for 1,000 steps, no ablation (~2.5 min)"
    )
    parser.add_argument(
        "--part",
        choices=("all", "target", "ablation1", "ablation2", "sweep", "cost"),
        default="all",
        help="one share of the runs, for several processes: target (nanoGPT's loss and the time to it), "
        "ablation1, ablation2 (an option off each), sweep (LRs, schedule), cost (step costs alone)",
    )
    parser.add_argument(
        "--shape",
        choices=("cpu", "design_note"),
        default="cpu",
        help="with --part cost: nanoGPT's CPU shape (4 x 128, context 64) or the design note's (6 x 384, context 256)",
    )
    parser.add_argument(
        "--malloc_default",
        action="store_true",
        help="leave glibc's malloc as it is (mypt fit keeps freed memory for the next step on a CPU)",
    )
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.shape == "design_note":
        SHAPE.update(DESIGN_NOTE)
    global KEPT
    KEPT = False if args.malloc_default else precision.keep_freed_memory()  # as `mypt fit` on a CPU
    out = measure("quick" if args.quick else args.part)
    print_report(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
