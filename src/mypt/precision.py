"""Precision and compilation chosen for the hardware at hand, and the peak FLOP/s that MFU divides by.

`--trainer.precision` and `--model.compile` left unset are chosen here, once, before the Trainer is
built: on a CUDA GPU bf16-mixed (16-mixed with the loss scaler where the GPU has no bf16) and
torch.compile; on a CPU bf16-mixed only where its matmuls are native and large enough, at the
run's thread count, to pay for autocast's casts, float32 elsewhere, and no compile. Explicit values
always win. The choice is stated in one line at the start of a run and recorded in
training_state.json (`precision_choice`).
On CUDA, float32 matrix products left outside autocast use TF32 (`use_tensor_cores`); on a CPU,
glibc's malloc keeps freed memory for the next step instead of returning it (`keep_freed_memory`).

Peak FLOP/s come from Lightning's `get_available_flops` on GPUs and, on a CPU, from a short
measurement of matmuls in the run's compute dtype (Lightning has no CPU figures).
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.fabric.utilities.throughput import _CUDA_FLOPS, get_available_flops
from lightning.pytorch.accelerators import Accelerator, CPUAccelerator, CUDAAccelerator

# On a CPU, bf16-mixed pays when one n_embd x n_embd matmul of a step (batch x block_size x n_embd^2
# multiply-adds) is large enough for the bf16 kernels to win back autocast's casts (on configs/dante_cpu.yaml
# 118 casts and 536 ops more a step, 5,801 against 5,265, counted by torch.profiler) and the optimizer's
# share: Muon's Newton-Schulz runs in bf16 in both precisions, so it does not speed up. The crossover
# depends on the bf16 instructions (first flag present wins) and on the torch threads the run computes
# with: `mypt fit` sets none and trains on torch's default, one thread per core. Measured with the
# default architecture and Muon (benchmarks/precision_rule.py; docs/benchmarks.md, "The automatic
# precision"), bf16/float32 step speed on a quiet machine (load average 1.4):
# - avx512_bf16 without AMX (this project's AMD EPYC):
#   1 thread: 256 tokens x 64^2 (1.0 M) 0.73x, 256 x 128^2 (4.2 M) 1.03x, configs/dante_cpu.yaml (12.6 M)
#   1.06x, 4 x 192 (28 M) 1.21x, 4 x 256 (50 M) 1.29x, 4 x 384 (113 M) 1.31x: from 8.4 M on.
#   2 threads: 1.0 M 0.82x, 4.2 M 1.04x, configs/dante_cpu.yaml 1.09x (`mypt fit` itself: 1.03x, and
#   0.81x and 0.91x in 400-step runs under a load average of 8, where every op of a 2-thread step waits
#   for both threads and bf16 has more ops), 4 x 192 1.14x, 4 x 256 1.26x, 4 x 384 1.39x: from 16.8 M on,
#   so that the CPU config, within a few percent either way, stays in float32.
# - amx_bf16 (a Xeon, 2 threads, figures from the issue that asked for this choice): configs/dante_cpu.yaml
#   (12.6 M) 0.76x, the design note's model (1.2 G) 2.7x; AMX tiles cost more to set up: from 33.5 M on.
# A thread count between two measured ones takes the lower one's crossover; above the most measured, its.
CPU_BF16_MIN_MATMUL: dict[str, dict[int, int]] = {
    "amx_bf16": {2: 2**25},
    "avx512_bf16": {1: 2**23, 2: 2**24},
}
# The dtype of the matmuls each precision runs, for peak FLOP/s
COMPUTE_DTYPES = {
    "bf16-mixed": torch.bfloat16, "bf16-true": torch.bfloat16, "bf16": torch.bfloat16,
    "16-mixed": torch.float16, "16-true": torch.float16, "16": torch.float16,
    "64-true": torch.float64, "64": torch.float64,
}  # fmt: skip


@dataclass(frozen=True)
class SpeedChoice:
    """What a run uses, and which of it was chosen here rather than given."""

    precision: str
    compile: bool
    device: str  # "cuda", "cpu", or another accelerator's name
    automatic: tuple[str, ...]  # "precision" and/or "compile": the settings chosen here
    reason: str  # why, for the automatic settings only
    given: str | None = None  # a given precision this device runs as another (16-mixed on a CPU)

    def line(self) -> str:
        """The one line a run states at its start."""
        given = {"precision": "automatic", "compile": "automatic"}
        for name in given:
            if name not in self.automatic:
                given[name] = "as given"
        if self.given is not None:
            given["precision"] = f"{self.given} given: a CPU has no float16 autocast"
        precision = f"precision {self.precision} ({given['precision']})"
        compiled = f"compile {'on' if self.compile else 'off'} ({given['compile']})"
        why = f": {self.reason}" if self.reason else ""
        return f"mypt: {precision}, {compiled} on {self.device}{why}"

    def record(self) -> dict:
        """The `precision_choice` entry of training_state.json."""
        return {
            "precision": self.precision,
            "compile": self.compile,
            "device": self.device,
            "automatic": list(self.automatic),
            "reason": self.reason,
            **({"precision_given": self.given} if self.given is not None else {}),
        }


def device_type(accelerator: object) -> str:
    """The device a Trainer with this `accelerator` setting trains on: "cuda", "cpu" or the name asked for."""
    name = accelerator if isinstance(accelerator, str) else type(accelerator).__name__.lower()
    name = (name or "auto").lower()
    if name in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "cuda"
    if name in ("auto", "cpu") or "cpu" in name:
        return "cpu"
    return "cuda" if "cuda" in name else name


def choose(
    device: str,
    precision: str | None,
    compile: bool | None,
    *,
    n_embd: int,
    tokens_per_step: int,
    threads: int | None = None,
) -> SpeedChoice:
    """Precision and compile for a run on `device`; None means "choose for the hardware". `threads`:
    the torch threads the run computes with on a CPU (default: this process's, as `mypt fit` trains)."""
    automatic = tuple(
        name for name, value in (("precision", precision), ("compile", compile)) if value is None
    )
    # asked only when left to choose: it starts CUDA in this process, before Lightning launches ranks
    compiled = auto_compile(device) if compile is None else bool(compile)
    given = None
    if device == "cpu" and str(precision) in ("16-mixed", "16"):
        # Lightning runs 16-mixed on a CPU as bf16-mixed (with a warning): chosen here instead, so the
        # start lines and the bundle say what runs
        given, precision = str(precision), "bf16-mixed"
    if device == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            auto_precision, reason = "bf16-mixed", "this GPU computes in bf16"
        else:
            auto_precision, reason = "16-mixed", "this GPU has no bf16: float16 with a loss scaler"
        compile_reason = "compiled" if compiled else "eager (Triton needs compute capability 7.0)"
    elif device == "cpu":
        matmul = tokens_per_step * n_embd * n_embd
        flag = cpu_bf16_flag()
        if flag is None:
            auto_precision = "32-true"
            reason = f"this CPU has no native bf16 matmul ({' or '.join(CPU_BF16_MIN_MATMUL)}); bf16 would be emulated"
        else:
            threads = torch.get_num_threads() if threads is None else threads
            least = cpu_bf16_min_matmul(flag, threads)
            size = f"batch x block_size x n_embd^2 = {matmul / 1e6:.1f} M"
            on = f"a CPU with {flag} on {threads} thread{'s' if threads != 1 else ''}"
            if matmul < least:
                auto_precision = "32-true"
                reason = f"bf16 does not pay for matmuls this small on {on} ({size} < {least / 1e6:.1f} M)"
            else:
                auto_precision = "bf16-mixed"
                reason = f"bf16 pays on {on}: the matmuls are large enough ({size} >= {least / 1e6:.1f} M)"
        compile_reason = "eager (on a CPU compiling takes 20-40 s for a few percent a step)"
    else:
        auto_precision, reason = "32-true", f"no automatic choice on {device}: float32"
        compile_reason = "eager"
    # the reasons of the settings chosen here only: a given precision needs none
    reasons = ([reason] if precision is None else []) + ([compile_reason] if compile is None else [])
    return SpeedChoice(
        precision=auto_precision if precision is None else str(precision),
        compile=compiled,
        device=device,
        automatic=automatic,
        reason="; ".join(reasons),
        given=given,
    )


def cpu_threads(devices: object) -> int:
    """The torch threads each process of a CPU run computes with, for the rule above: `mypt fit` starts
    `--trainer.devices` processes on this machine for DDP, and Lightning gives each an equal share of
    the cores unless OMP_NUM_THREADS is set (lightning.fabric's _suggested_max_num_threads: cores //
    processes, at least 1); one process computes on torch's count, one thread a core."""
    try:
        processes = int(devices)  # type: ignore[call-overload]
    except (TypeError, ValueError):  # "auto" (one process on a CPU), or a value Lightning refuses itself
        processes = 1
    if processes > 1 and "OMP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, cores // processes)
    return torch.get_num_threads()


def cpu_bf16_min_matmul(flag: str, threads: int) -> int:
    """The batch x block_size x n_embd^2 from which bf16-mixed pays with these instructions and this
    many threads: the crossover of the most threads measured up to `threads` (below every measured
    count, that of the fewest)."""
    table = CPU_BF16_MIN_MATMUL[flag]
    measured = [n for n in table if n <= threads]
    return table[max(measured) if measured else min(table)]


def auto_compile(device: str) -> bool:
    """Compile where it pays: on CUDA GPUs that Triton (torch.compile's GPU code generator) supports,
    compute capability 7.0 and up. Not on a CPU: a few percent per step after 20-40 s of compiling
    (docs/benchmarks.md)."""
    return device == "cuda" and torch.cuda.get_device_capability() >= (7, 0)


def use_tensor_cores(accelerator: Accelerator) -> None:
    """On CUDA, float32 matrix products use TF32 tensor cores (as nanoGPT does): several times the
    float32 throughput on Ampere and later, at a 10-bit mantissa that training does not notice. Set
    before the trainer sets up its device (Lightning hints at it there). Under bf16/16-mixed it only
    touches the products left in float32."""
    if isinstance(accelerator, CUDAAccelerator):
        torch.set_float32_matmul_precision("high")


# glibc's malloc.h: the parameters of mallopt
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
# Blocks below this come from the heap and are reused: the largest value every glibc takes (64-bit)
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30  # free memory at the heap's top kept for the next step, up to this much


def keep_freed_memory(accelerator: Accelerator | None = None) -> bool:
    """On a CPU under glibc (Linux), keep freed memory for reuse. By default glibc maps each block over
    128 KiB (a threshold it raises as such blocks are freed) fresh from the kernel and unmaps it when
    freed, and it returns the heap's free top: a step's activations then arrive as new pages that the
    kernel zeroes at their first touch. On the design note's model (configs/dante.yaml: 6 x 384,
    context 256, batch 32, bf16-mixed, Muon, 2 threads) that was 107,000-112,000 page faults a step,
    4,000-6,400 with these limits, and 2.72 s a step against 2.55 s (two runs each); at 4 x 128, context
    64, few blocks pass 128 KiB and it changes nothing measurable. jemalloc and tcmalloc, which
    PyTorch's CPU tuning guide suggests preloading, keep memory so by design. What is kept stays at
    the run's high-water mark. True when set."""
    if accelerator is not None and not isinstance(accelerator, CPUAccelerator):
        return False  # a GPU's tensors are in its caching allocator already
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the running process's libc
    except (OSError, AttributeError):  # a libc without it
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def cpu_bf16_flag() -> str | None:
    """The CPU flag of this CPU's native bf16 matmul instructions (Linux's CPU flags; None where unknown)."""
    flags = set(_cpu_flags())
    return next((flag for flag in CPU_BF16_MIN_MATMUL if flag in flags), None)


@functools.cache
def _cpu_flags() -> tuple[str, ...]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    match = re.search(r"^flags\s*:(.*)$", text, re.M)
    return tuple(match.group(1).split()) if match else ()


# -- peak FLOP/s ---------------------------------------------------------------------------------


def compute_dtype(precision: str) -> torch.dtype:
    return COMPUTE_DTYPES.get(str(precision), torch.float32)


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The device's peak FLOP/s in the run's compute dtype, for MFU; None where unknown."""
    dtype = compute_dtype(precision)
    if device.type == "cpu":
        return measured_cpu_flops(dtype, torch.get_num_threads())
    if device.type != "cuda":
        return get_available_flops(device, dtype)
    return cuda_peak_flops(device, dtype)


def cuda_peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """Lightning's figure for this GPU, checked against the GPU's model number.

    Lightning 2.6 finds the chip by substring, so a model number that begins with a shorter one gets
    the shorter one's figure: "NVIDIA L40S" and "NVIDIA L40" get the L4's (121 TFLOP/s bf16, 3x too
    high an MFU for an L40S), "NVIDIA RTX A4000" the A40's. A figure is used only when it belongs to
    a table entry named by the GPU's own model number. torch names the H200 SXM "NVIDIA H200", which
    Lightning does not parse, and its h200 entries are the sparse figures (2,000 TFLOP/s bf16): the
    H200 is the H100 SXM's chip with more memory, so it takes the h100 sxm figures.
    """
    name = torch.cuda.get_device_name(device).lower()
    model = next((word for word in re.findall(r"[a-z0-9]+", name) if re.search(r"\d", word)), None)
    if model == "h200":
        figure = _CUDA_FLOPS["h100 sxm"].get(dtype)
        return None if figure is None else float(figure)
    figure = get_available_flops(device, dtype)
    if figure is None or model is None:
        return None if figure is None else float(figure)
    entries = [flops for chip, flops in _CUDA_FLOPS.items() if model in chip.split()]
    if not any(figure in flops.values() for flops in entries):
        return None  # Lightning took a shorter model number inside this one
    return float(figure)


@functools.cache
def measured_cpu_flops(dtype: torch.dtype, threads: int) -> float:
    """This CPU's matmul FLOP/s in `dtype` with `threads` threads: the best of ten 1024^3 products
    (0.1-0.4 s). Lightning keeps no CPU figures; measured once per process. Other processes on the
    cores lower it, so on a busy machine MFU reads high."""
    n = 1024
    generator = torch.Generator().manual_seed(0)  # not the global RNG: a resumed run's dropout must not move
    a = torch.randn(n, n, generator=generator).to(dtype)
    b = torch.randn(n, n, generator=generator).to(dtype)
    best = float("inf")
    for _ in range(10):  # the first warms oneDNN's kernel cache; the best of the rest is the peak
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best
