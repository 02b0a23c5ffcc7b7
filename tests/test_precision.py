"""Precision and compile chosen for the hardware, explicit values winning, the choice recorded and
re-made on resume; peak FLOP/s from Lightning, checked against the GPU's model number."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY
from lightning.pytorch.accelerators import CUDAAccelerator

from mypt import precision

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# a small model the CPU rule trains in bf16 on 1 or 2 threads: 1 layer, 16 x 32 tokens x 256^2 = 33.5 M
# multiply-adds
BF16_SIZED = [
    *TINY, "--model.n_layer", "1", "--model.n_head", "4", "--model.n_embd", "256", "--model.block_size", "32",
    "--data.batch_size", "16",
]  # fmt: skip
needs_native_bf16 = pytest.mark.skipif(
    precision.cpu_bf16_flag() is None, reason="a CPU without native bf16 matmul trains in float32"
)


def _choice(name: str) -> dict:
    return json.loads(Path(f"checkpoints/{name}/training_state.json").read_text())["precision_choice"]


def _line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith("mypt: precision ")]
    assert len(lines) == 1, out
    return lines[0]


@needs_native_bf16
@pytest.mark.stress  # two real fits; the rule itself: test_cpu_rule, test_cpu_rule_follows_the_threads_a_run_uses
def test_both_configs_on_this_cpu(mypt, text_file):
    """The design note's model trains in bf16-mixed; configs/dante_cpu.yaml in float32 on every core
    of this 2-core machine (in bf16-mixed only on one thread with AVX512-BF16; never with AMX, whose tiles
    lose on its small matmuls); neither compiles on a CPU. Stated at the start, recorded in the bundle."""
    one_avx512_thread = precision.cpu_bf16_flag() == "avx512_bf16" and torch.get_num_threads() == 1
    small = "bf16-mixed" if one_avx512_thread else "32-true"
    for config, name, expected in (("dante_cpu.yaml", "small", small), ("dante.yaml", "big", "bf16-mixed")):
        r = mypt("fit", "--config", CONFIGS / config, "--data.input_file", text_file, "--model_name", name,
                 "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1", "--dashboard.max_new_tokens", "0",
                 "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")  # fmt: skip
        assert r.code == 0, r
        assert _line(r.out).startswith(
            f"mypt: precision {expected} (automatic), compile off (automatic) on cpu: "
        )
        choice = _choice(name)
        assert choice["precision"] == expected and choice["compile"] is False
        assert choice["automatic"] == ["precision", "compile"] and choice["device"] == "cpu"
        assert choice["reason"] in _line(r.out)
        state = json.loads(Path(f"checkpoints/{name}/training_state.json").read_text())
        assert state["settings"]["trainer"]["precision"] == expected
        weights = torch.load(f"checkpoints/{name}/model.pt", weights_only=True)
        assert {v.dtype for v in weights.values()} == {
            torch.float32
        }  # master weights: the bundle stays float32


@needs_native_bf16
def test_explicit_values_win_and_resume_switches_precision(mypt, text_file):
    """A bf16 bundle resumes in float32 and back; an explicit value is kept on resume, an automatic
    one is chosen again."""
    r = mypt(
        "fit", *BF16_SIZED, "--data.input_file", text_file, "--model_name", "m", "--trainer.max_steps", "2"
    )
    assert r.code == 0, r
    assert _choice("m")["precision"] == "bf16-mixed" and _choice("m")["automatic"] == ["precision", "compile"]

    r = mypt(
        "fit", "--ckpt_path", "checkpoints/m", "--trainer.max_steps", "4", "--trainer.precision", "32-true"
    )
    assert r.code == 0, r
    assert (
        _line(r.out)
        == "mypt: precision 32-true (as given), compile off (automatic) on cpu: " + (_choice("m")["reason"])
    )
    assert _choice("m")["precision"] == "32-true" and _choice("m")["automatic"] == ["compile"]

    r = mypt("fit", "--ckpt_path", "checkpoints/m", "--trainer.max_steps", "6")  # explicit: kept
    assert r.code == 0, r
    assert _choice("m")["precision"] == "32-true" and _choice("m")["automatic"] == ["compile"]

    r = mypt(
        "fit", "--ckpt_path", "checkpoints/m", "--trainer.max_steps", "8", "--trainer.precision", "bf16-mixed"
    )
    assert r.code == 0, r
    state = json.loads(Path("checkpoints/m/training_state.json").read_text())
    assert state["step"] == 8 and state["precision_choice"]["precision"] == "bf16-mixed"
    assert [run["settings"]["precision"] for run in state["history"]] == [
        "bf16-mixed",
        "32-true",
        "32-true",
        "bf16-mixed",
    ]


def test_an_automatic_choice_is_made_again_on_resume(mypt, text_file, monkeypatch):
    """A bundle trained where bf16 paid resumes in float32 where it does not (a CPU without bf16
    instructions), because its precision was automatic, not asked for."""
    monkeypatch.setattr(precision, "_cpu_flags", lambda: ("avx512_bf16",))
    r = mypt(
        "fit", *BF16_SIZED, "--data.input_file", text_file, "--model_name", "m", "--trainer.max_steps", "2"
    )
    assert r.code == 0, r
    assert _choice("m")["precision"] == "bf16-mixed"
    monkeypatch.setattr(precision, "_cpu_flags", lambda: ("avx2", "fma"))
    r = mypt("fit", "--ckpt_path", "checkpoints/m", "--trainer.max_steps", "3")
    assert r.code == 0, r
    assert "no native bf16 matmul" in _line(r.out)
    assert _choice("m")["precision"] == "32-true" and _choice("m")["automatic"] == ["precision", "compile"]


def test_cuda_branch_of_the_choice(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation
    )
    assert precision.device_type("auto") == precision.device_type("gpu") == "cuda"
    assert precision.device_type("cpu") == "cpu"
    choice = precision.choose("cuda", None, None, n_embd=32, tokens_per_step=64)
    assert (choice.precision, choice.compile, choice.automatic) == (
        "bf16-mixed",
        True,
        ("precision", "compile"),
    )
    # a GPU without bf16 (emulated bf16 does not count): float16 with the loss scaler
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert precision.choose("cuda", None, None, n_embd=32, tokens_per_step=64).precision == "16-mixed"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (6, 1))  # no Triton
    assert precision.choose("cuda", None, None, n_embd=32, tokens_per_step=64).compile is False
    given = precision.choose("cuda", "32-true", False, n_embd=32, tokens_per_step=64)
    assert (given.precision, given.compile, given.automatic) == ("32-true", False, ())
    assert given.line() == "mypt: precision 32-true (as given), compile off (as given) on cuda"


def test_cpu_rule(monkeypatch):
    def choice(flags: tuple[str, ...], n_embd: int, tokens: int, threads: int = 1) -> str:
        monkeypatch.setattr(precision, "_cpu_flags", lambda: flags)
        made = precision.choose("cpu", None, None, n_embd=n_embd, tokens_per_step=tokens, threads=threads)
        assert not made.compile
        return made.precision

    avx512, amx = ("avx512f", "avx512_bf16"), ("avx512_bf16", "amx_bf16", "amx_tile")
    for threads in (1, 2, 16):
        assert choice(avx512, 32, 64, threads) == choice(amx, 32, 64, threads) == "32-true"  # tiny models
        assert choice(avx512, 384, 32 * 256, threads) == choice(amx, 384, 32 * 256, threads) == "bf16-mixed"
        assert choice(("avx2", "fma"), 384, 32 * 256, threads) == "32-true"  # bf16 would be emulated
    # configs/dante_cpu.yaml (12.6 M): bf16 pays on one AVX512-BF16 thread only
    assert choice(avx512, 128, 12 * 64, 1) == "bf16-mixed" and choice(amx, 128, 12 * 64, 1) == "32-true"
    assert choice(avx512, 128, 12 * 64, 2) == choice(amx, 128, 12 * 64, 2) == "32-true"


def test_cpu_rule_follows_the_threads_a_run_uses(monkeypatch):
    """`mypt fit` computes on torch's threads (one per core): the crossover measured on one thread would
    pick bf16 for configs/dante_cpu.yaml on two, where it gained 1.03x on a quiet machine and lost (0.81x
    and 0.91x) under other jobs' load."""
    monkeypatch.setattr(precision, "_cpu_flags", lambda: ("avx512f", "avx512_bf16"))
    one, two = (precision.cpu_bf16_min_matmul("avx512_bf16", n) for n in (1, 2))
    assert one == 2**23 and two > 12 * 64 * 128**2  # dante_cpu: float32 on two threads
    assert precision.cpu_bf16_min_matmul("avx512_bf16", 8) == two  # the most threads measured
    assert precision.cpu_bf16_min_matmul("amx_bf16", 1) == precision.cpu_bf16_min_matmul("amx_bf16", 2)
    for threads, expected in ((1, "bf16-mixed"), (2, "32-true")):
        monkeypatch.setattr(torch, "get_num_threads", lambda n=threads: n)  # as `mypt fit` runs
        made = precision.choose("cpu", None, None, n_embd=128, tokens_per_step=12 * 64)
        assert made.precision == expected
        assert (
            f"on {threads} thread" in made.reason and f"{(one, two)[threads - 1] / 1e6:.1f} M" in made.reason
        )


def test_cpu_rule_takes_each_ddp_process_share_of_the_cores(monkeypatch, mypt, text_file):
    """`--trainer.devices 2` on a CPU starts two processes, and Lightning gives each half the cores: the
    rule is asked for the threads one process computes on, not the launching process's."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    threads = [precision.cpu_threads(d) for d in (1, "1", "auto", None, 2, "2", 3, 16)]
    assert threads == [8, 8, 8, 8, 4, 4, 2, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "8")  # set by the user: Lightning leaves every process 8 threads
    assert precision.cpu_threads(2) == 8
    monkeypatch.delenv("OMP_NUM_THREADS")

    asked: list[int | None] = []

    def recording(*args, **kwargs):
        asked.append(kwargs.get("threads"))
        raise SystemExit(0)  # stop before training: the question asked is the point

    monkeypatch.setattr(precision, "choose", recording)
    mypt(
        "fit", *TINY, "--data.input_file", text_file, "--trainer.devices", "2", "--trainer.accelerator", "cpu"
    )
    assert asked == [4]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA L40S", None),  # not the L4's 121 TFLOP/s, which a substring match gives it
        ("NVIDIA RTX A4000", None),  # not the A40's
        ("NVIDIA L4", 121e12),
        ("NVIDIA H100 PCIe", 756e12),  # not the SXM figure
        ("NVIDIA H100 80GB HBM3", 989.4e12),
        ("NVIDIA H200", 989.4e12),  # the H100 SXM's chip; Lightning's h200 entries are sparse figures
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA GeForce RTX 4090", 82.6e12),
    ],
)
def test_gpu_peak_flops_come_from_lightning(monkeypatch, name, expected):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    figure = precision.peak_flops(torch.device("cuda", 0), "bf16-mixed")
    assert figure == (pytest.approx(expected) if expected else None)


def test_cpu_peak_is_measured():
    """Measured once per process, without touching the global RNG (a resumed run's dropout masks)."""
    precision.measured_cpu_flops.cache_clear()
    rng = torch.get_rng_state()
    flops = precision.peak_flops(torch.device("cpu"), "bf16-mixed")
    assert torch.equal(torch.get_rng_state(), rng)
    assert flops > 1e9 and flops == precision.peak_flops(torch.device("cpu"), "bf16-true")  # measured once


@pytest.mark.stress  # compiling takes 30-70 s on 2 cores
def test_compile_runs_on_a_cpu(mypt, text_file):
    r = mypt("fit", *TINY, "--data.input_file", text_file, "--model_name", "c", "--trainer.max_steps", "3",
             "--model.compile", "true", "--trainer.limit_val_batches", "0")  # fmt: skip
    assert r.code == 0, r
    assert "compile on (as given)" in _line(r.out)
    assert _choice("c")["compile"] is True and _choice("c")["automatic"] == ["precision"]
    assert json.loads(Path("checkpoints/c/training_state.json").read_text())["step"] == 3


# a step's worth of freed and re-made blocks of 0.4-5.2 MB: fresh pages from the kernel under glibc's
# defaults (tens of thousands of page faults), none once freed memory is kept
_ALLOCATE_AND_FREE = """
import resource, sys, torch
from lightning.pytorch.accelerators import CUDAAccelerator

from mypt import precision
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(50):
        blocks = [torch.ones(100_000 * (1 + (i * 7 + j) % 13)) for j in range(8)]
        del blocks
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
default = faults()
assert precision.keep_freed_memory()
faults()
print(default, faults())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_kept_for_the_next_step():
    out = subprocess.run(
        [sys.executable, "-c", _ALLOCATE_AND_FREE], capture_output=True, text=True, check=True
    )
    default, kept = map(int, out.stdout.split())
    assert default > 5_000 and kept < default / 50, (default, kept)


def test_a_cpu_run_keeps_freed_memory(mypt, text_file, monkeypatch):
    assert not precision.keep_freed_memory(CUDAAccelerator())  # a GPU run's tensors are not malloc's
    called = []
    monkeypatch.setattr(
        precision, "keep_freed_memory", lambda accelerator: called.append(accelerator) or True
    )
    r = mypt("fit", *TINY, "--data.input_file", text_file, "--model_name", "k", "--trainer.max_steps", "1",
             "--trainer.limit_val_batches", "0")  # fmt: skip
    assert r.code == 0, r
    assert [type(a).__name__ for a in called] == ["CPUAccelerator"]
