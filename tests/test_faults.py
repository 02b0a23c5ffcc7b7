"""Faults a real run meets: a signal, a diverging loss, a full disk, a kill at any instant.

Each test checks the promise that matters: the run stops with one clear line, and the bundle on
disk is the last good one, whole, with model.pt, optimizer.pt and training_state.json from one step.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch  # noqa: F401 - imported here, Lightning's log handler writes to the session's stderr
import psutil
import pytest
from conftest import TINY

from mypt import bundle

QUICK = [*TINY, "--dashboard.max_new_tokens", "0"]  # no text sample at each validation: faster
SIGNAL_RUN = [*QUICK, "--trainer.max_steps", "100000"]


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("mypt: error: "), err
    assert "Traceback" not in err, err
    return lines[-1]


def _fit(mypt, text_file, *extra: str, name: str = "tiny"):
    return mypt("fit", *QUICK, "--data.input_file", text_file, "--model_name", name, *extra)


def _bytes_of(path: Path) -> dict[str, bytes]:
    """Every file of a bundle, its best model's included."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def assert_consistent_bundle(path: Path) -> int:
    """The checks a survivor must pass: it is found (a swap cut short is repaired), every file matches
    the manifest's sha256, the weights load (weights_only) into the config's shapes, and model.pt,
    optimizer.pt, training_state.json and the manifest all name the same step. Returns that step."""
    path = bundle.resolve_bundle(path)
    bundle.check_resumable(path)
    bundle.verify_bundle(path, check_hash=True)
    config = bundle.load_config(path)
    bundle.build_model(path, config)
    state = bundle.load_training_state(path, required=True)
    manifest = json.loads((path / bundle.MANIFEST_FILE).read_text())
    optimizer = bundle.load_optimizer_state(path)
    assert state["step"] == manifest["step"] == optimizer["global_step"], (state, manifest["step"])
    best = bundle.read_best(path)  # the best model, when there is one, is whole too
    if best is not None:
        best_path = bundle.resolve_best(path)
        bundle.verify_bundle(best_path, check_hash=True)
        bundle.build_model(best_path, bundle.load_config(best_path))
        assert best["step"] <= state["step"], (best, state["step"])
    return state["step"]


def start_fit(*args: str, cwd: Path) -> subprocess.Popen:
    """`python -m mypt fit ...` in a child process, for signals and kills (this folder on its
    PYTHONPATH, for the test callbacks named by --trainer.callbacks)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "mypt", "fit", *map(str, args)],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


@contextlib.contextmanager
def killed_on_failure(*procs: subprocess.Popen):
    """Never leave a run behind: on any failure inside the block, SIGKILL the processes and their children."""
    try:
        yield
    except BaseException:
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.kill()
            proc.kill()
            proc.communicate()
        raise


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process ended early ({proc.returncode}): {out[-2000:]} {err[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the run")
        time.sleep(interval)


def saving_now(path: Path, best: bool = False) -> bool:
    """True while a save of `path` is under way (its temporary folder exists); with `best`, once
    that save has started writing its best model (best/ inside the temporary folder)."""
    prefix = f".{path.name}.new-"
    try:
        saves = [name for name in os.listdir(path.parent) if name.startswith(prefix)]
    except FileNotFoundError:
        return False
    return any((path.parent / name / bundle.BEST_DIR).exists() for name in saves) if best else bool(saves)


def writing_a_new_best(path: Path) -> bool:
    """True when a save under way holds a best.json written for it (not linked from the last bundle)."""
    for tmp in path.parent.glob(f".{path.name}.new-*"):
        with contextlib.suppress(OSError):
            if (tmp / bundle.BEST_DIR / bundle.BEST_FILE).stat().st_nlink == 1:
                return True
    return False


# ---------------------------------------------------------------------------------------- signals


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_at_a_step_boundary_saves_and_resumes(mypt, text_file, tmp_path, signum):
    """A cluster's SIGTERM, or Ctrl-C: exit 128+signum with a message; the bundle holds the stopped
    step; `mypt fit --ckpt_path` continues from it."""
    name = signal.Signals(signum).name
    path = tmp_path / "checkpoints" / "sig"
    proc = start_fit(*SIGNAL_RUN, "--data.input_file", text_file, "--model_name", "sig", cwd=tmp_path)
    with killed_on_failure(proc):
        wait_for(lambda: (path / bundle.MANIFEST_FILE).is_file(), proc)  # training is under way
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert f"mypt: {name} received: stopping after this step" in err
    assert "Traceback" not in err
    line = next(x for x in err.splitlines() if x.startswith(f"mypt: stopped by {name} at step "))
    step = int(line.removeprefix(f"mypt: stopped by {name} at step ").split(";")[0])
    assert step >= 10
    assert f"continue with: mypt fit --ckpt_path {Path('checkpoints/sig')}" in line
    assert assert_consistent_bundle(path) == step

    r = mypt("fit", "--ckpt_path", "checkpoints/sig", "--trainer.max_steps", step + 3)
    assert r.code == 0, r
    assert f"Resuming checkpoints/sig at step {step}" in r.out
    state = json.loads((path / bundle.TRAINING_STATE_FILE).read_text())
    assert state["step"] == step + 3 and state["training_config"]["start_step"] == step


def test_a_second_ctrl_c_stops_at_once_without_saving(text_file, tmp_path):
    path = tmp_path / "checkpoints" / "sig"
    slow_steps = ["--data.batch_size", "128", "--model.block_size", "32"]  # both signals land in one step
    proc = start_fit(
        *SIGNAL_RUN, *slow_steps, "--data.input_file", text_file, "--model_name", "sig", cwd=tmp_path
    )
    with killed_on_failure(proc):
        wait_for(lambda: (path / bundle.MANIFEST_FILE).is_file(), proc)  # training is under way
        saved = assert_consistent_bundle(path)
        proc.send_signal(signal.SIGINT)
        # the second once the first was handled: two signals pending at once reach Python's handler as one
        seen = []
        while not seen or ("SIGINT received" not in seen[-1] and seen[-1]):
            seen.append(proc.stderr.readline())
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        err = "".join(seen) + err
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]  # 128 + SIGINT, as the first
    assert "mypt: SIGINT again: stopping now, without saving; the last good bundle" in err, err[-3000:]
    assert "bundle saved to" not in err and "KeyboardInterrupt" not in err
    assert assert_consistent_bundle(path) >= saved  # the bundle on disk is whole


class SlowSetup(lightning.pytorch.Callback):
    def __init__(self, marker: str) -> None:
        """Stands for a slow start (a large text being tokenised): marks its start, then waits.

        Args:
            marker: File created when the start-up is under way.
        """
        self.marker = marker

    def setup(self, trainer, pl_module, stage: str) -> None:
        Path(self.marker).touch()
        time.sleep(120)


def test_ctrl_c_during_start_up_exits_130_and_saves_nothing(text_file, tmp_path):
    """Inside Lightning's start-up (before training, so before the step-boundary handler): Ctrl-C is
    an interruption, not bad input (exit 2) nor Lightning's exit 1."""
    marker = tmp_path / "starting"
    slow = {"class_path": "test_faults.SlowSetup", "init_args": {"marker": str(marker)}}
    proc = start_fit(*SIGNAL_RUN, "--data.input_file", text_file, "--model_name", "early",
                     "--trainer.callbacks", json.dumps([slow]), cwd=tmp_path)  # fmt: skip
    with killed_on_failure(proc):
        wait_for(marker.exists, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert err.strip().splitlines()[-1] == "mypt: interrupted", err[-3000:]
    assert "Traceback" not in err and "error" not in err.lower(), err[-3000:]
    assert not (tmp_path / "checkpoints" / "early").exists() and not (tmp_path / "logs" / "early").exists()


# ---------------------------------------------------------------------------------------- divergence


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_bundle(mypt, text_file, monkeypatch):
    assert _fit(mypt, text_file, "--trainer.max_steps", "10").code == 0
    before = _bytes_of(Path("checkpoints/tiny"))
    from mypt.module import GPTModule

    original = GPTModule.training_step

    def diverge(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * float("nan") if self.global_step >= 13 else loss  # the 14th step goes wrong

    monkeypatch.setattr(GPTModule, "training_step", diverge)
    r = mypt("fit", "--ckpt_path", "checkpoints/tiny", "--trainer.max_steps", "30")
    assert r.code != 0
    line = _one_error_line(r.err)
    assert "loss became nan at step 14" in line, line
    assert "checkpoints/tiny at step 10, is kept" in line
    assert _bytes_of(Path("checkpoints/tiny")) == before  # not overwritten with broken weights
    assert not list(Path("checkpoints").glob(".tiny.*"))


def test_inf_loss_in_a_new_run_saves_nothing(mypt, text_file, monkeypatch):
    from mypt.module import GPTModule

    original = GPTModule.training_step

    def blow_up(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * float("inf") if self.global_step == 2 else loss

    monkeypatch.setattr(GPTModule, "training_step", blow_up)
    r = _fit(mypt, text_file, "--trainer.max_steps", "30", name="fresh")
    line = _one_error_line(r.err)
    assert r.code != 0 and "loss became inf at step 3" in line and "no bundle was saved" in line, r
    assert not Path("checkpoints/fresh").exists()
    assert not Path("logs/fresh").exists()  # no curves of a model that was never saved


def test_weights_that_turn_nan_at_a_save_step_are_never_saved(mypt, text_file, monkeypatch):
    """The loss of a step can be finite while its update wrecks the weights; the save checks them."""
    assert _fit(mypt, text_file, "--trainer.max_steps", "10").code == 0
    before = _bytes_of(Path("checkpoints/tiny"))
    from mypt.module import GPTModule

    def poison(self, outputs, batch, batch_idx):
        if self.global_step == 20:  # after the optimizer step of step 20, before its save
            next(self.model.parameters()).data[0, 0] = float("nan")

    monkeypatch.setattr(GPTModule, "on_train_batch_end", poison)
    r = mypt("fit", "--ckpt_path", "checkpoints/tiny", "--trainer.max_steps", "30")
    line = _one_error_line(r.err)
    assert r.code != 0 and "weights hold nan or inf at step 20" in line, r
    assert _bytes_of(Path("checkpoints/tiny")) == before


# ---------------------------------------------------------------------------------------- full disk


def test_disk_full_during_a_save_keeps_the_previous_bundle(mypt, text_file, monkeypatch):
    assert _fit(mypt, text_file, "--trainer.max_steps", "10").code == 0
    before = _bytes_of(Path("checkpoints/tiny"))
    original_write = bundle._HashingWriter.write

    def write_until_full(self, data):
        if self.size > 2000:  # the disk fills half-way through a file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original_write(self, data)

    monkeypatch.setattr(bundle._HashingWriter, "write", write_until_full)
    r = mypt("fit", "--ckpt_path", "checkpoints/tiny", "--trainer.max_steps", "20")
    line = _one_error_line(r.err)
    assert r.code != 0 and "No space left on device" in line, r
    assert "the previous bundle (step 10) is intact" in line
    assert _bytes_of(Path("checkpoints/tiny")) == before
    assert not list(Path("checkpoints").glob(".tiny.*"))  # no half-written folder left behind


def test_failed_swap_into_an_unwritable_folder_restores_the_previous_bundle(mypt, text_file, monkeypatch):
    """Tests run as root, where chmod does not stop writes: the final rename fails instead, after
    the old bundle was moved aside, the worst moment; it must be moved back."""
    assert _fit(mypt, text_file, "--trainer.max_steps", "10").code == 0
    before = _bytes_of(Path("checkpoints/tiny"))
    real_rename = os.rename

    def rename(src, dst):
        if Path(src).name.startswith(".tiny.new-"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    r = mypt("fit", "--ckpt_path", "checkpoints/tiny", "--trainer.max_steps", "20")
    line = _one_error_line(r.err)
    assert r.code != 0 and "Read-only file system" in line and "is intact" in line, r
    assert _bytes_of(Path("checkpoints/tiny")) == before
    assert not list(Path("checkpoints").glob(".tiny.*"))


# ---------------------------------------------------------------------------------------- SIGKILL


def kill_and_check(
    path: Path, args: list[str], cwd: Path, rng, during_save: bool | str
) -> tuple[int, bool, bool]:
    """Start the run (it resumes the bundle when there is one), SIGKILL it during a save (`"best"`:
    once the save is writing its best model) or at a random moment, and check the survivor.
    Returns (survivor's step, whether the kill caught a save, whether it caught a new best's write)."""
    start_step = assert_consistent_bundle(path) if (path / bundle.MANIFEST_FILE).is_file() else 0
    proc = start_fit(*args, cwd=cwd)
    with killed_on_failure(proc):
        # wait until this run has written at least once, so the kill lands in training, not start-up
        wait_for(lambda: _manifest_step(path) > start_step, proc, interval=0.005)
        if during_save:
            best = during_save == "best"
            wait_for(lambda: saving_now(path, best=best), proc, interval=0.0005)
        else:
            time.sleep(rng.uniform(0.0, 0.3))
    proc.kill()
    proc.communicate()
    caught_save, caught_best = saving_now(path), writing_a_new_best(path)
    return assert_consistent_bundle(path), caught_save, caught_best


def _manifest_step(path: Path) -> int:
    try:
        return json.loads((path / bundle.MANIFEST_FILE).read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


CRASH_RUN = [
    *QUICK, "--trainer.max_steps", "100000", "--trainer.val_check_interval", "1",
    "--trainer.limit_val_batches", "1", "--model_name", "crash",
]  # fmt: skip


@pytest.mark.stress  # the quick form of tests/test_stress.py's 24 kills, which make stress runs
def test_sigkill_during_saves_and_steps_leaves_a_consistent_bundle(mypt, text_file, tmp_path):
    """The quick crash test: three kills (two aimed at saves, one of them at the writing of the best
    model), each survivor whole, its best model too; then training goes on."""
    import random

    rng = random.Random(0)
    path = tmp_path / "checkpoints" / "crash"
    args = [*CRASH_RUN, "--data.input_file", str(text_file)]
    steps, caught = [], []
    for during_save in (True, False, "best"):
        step, in_save, _ = kill_and_check(path, args, tmp_path, rng, during_save)
        steps.append(step)
        caught.append(in_save)
    assert steps == sorted(steps) and steps[0] >= 1, steps  # never goes back
    assert any(caught), "no kill landed inside a save"
    assert bundle.read_best(path) is not None
    r = mypt("fit", "--ckpt_path", "checkpoints/crash", "--trainer.max_steps", steps[-1] + 2)
    assert r.code == 0, r
    assert assert_consistent_bundle(path) == steps[-1] + 2


@pytest.mark.parametrize("kind", ["new", "old"])
def test_a_kill_between_the_two_renames_is_repaired_on_the_next_read(mypt, text_file, kind):
    """Simulates the instant after `rename(bundle, .old-)`: no bundle at the path, a complete copy beside it."""
    assert _fit(mypt, text_file, "--trainer.max_steps", "10").code == 0
    path = Path("checkpoints/tiny")
    path.rename(path.with_name(f".tiny.{kind}-deadbeef"))
    r = mypt("inspect", "tiny")
    assert r.code == 0, r
    assert "recovered bundle checkpoints/tiny" in r.err
    assert assert_consistent_bundle(path) == 10


def test_ctrl_c_in_a_reading_command_exits_130(mypt, monkeypatch):
    from mypt import cli

    def interrupted(args) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_list", interrupted)
    r = mypt("list")
    assert (r.code, r.err.strip()) == (130, "mypt: interrupted"), r
