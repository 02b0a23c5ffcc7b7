"""The benchmark harness runs, and compares like with like. No timing is asserted here: speed targets
are read from the benchmark's printed ratios (docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import convergence  # noqa: E402
import run  # noqa: E402
from common import find_text  # noqa: E402
from conftest import FIXTURE_TEXT  # noqa: E402
from plain_loop import PlainTrainer  # noqa: E402

from mypt.model import GPTConfig  # noqa: E402


def _corpora_present() -> bool:
    try:
        return bool(find_text("divina_commedia.txt") and find_text("tinyshakespeare.txt"))
    except SystemExit:
        return False


needs_corpora = pytest.mark.skipif(
    not _corpora_present(), reason="the benchmarks need data/ (make data) or ../shared/data"
)


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / "run.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,  # minutes on a loaded 2-core machine
    )


@needs_corpora
@pytest.mark.stress  # 74 s of the quick suite; make bench runs the same sections
def test_quick_benchmark_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = _run("--quick", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    training = results["training"]
    for config in ("cpu_config", "gpt2_config"):
        assert training[config]["mypt"]["steps"] > 0 and training[config]["plain"]["steps"] > 0
        assert (
            training[config]["mypt"]["tokens_per_sec"] > 0 and training[config]["plain"]["tokens_per_sec"] > 0
        )
    assert training["peak_rss_mb"]["mypt"] > 0 and training["peak_rss_mb"]["plain"] > 0
    assert training["cpu_config"]["plain_float32"]["tokens_per_sec"] > 0
    auto = results["precision"]
    assert auto["design_note"]["plain_float32"]["mfu_bf16_peak"] > 0 and auto["cpu_peak_flops"]["bf16"] > 0
    assert auto["precision_gap"]["gap"] >= 0 and len(auto["precision_gap"]["bf16"]) == 2
    storage = results["storage"]
    assert storage["checkpoint"]["bundle_bytes"] >= storage["checkpoint"]["torch_save_bytes"] > 0
    assert storage["inspect"]["large_get_model_info_s"] > 0
    assert all(d["cached_s"] > 0 and d["array_mb"] > 0 for d in storage["data"].values())
    assert results["generation"]["char"]["tokens_per_sec"] > 0
    runs = results["time_to_loss"]["runs"]  # nanoGPT's recipe and mypt's default, side by side
    assert runs["nanoGPT, full run"]["steps"] == 20 and runs["mypt default"]["steps"] > 0
    assert all(0 < r["val_loss"] < 10 and r["cpu_s"] > 0 for r in runs.values())
    for figure in ("val loss at equal time", "step cost: modern block / nanoGPT's", "mypt/plain (wall)", "automatic precision / float32", "mypt / plain float32",
                   "val/loss bf16 - float32", "bundle write s / torch.save s", "cached load", "generate tokens/s"):  # fmt: skip
        assert figure in proc.stdout
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "logs").exists()  # all in temp dirs


@needs_corpora
@pytest.mark.stress  # starts the benchmark harness in a process of its own
@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip path is for machines without a GPU")
def test_gpu_mode_skips_clearly_without_a_gpu(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    out.write_text('{"training": "the CPU figures of make bench"}\n')
    proc = _run("--gpu", "--quick", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped: no CUDA GPU" in proc.stdout
    assert out.read_text() == '{"training": "the CPU figures of make bench"}\n'  # not replaced by a stub


def test_mypt_and_the_plain_loop_train_the_same_model() -> None:
    """Same initial weights, batches, optimizer groups, schedule, clipping and validation windows,
    the plain loop's own versions of the schedule, sampler and tokenisation against mypt's: the two
    validation curves agree to float rounding. Runs on the excerpt in tests/data, corpora or not."""
    config = Path(__file__).resolve().parents[1] / "configs" / "dante_cpu.yaml"
    result = convergence.curves(config, 20, 10, text=FIXTURE_TEXT)
    assert [step for step, _ in result["mypt"]] == [step for step, _ in result["plain"]] == [10, 20]
    for (_, mine), (_, plain) in zip(result["mypt"], result["plain"], strict=True):
        assert mine == pytest.approx(plain, abs=1e-4)
    assert result["mypt"][1][1] < result["mypt"][0][1]  # and it learns


@pytest.mark.parametrize(
    ("bf16_native", "precision", "amp"), [(True, "bf16-mixed", "bf16"), (False, "16-mixed", "fp16")]
)
def test_gpu_benchmark_names_one_device_and_a_native_precision(bf16_native, precision, amp):
    """With Lightning's devices="auto", a machine with several GPUs would start DDP from the benchmark's
    temporary folder and die; where bf16 is only emulated (before Ampere) the figures would be void."""
    mypt_args, plain = run.gpu_plan(bf16_native)
    flags = dict(zip(mypt_args[::2], mypt_args[1::2], strict=True))
    assert flags == {
        "--trainer.accelerator": "gpu",
        "--trainer.devices": "1",
        "--trainer.precision": precision,
    }
    assert plain["device"] == "cuda:0" and plain["amp"] == amp


def test_the_plain_loop_in_fp16_unscales_before_clipping(monkeypatch):
    """The fp16 fallback's yardstick: a loss scaler, and clipping of the true (unscaled) gradient."""
    seen = []
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(
        torch.nn.utils, "clip_grad_norm_", lambda params, max_norm: seen.append(clip(params, max_norm))
    )
    tokens = np.arange(2000, dtype=np.uint16) % 50
    config = GPTConfig(block_size=16, vocab_size=50, n_layer=1, n_head=2, n_embd=16)
    trainer = PlainTrainer(config, tokens, tokens, batch_size=4, max_steps=3, val_interval=0, amp="fp16")
    assert trainer.scaler.get_scale() == 65536.0
    trainer.timed_steps(3)
    assert len(seen) == 3 and all(0 < float(norm) < 100 for norm in seen)  # not 65536 times the norm
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
