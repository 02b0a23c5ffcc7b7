"""Where bf16 autocast pays on this CPU: one training step in float32 and in bf16, side by side.

    python benchmarks/precision_rule.py --threads 1 2
    python benchmarks/precision_rule.py --threads 2 --shapes 4,128,64,12 6,384,256,32
    python benchmarks/precision_rule.py --gain --threads 2      # mypt fit's bf16 gain against the plain loop's
    python benchmarks/precision_rule.py --parts --threads 2     # forward+backward and optimizer steps apart

Each shape is n_layer,n_embd,block_size,batch. A step is what `mypt fit` does by default: the default
architecture (RoPE, RMSNorm, QK-norm, SwiGLU, untied head), forward and loss (under
`torch.autocast("cpu", torch.bfloat16)` for bf16), backward, gradient clipping, then Muon on the
blocks' matrices and fused AdamW on the rest (mypt.optim, as GPTModule builds it; `--optimizer adamw`
for nanoGPT's). The two precisions alternate step by step in one process, and so do the thread
counts, so machine noise hits all of them alike; figures are medians of wall time. mypt.precision's
CPU rule (CPU_BF16_MIN_MATMUL, in batch x block_size x n_embd^2, per thread count) comes from this
table, at the thread counts `mypt fit` trains on (torch's default: one per core).

`--gain` runs `mypt fit` on a config twice, in bf16-mixed and in 32-true, each interleaved with the
plain loop (benchmarks/plain_loop.py, the same optimizer) in bf16 and in float32, and prints each
one's bf16/float32 gain; the plain float32 loop, present in both runs, is the clock that carries the
mypt float32 figure over to the bf16 run.
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from mypt.model import GPT, GPTConfig
from mypt.module import GPTModule
from mypt.optim import adamw_kwargs, muon_parameter_names, setup_optimizer
from mypt.precision import cpu_bf16_flag

# tests' tiny model up to the design note's: (n_layer, n_embd, block_size, batch)
SHAPES = [
    (2, 32, 16, 4),
    (2, 64, 32, 8),
    (4, 128, 32, 8),
    (4, 128, 64, 12),
    (4, 192, 64, 12),
    (4, 256, 64, 12),
    (4, 384, 64, 12),
    (6, 384, 256, 32),  # the design note's model (configs/dante.yaml)
]
REPO = Path(__file__).resolve().parents[1]


def build(n_layer: int, n_embd: int, block_size: int, batch: int, optimizer: str):
    """The model and optimizer of `mypt fit` with GPTModule's defaults, and one batch."""
    torch.manual_seed(0)
    config = GPTConfig(block_size=block_size, vocab_size=80, n_layer=n_layer, n_head=4, n_embd=n_embd)
    model = GPT(config)
    decayed = {name for name, p in model.named_parameters() if p.dim() >= 2}
    d = {k: p.default for k, p in inspect.signature(GPTModule.__init__).parameters.items()}
    opt = setup_optimizer(
        model.named_parameters(), optimizer=optimizer, learning_rate=d["learning_rate"],
        muon_lr_ratio=d["muon_lr_ratio"], momentum=d["muon_momentum"], weight_decay=d["weight_decay"],
        betas=(d["beta1"], d["beta2"]), decayed=decayed, muon_names=muon_parameter_names(model),
        adamw=adamw_kwargs("auto", torch.device("cpu"), False),
    )  # fmt: skip
    x, y = torch.randint(0, 80, (batch, block_size)), torch.randint(0, 80, (batch, block_size))
    return model, opt, x, y


def step_times(shape: tuple[int, ...], threads: list[int], seconds: float, optimizer: str) -> dict:
    model, opt, x, y = build(*shape, optimizer=optimizer)

    def step(bf16: bool, n: int) -> float:
        torch.set_num_threads(n)
        wall = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - wall

    runs = [(bf16, n) for n in threads for bf16 in (False, True)]
    for run in runs:  # warm-up: oneDNN builds its kernels
        step(*run)
        step(*run)
    once = sum(step(*run) for run in runs)
    repeats = max(3, min(40, int(seconds * len(threads) / max(once, 1e-3))))
    times: dict[tuple[bool, int], list[float]] = {run: [] for run in runs}
    for i in range(repeats):
        for run in runs if i % 2 == 0 else runs[::-1]:  # neither always first
            times[run].append(step(*run))
    med = {run: statistics.median(v) for run, v in times.items()}
    best = {run: min(v) for run, v in times.items()}  # the least disturbed step: on a busy machine
    L, E, T, B = shape
    return {
        "matmul": B * T * E**2,
        "repeats": repeats,
        **{f"{n}": {"float32_ms": 1000 * med[(False, n)], "bf16_ms": 1000 * med[(True, n)],
                    "speedup": med[(False, n)] / med[(True, n)],
                    "best_speedup": best[(False, n)] / best[(True, n)]} for n in threads},
    }  # fmt: skip


def rule_table(args) -> None:
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else SHAPES
    print(f"bf16 flag: {cpu_bf16_flag()}, threads {args.threads}, optimizer {args.optimizer}, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    head = "".join(f"   {n} thr: fp32 ms  bf16 ms  speedup (median / best)" for n in args.threads)
    print("shape (L x E, block x batch)   batch*block*E^2" + head)
    for shape in shapes:
        r = step_times(shape, args.threads, args.seconds, args.optimizer)
        L, E, T, B = shape
        cells = "".join(
            f"  {r[str(n)]['float32_ms']:14.1f} {r[str(n)]['bf16_ms']:8.1f} {r[str(n)]['speedup']:8.2f}"
            f" / {r[str(n)]['best_speedup']:.2f}          "
            for n in args.threads
        )
        print(f"{L} x {E}, {T} x {B}".ljust(30) + f"{r['matmul'] / 1e6:14.1f} M" + cells
              + f"   ({r['repeats']} repeats)", flush=True)  # fmt: skip
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


def parts(args) -> None:
    """Where a step's time goes, in each precision: forward and backward, and the optimizer step of
    Muon + AdamW (mypt's default) and of AdamW alone (nanoGPT's); median wall and CPU seconds,
    alternating. Muon's Newton-Schulz runs in bf16 in both precisions, so its share does not shrink."""
    torch.set_num_threads(args.threads[0])
    for shape in [tuple(int(v) for v in s.split(",")) for s in args.shapes or ["6,384,256,32"]]:
        times: dict[tuple[str, bool], list[tuple[float, float]]] = {}
        for optimizer in ("muon", "adamw"):
            model, opt, x, y = build(*shape, optimizer=optimizer)
            for i in range(args.repeat + 1):
                for bf16 in (False, True) if i % 2 == 0 else (True, False):
                    clock = (time.perf_counter(), time.process_time())
                    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                        _, loss = model(x, y)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    middle = (time.perf_counter(), time.process_time())
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    end = (time.perf_counter(), time.process_time())
                    if i:  # the first builds oneDNN's kernels
                        times.setdefault(("forward+backward", bf16), []).append(
                            (middle[0] - clock[0], middle[1] - clock[1])
                        )
                        times.setdefault((optimizer, bf16), []).append(
                            (end[0] - middle[0], end[1] - middle[1])
                        )
        med = {k: tuple(1000 * statistics.median(t[j] for t in v) for j in (0, 1)) for k, v in times.items()}
        print(f"{shape}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}: "
              "ms wall / CPU, float32 | bf16")  # fmt: skip
        for part in ("forward+backward", "muon", "adamw"):
            f, b = med[(part, False)], med[(part, True)]
            print(f"  {part:18s} {f[0]:8.0f} / {f[1]:8.0f} | {b[0]:8.0f} / {b[1]:8.0f}")
        for optimizer in ("muon", "adamw"):
            gains = [
                (med[("forward+backward", False)][j] + med[(optimizer, False)][j])
                / (med[("forward+backward", True)][j] + med[(optimizer, True)][j])
                for j in (0, 1)
            ]
            print(f"  step with {optimizer}: bf16 gain {gains[0]:.2f} wall, {gains[1]:.2f} CPU")


def interleaved(
    config: Path, steps: int, block: int, mypt_args: list[str], optimizer: str | None = None
) -> dict[str, list[float]]:
    """Wall seconds of each step of `mypt fit --config CONFIG MYPT_ARGS` and of the plain loop in bf16
    and in float32 (training.compare's interleaving: the first step after each switch is dropped)."""
    import tempfile

    from common import find_text
    from training import Interleave, _cwd, _env, _quiet, load_config, plain_trainers, run_mypt

    cfg = load_config(config)
    if optimizer:  # the plain loops step the same optimizer as mypt
        cfg["model"]["optimizer"] = optimizer
    text = find_text(Path(cfg["data"]["input_file"]).name)
    guests = {"plain": {"amp": "bf16"}, "plain_float32": {"amp": None}}
    with tempfile.TemporaryDirectory() as tmp, _quiet(), _env(MYPT_CACHE_DIR=f"{tmp}/cache"), _cwd(tmp):
        timer = Interleave(plain_trainers(cfg, steps, Path(tmp), guests, text=text), block)
        args = ["--config", str(config), "--data.input_file", str(text), "--model_name", "bench"]
        run_mypt([*args, "--trainer.max_steps", str(steps), *mypt_args], timer)
    return {name: [wall for wall, _ in times[2:]] for name, times in timer.times.items()}


def gain(args) -> None:
    """mypt fit's bf16/float32 gain against the plain loop's, with the same optimizer. Each run's
    median and best (least disturbed) step; the plain float32 loop is the clock between the runs."""
    sys.path.insert(0, str(Path(__file__).parent))
    torch.set_num_threads(args.threads[0])
    config = Path(args.config).resolve()
    extra = ["--trainer.limit_val_batches", "0", "--dashboard.max_new_tokens", "0"]
    if args.optimizer:
        extra += ["--model.optimizer", args.optimizer]
    print(f"{config.name}, {torch.get_num_threads()} threads, optimizer {args.optimizer or 'as configured'}, "
          f"{args.steps} steps a run, load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    rows: dict[str, list[tuple[float, float]]] = {"median": [], "best": []}
    for run in range(args.repeat):
        times = {}
        for precision in ("bf16-mixed", "32-true") if run % 2 == 0 else ("32-true", "bf16-mixed"):
            times[precision] = interleaved(
                config, args.steps, args.block, ["--trainer.precision", precision, *extra], args.optimizer
            )
        for kind, pick in (("median", statistics.median), ("best", min)):
            ms = {p: {name: 1000 * pick(v) for name, v in t.items()} for p, t in times.items()}
            bf16, fp32 = ms["bf16-mixed"], ms["32-true"]
            clock = bf16["plain_float32"] / fp32["plain_float32"]
            mypt_gain = fp32["mypt"] * clock / bf16["mypt"]
            plain_gain = bf16["plain_float32"] / bf16["plain"]
            rows[kind].append((mypt_gain, plain_gain))
            print(f"run {run + 1} {kind:6s}: mypt bf16 {bf16['mypt']:.0f} ms, float32 {fp32['mypt']:.0f} ms "
                  f"(clock {clock:.2f}); plain bf16 {bf16['plain']:.0f} ms, float32 {bf16['plain_float32']:.0f} ms"
                  f": gain mypt {mypt_gain:.2f}, plain {plain_gain:.2f}, ratio {mypt_gain / plain_gain:.3f}; "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    for kind, r in rows.items():
        m, p = statistics.median(g for g, _ in r), statistics.median(g for _, g in r)
        print(f"{kind} over runs: gain mypt {m:.2f}, plain {p:.2f}, mypt/plain {m / p:.3f} (target >= 0.9)")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--seconds", type=float, default=6.0, help="about how long to time each precision")
    parser.add_argument("--shapes", nargs="*", help="n_layer,n_embd,block_size,batch ...")
    parser.add_argument("--optimizer", choices=("muon", "adamw"), default=None, help="default: mypt's (muon)")
    parser.add_argument("--gain", action="store_true", help="mypt fit's bf16 gain against the plain loop's")
    parser.add_argument("--parts", action="store_true", help="forward+backward and optimizer steps apart")
    parser.add_argument("--config", default=str(REPO / "configs" / "dante.yaml"), help="for --gain")
    parser.add_argument("--steps", type=int, default=16, help="for --gain: steps of each run")
    parser.add_argument("--block", type=int, default=4, help="for --gain: steps between switches")
    parser.add_argument("--repeat", type=int, default=2, help="for --gain: pairs of runs; --parts: steps")
    args = parser.parse_args()
    if args.gain or args.parts:
        (gain if args.gain else parts)(args)
        return 0
    args.optimizer = args.optimizer or "muon"
    rule_table(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
