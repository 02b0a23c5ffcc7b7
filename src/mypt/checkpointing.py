"""Lightning's checkpoint, split into the bundle a person can read.

`BundleCheckpointIO` is the plugin that turns Lightning's one checkpoint dict into the bundle's files
and back, so `trainer.save_checkpoint(...)` and `trainer.fit(ckpt_path=...)` keep using Lightning's
own save/restore machinery (loops, optimizer, callbacks). `BundleCheckpoint` is the callback that
decides when to save and adds what the bundle records beyond Lightning's state: config.json,
tokenizer.json, the readable training_state.json and the RNG states an exact resume needs. What
stops a run (signals, nan/inf, ranks that disagree, refused strategies) is mypt.guards.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

from mypt import bundle
from mypt.config import ARCHITECTURE_KEYS
from mypt.errors import MyptError
from mypt.guards import RunGuard, check_ranks_agree, check_strategy

# Lightning checkpoint entries that the bundle keeps as JSON, or not at all
_NOT_IN_OPTIMIZER_FILE = (
    "state_dict", "mypt", "hyper_parameters", "hparams_name", "datamodule_hyper_parameters",
    "datamodule_hparams_name",
)  # fmt: skip


class BundleCheckpointIO(CheckpointIO):
    """Saves a Lightning checkpoint as a bundle folder and loads one back."""

    def __init__(self) -> None:
        # with several ranks, a failed write is kept here rather than raised, until every rank has
        # left Lightning's barrier and can learn of it (see BundleCheckpoint.save)
        self.defer_errors = False
        self.deferred_error: Exception | None = None
        # set by BundleCheckpoint.setup: validate, test and predict read the weights alone (a best
        # model, an imported model or a bundle with a damaged optimizer.pt evaluates like any other)
        self.evaluating = False

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        try:
            self._write(checkpoint, path)
        except Exception as e:
            if not self.defer_errors:
                raise
            self.deferred_error = e

    def _write(self, checkpoint: dict[str, Any], path) -> None:
        parts = checkpoint["mypt"]
        model_state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
        resume_state = {k: v for k, v in checkpoint.items() if k not in _NOT_IN_OPTIMIZER_FILE}
        bundle.write_bundle(
            path,
            model_state=model_state,
            config=parts["config"],
            tokenizer=parts["tokenizer"],
            training_state=parts["training_state"],
            optimizer_state=resume_state,
            best=parts.get("new_best"),
        )

    def load_checkpoint(
        self, path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict:
        path = bundle.resolve_bundle(path)
        if self.evaluating or (path / bundle.BEST_FILE).is_file():
            return self._load_weights_only(path)
        bundle.check_resumable(path)
        config = bundle.load_config(path)
        checkpoint = bundle.load_optimizer_state(path, map_location or "cpu")
        model_state = bundle.build_model(path, config).state_dict()  # checks shapes against config.json
        checkpoint["state_dict"] = {f"model.{k}": v for k, v in model_state.items()}
        checkpoint["mypt"] = {
            "config": config,
            "tokenizer": bundle.read_json(path / bundle.TOKENIZER_FILE),
            "training_state": bundle.load_training_state(path, required=True),
            "best": bundle.read_best(path, warn=True),
        }
        return checkpoint

    @staticmethod
    def _load_weights_only(path: Path) -> dict:
        bundle.check_weights(path)
        config = bundle.load_config(path)
        model_state = bundle.build_model(path, config).state_dict()
        step = bundle.weights_state(path).get("step") or 0
        return {
            "state_dict": {f"model.{k}": v for k, v in model_state.items()},
            "global_step": step,
            "pytorch-lightning_version": pl.__version__,
            "mypt": {"config": config, "tokenizer": bundle.read_json(path / bundle.TOKENIZER_FILE)},
        }

    def remove_checkpoint(self, path) -> None:
        shutil.rmtree(path, ignore_errors=True)


def seed_rank(seed: int, rank: int) -> None:
    """Seed this process's generators with seed + rank (as nanoGPT does), so that data-parallel ranks
    draw different dropout masks. Called once the model exists: every rank built the same initial
    weights from the run's seed."""
    torch.manual_seed(seed + rank)  # every CUDA device's generator too
    np.random.seed((seed + rank) % 2**32)
    random.seed(seed + rank)


def capture_rng(device: torch.device | None = None) -> dict:
    """This process's RNG states, as tensors and plain containers (safe for weights_only loading):
    the CPU generators, and the generator of the CUDA device it trains on."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }  # fmt: skip
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict, device: torch.device | None = None) -> None:
    """Put back a state from capture_rng; its CUDA state goes to the device this process trains on
    now, which may be another index than the one it was saved from."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if isinstance(cuda, list):  # older bundles: every device's generator, as rank zero saw them
        cuda = cuda[device.index or 0] if device is not None and (device.index or 0) < len(cuda) else None
    if cuda is not None and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda.cpu(), device)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class BundleCheckpoint(Callback):
    def __init__(
        self,
        dirpath: str | os.PathLike,
        command_line: list[str] | None = None,
        resume_step: int | None = None,
        guard: RunGuard | None = None,
        keep_best: bool = True,
        precision_choice: dict | None = None,
    ) -> None:
        """Writes the bundle at every validation and at the end of training, and keeps the weights
        with the lowest val loss so far as the bundle's best model.

        Args:
            dirpath: The bundle folder, ``checkpoints/<model_name>``.
            command_line: The arguments this run was started with, recorded in the run's history.
            resume_step: The step of the bundle this process resumes from (None: a new model); every
                rank must name the same one.
            guard: The run's RunGuard (register it as a callback before this one); it checks the
                weights for nan/inf before every save. By default one of its own, used for that check.
            keep_best: Keep the best model (``<dirpath>/best``); without it a best model already
                there is left as it is.
            precision_choice: How precision and compile were chosen (mypt.precision.SpeedChoice.record);
                None: both as given to the Trainer and the module.
        """
        self.dirpath = Path(dirpath)
        self.resume_step = resume_step
        self.keep_best = keep_best
        self.best: dict | None = None  # best.json of the best model so far (a resume continues it)
        self._new_best: dict | None = None  # set when this validation improved on it, until saved
        self.precision_choice = precision_choice
        self.command_line = list(command_line) if command_line is not None else list(sys.argv[1:])
        self.saved: dict | None = None  # the bundle this run resumed from (its JSON parts)
        self.start_step = 0
        self.started_at = _now()
        self.last_saved_step: int | None = None
        self.last_val_loss: float | None = None
        self.last_val_bpb: float | None = None
        self.guard = guard if guard is not None else RunGuard(self.dirpath)
        self._device: torch.device | None = None  # this rank's device, rank and world size (setup)
        self._rank, self._world_size = 0, 1

    # -- Lightning state --------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_strategy(trainer.strategy)
        if not isinstance(trainer.strategy.checkpoint_io, BundleCheckpointIO):
            trainer.strategy.checkpoint_io = BundleCheckpointIO()
        trainer.strategy.checkpoint_io.evaluating = stage != "fit"  # before Lightning restores ckpt_path
        self._device, self._rank = trainer.strategy.root_device, trainer.global_rank
        self._world_size = trainer.world_size
        if stage == "fit" and "PL_GLOBAL_SEED" in os.environ:
            seed_rank(int(os.environ["PL_GLOBAL_SEED"]), trainer.global_rank)  # a resume then restores
        if stage == "fit" and trainer.world_size > 1 and torch.distributed.is_initialized():
            check_ranks_agree(trainer, self.resume_step, self.dirpath.parent)

    def state_dict(self) -> dict:
        """Every rank's own RNG states, gathered into the checkpoint rank zero writes (every rank
        builds the checkpoint, so the gathering is a collective they all reach)."""
        own = capture_rng(self._device)
        if self._world_size == 1 or not torch.distributed.is_initialized():
            return {"rng_per_rank": [own]}
        states: list[dict | None] = [None] * self._world_size
        torch.distributed.all_gather_object(states, own)
        return {"rng_per_rank": states}

    def load_state_dict(self, state_dict: dict) -> None:
        """Each rank takes back its own states. A rank the saved run did not have (more processes now)
        keeps the generators seed_rank gave it; bundles from before per-rank states hold rank zero's
        states alone, under "rng"."""
        states = state_dict.get("rng_per_rank", [state_dict["rng"]] if "rng" in state_dict else [])
        if self._rank < len(states):
            restore_rng(states[self._rank], self._device)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        self.saved = checkpoint.get("mypt")
        self.best = (self.saved or {}).get("best")
        self.start_step = int(checkpoint.get("global_step", 0))
        self.last_saved_step = self.start_step

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint["mypt"] = self.bundle_parts(trainer, pl_module)

    # -- when to save -----------------------------------------------------------------------

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        last_step = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step + 1
        if last_step and (batch_idx + 1) % trainer.accumulate_grad_batches == 0:
            # the batch that completes the last step: a run asked to stop validates after it, so the
            # final bundle carries the val loss of its own step whatever the val_check_interval (and
            # the step's metrics are logged)
            trainer.should_stop = True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        loss = trainer.callback_metrics.get("val/loss")
        if loss is not None:
            self.last_val_loss = float(loss)
            bpb = trainer.callback_metrics.get("val/bpb")
            self.last_val_bpb = None if bpb is None else float(bpb)
            if self.keep_best and self._improves(self.last_val_loss):
                self._new_best = self._best_record(trainer)
        self.save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.last_saved_step != trainer.global_step:
            self.save(trainer)

    def save(self, trainer: pl.Trainer) -> None:
        """Write the bundle for this step, unless the run has diverged: a non-finite loss or weight
        stops the run with an error and leaves the last good bundle untouched."""
        self.guard.check_finite(trainer, trainer.lightning_module, weights=True)
        if self.guard.stop_signal is not None and trainer.is_global_zero:
            print(
                f"mypt: saving {self.dirpath} at step {trainer.global_step}...", file=sys.stderr, flush=True
            )
        if trainer.world_size == 1:
            trainer.save_checkpoint(self.dirpath, weights_only=False)
        else:  # rank zero writes: if that fails (a full disk), every rank stops with its reason
            io = trainer.strategy.checkpoint_io
            io.defer_errors, io.deferred_error = True, None
            try:
                trainer.save_checkpoint(self.dirpath, weights_only=False)
            finally:
                io.defer_errors = False
            error, io.deferred_error = io.deferred_error, None
            if trainer.strategy.reduce_boolean_decision(error is not None, all=False):
                message = trainer.strategy.broadcast(str(error))  # rank zero's reason, on every rank
                if error is not None and not isinstance(error, MyptError):
                    raise error  # not a failed write but a bug: its traceback
                raise MyptError(message)
        self.last_saved_step = trainer.global_step
        if self._new_best is not None:
            self.best, self._new_best = self._new_best, None

    # -- why the run stopped ----------------------------------------------------------------

    @staticmethod
    def early_stop_why(trainer: pl.Trainer) -> str | None:
        """Why early stopping ended the run, in words (None when it did not)."""
        stopper = trainer.early_stopping_callback
        if stopper is None or stopper.stopping_reason == EarlyStoppingReason.NOT_STOPPED:
            return None
        if stopper.stopping_reason != EarlyStoppingReason.PATIENCE_EXHAUSTED:
            return stopper.stopping_reason_message  # a non-finite val loss, or a threshold
        by = f" by {abs(stopper.min_delta):g}" if stopper.min_delta else ""
        return (
            f"{stopper.monitor} has not improved{by} for {stopper.wait_count} validations "
            f"(patience {stopper.patience})"
        )

    def stop_reason(self, trainer: pl.Trainer) -> str | None:
        """Why the run ends at this step (None while it goes on), for the run's history."""
        if self.guard.stop_signal is not None:
            return signal.Signals(self.guard.stop_signal).name
        why = self.early_stop_why(trainer)
        if why is not None:
            return f"early stopping: {why}"
        if trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step:
            return f"max_steps {trainer.max_steps} reached"
        return None

    # -- the best model ---------------------------------------------------------------------

    def _improves(self, loss: float) -> bool:
        return math.isfinite(loss) and (self.best is None or loss < self.best["val_loss"])

    def _best_record(self, trainer: pl.Trainer) -> dict:
        """best.json: which weights these are and how good, and the run (history entry) they came from."""
        runs = len(((self.saved or {}).get("training_state") or {}).get("history", []))
        return {
            "step": trainer.global_step,
            "val_loss": self.last_val_loss,
            "val_bpb": self.last_val_bpb,
            "metric": "val/loss",
            "run": runs + 1,
            "run_started_at": self.started_at,
            "model_name": self.dirpath.name,
            "saved_at": _now(),
            "format_version": bundle.FORMAT_VERSION,
        }

    # -- what the bundle records ------------------------------------------------------------

    def bundle_parts(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        dm = trainer.datamodule
        hparams = dict(pl_module.hparams)
        if self.saved is not None:
            config = self.saved["config"]  # written when the model was created, never changed after
        else:
            config = {"batch_size": dm.batch_size, **{k: hparams[k] for k in ARCHITECTURE_KEYS}}
            config["device"] = pl_module.device.type
            config = {k: config[k] for k in bundle.CONFIG_KEYS}
        previous = (self.saved or {}).get("training_state", {})
        history = list(previous.get("history", []))
        training_config = {
            "max_iters": trainer.max_steps,
            "eval_interval": trainer.val_check_interval,
            "eval_iters": trainer.limit_val_batches,
            "learning_rate": hparams["learning_rate"],
            "start_step": self.start_step,
        }
        settings = {
            "model": {
                k: v
                for k, v in hparams.items()
                if k not in ARCHITECTURE_KEYS and k != "init_from" and not k.startswith("_")
            },
            "trainer": {
                "max_steps": trainer.max_steps,
                "val_check_interval": trainer.val_check_interval,
                "limit_val_batches": trainer.limit_val_batches,
                "gradient_clip_val": trainer.gradient_clip_val,
                "accumulate_grad_batches": trainer.accumulate_grad_batches,
                "precision": str(trainer.precision),
            },
        }
        data = dm.settings()
        history.append(
            {
                "run": len(history) + 1,
                "start_step": self.start_step,
                "end_step": trainer.global_step,
                "started_at": self.started_at,
                "ended_at": _now(),
                "settings": {**training_config, **settings["model"], **settings["trainer"], "data": data},
                "overrides": self.command_line,
                "val_loss": self.last_val_loss,
                "val_bpb": self.last_val_bpb,
                "stopped": self.stop_reason(trainer),
                "device": pl_module.device.type,
                "world_size": trainer.world_size,
                "strategy": type(trainer.strategy).__name__,
            }
        )
        init_from = previous.get("init_from")
        if init_from is None and hparams.get("init_from"):
            # its step and, for weights that came from Hugging Face, their origin (a best/ folder
            # has neither in a training_state.json of its own)
            init_from = bundle.lineage_record(bundle.resolve_bundle(hparams["init_from"]))
        training_state = {
            "step": trainer.global_step,
            "optimizer_file": bundle.OPTIMIZER_FILE,
            "training_config": training_config,
            "format_version": bundle.FORMAT_VERSION,
            "model_name": self.dirpath.name,
            "val_loss": self.last_val_loss,
            "val_bpb": self.last_val_bpb,
            "seed": int(os.environ.get("PL_GLOBAL_SEED", data["seed"])),
            "data": data,
            "init_from": init_from,
            "settings": settings,
            "precision_choice": self.precision_choice
            or {
                "precision": str(trainer.precision),
                "compile": bool(hparams.get("compile")),
                "device": pl_module.device.type,
                "automatic": [],
                "reason": "",
            },
            "lr_schedule": pl_module.lr_segments,
            "history": history,
            "created_at": previous.get("created_at", self.started_at),
            "updated_at": _now(),
        }
        return {
            "config": config,
            "tokenizer": dm.tokenizer.to_dict(),
            "training_state": training_state,
            "new_best": self._new_best,
        }
