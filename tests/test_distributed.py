"""Data-parallel training through Lightning's DDP strategy, on CPU (gloo), two processes.

Lightning's DDP launcher starts the second rank by re-running the command line, so the run goes
through `python -m mypt` in a child process; a small callback given on the command line
(`BatchProbe`, below) reports from inside each rank which batches it drew and who wrote the bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import lightning.pytorch as pl
import psutil
import pytest
import torch
from conftest import TINY, run_mypt_subprocess
from test_faults import assert_consistent_bundle, killed_on_failure, start_fit, wait_for

from mypt import bundle
from mypt.data import RandomWindows, TextDataModule

QUICK = [*TINY, "--dashboard.max_new_tokens", "0"]


def batch_digest(x: torch.Tensor) -> str:
    return hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest()[:16]


class BatchProbe(pl.Callback):
    def __init__(self, out_dir: str) -> None:
        """Records, per rank, the digest of every training batch and every bundle write.

        Args:
            out_dir: Folder for one ``rank<N>.json`` report per rank.
        """
        self.out_dir = Path(out_dir)
        self.batches: list[str] = []
        self.saves: list[int] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        io = trainer.strategy.checkpoint_io  # the bundle plugin, installed at setup
        write = io.save_checkpoint

        def recording_write(checkpoint, path, storage_options=None):
            self.saves.append(checkpoint["global_step"])
            return write(checkpoint, path, storage_options)

        io.save_checkpoint = recording_write

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx
    ) -> None:
        self.batches.append(batch_digest(batch[0].cpu()))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        report = {"rank": trainer.global_rank, "world_size": trainer.world_size, "batches": self.batches,
                  "saves": self.saves}  # fmt: skip
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


def expected_batches(text_file: Path, rank: int, first: int, count: int) -> list[str]:
    """The batches a rank must draw for steps first..first+count-1: a pure function of (seed, rank, n)."""
    dm = TextDataModule(input_file=str(text_file), batch_size=4, block_size=16, tokenizer_file=None)
    dm.setup("fit")
    windows = RandomWindows(dm.train_tokens, 4, 16, dm.seed)
    windows.start_batch, windows.rank = first, rank
    stream = iter(windows)
    return [batch_digest(next(stream)[0]) for _ in range(count)]


def test_ddp_resumes_a_single_process_bundle_and_back(mypt, text_file, tmp_path):
    path = Path("checkpoints/dp")
    r = mypt("fit", *QUICK, "--data.input_file", text_file, "--model_name", "dp", "--trainer.max_steps", "10")
    assert r.code == 0, r
    single_files = sorted(os.listdir(path))
    config_before = (path / bundle.CONFIG_FILE).read_bytes()

    probe = {"class_path": "test_distributed.BatchProbe", "init_args": {"out_dir": str(tmp_path / "probe")}}
    r = run_mypt_subprocess(
        "fit", "--ckpt_path", "checkpoints/dp", "--trainer.max_steps", "20",
        "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
        "--trainer.callbacks", json.dumps([probe]),
        cwd=tmp_path, env={"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])},
    )  # fmt: skip
    assert r.code == 0, r
    reports = {n: json.loads((tmp_path / "probe" / f"rank{n}.json").read_text()) for n in (0, 1)}
    assert all(rep["world_size"] == 2 for rep in reports.values())
    # each rank drew its own batches, continuing its stream from step 10
    for rank, rep in reports.items():
        assert rep["batches"] == expected_batches(text_file, rank, 10, 10), rank
    assert not set(reports[0]["batches"]) & set(reports[1]["batches"])
    # the bundle was written by rank zero only, once (at the validation of step 20)
    assert reports[0]["saves"] == [20] and reports[1]["saves"] == []
    assert sorted(os.listdir(path)) == single_files  # the same format
    assert (path / bundle.CONFIG_FILE).read_bytes() == config_before
    assert assert_consistent_bundle(path) == 20
    assert not [p for p in Path("checkpoints").iterdir() if p.name.startswith(".")]

    r = mypt("fit", "--ckpt_path", "checkpoints/dp", "--trainer.max_steps", "25")  # and back to one process
    assert r.code == 0, r
    assert assert_consistent_bundle(path) == 25
    history = json.loads((path / bundle.TRAINING_STATE_FILE).read_text())["history"]
    assert [(h["start_step"], h["end_step"], h["world_size"]) for h in history] == [
        (0, 10, 1),
        (10, 20, 2),
        (20, 25, 1),
    ]


def test_sigterm_to_rank_zero_alone_stops_every_rank_at_one_step(text_file, tmp_path):
    """A signal may reach one process only; the ranks agree to stop, rank zero saves, none hangs."""
    path = tmp_path / "checkpoints" / "ddpsig"
    proc = start_fit(*QUICK, "--trainer.max_steps", "100000", "--data.input_file", text_file, "--model_name",
                     "ddpsig", "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
                     cwd=tmp_path)  # fmt: skip
    with killed_on_failure(proc):
        wait_for(lambda: (path / bundle.MANIFEST_FILE).is_file(), proc)
        other_ranks = psutil.Process(proc.pid).children(recursive=True)
        assert other_ranks, "Lightning's DDP launcher started no second process"
        proc.send_signal(signal.SIGTERM)  # rank zero only
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    step = int(err.split("stopped by SIGTERM at step ")[1].split(";")[0])
    _, alive = psutil.wait_procs(other_ranks, timeout=60)
    assert not alive, "a rank kept running after rank zero stopped"
    assert assert_consistent_bundle(path) == step


def test_strategies_whose_checkpoints_bypass_the_bundle_are_refused_before_training():
    """FSDP (and DeepSpeed, ModelParallel) save and load without the CheckpointIO plugin in Lightning
    2.6: mypt stops before training rather than failing at the second save, hours in."""
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy

    from mypt.checkpointing import check_strategy
    from mypt.errors import MyptError

    check_strategy(DDPStrategy())
    for strategy in (FSDPStrategy(), ModelParallelStrategy()):
        with pytest.raises(MyptError, match="is not supported yet.*use ddp"):
            check_strategy(strategy)
