"""mypt.optim: Muon on the blocks' matrices and AdamW on the rest, stepped as one optimizer."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from mypt.errors import MyptError
from mypt.fsdp import BundleFSDPStrategy
from mypt.module import GPTModule
from mypt.optim import MuonAdamW, optimizer_of, set_lr
from tests.conftest import TINY

SMALL = {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 8, "vocab_size": 16}


def batch(seed: int) -> torch.Tensor:
    return torch.randint(
        0, SMALL["vocab_size"], (4, SMALL["block_size"]), generator=torch.Generator().manual_seed(seed)
    )


def train(module: GPTModule, optimizer: torch.optim.Optimizer, steps: range) -> None:
    def closure(x: torch.Tensor):
        optimizer.zero_grad()
        loss = module(x, x)[1]
        loss.backward()
        return loss

    for step in steps:
        optimizer.step(functools.partial(closure, batch(step)))


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    module = GPTModule(**SMALL)
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, MuonAdamW)
    names = {id(p): n for n, p in module.model.named_parameters()}
    muon = {names[id(p)] for g in optimizer.muon.param_groups for p in g["params"]}
    adamw = {names[id(p)] for g in optimizer.adamw.param_groups for p in g["params"]}
    assert muon == {
        n for n, p in module.model.named_parameters() if n.startswith("transformer.h.") and p.dim() == 2
    }
    assert muon and all(".attn." in n or ".mlp." in n for n in muon)
    assert not muon & adamw and muon | adamw == set(names.values())  # every parameter, once
    # what Lightning, clipping and the loss scaler see: every group, the inner optimizers' own
    assert optimizer.param_groups == optimizer.muon.param_groups + optimizer.adamw.param_groups
    assert all(
        a is b
        for a, b in zip(
            optimizer.param_groups, optimizer.muon.param_groups + optimizer.adamw.param_groups, strict=True
        )
    )
    set_lr(optimizer, 1e-3)
    assert [g["lr"] for g in optimizer.param_groups] == [
        pytest.approx(1e-3 * module.hparams.muon_lr_ratio),
        1e-3,
        1e-3,
    ]
    adamw_only = GPTModule(**SMALL, optimizer="adamw").configure_optimizers()
    assert type(adamw_only) is torch.optim.AdamW and len(adamw_only.param_groups) == 2


def test_step_calls_the_closure_once_and_moves_every_parameter():
    torch.manual_seed(0)
    module = GPTModule(**SMALL)
    optimizer = module.configure_optimizers()
    calls = []
    x = batch(0)

    def closure():
        calls.append(1)
        loss = module(x, x)[1]
        loss.backward()
        return loss

    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    loss = optimizer.step(closure)
    assert len(calls) == 1 and loss.requires_grad
    moved = {n for n, p in module.model.named_parameters() if not torch.equal(p, before[n])}
    with_grad = {n for n, p in module.model.named_parameters() if p.grad is not None and p.grad.any()}
    assert with_grad and moved >= with_grad  # (weight decay moves a matrix whose gradient is still 0 too)
    names = {id(p): n for n, p in module.model.named_parameters()}
    for inner in (optimizer.muon, optimizer.adamw):  # both stepped
        assert moved & {names[id(p)] for g in inner.param_groups for p in g["params"]}


def test_state_dict_round_trips_both_optimizers_exactly():
    """The bundle's optimizer.pt: a fresh optimizer that loads the state steps exactly as the one saved."""
    torch.manual_seed(0)
    a = GPTModule(**SMALL)
    opt_a = a.configure_optimizers()
    train(a, opt_a, range(3))
    saved = copy.deepcopy(opt_a.state_dict())
    assert optimizer_of(saved) == "muon"  # what a resume checks the run's --model.optimizer against
    assert optimizer_of(GPTModule(**SMALL, optimizer="adamw").configure_optimizers().state_dict()) == "adamw"
    assert sorted(saved["state"]) == list(range(sum(len(g["params"]) for g in opt_a.param_groups)))
    b = copy.deepcopy(a)
    opt_b = b.configure_optimizers()
    opt_b.load_state_dict(saved)
    # the inner optimizers step with the loaded state, not with a copy left behind
    assert opt_b.muon.state is opt_b.state and opt_b.adamw.state is opt_b.state
    assert opt_b.muon.param_groups[0] is opt_b.param_groups[0]
    train(a, opt_a, range(3, 6))
    train(b, opt_b, range(3, 6))
    for (name, pa), pb in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb), name


def test_a_loss_scaler_unscales_and_skips_every_group():
    """16-mixed: GradScaler's unscale_ and its skipped step on an overflow act on both inner optimizers."""
    torch.manual_seed(0)
    module = GPTModule(**SMALL)
    optimizer = module.configure_optimizers()
    x = batch(0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(module(x, x)[1]).backward()
    scaled = [None if p.grad is None else p.grad.clone() for p in module.parameters()]
    scaler.unscale_(optimizer)
    for p, g in zip(module.parameters(), scaled, strict=True):
        if g is not None:
            torch.testing.assert_close(p.grad, g / 1024.0)

    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    optimizer.zero_grad()
    scaler.scale(module(x, x)[1]).backward()
    module.model.lm_head.weight.grad[0, 0] = float("inf")  # an overflow in an AdamW parameter
    before = [p.detach().clone() for p in module.parameters()]
    scaler.step(optimizer)  # skipped whole: Muon's matrices do not move either
    scaler.update()
    assert all(torch.equal(p, b) for p, b in zip(module.parameters(), before, strict=True))
    assert scaler.get_scale() == 512.0


def test_muon_under_fsdp_is_refused():
    module = GPTModule(**SMALL)
    module.trainer = type("T", (), {"strategy": BundleFSDPStrategy(), "precision_plugin": None})()
    with pytest.raises(MyptError, match="muon cannot train under FSDP: use --model.optimizer adamw"):
        module.configure_optimizers()
    adamw = GPTModule(**SMALL, optimizer="adamw")
    adamw.trainer = module.trainer
    assert isinstance(adamw.configure_optimizers(), torch.optim.AdamW)


def test_bad_optimizer_settings_are_refused(mypt, text_file):
    r = mypt(
        "fit", *TINY, "--data.input_file", text_file, "--trainer.max_steps", "2", "--model.optimizer", "sgd"
    )
    assert r.code != 0 and "mypt: error: optimizer must be one of muon, adamw, got 'sgd'" in r.err
    assert "Traceback" not in r.err


def test_resuming_with_another_optimizer_is_refused(mypt, text_file):
    r = mypt(
        "fit",
        *TINY,
        "--data.input_file",
        text_file,
        "--trainer.max_steps",
        "10",
        "--model.optimizer",
        "adamw",
    )
    assert r.code == 0, r
    saved = (text_file.parent / "checkpoints" / "dante" / "optimizer.pt").read_bytes()
    r = mypt(
        "fit", "--ckpt_path", "checkpoints/dante", "--trainer.max_steps", "20", "--model.optimizer", "muon"
    )
    assert r.code != 0 and r.err.count("mypt: error:") == 1, r
    assert "trained with adamw" in r.err and "--model.optimizer adamw" in r.err
    assert (text_file.parent / "checkpoints" / "dante" / "optimizer.pt").read_bytes() == saved
    r = mypt("fit", "--ckpt_path", "checkpoints/dante", "--trainer.max_steps", "20")  # the bundle's: adamw
    assert r.code == 0, r


def test_muon_under_fsdp_is_refused_before_any_rank_starts(mypt, text_file):
    r = mypt(
        "fit", *TINY, "--data.input_file", text_file, "--trainer.max_steps", "2", "--trainer.strategy", "fsdp",
        "--trainer.devices", "2", "--trainer.accelerator", "cpu",
    )  # fmt: skip
    assert r.code != 0 and r.err.count("mypt: error:") == 1 and "Traceback" not in r.err, r
    assert "muon cannot train under FSDP: use --model.optimizer adamw" in r.err
    assert not (text_file.parent / "checkpoints").exists()
