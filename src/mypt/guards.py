"""What stops a run safely: refused strategies, ranks that disagree, stop signals, nan/inf.

- `check_strategy` refuses, before any training, a strategy whose checkpoints would bypass the bundle.
- `check_ranks_agree` stops every rank when they would not resume the same bundle.
- `RunGuard` is the callback that turns SIGINT/SIGTERM into a stop at a step boundary (agreed by all
  ranks) and stops a diverged run (a nan/inf loss or weight) before it can be saved.
- `interrupts_at_once` makes Ctrl-C outside the training loop (start-up, an evaluation), or a second
  Ctrl-C, an `Interrupted`: the command stops at once with exit status 130.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy, Strategy

from mypt import bundle
from mypt.errors import MyptError
from mypt.fsdp import BundleFSDPStrategy
from mypt.module import is_logging_step

INTERRUPTED_EXIT = 128 + signal.SIGINT  # 130: the status a shell gives a command that Ctrl-C ended
STOP_CHECK_EVERY = 10  # steps between the ranks' agreements on a stop signal
# with no logging steps (log_every_n_steps 0) the losses are checked after this many steps instead
MAX_UNCHECKED_LOSSES = 100
_NO_STEP = 2**62  # "no non-finite loss seen", larger than any step


class Interrupted(BaseException):
    """Ctrl-C where the run cannot wait for a step boundary: the command stops at once and exits 130.

    Not a KeyboardInterrupt: Lightning catches that inside fit/validate/predict and exits with status 1
    (2.6, trainer/call.py). A BaseException that is not one passes through Lightning's teardown."""

    def __init__(self, announced: bool = False) -> None:
        super().__init__("interrupted")
        self.announced = announced  # the line saying why was printed already


def _interrupt(signum: int, frame: Any) -> None:
    raise Interrupted


@contextlib.contextmanager
def interrupts_at_once():
    """SIGINT raises Interrupted in this block (in the main thread; elsewhere signals do not arrive).
    RunGuard takes SIGINT over while training, and gives it back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def check_strategy(strategy: Strategy) -> None:
    """Refuse, before any training, a strategy whose checkpoints bypass the CheckpointIO plugin: with
    it no bundle could be written, and the run would fail at its first save, hours in. Lightning's
    own FSDPStrategy (2.6) loads full checkpoints itself and refuses to save into an existing folder
    (mypt's BundleFSDPStrategy does not); DeepSpeed and ModelParallel write their own sharded formats."""
    if isinstance(strategy, BundleFSDPStrategy):
        strategy.check()
        return
    if isinstance(strategy, FSDPStrategy):
        raise MyptError(
            f"--trainer.strategy {type(strategy).__name__} saves its own checkpoint files, not mypt's bundle: "
            "use --trainer.strategy fsdp (or mypt.fsdp.BundleFSDPStrategy to pass FSDP options)"
        )
    if isinstance(strategy, ModelParallelStrategy) or "DeepSpeed" in type(strategy).__name__:
        raise MyptError(
            f"--trainer.strategy {type(strategy).__name__} is not supported: its checkpoints bypass mypt's "
            "bundle; use fsdp (sharded, for models that do not fit one GPU) or ddp"
        )


def check_ranks_agree(trainer: pl.Trainer, resume_step: int | None, checkpoint_root: Path) -> None:
    """Every rank must resume the same bundle (`resume_step` None: a new model). On several nodes, a
    node that does not see the checkpoint folder would start a new model while the others resume,
    and the run would hang at its first collective; stop all ranks with the reason instead."""
    steps: list[int] = [0] * trainer.world_size
    torch.distributed.all_gather_object(steps, -1 if resume_step is None else resume_step)
    if len(set(steps)) > 1:
        seen = ", ".join(
            f"rank {rank}: {'no bundle' if s < 0 else f'step {s}'}" for rank, s in enumerate(steps)
        )
        raise MyptError(
            f"the ranks do not resume the same bundle ({seen}): every node must see the same "
            f"{checkpoint_root}/ folder, e.g. on a shared filesystem"
        )


class RunGuard(Callback):
    def __init__(self, dirpath: str | Path) -> None:
        """Stops the run at a step boundary on SIGINT/SIGTERM, and with an error on a nan/inf loss.

        Args:
            dirpath: The bundle folder; a divergence error says what is left there.
        """
        self.dirpath = Path(dirpath)
        self.stop_signal: int | None = None  # set when SIGINT/SIGTERM asked the run to stop
        self._previous_handlers: dict[int, Any] = {}
        self._trainer: pl.Trainer | None = None
        self._last_step = -1  # the step of the last batch that ended an optimizer step
        # (step, loss) of the steps since the last finiteness check; kept on the device, so the
        # check costs one synchronisation per log interval rather than one per step
        self._recent_losses: list[tuple[int, torch.Tensor]] = []

    # -- signals ----------------------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """SIGINT (Ctrl-C) and SIGTERM (a cluster's notice before preemption) stop the run at the
        next step boundary; the checkpoint callback then saves the bundle for that step."""
        self._trainer = trainer
        self._last_step = trainer.global_step
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[signum] = signal.signal(signum, self._request_stop)

    def _request_stop(self, signum: int, frame: Any) -> None:
        if self.stop_signal is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            print(
                f"\nmypt: SIGINT again: stopping now, without saving; {self._kept().replace('is kept', 'is intact')}",
                file=sys.stderr,
                flush=True,
            )
            # the processes Lightning started stop too, as Lightning stops them on a KeyboardInterrupt
            launcher = self._trainer.strategy.launcher if self._trainer is not None else None
            if getattr(launcher, "procs", None):
                launcher.kill(signal.SIGKILL)
            raise Interrupted(announced=True)
        self.stop_signal = signum
        step = f" ({self._trainer.global_step + 1})" if self._trainer is not None else ""
        again = "; Ctrl-C again stops at once, without saving" if signum == signal.SIGINT else ""
        print(
            f"\nmypt: {signal.Signals(signum).name} received: stopping after this step{step}, then saving "
            f"{self.dirpath}{again}",
            file=sys.stderr,
            flush=True,
        )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, *args: Any
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):
            self._recent_losses.append((trainer.global_step, loss.detach()))
        if trainer.global_step == self._last_step:
            # within a gradient accumulation: stopping here would drop the micro-batches taken so far
            # (and the dropout randomness they used), and the resume would no longer be exact
            return
        self._last_step = trainer.global_step
        if trainer.log_every_n_steps == 0:
            if len(self._recent_losses) >= MAX_UNCHECKED_LOSSES:
                self.check_finite(trainer, pl_module, weights=False)
        elif is_logging_step(trainer, trainer.global_step):
            self.check_finite(trainer, pl_module, weights=False)
        stop = self.stop_signal is not None
        if trainer.world_size > 1:
            # a signal may reach one rank only: the ranks agree to stop at the same step, every
            # STOP_CHECK_EVERY steps (a collective at every step would make each step wait for the GPU)
            if trainer.global_step % STOP_CHECK_EVERY != 0:
                return
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_signal_handlers()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore_signal_handlers()  # also after an error, when on_train_end never ran

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    # -- divergence -------------------------------------------------------------------------

    def check_finite(self, trainer: pl.Trainer, pl_module: pl.LightningModule, weights: bool) -> None:
        """Raise MyptError naming the first step whose training loss was nan/inf (and, when `weights`,
        if any weight is). Every rank takes part, so all stop together instead of one waiting forever."""
        recent, self._recent_losses = self._recent_losses, []
        first_bad, value = _NO_STEP, ""
        if recent:
            losses = torch.stack([loss.float().reshape(()) for _, loss in recent]).cpu()
            bad = (~torch.isfinite(losses)).nonzero()
            if len(bad):
                index = int(bad[0])
                first_bad, value = recent[index][0], str(float(losses[index]))
        weights_bad = False
        if weights:
            params = [p.to_local() if hasattr(p, "to_local") else p for p in pl_module.parameters()]
            params = [p for p in params if p.numel()]  # a rank's shards may be empty
            # one synchronisation: a norm is nan/inf when an element is (bundle.all_finite)
            norms = [torch.linalg.vector_norm(p, dtype=torch.float32) for p in params]
            weights_bad = bool(norms) and not bool(torch.isfinite(torch.stack(norms)).all())
            weights_bad = weights_bad and not all(bundle.all_finite(p) for p in params)
        if trainer.world_size > 1:
            flags = torch.tensor([-first_bad, int(weights_bad)], device=pl_module.device)
            flags = trainer.strategy.reduce(flags, reduce_op="max")
            if -int(flags[0]) != first_bad:
                first_bad, value = -int(flags[0]), "nan or inf"
            weights_bad = bool(flags[1])
        if first_bad == _NO_STEP and not weights_bad:
            return
        if first_bad != _NO_STEP:
            what = f"the training loss became {value} at step {first_bad}"
        else:
            what = f"the weights hold nan or inf at step {trainer.global_step}"
        raise MyptError(
            f"{what}: training stopped and nothing was saved; {self._kept()}. Lower --model.learning_rate "
            "(or --trainer.gradient_clip_val) and resume from the last good bundle"
        )

    def _kept(self) -> str:
        """What a diverged run leaves in its bundle folder: the last bundle saved (or resumed)."""
        try:
            step = (
                bundle.load_training_state(self.dirpath).get("step")
                if bundle.is_bundle(self.dirpath)
                else None
            )
        except MyptError:
            step = None
        if step is None:
            return "no bundle was saved by this run"
        return f"the last good bundle, {self.dirpath} at step {step}, is kept"
