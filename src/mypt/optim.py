"""The optimizers: which parameters each one takes, and the one optimizer object Lightning steps.

Two recipes (`--model.optimizer`):

- ``muon`` (the default): torch.optim.Muon on the 2-D weight matrices inside the transformer blocks
  (attention and MLP projections), AdamW on everything else (embeddings, the output head, norms,
  biases), as in modded-nanogpt and nanochat. Muon's LR is ``muon_lr_ratio`` x learning_rate, so the
  schedule (and a new --model.learning_rate on resume) scales both. The two are stepped by
  `MuonAdamW`, one torch Optimizer: Lightning's automatic optimization takes one.
- ``adamw``: nanoGPT's AdamW on every parameter, weight decay on matrices only.

Every parameter group carries ``lr_scale``, its LR as a multiple of the schedule's LR.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import torch

from mypt.errors import MyptError

OPTIMIZERS = ("muon", "adamw")
BLOCKS = "transformer.h."  # the blocks' parameters, whose matrices Muon takes


def muon_parameter_names(model: torch.nn.Module) -> set[str]:
    """The 2-D weight matrices inside the transformer blocks (decided on whole tensors: under FSDP the
    optimizer sees flattened shards)."""
    return {name for name, p in model.named_parameters() if name.startswith(BLOCKS) and p.dim() == 2}


def check_strategy(strategy: object, optimizer: str) -> None:
    """FSDP hands the optimizer flat shards of each matrix; Muon orthogonalises whole matrices."""
    from lightning.pytorch.strategies import FSDPStrategy

    if optimizer == "muon" and isinstance(strategy, FSDPStrategy):
        raise MyptError("--model.optimizer muon cannot train under FSDP: use --model.optimizer adamw")


def check_optimizer(name: str) -> None:
    if name not in OPTIMIZERS:
        raise MyptError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


class MuonAdamW(torch.optim.Optimizer):
    """torch.optim.Muon and torch.optim.AdamW stepped as one optimizer.

    `param_groups` lists every group (Muon's first, then AdamW's) and `state` holds every
    parameter's state: they are the two inner optimizers' own, shared, so Lightning's LR setting,
    gradient clipping, loss scaler and zero_grad see every parameter, and `state_dict()` has the
    standard layout (states keyed by the parameter's position across all groups). `step(closure)`
    calls the closure once (Lightning's forward and backward), then steps both."""

    def __init__(self, muon_groups: list[dict], adamw_groups: list[dict], muon: dict, adamw: dict) -> None:
        self.muon = torch.optim.Muon(muon_groups, **muon)
        self.adamw = torch.optim.AdamW(adamw_groups, **adamw)
        self._muon_groups = len(self.muon.param_groups)
        super().__init__(self.muon.param_groups + self.adamw.param_groups, {})
        self._link()

    def _link(self) -> None:
        """Point the inner optimizers at this one's groups and state (after construction and after
        load_state_dict, which replaces both); their own __setstate__ fills in their defaults."""
        cut = self._muon_groups
        self.muon.__setstate__({"state": self.state, "param_groups": self.param_groups[:cut]})
        self.adamw.__setstate__({"state": self.state, "param_groups": self.param_groups[cut:]})

    def __getstate__(self) -> dict:
        return {
            **super().__getstate__(),
            "muon": self.muon,
            "adamw": self.adamw,
            "_muon_groups": self._muon_groups,
        }

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "muon" in self.__dict__:
            self._link()

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss


def adamw_kwargs(impl: str, device: torch.device, sharded_scaler: bool) -> dict:
    """AdamW's kernel choice (`--model.optimizer_impl`)."""
    # torch 2.13's ShardedGradScaler (FSDP with 16-mixed) hands the optimizer a found-inf flag of
    # shape (1,) once the gradients are unscaled, which fused AdamW's step cannot take
    # (pytorch/pytorch#140514): there the multi-tensor kernels step instead
    if impl == "fused" and sharded_scaler:
        raise MyptError(
            "--model.optimizer_impl fused cannot step under FSDP with 16-mixed precision (torch's sharded "
            "loss scaler and fused AdamW disagree): use auto or foreach, or bf16-mixed"
        )
    if impl == "auto":  # fused is the fastest on CUDA and, by 3-4%, on a CPU (docs/benchmarks.md)
        impl = "fused" if device.type in ("cuda", "cpu") and not sharded_scaler else "foreach"
    if impl == "fused" and "fused" in inspect.signature(torch.optim.AdamW).parameters:
        return {"fused": True}
    if impl in ("foreach", "for-loop"):
        return {"foreach": impl == "foreach"}
    return {}


def setup_optimizer(
    named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
    *,
    optimizer: str,
    learning_rate: float,
    muon_lr_ratio: float,
    momentum: float,
    weight_decay: float,
    betas: tuple[float, float],
    decayed: set[str],
    muon_names: set[str],
    adamw: dict,
) -> torch.optim.Optimizer:
    """The optimizer of a run. `decayed`: the parameters with weight decay (matrices); `muon_names`:
    those Muon takes (muon_parameter_names); `adamw`: AdamW's kernel arguments (adamw_kwargs)."""
    check_optimizer(optimizer)
    params = [(n, p) for n, p in named_parameters if p.requires_grad]
    muon = [p for n, p in params if n in muon_names] if optimizer == "muon" else []
    rest = [(n, p) for n, p in params if optimizer != "muon" or n not in muon_names]
    adamw_groups = [
        {"params": [p for n, p in rest if n in decayed], "weight_decay": weight_decay, "lr_scale": 1.0},
        {"params": [p for n, p in rest if n not in decayed], "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    if optimizer == "adamw":
        return torch.optim.AdamW(adamw_groups, lr=learning_rate, betas=betas, **adamw)
    muon_groups = [{"params": muon, "lr_scale": muon_lr_ratio}]
    return MuonAdamW(
        muon_groups,
        adamw_groups,
        muon={"lr": learning_rate * muon_lr_ratio, "weight_decay": weight_decay, "momentum": momentum},
        adamw={"lr": learning_rate, "betas": betas, **adamw},
    )


def apply_settings(
    optimizer: torch.optim.Optimizer,
    *,
    muon_lr_ratio: float,
    momentum: float,
    weight_decay: float,
    betas: tuple[float, float],
) -> None:
    """The settings given for this run, over those restored with the optimizer state (the groups of a
    loaded state are the saved ones: found by position, as setup_optimizer lays them out)."""
    optimizer = getattr(optimizer, "_optimizer", optimizer)  # unwrap a LightningOptimizer
    if isinstance(optimizer, MuonAdamW):
        for group in optimizer.muon.param_groups:
            group.update(lr_scale=muon_lr_ratio, momentum=momentum, weight_decay=weight_decay)
        adamw_groups = optimizer.adamw.param_groups
    else:
        adamw_groups = optimizer.param_groups
    decayed, others = adamw_groups
    decayed["weight_decay"] = weight_decay
    others["weight_decay"] = 0.0
    for group in adamw_groups:
        group.update(lr_scale=1.0, betas=betas)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group at the schedule's LR times its lr_scale."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def optimizer_of(state_dict: dict) -> str:
    """The recipe an optimizer state was saved by (a Muon group has a momentum and no betas)."""
    groups = state_dict.get("param_groups", [])
    return "muon" if any("momentum" in g and "betas" not in g for g in groups) else "adamw"
