"""Data-parallel training through Lightning's DDP strategy, on CPU (gloo), two processes.

Lightning's DDP launcher starts the second rank by re-running the command line, so the run goes
through `python -m mypt` in a child process; a small callback given on the command line
(`BatchProbe`, below) reports from inside each rank which batches it drew and who wrote the bundle.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import psutil
import pytest
import torch
from conftest import TINY, run_mypt_subprocess
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray
from test_faults import assert_consistent_bundle, killed_on_failure, start_fit, wait_for

from mypt import bundle
from mypt.dashboard import SAMPLE_TAG
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
        self.losses: list[str] = []  # each step's training loss, exactly (float.hex)
        self.saves: list[int] = []
        self.seed: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        io = trainer.strategy.checkpoint_io  # the bundle plugin, installed at setup
        write = io.save_checkpoint

        def recording_write(checkpoint, path, storage_options=None):
            self.saves.append(checkpoint["global_step"])
            return write(checkpoint, path, storage_options)

        io.save_checkpoint = recording_write
        self.seed = torch.initial_seed()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, *args) -> None:
        self.losses.append(float(outputs["loss"]).hex())

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx
    ) -> None:
        self.batches.append(batch_digest(batch[0].cpu()))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        report = {"rank": trainer.global_rank, "world_size": trainer.world_size, "batches": self.batches,
                  "losses": self.losses, "saves": self.saves, "seed": self.seed}  # fmt: skip
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


class SigtermToRankZero(pl.Callback):
    def __init__(self, at_step: int) -> None:
        """Sends SIGTERM to rank zero's own process after step `at_step` (what a scheduler does).

        Args:
            at_step: The step after which the signal is sent.
        """
        self.at_step = at_step

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_rank == 0 and trainer.global_step == self.at_step:
            os.kill(os.getpid(), signal.SIGTERM)


class StrategyProbe(pl.Callback):
    def __init__(self, out_dir: str) -> None:
        """Records, per rank, the FLOPs per token the module counts for MFU, a recount on the wrapped
        model, and the number of FSDP units.

        Args:
            out_dir: Folder for one ``strategy<N>.json`` report per rank.
        """
        self.out_dir = Path(out_dir)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from torch.distributed.fsdp import FullyShardedDataParallel

        units = sum(isinstance(m, FullyShardedDataParallel) for m in trainer.strategy.model.modules())
        report = {"flops_per_token": pl_module.flops_per_token, "recount": pl_module.model.flops_per_token(),
                  "fsdp_units": units}  # fmt: skip
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"strategy{trainer.global_rank}.json").write_text(json.dumps(report))


TESTS_ON_PATH = {
    "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
}


class DiskFullOnRankZero(pl.Callback):
    def __init__(self, from_step: int) -> None:
        """Makes rank zero's bundle writes fail with ENOSPC from `from_step` on.

        Args:
            from_step: The first step whose save finds the disk full.
        """
        self.from_step = from_step

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        original_write = bundle._HashingWriter.write

        def write(writer, data):
            if trainer.global_step >= self.from_step and writer.size > 2000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return original_write(writer, data)

        bundle._HashingWriter.write = write


def expected_batches(text_file: Path, rank: int, first: int, count: int) -> list[str]:
    """The batches a rank must draw for steps first..first+count-1: a pure function of (seed, rank, n)."""
    dm = TextDataModule(input_file=str(text_file), batch_size=4, block_size=16, tokenizer_file=None)
    dm.setup("fit")
    windows = RandomWindows(dm.train_tokens, 4, 16, dm.seed)
    windows.start_batch, windows.rank = first, rank
    stream = iter(windows)
    return [batch_digest(next(stream)[0]) for _ in range(count)]


def fit_ddp(name: str, max_steps: int, probe_dir: Path, *callbacks: dict):
    """`mypt fit --ckpt_path checkpoints/NAME` over 2 CPU processes with a BatchProbe; returns the
    result and each rank's report."""
    probe = {"class_path": "test_distributed.BatchProbe", "init_args": {"out_dir": str(probe_dir)}}
    r = run_mypt_subprocess(
        "fit", "--ckpt_path", f"checkpoints/{name}", "--trainer.max_steps", max_steps,
        "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
        "--trainer.callbacks", json.dumps([probe, *callbacks]), cwd=Path.cwd(), env=TESTS_ON_PATH,
    )  # fmt: skip
    reports = {n: json.loads((probe_dir / f"rank{n}.json").read_text()) for n in (0, 1)}
    return r, reports


def test_ddp_resumes_a_single_process_bundle_and_back(mypt, text_file, tmp_path):
    """One process to step 10, then DDP over 2 processes to step 20 (with dropout: each rank its own
    seed), then one process again; predict over 2 processes prints what one process prints."""
    r = mypt("fit", *QUICK, "--data.input_file", text_file, "--model_name", "dp", "--trainer.max_steps", "10",
             "--model.dropout", "0.1")  # fmt: skip
    assert r.code == 0, r
    path = Path("checkpoints/dp")
    single_files = sorted(os.listdir(path))
    config_before = (path / bundle.CONFIG_FILE).read_bytes()

    r, reports = fit_ddp("dp", 20, tmp_path / "probe")
    assert r.code == 0, r
    assert "terminate called" not in r.err, r.err[-3000:]  # no rank aborts at exit
    assert "DDP over 2 processes: 2 x 4 sequences per step (8 in all" in r.out  # said once, at the start
    assert all(rep["world_size"] == 2 for rep in reports.values())
    assert [reports[n]["seed"] for n in (0, 1)] == [1337, 1338]  # seed + rank: different dropout masks
    # each rank drew its own batches, continuing its stream from step 10
    for rank, rep in reports.items():
        assert rep["batches"] == expected_batches(text_file, rank, 10, 10), rank
    assert not set(reports[0]["batches"]) & set(reports[1]["batches"])
    # the bundle was written by rank zero only, once (at the validation of step 20), with each
    # rank's own RNG states
    assert reports[0]["saves"] == [20] and reports[1]["saves"] == []
    assert sorted(os.listdir(path)) == single_files  # the same format
    assert (path / bundle.CONFIG_FILE).read_bytes() == config_before
    assert assert_consistent_bundle(path) == 20
    assert not [p for p in Path("checkpoints").iterdir() if p.name.startswith(".")]
    rng = next(iter(bundle.load_optimizer_state(path)["callbacks"].values()))["rng_per_rank"]
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])

    r = mypt("fit", "--ckpt_path", "checkpoints/dp", "--trainer.max_steps", "25")  # and back to one process
    assert r.code == 0, r
    assert assert_consistent_bundle(path) == 25
    history = json.loads((path / bundle.TRAINING_STATE_FILE).read_text())["history"]
    assert [(h["start_step"], h["end_step"], h["world_size"]) for h in history] == [
        (0, 10, 1),
        (10, 20, 2),
        (20, 25, 1),
    ]

    # predict over 2 processes prints each sample once, in order: what one process prints
    prompts = ["--data.prompts", '["Nel", "Amor", "Per"]', "--trainer.enable_progress_bar", "false"]
    one = mypt("predict", "--ckpt_path", "checkpoints/dp", *prompts)
    assert one.code == 0, one
    r = run_mypt_subprocess(
        "predict", "--ckpt_path", "checkpoints/dp", *prompts,
        "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu", cwd=tmp_path,
    )  # fmt: skip
    assert r.code == 0, r
    assert one.out.startswith("=== sample 1 of 3: prompt 'Nel'") and r.out == one.out, (r.out, one.out)


@pytest.mark.stress
def test_a_stopped_ddp_run_resumes_bit_for_bit_on_every_rank(mypt, text_file, tmp_path):
    """With dropout, a DDP run stopped by SIGTERM at step 20 and resumed to step 30 equals the
    uninterrupted run bit for bit, on every rank (each step's loss, the final weights): each rank's
    RNG states are its own, saved and restored. (Four runs of two processes: `make stress`.)"""
    r = mypt("fit", *QUICK, "--data.input_file", text_file, "--model_name", "whole", "--trainer.max_steps", "10",
             "--model.dropout", "0.1")  # fmt: skip
    assert r.code == 0, r
    shutil.copytree("checkpoints/whole", "checkpoints/stopped")
    r, whole = fit_ddp("whole", 30, tmp_path / "probe_whole")
    assert r.code == 0, r
    stop = {"class_path": "test_distributed.SigtermToRankZero", "init_args": {"at_step": 13}}
    r, first = fit_ddp("stopped", 30, tmp_path / "probe_first", stop)
    assert r.code == 128 + signal.SIGTERM and "stopped by SIGTERM at step 20" in r.err, r
    r, second = fit_ddp("stopped", 30, tmp_path / "probe_second")
    assert r.code == 0, r
    for rank in (0, 1):
        assert len(whole[rank]["losses"]) == 20
        assert first[rank]["losses"] + second[rank]["losses"] == whole[rank]["losses"], rank
    weights = [bundle.load_model_state(Path(f"checkpoints/{name}")) for name in ("whole", "stopped")]
    assert weights[0].keys() == weights[1].keys()
    for key, value in weights[0].items():
        assert torch.equal(weights[1][key], value), key


def test_disk_full_on_rank_zero_stops_every_rank_with_one_reason(text_file, tmp_path):
    """Only rank zero writes; when its write fails, the other ranks must not wait at the next
    collective or die with a traceback of their own: every rank stops, the previous bundle intact."""
    probe = {"class_path": "test_distributed.DiskFullOnRankZero", "init_args": {"from_step": 20}}
    r = run_mypt_subprocess(
        "fit", *QUICK, "--data.input_file", text_file, "--model_name", "full", "--trainer.max_steps", "30",
        "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
        "--trainer.callbacks", json.dumps([probe]), cwd=tmp_path, timeout=180,
        env={"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])},
    )  # fmt: skip
    assert r.code != 0, r
    assert "Traceback" not in r.err, r.err[-3000:]
    errors = [line for line in r.err.splitlines() if line.startswith("mypt: error:")]
    assert errors and all("No space left on device" in line for line in errors), r.err[-3000:]
    assert any("the previous bundle (step 10) is intact" in line for line in errors), errors
    assert assert_consistent_bundle(tmp_path / "checkpoints" / "full") == 10


@pytest.mark.stress  # also done by test_a_stopped_ddp_run_resumes_bit_for_bit_on_every_rank's SIGTERM to rank zero
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


@pytest.mark.stress  # 28 s: four runs of two processes (make stress); the refusals stay in the quick suite
def test_fsdp_bundle_is_whole_matches_ddp_and_resumes_either_way(mypt, text_file, tmp_path):
    """FSDP shards the weights and the optimizer state over the ranks, yet its bundle holds the whole
    model and an optimizer.pt in a single process's layout. From the same bundle and the same batches,
    FSDP and DDP must end at the same weights, optimizer state and gradient norms; then one process
    resumes the FSDP bundle."""
    r = mypt(
        "fit", *QUICK, "--data.input_file", text_file, "--model_name", "base", "--trainer.max_steps", "10",
        "--model.optimizer", "adamw",  # Muon needs whole matrices: FSDP trains with AdamW
    )  # fmt: skip
    assert r.code == 0, r
    common = [
        "--trainer.max_steps", "20", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
        "--trainer.log_every_n_steps", "5", "--trainer.gradient_clip_val", "0.05",  # clipping in effect
        "--dashboard.prompt", "Nel mezzo", "--dashboard.max_new_tokens", "24", "--dashboard.seed", "7",
    ]  # fmt: skip
    for strategy in ("ddp", "fsdp"):
        shutil.copytree("checkpoints/base", f"checkpoints/{strategy}")
        probe = {
            "class_path": "test_distributed.StrategyProbe",
            "init_args": {"out_dir": str(tmp_path / f"probe_{strategy}")},
        }
        r = run_mypt_subprocess(
            "fit", "--ckpt_path", f"checkpoints/{strategy}", "--trainer.strategy", strategy, *common,
            "--trainer.callbacks", json.dumps([probe]), cwd=tmp_path, env=TESTS_ON_PATH,
        )  # fmt: skip
        assert r.code == 0, r
    # FLOPs per token (MFU) are those of the whole model, counted before FSDP wrapped it; the `fsdp`
    # alias makes each Block its own FSDP unit (2 Blocks + the root)
    whole = bundle.build_model(Path("checkpoints/base"), bundle.load_config(Path("checkpoints/base")))
    for rank in (0, 1):
        report = json.loads((tmp_path / "probe_fsdp" / f"strategy{rank}.json").read_text())
        assert report["flops_per_token"] == whole.flops_per_token() > report["recount"], report
        assert report["fsdp_units"] == 3, report
    ddp, fsdp = Path("checkpoints/ddp"), Path("checkpoints/fsdp")
    assert sorted(os.listdir(fsdp)) == sorted(os.listdir(ddp))
    assert assert_consistent_bundle(fsdp) == 20

    # model.pt: every tensor whole (the config's shapes, checked by build_model above) and equal to DDP's
    weights = {
        name: torch.load(d / bundle.MODEL_FILE, weights_only=True)
        for name, d in (("ddp", ddp), ("fsdp", fsdp))
    }
    assert weights["fsdp"].keys() == weights["ddp"].keys()
    for key, value in weights["ddp"].items():
        torch.testing.assert_close(weights["fsdp"][key], value, rtol=0, atol=1e-6, msg=key)
    # optimizer.pt: the same groups, hyperparameters and per-parameter state, keyed the same way
    ddp_opt, fsdp_opt = (bundle.load_optimizer_state(d)["optimizer_states"][0] for d in (ddp, fsdp))
    assert fsdp_opt["param_groups"] == ddp_opt["param_groups"]
    assert fsdp_opt["state"].keys() == ddp_opt["state"].keys()
    for index, state in ddp_opt["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(fsdp_opt["state"][index][key], value, rtol=0, atol=1e-7)

    def logged(model_name: str, tag: str) -> list:
        events = EventAccumulator(f"logs/{model_name}", size_guidance={"tensors": 0})
        events.Reload()
        return [make_ndarray(e.tensor_proto).item() for e in events.Tensors(tag)]

    # the gradient norm is taken over all shards (one shard's would be smaller), before clipping
    norms = logged("fsdp", "grad_norm")
    assert len(norms) == 2 and min(norms) > 0.05
    assert norms == pytest.approx(logged("ddp", "grad_norm"), rel=1e-5)

    def assert_sample_is_the_bundles() -> None:
        """The text sample of the last validation was drawn from the whole weights: it is what
        `mypt generate` writes from the bundle saved at that validation."""
        sample = logged("fsdp", f"{SAMPLE_TAG}/text_summary")[-1].decode()
        r = mypt("generate", "fsdp", "--prompt", "Nel mezzo", "--max_new_tokens", "24", "--seed", "7")
        assert r.code == 0, r
        assert sample == "\n".join("    " + line for line in r.out.rstrip("\n").split("\n"))

    assert_sample_is_the_bundles()

    # FSDP's own options through the class path: each Block its own FSDP unit, with activation
    # checkpointing; then back to one process
    r = run_mypt_subprocess(
        "fit", "--ckpt_path", "checkpoints/fsdp", *common[2:], "--trainer.max_steps", "30",
        "--trainer.strategy", "mypt.fsdp.BundleFSDPStrategy",
        "--trainer.strategy.init_args.auto_wrap_policy", "[mypt.model.Block]",
        "--trainer.strategy.init_args.activation_checkpointing_policy", "[mypt.model.Block]",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.code == 0, r
    assert assert_consistent_bundle(fsdp) == 30
    assert_sample_is_the_bundles()
    r = mypt("fit", "--ckpt_path", "checkpoints/fsdp", "--trainer.max_steps", "35")
    assert r.code == 0, r
    assert assert_consistent_bundle(fsdp) == 35
    history = json.loads((fsdp / bundle.TRAINING_STATE_FILE).read_text())["history"]
    assert [(h["end_step"], h["world_size"], h["strategy"]) for h in history] == [
        (10, 1, "SingleDeviceStrategy"),
        (20, 2, "BundleFSDPStrategy"),
        (30, 2, "BundleFSDPStrategy"),
        (35, 1, "SingleDeviceStrategy"),
    ]


def torchrun_two_nodes(*args: str, cwds: tuple[Path, Path], timeout: float = 240) -> list[tuple[int, str]]:
    """`torchrun --nnodes 2 ... -m mypt fit ARGS` as two nodes of one process each, on this machine:
    torchrun's multi-node rendezvous, as in docs/faults.md's worked example. Returns (exit code,
    output) per node; each node's output is also kept in node<rank>.log in its folder."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                "--master_addr", "127.0.0.1", "--master_port", str(port)]  # fmt: skip
    mypt = ["-m", "mypt", "fit", *map(str, args), "--trainer.num_nodes", "2", "--trainer.devices", "1",
            "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"]  # fmt: skip
    logs = [cwd / f"node{rank}.log" for rank, cwd in enumerate(cwds)]
    procs = []
    for rank, (cwd, log) in enumerate(zip(cwds, logs, strict=True)):
        with log.open("w") as out:  # a file, not a pipe: a full pipe would stall the node
            command = [*torchrun, "--node_rank", str(rank), *mypt]
            procs.append(subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT))
    try:
        with killed_on_failure(*procs):
            for proc in procs:
                proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("torchrun did not finish; " + " / ".join(log.read_text()[-3000:] for log in logs))
    return [(proc.returncode, log.read_text()) for proc, log in zip(procs, logs, strict=True)]


@pytest.mark.stress  # two torchrun nodes on one machine, 14 s (make stress)
def test_two_nodes_with_torchrun_train_and_resume_one_bundle(text_file, tmp_path):
    args = [*QUICK, "--data.input_file", text_file, "--model_name", "nodes"]
    for max_steps in (10, 20):  # a new model, then the same command resumes it
        results = torchrun_two_nodes(*args, "--trainer.max_steps", max_steps, cwds=(tmp_path, tmp_path))
        # a rank that aborts at exit (its process group left to interpreter shutdown) fails its node
        assert [code for code, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    path = tmp_path / "checkpoints" / "nodes"
    assert assert_consistent_bundle(path) == 20
    history = json.loads((path / bundle.TRAINING_STATE_FILE).read_text())["history"]
    assert [(h["start_step"], h["end_step"], h["world_size"]) for h in history] == [(0, 10, 2), (10, 20, 2)]


@pytest.mark.stress  # two torchrun nodes on one machine, 12 s (make stress)
def test_a_node_that_does_not_see_the_bundle_stops_every_rank(text_file, tmp_path):
    """Rank 1 runs in a folder without checkpoints/ (a node without the shared filesystem): instead of
    rank 0 resuming while rank 1 starts a new model, and both hanging, every rank stops and says why."""
    r = run_mypt_subprocess("fit", *QUICK, "--data.input_file", text_file, "--model_name", "nodes",
                            "--trainer.max_steps", "10", cwd=tmp_path)  # fmt: skip
    assert r.code == 0, r
    before = (tmp_path / "checkpoints" / "nodes" / bundle.MANIFEST_FILE).read_bytes()
    elsewhere = tmp_path / "other_node"
    elsewhere.mkdir()
    results = torchrun_two_nodes(*QUICK, "--data.input_file", text_file, "--model_name", "nodes",
                                 "--trainer.max_steps", "20", cwds=(tmp_path, elsewhere), timeout=120)  # fmt: skip
    expected = "mypt: error: the ranks do not resume the same bundle (rank 0: step 10, rank 1: no bundle)"
    for code, err in results:
        assert code != 0 and expected in err, err[-3000:]
    assert (tmp_path / "checkpoints" / "nodes" / bundle.MANIFEST_FILE).read_bytes() == before
    assert not (elsewhere / "checkpoints" / "nodes").exists()


def test_strategies_whose_checkpoints_bypass_the_bundle_are_refused_before_training():
    """Lightning's own FSDPStrategy (2.6), DeepSpeed and ModelParallel save and load without the
    CheckpointIO plugin: mypt stops before training rather than failing at the first save, hours in."""
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy

    from mypt.errors import MyptError
    from mypt.fsdp import BundleFSDPStrategy
    from mypt.guards import check_strategy

    check_strategy(DDPStrategy())
    check_strategy(BundleFSDPStrategy())
    with pytest.raises(MyptError, match="saves its own checkpoint files.*--trainer.strategy fsdp"):
        check_strategy(FSDPStrategy())
    with pytest.raises(MyptError, match="is not supported.*use fsdp.*or ddp"):
        check_strategy(ModelParallelStrategy())
    with pytest.raises(MyptError, match="state_dict_type must be 'full'"):
        check_strategy(BundleFSDPStrategy(state_dict_type="sharded"))


def test_a_whole_copy_for_samples_goes_to_the_gpu_only_when_it_fits(monkeypatch):
    """Under FSDP the validation sample runs on a whole copy of the model on rank zero: on its GPU while
    there is room for twice the copy, else on the CPU rather than out of memory."""
    from mypt.fsdp import copy_device
    from mypt.model import GPT, GPTConfig

    copy = GPT(GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=2, n_embd=8))
    size = sum(t.numel() * t.element_size() for t in copy.state_dict().values())
    gpu = torch.device("cuda", 1)
    for free, expected in ((3 * size, gpu), (size, torch.device("cpu"))):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, 80 * 2**30))
        assert copy_device(gpu, copy) == expected
    assert copy_device(torch.device("cpu"), copy) == torch.device("cpu")
