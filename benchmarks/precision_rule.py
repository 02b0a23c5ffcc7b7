"""Where bf16 autocast pays on this CPU: one training step in float32 and in bf16, side by side.

    python benchmarks/precision_rule.py --threads 1
    python benchmarks/precision_rule.py --threads 2 --shapes 4,128,64,12 6,384,256,32

Each shape is n_layer,n_embd,block_size,batch. A step is what `mypt fit` and the plain loop do:
forward and loss (under `torch.autocast("cpu", torch.bfloat16)` for bf16), backward, gradient
clipping, fused AdamW. The two precisions alternate step by step in one process, so machine noise
hits both alike; figures are medians of wall and CPU time. mypt.precision's CPU rule
(CPU_BF16_MIN_MATMUL, in batch x block_size x n_embd^2) comes from this table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from mypt.model import GPT, GPTConfig
from mypt.precision import cpu_bf16_flag

# tests' tiny model up to the design note's: (n_layer, n_embd, block_size, batch)
SHAPES = [
    (2, 32, 16, 4),
    (2, 64, 32, 8),
    (4, 128, 32, 8),
    (4, 128, 64, 12),
    (4, 192, 64, 12),
    (4, 256, 64, 12),
]


def step_times(n_layer: int, n_embd: int, block_size: int, batch: int, seconds: float) -> dict:
    torch.manual_seed(0)
    config = GPTConfig(block_size=block_size, vocab_size=80, n_layer=n_layer, n_head=4, n_embd=n_embd)
    model = GPT(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    x, y = torch.randint(0, 80, (batch, block_size)), torch.randint(0, 80, (batch, block_size))

    def step(bf16: bool) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - wall, time.process_time() - cpu

    for bf16 in (False, True, False, True):  # warm-up: oneDNN builds its kernels
        step(bf16)
    repeats = max(3, min(40, int(seconds / max(step(False)[0], 1e-3))))
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for i in range(repeats):
        for bf16 in (False, True) if i % 2 == 0 else (True, False):
            times[bf16].append(step(bf16))
    med = {
        k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()
    }
    return {
        "matmul": batch * block_size * n_embd**2,
        "float32_ms": 1000 * med[False][0],
        "bf16_ms": 1000 * med[True][0],
        "speedup": med[False][0] / med[True][0],
        "cpu_speedup": med[False][1] / med[True][1],
        "repeats": repeats,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=6.0, help="about how long to time each precision")
    parser.add_argument("--shapes", nargs="*", help="n_layer,n_embd,block_size,batch ...")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else SHAPES
    print(f"bf16 flag: {cpu_bf16_flag()}, {args.threads} threads")
    print("shape (L x E, block x batch)   batch*block*E^2   float32 ms   bf16 ms   bf16 speedup (wall / CPU)")
    for shape in shapes:
        r = step_times(*shape, seconds=args.seconds)
        L, E, T, B = shape
        print(f"{L} x {E}, {T} x {B}".ljust(30) + f"{r['matmul'] / 1e6:14.1f} M  {r['float32_ms']:10.1f}  "
              f"{r['bf16_ms']:8.1f}   {r['speedup']:.2f} / {r['cpu_speedup']:.2f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
