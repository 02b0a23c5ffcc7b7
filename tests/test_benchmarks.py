"""The benchmark harness runs, and compares like with like. No timing is asserted here: speed targets
are read from the benchmark's printed ratios (docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import convergence  # noqa: E402
from common import find_text  # noqa: E402


def _corpora_present() -> bool:
    try:
        return bool(find_text("divina_commedia.txt") and find_text("tinyshakespeare.txt"))
    except SystemExit:
        return False


pytestmark = pytest.mark.skipif(
    not _corpora_present(), reason="the benchmarks need data/ (make data) or ../shared/data"
)


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / "run.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


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
    storage = results["storage"]
    assert storage["checkpoint"]["bundle_bytes"] >= storage["checkpoint"]["torch_save_bytes"] > 0
    assert storage["inspect"]["large_get_model_info_s"] > 0
    assert all(d["cached_s"] > 0 and d["array_mb"] > 0 for d in storage["data"].values())
    assert results["generation"]["char"]["tokens_per_sec"] > 0
    for figure in ("mypt/plain (wall)", "bundle write s / torch.save s", "cached load", "generate tokens/s"):
        assert figure in proc.stdout
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "logs").exists()  # all in temp dirs


@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip path is for machines without a GPU")
def test_gpu_mode_skips_clearly_without_a_gpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    proc = _run("--gpu", "--quick", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped: no CUDA GPU" in proc.stdout
    assert json.loads(out.read_text())["gpu"] == {"skipped": "no CUDA GPU on this machine"}


def test_mypt_and_the_plain_loop_train_the_same_model() -> None:
    """Same initial weights, batches, optimizer groups, schedule, clipping and validation windows:
    the two validation curves agree to float rounding, so the benchmark compares like with like."""
    result = convergence.curves(Path(__file__).resolve().parents[1] / "configs" / "dante_cpu.yaml", 20, 10)
    assert [step for step, _ in result["mypt"]] == [step for step, _ in result["plain"]] == [10, 20]
    for (_, mine), (_, plain) in zip(result["mypt"], result["plain"], strict=True):
        assert mine == pytest.approx(plain, abs=1e-4)
    assert result["mypt"][1][1] < result["mypt"][0][1]  # and it learns
