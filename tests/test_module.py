"""GPTModule's hooks that a CPU can check without a Trainer: clipping under a loss scaler, the
optimizer choice, TF32 on CUDA."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator
from lightning.pytorch.plugins.precision import FSDPPrecision, MixedPrecision
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

from mypt.errors import MyptError
from mypt.fsdp import BundleFSDPStrategy
from mypt.module import GPTModule
from mypt.precision import use_tensor_cores

SMALL = {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 8, "vocab_size": 16}
ADAMW = {**SMALL, "optimizer": "adamw"}  # nanoGPT's recipe: fused AdamW on every parameter
CLIP = 0.05  # far below the gradient's norm (about 1), so clipping acts


def attach(module: GPTModule, strategy, precision) -> None:
    """What the hooks read of a Trainer: a logging step, the strategy and the precision plugin."""
    module.trainer = SimpleNamespace(
        strategy=strategy, precision_plugin=precision, log_every_n_steps=1, global_step=0
    )


def total_norm(grads) -> float:
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


@pytest.fixture
def one_rank_group(tmp_path):
    """A process group of one (gloo): what FSDP needs to wrap a model in this process."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("strategy", ["single", "fsdp"])
def test_clipping_unscales_first_whenever_a_scaler_exists(strategy, request, monkeypatch):
    """16-mixed with fused AdamW: Lightning leaves the gradients scaled (fused AdamW unscales in its
    step), under FSDP too, whose precision plugin is not a MixedPrecision. The hook must clip and log
    the norm of the true gradient, not of the gradient times the loss scale (65536)."""
    torch.manual_seed(0)
    module = GPTModule(**ADAMW)
    x = torch.randint(0, SMALL["vocab_size"], (4, SMALL["block_size"]))
    reference = copy.deepcopy(module.model)
    reference(x, x)[1].backward()
    true_norm = float(torch.nn.utils.clip_grad_norm_(reference.parameters(), CLIP))

    scaler = torch.amp.GradScaler("cpu")  # a real loss scaler: on the CPU it scales by 65536 too
    if strategy == "fsdp":
        request.getfixturevalue("one_rank_group")
        plugin, lightning_strategy = FSDPPrecision("16-mixed"), BundleFSDPStrategy()
        plugin.scaler = scaler  # Lightning 2.6 refuses a scaler given to FSDPPrecision's __init__
        lightning_strategy.model = FSDP(
            module, device_id=torch.device("cpu"), use_orig_params=True
        )  # as Lightning
    else:
        plugin, lightning_strategy = MixedPrecision("16-mixed", "cpu", scaler=scaler), None
    attach(module, lightning_strategy, plugin)
    optimizer = module.configure_optimizers()
    assert optimizer.defaults["fused"]  # the optimizer that unscales inside its step
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kwargs: logged.update({name: float(value)}))

    scaler.scale(module(x, x)[1]).backward()
    assert total_norm([p.grad for p in module.parameters()]) > 1000 * true_norm  # scaled
    module.configure_gradient_clipping(optimizer, CLIP, "norm")

    assert logged["grad_norm"] == pytest.approx(true_norm, rel=1e-4)
    assert total_norm([p.grad for p in module.parameters()]) == pytest.approx(CLIP, rel=1e-4)
    if strategy == "single":  # parameter by parameter, the reference's clipped gradient
        for mine, theirs in zip(module.model.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-4, atol=1e-7)
    before = [p.detach().clone() for p in module.parameters()]
    scaler.step(optimizer)  # the step knows the gradients are unscaled already: it applies them once
    scaler.update()
    moved = max(float((p - b).abs().max()) for p, b in zip(module.parameters(), before, strict=True))
    assert 0 < moved < 2 * module.hparams.learning_rate  # an Adam step of about lr, not a skipped one


def test_fsdp_with_16_mixed_steps_with_multi_tensor_adamw():
    """torch's sharded loss scaler gives fused AdamW a found-inf flag it cannot take once gradients are
    unscaled; under it "auto" picks foreach, and fused asked for by name stops before training."""
    sharded = FSDPPrecision("16-mixed")
    assert isinstance(sharded.scaler, ShardedGradScaler)  # what Lightning gives FSDP with 16-mixed
    module = GPTModule(**ADAMW)
    attach(module, BundleFSDPStrategy(), sharded)
    optimizer = module.configure_optimizers()
    assert not optimizer.defaults["fused"] and optimizer.defaults["foreach"]
    module = GPTModule(**ADAMW, optimizer_impl="fused")
    attach(module, BundleFSDPStrategy(), sharded)
    with pytest.raises(MyptError, match="fused cannot step under FSDP with 16-mixed"):
        module.configure_optimizers()
    module = GPTModule(**ADAMW)
    attach(module, BundleFSDPStrategy(), FSDPPrecision("bf16-mixed"))
    assert module.configure_optimizers().defaults["fused"]  # no scaler: fused as usual


def test_flops_per_token_is_counted_once_on_the_whole_model():
    module = GPTModule(**SMALL)
    assert module.flops_per_token == module.model.flops_per_token() > 0
    with torch.no_grad():  # what FSDP does to each rank's parameters: flat, local shards
        for p in module.model.parameters():
            p.data = p.data.flatten()[: p.numel() // 2]
    assert module.model.flops_per_token() < module.flops_per_token  # a recount would be wrong


def test_tf32_on_cuda_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", calls.append)
    use_tensor_cores(CPUAccelerator())
    assert calls == []
    use_tensor_cores(CUDAAccelerator())
    assert calls == ["high"]


def test_clipping_by_value_also_acts_on_logging_steps(monkeypatch):
    """`--trainer.gradient_clip_algorithm value`: every gradient entry is clamped, on the steps that log
    grad_norm (the norm measured before clipping) as on the others."""
    torch.manual_seed(0)
    module = GPTModule(**SMALL)
    attach(module, None, MixedPrecision("bf16-mixed", "cpu"))  # log_every_n_steps 1: a logging step
    optimizer = module.configure_optimizers()
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kwargs: logged.update({name: float(value)}))
    x = torch.randint(0, SMALL["vocab_size"], (4, SMALL["block_size"]))
    module(x, x)[1].backward()
    unclipped = total_norm([p.grad for p in module.parameters()])
    module.configure_gradient_clipping(optimizer, 1e-3, "value")
    assert logged["grad_norm"] == pytest.approx(unclipped, rel=1e-4)
    assert max(float(p.grad.abs().max()) for p in module.parameters()) == pytest.approx(1e-3)


def test_the_modules_architecture_defaults_are_gptconfigs():
    """`--model.*` flags are GPTModule's arguments and config.json is GPTConfig: a new model built from
    either gets the same architecture (the defaults are written in both places, LightningCLI reads the
    signature)."""
    import inspect

    from mypt.config import ARCHITECTURE_KEYS, GPTConfig

    signature = inspect.signature(GPTModule.__init__).parameters
    assert {k: signature[k].default for k in ARCHITECTURE_KEYS} == GPTConfig().to_dict()
