"""FSDP whose checkpoints are bundles: a full, consolidated model.pt any machine can load.

Lightning's FSDPStrategy saves and loads checkpoints itself rather than through the CheckpointIO
plugin (2.6: it refuses to save into an existing folder and reads only a single file), so the
bundle plugin would never be called. This subclass gathers the full model and optimizer state on
rank zero, as Lightning's `state_dict_type="full"` does, and hands them to `BundleCheckpointIO`;
loading reads the bundle on every rank and scatters it back into the shards. The bundle is the same
format a single process or DDP writes, so a run can move between them in either direction.

`--trainer.strategy fsdp` selects it; `--trainer.strategy mypt.fsdp.BundleFSDPStrategy` with
`--trainer.strategy.init_args.*` passes FSDP's own options (sharding_strategy, cpu_offload,
auto_wrap_policy, activation_checkpointing_policy).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.strategies.fsdp import _setup_activation_checkpointing
from lightning.pytorch.strategies import FSDPStrategy, Strategy
from lightning.pytorch.trainer.states import TrainerFn
from torch.distributed.fsdp import (
    FullOptimStateDictConfig,
    FullStateDictConfig,
    OptimStateKeyType,
    StateDictType,
)
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

from mypt.errors import MyptError
from mypt.model import GPT, Block

# one device: NO_SHARD, whose state dict is already whole; torch says so at every save
warnings.filterwarnings("ignore", message=r".*NO_SHARD.*full_state_dict will be returned")

# Each transformer Block is its own FSDP unit: its whole weights are gathered for its forward and
# backward only, so a rank's peak holds its shards plus about one Block gathered. With the whole
# model as one unit (no policy) every weight is gathered at once and FSDP saves little memory.
WRAP_EACH_BLOCK = {"auto_wrap_policy": {Block}}
ALIASES = {"fsdp": WRAP_EACH_BLOCK, "fsdp_cpu_offload": {**WRAP_EACH_BLOCK, "cpu_offload": True}}


class BundleFSDPStrategy(FSDPStrategy):
    """Lightning's FSDP, saving and resuming through the bundle."""

    def check(self) -> None:
        """Refuse settings the bundle cannot hold, before any process starts training."""
        if self._state_dict_type != "full":
            raise MyptError(
                "FSDP's state_dict_type must be 'full': the bundle holds one consolidated model.pt"
            )
        if (
            self.cpu_offload is not None
            and self.cpu_offload.offload_params
            and self.root_device.type == "cpu"
        ):
            raise MyptError("FSDP's cpu_offload moves weights from a GPU to CPU memory: it needs a GPU")

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """On CPU, name the device: torch's FSDP runs there (gloo) only when told to, and Lightning
        passes no device for a CPU, which FSDP refuses. GPUs take Lightning's own path."""
        if self.root_device.type != "cpu" or any(isinstance(m, FSDP) for m in model.modules()):
            return super()._setup_model(model)
        model = FSDP(
            module=model,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=self.root_device,
            **self.kwargs,
        )
        _setup_activation_checkpointing(model, self._activation_checkpointing_kwargs)
        return model

    def lightning_module_state_dict(self) -> dict[str, Any]:
        """The full model state on rank zero (empty on the other ranks)."""
        assert self.model is not None
        with self._full_state_dict(rank0_only=True):
            return self.model.state_dict()

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The full optimizer state on rank zero, keyed like a plain `optimizer.state_dict()` (by
        position in the optimizer's parameter groups), so optimizer.pt is the same for every strategy."""
        optimizer = getattr(optimizer, "_optimizer", optimizer)  # unwrap a LightningOptimizer
        with self._full_state_dict(rank0_only=True):
            state = FSDP.optim_state_dict(self.model, optimizer)
        if not self.is_global_zero:
            return state  # empty: only rank zero holds the gathered state
        return FSDP.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_ID, self.model, optim=optimizer)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath, storage_options: Any | None = None
    ) -> None:
        # the state was gathered on rank zero by lightning_module_state_dict / optimizer_state
        # ("full" state dict); rank zero writes it through the CheckpointIO plugin like any strategy
        Strategy.save_checkpoint(self, checkpoint, filepath, storage_options)

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        path = Path(self.broadcast(str(checkpoint_path)))  # every rank reads the bundle rank zero names
        checkpoint = self.checkpoint_io.load_checkpoint(path)
        assert self.model is not None and self.lightning_module is not None
        with self._full_state_dict(rank0_only=False):
            self.model.load_state_dict(
                checkpoint.pop("state_dict"), strict=self.lightning_module.strict_loading
            )
            optimizer_states = checkpoint.get("optimizer_states")
            if optimizer_states is None or self.lightning_module.trainer.state.fn != TrainerFn.FITTING:
                return checkpoint
            if len(optimizer_states) != len(self.optimizers):
                raise MyptError(
                    f"{path} holds {len(optimizer_states)} optimizer states, this run has {len(self.optimizers)}"
                )
            for optimizer, state in zip(self.optimizers, optimizer_states, strict=True):
                # optimizer.pt holds the standard (parameter-index) layout; FSDP loads by name
                by_name = FSDP.rekey_optim_state_dict(
                    state, OptimStateKeyType.PARAM_NAME, self.model, optim=optimizer
                )
                optimizer.load_state_dict(FSDP.optim_state_dict_to_load(self.model, optimizer, by_name))
        return checkpoint

    def _full_state_dict(self, rank0_only: bool):
        """FSDP's context for whole (unsharded) tensors. Gathered state goes to CPU memory, except when
        it already is there: "offloading" CPU shards crashes torch 2.13 (a segfault in clone)."""
        offload = self.root_device.type != "cpu"
        return FSDP.state_dict_type(
            self.model,
            StateDictType.FULL_STATE_DICT,
            FullStateDictConfig(offload_to_cpu=offload, rank0_only=rank0_only),
            FullOptimStateDictConfig(offload_to_cpu=offload, rank0_only=rank0_only),
        )

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        """Clip by the norm over all shards (torch.nn.utils.clip_grad_norm_ would see one shard only);
        returns that norm, taken before clipping. A collective: every rank calls it."""
        assert self.model is not None
        return self.model.clip_grad_norm_(max_norm)


@contextmanager
def whole_model(trainer: pl.Trainer, model: GPT) -> Iterator[GPT | None]:
    """`model` with its whole weights, e.g. to sample text between training steps. Under FSDP every
    rank must enter (the weights are gathered from all of them) and rank zero gets a plain copy; the
    other ranks get None. (FSDP's own summon_full_params cannot run nested FSDP units' forward.)"""
    if not isinstance(trainer.strategy, BundleFSDPStrategy):
        yield model
        return
    state = trainer.strategy.lightning_module_state_dict()  # whole on rank zero, empty elsewhere
    if not trainer.is_global_zero:
        yield None
        return
    copy = GPT(model.config)
    copy.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    yield copy.to(copy_device(trainer.strategy.root_device, copy))


def copy_device(device: torch.device, copy: torch.nn.Module) -> torch.device:
    """Where a whole copy of a sharded model goes: rank zero's GPU while it has room for the copy twice
    over (its weights, and the sampling's working memory), else the CPU: FSDP is for models near the
    GPU's limit, and a copy there would run it out of memory (sampling on the CPU is slower, no worse)."""
    if device.type != "cuda":
        return device
    free, _ = torch.cuda.mem_get_info(device)
    needed = sum(t.numel() * t.element_size() for t in copy.state_dict().values())
    return device if free > 2 * needed else torch.device("cpu")
