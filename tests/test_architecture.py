"""The architecture options: each trains, RoPE works with the KV cache, the parameter and FLOP
counts follow every option, bad values are refused through `mypt fit`, and a bundle written before
the options existed (nanoGPT's architecture) loads and generates exactly as it did."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY

from mypt import bundle, load_model
from mypt.config import ARCHITECTURE_KEYS, NANOGPT, GPTConfig
from mypt.model import (
    GPT,
    RMSNorm,
    _QKNormRotaryFunction,
    _RMSNormFunction,
    _SwiGLUFunction,
    apply_rope,
    rope_tables,
)

DATA = Path(__file__).parent / "data"
SIZES = {"block_size": 16, "vocab_size": 50, "n_layer": 2, "n_head": 2, "n_embd": 32}
# one option at a time away from the default, and nanoGPT's architecture as a whole
VARIANTS = {
    "default": {},
    "learned": {"pos_emb": "learned"},
    "rope_base": {"rope_base": 500.0},
    "layernorm": {"norm": "layernorm", "bias": True},
    "no_qk_norm": {"qk_norm": False},
    "relu2": {"mlp": "relu2"},
    "gelu": {"mlp": "gelu"},
    "mlp_hidden": {"mlp_hidden": 48},
    "tied": {"tie_embeddings": True},
    "softcap": {"logit_softcap": 2.0},
    "nanogpt": NANOGPT,
}


def tiny(**options) -> GPT:
    """Residual projections random (zero-initialised, every block starts as the identity)."""
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**SIZES, "zero_init_proj": False, **options}))


@pytest.mark.parametrize("name", VARIANTS)
def test_each_option_runs_forward_backward_and_generates_alike_with_the_cache(name):
    model = tiny(**VARIANTS[name])
    idx = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(1))
    logits, loss = model(idx, idx)
    loss.backward()
    assert logits.shape == (2, 16, 50) and torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.transformer.wte.weight.grad.abs().sum() > 0
    model.eval()
    prompt = idx[:1, :3]  # greedy to 30 tokens: past block_size 16, where the window slides
    assert torch.equal(
        model.generate(prompt, 27, temperature=0), model.generate(prompt, 27, temperature=0, use_cache=False)
    )


def test_logit_softcap_is_cap_tanh_of_the_logits():
    capped = tiny(logit_softcap=0.2)
    plain = tiny()
    plain.load_state_dict(capped.state_dict())
    idx = torch.randint(0, 50, (2, 16))
    raw = plain(idx, idx)[0]
    assert raw.abs().max() > 0.2  # the cap acts
    torch.testing.assert_close(capped(idx, idx)[0], 0.2 * torch.tanh(raw / 0.2))


def test_option_changes_the_weights_names_as_documented():
    names = set(tiny().state_dict())
    assert "transformer.wpe.weight" not in names and "lm_head.weight" in names
    assert {"transformer.h.0.attn.q_norm.weight", "transformer.h.0.attn.k_norm.weight"} <= names
    assert not any(k.startswith("rope") for k in names)  # the tables are buffers, not weights
    model = tiny()
    assert model.transformer.wte.weight is not model.lm_head.weight
    assert model.transformer.h[0].mlp.c_fc.weight.shape == (2 * 96, 32)  # gate and up: 8/3 x 32 -> 96
    assert isinstance(model.transformer.ln_f, torch.nn.RMSNorm) and model.transformer.ln_f.eps == 1e-6
    assert torch.equal(model.transformer.ln_f.weight, torch.ones(32))


def test_kv_cache_with_rope_gives_the_logits_of_a_full_forward_pass():
    """Keys are cached rotated for their own positions: each new token's logits, from the cache, are
    those of the whole sequence run at once."""
    from mypt.model import KVCache

    model = tiny().eval()
    idx = torch.randint(0, 50, (2, 16))
    caches = [KVCache(model.config) for _ in model.transformer.h]
    with torch.no_grad():
        torch.testing.assert_close(
            model(idx[:, :5], caches=caches)[0], model(idx[:, :5])[0], rtol=0, atol=1e-5
        )
        for t in range(5, 16):
            logits, _ = model(idx[:, t : t + 1], caches=caches, start=t)
            torch.testing.assert_close(logits, model(idx[:, : t + 1])[0], rtol=0, atol=1e-5)


def test_rope_makes_attention_scores_depend_on_the_distance_alone():
    """q at position m and k at n score by m - n: shifting both by 5 keeps every score; without the
    rotation (or with the pairs wrong) the scores of distant positions would not match."""
    config = GPTConfig(**{**SIZES, "block_size": 32})
    cos, sin = rope_tables(config)
    q, k = torch.randn(2, 1, 10, 1, 16, dtype=torch.float64).unbind(0)  # (B, T, nh, hs) each

    def scores(shift: int) -> torch.Tensor:
        c, s = cos[shift : shift + 10, None], sin[shift : shift + 10, None]  # (T, 1, hs): over the heads
        return apply_rope(q, c, s).transpose(1, 2) @ apply_rope(k, c, s).transpose(1, 2).mT  # (B, nh, T, T)

    torch.testing.assert_close(scores(0), scores(5), atol=1e-5, rtol=0)
    assert not torch.allclose(scores(0), q.transpose(1, 2) @ k.transpose(1, 2).mT, atol=1e-3)
    # channel i pairs with i + head_dim / 2 (transformers' rotate_half): position 1 rotates (x_0, x_8)
    x = torch.zeros(1, 2, 1, 16)
    x[..., 0] = 1.0
    rotated = apply_rope(x, cos[:2, None], sin[:2, None])[0, 1, 0]
    angle = 1.0  # position 1 times the first pair's frequency, 1 / rope_base^0
    assert rotated[0] == pytest.approx(math.cos(angle)) and rotated[8] == pytest.approx(math.sin(angle))
    assert rotated.count_nonzero() == 2


def test_the_written_out_backwards_are_the_gradients():
    """RoPE's, QK-norm-with-RoPE's and SwiGLU's backward passes, written out for speed, against autograd's
    numerical ones, and their forward passes against the formulas written plainly."""
    x = torch.randn(2, 3, 2, 2, 8, dtype=torch.float64, requires_grad=True)  # (B, T, q|k, nh, hs)
    angles = torch.rand(3, 1, 1, 4, dtype=torch.float64) * 6
    cos, sin = torch.cat((angles.cos(),) * 2, -1), torch.cat((-angles.sin(), angles.sin()), -1)
    assert torch.autograd.gradcheck(lambda a: apply_rope(a, cos, sin), (x,))
    x1, x2 = x.chunk(2, dim=-1)
    c, s = angles.cos(), angles.sin()
    torch.testing.assert_close(apply_rope(x, cos, sin), torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), -1))
    # QK-norm then RoPE in one: the tables as GPT.rope_at lays them out (T, 2, nh, hs)
    weight = torch.randn(2, 1, 8, dtype=torch.float64, requires_grad=True)
    cos, sin = cos.expand(3, 2, 2, 8).contiguous(), sin.expand(3, 2, 2, 8).contiguous()
    fused = lambda a, w: _QKNormRotaryFunction.apply(a, w, cos, sin, 1e-6)  # noqa: E731
    assert torch.autograd.gradcheck(fused, (x, weight))
    torch.testing.assert_close(fused(x, weight), apply_rope(F.rms_norm(x, (8,), eps=1e-6) * weight, cos, sin))
    h = torch.randn(2, 3, 2 * 8, dtype=torch.float64, requires_grad=True)  # [gate | up]
    assert torch.autograd.gradcheck(_SwiGLUFunction.apply, (h,))
    gate, up = h.chunk(2, dim=-1)
    torch.testing.assert_close(_SwiGLUFunction.apply(h), F.silu(gate) * up)


def test_rms_norm_computes_what_torch_computes_forward_and_backward():
    """mypt's RMSNorm (its backward written out for speed) against torch.nn.functional.rms_norm, and
    q and k normalised together with their own weights as each alone."""
    x = torch.randn(3, 5, 2, 4, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 1, 16, dtype=torch.float64, requires_grad=True)
    grad = torch.randn_like(x)
    torch.autograd.backward(_RMSNormFunction.apply(x, weight, 1e-6), grad)
    ours = (x.grad, weight.grad)
    x.grad = weight.grad = None
    torch.autograd.backward(F.rms_norm(x, (16,), eps=1e-6) * weight, grad)
    torch.testing.assert_close(ours, (x.grad, weight.grad))
    assert torch.autograd.gradcheck(lambda a, w: _RMSNormFunction.apply(a, w, 1e-6), (x[:1, :2], weight))
    norm = RMSNorm(16, eps=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 in, bf16 out, statistics in float32
        out = norm(x[0, 0, 0].to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(
        out.float(), F.rms_norm(x[0, 0, 0].float(), (16,), eps=1e-6), atol=2e-2, rtol=1e-2
    )


def test_zero_init_of_the_residual_projections_is_the_modern_default():
    modern, legacy = GPT(GPTConfig(**SIZES)), GPT(GPTConfig(**SIZES, **NANOGPT))
    for block in modern.transformer.h:
        assert not block.attn.c_proj.weight.any() and not block.mlp.c_proj.weight.any()
    assert legacy.transformer.h[0].attn.c_proj.weight.std() > 0.003  # GPT-2's 0.02 / sqrt(2 x 2)


def test_param_count_by_arithmetic_matches_the_model_for_every_combination():
    """bundle.count_params (from config.json, no torch) == GPT.num_params() for every option set."""
    options = itertools.product(
        ["rope", "learned"],
        ["rmsnorm", "layernorm"],
        [True, False],
        ["swiglu", "relu2", "gelu"],
        [True, False],
        [True, False],
    )
    for pos_emb, norm, qk_norm, mlp, tie, bias in options:
        config = GPTConfig(
            **SIZES, pos_emb=pos_emb, norm=norm, qk_norm=qk_norm, mlp=mlp, tie_embeddings=tie, bias=bias
        )
        model = GPT(config)
        assert bundle.count_params(config) == model.num_params(), config
        embeddings = model.transformer.wte.weight.numel() * (not tie) + (pos_emb == "learned") * 16 * 32
        assert model.num_params(non_embedding=False) - model.num_params() == embeddings


def test_flops_per_token_count_every_matrix_a_token_goes_through():
    d, v, L, T = 32, 50, 2, 16
    attention = 12 * L * d * T  # scores and weighted sum: n_head x head_dim = d
    norms = L * (2 * d + 2 * 16) + d  # ln_1, ln_2, q_norm, k_norm weights, ln_f
    swiglu = GPT(GPTConfig(**SIZES, mlp_hidden=64))
    assert swiglu.flops_per_token() == 6 * (v * d + L * (4 * d * d + 3 * d * 64) + norms) + attention
    gelu = GPT(GPTConfig(**SIZES, mlp="gelu", mlp_hidden=64))
    assert swiglu.flops_per_token() - gelu.flops_per_token() == 6 * L * d * 64  # the gate matrix
    # the untied head's matrix is counted once either way; position tables are lookups, not FLOPs
    assert (
        GPT(GPTConfig(**SIZES, tie_embeddings=True)).flops_per_token()
        == GPT(GPTConfig(**SIZES)).flops_per_token()
    )
    assert (
        GPT(GPTConfig(**SIZES, pos_emb="learned")).flops_per_token()
        == GPT(GPTConfig(**SIZES)).flops_per_token()
    )


def test_swiglu_width_keeps_the_parameters_of_a_4x_mlp():
    for n_embd in (32, 128, 384, 768):
        config = GPTConfig(n_embd=n_embd, n_head=2)
        assert config.mlp_width % 32 == 0
        assert 0 <= 3 * config.mlp_width - 8 * n_embd < 3 * 32  # 3 matrices of 8/3 d ~ 2 of 4 d
    assert GPTConfig(mlp="gelu").mlp_width == 4 * 384 and GPTConfig(mlp_hidden=100).mlp_width == 100


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"pos_emb": "alibi"}, "pos_emb must be one of rope, learned"),
        ({"norm": "batchnorm"}, "norm must be one of rmsnorm, layernorm"),
        ({"mlp": "tanh"}, "mlp must be one of swiglu, relu2, gelu"),
        ({"mlp_hidden": -1}, "mlp_hidden must be"),
        ({"logit_softcap": -1.0}, "logit_softcap must be"),
        ({"rope_base": 0.0}, "rope_base must be"),
        ({"qk_norm": "yes"}, "qk_norm must be true or false"),
        ({"n_embd": 30, "n_head": 2}, "RoPE needs an even head size"),
    ],
)
def test_bad_option_values_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**{**SIZES, **bad})


def test_odd_head_size_is_fine_with_learned_positions():
    assert GPTConfig(**{**SIZES, "n_embd": 30, "n_head": 2, "pos_emb": "learned"}).head_dim == 15


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model.mlp", "tanh"], "mypt: error: mlp must be one of swiglu, relu2, gelu; got 'tanh'"),
        (
            ["--model.n_embd", "30", "--model.n_head", "2"],
            "mypt: error: RoPE needs an even head size, got n_embd / n_head = 30 / 2 = 15: change --model.n_head "
            "or --model.n_embd (or --model.pos_emb learned)",
        ),
    ],
)
def test_mypt_fit_refuses_a_bad_option_in_one_line(mypt, text_file, flags, message):
    r = mypt(
        "fit",
        *TINY,
        "--data.input_file",
        text_file,
        "--model_name",
        "bad",
        "--trainer.max_steps",
        "1",
        *flags,
    )
    assert r.code != 0, r
    assert r.err.strip() == message, r
    assert not Path("checkpoints/bad").exists()


def test_resume_refuses_an_option_change_and_leaves_the_bundle_alone(mypt, text_file):
    r = mypt("fit", *TINY, "--data.input_file", text_file, "--model_name", "m", "--trainer.max_steps", "2")
    assert r.code == 0, r
    before = {p.name: p.read_bytes() for p in Path("checkpoints/m").iterdir() if p.is_file()}
    config = json.loads(Path("checkpoints/m/config.json").read_text())
    assert {k: config[k] for k in ARCHITECTURE_KEYS if k in NANOGPT} == {
        k: getattr(GPTConfig(), k) for k in NANOGPT
    }
    r = mypt(
        "fit",
        *TINY,
        "--data.input_file",
        text_file,
        "--model_name",
        "m",
        "--trainer.max_steps",
        "4",
        "--model.mlp",
        "gelu",
    )
    assert r.code != 0, r
    (line,) = r.err.strip().splitlines()
    assert line.startswith(
        "mypt: error: --model.mlp gelu conflicts with the saved architecture (mlp=swiglu in checkpoints/m/config.json)"
    ), r
    assert before == {p.name: p.read_bytes() for p in Path("checkpoints/m").iterdir() if p.is_file()}


def test_a_bundle_from_before_the_options_loads_and_generates_exactly_as_then():
    """tests/data/nanogpt_bundle: a config.json with the design note's keys only, trained with the
    model code that predates the options; nanogpt_bundle_reference.pt: that code's logits and tokens
    (made by loading the bundle into `git show fc19edf:src/mypt/model.py`, the commit that added them). Bit for bit the same."""
    path = Path("checkpoints/old")
    shutil.copytree(DATA / "nanogpt_bundle", path)
    assert set(json.loads((path / "config.json").read_text())).isdisjoint(NANOGPT)
    reference = torch.load(DATA / "nanogpt_bundle_reference.pt", weights_only=True)
    model, _, config = load_model(path)
    assert {k: config[k] for k in NANOGPT} == NANOGPT
    assert set(model.state_dict()) == set(torch.load(path / "model.pt", weights_only=True))
    with torch.no_grad():
        logits, loss = model(reference["idx"], reference["idx"])
    assert torch.equal(logits, reference["logits"]) and torch.equal(loss, reference["loss"])
    assert torch.equal(model.generate(reference["prompt"], 37, temperature=0), reference["greedy"])
    sampled = model.generate(
        reference["prompt"], 37, temperature=0.8, top_k=10, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(sampled, reference["sampled"])
    assert bundle.get_model_info(path)["num_params"] == model.num_params()


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].numpy().tobytes())
    return digest.hexdigest()


def test_mypt_generates_and_resumes_a_bundle_from_before_the_options_as_then(mypt):
    """Through the CLI: `mypt generate` samples the reference's tokens, and resuming 4 steps gives the
    weights that the code before the options gave (nanogpt_bundle_resumed.json), bit for bit."""
    shutil.copytree(DATA / "nanogpt_bundle", "checkpoints/old")
    Path("inferno.txt").write_bytes((DATA / "inferno_excerpt.txt").read_bytes()[:20000])
    reference = torch.load(DATA / "nanogpt_bundle_reference.pt", weights_only=True)
    _, tokenizer, _ = load_model("old")
    prompt = tokenizer.decode(reference["prompt"][0].tolist())
    r = mypt("generate", "old", "--prompt", prompt, "--max_new_tokens", "37", "--temperature", "0.8",
             "--top_k", "10", "--seed", "1")  # fmt: skip
    assert r.code == 0, r
    assert r.out == tokenizer.decode(reference["sampled"][0].tolist()) + "\n"
    resumed = json.loads((DATA / "nanogpt_bundle_resumed.json").read_text())
    r = mypt("fit", "--data.input_file", "inferno.txt", "--model_name", "old", "--trainer.max_steps", "34",
             "--trainer.enable_progress_bar", "false")  # fmt: skip
    assert r.code == 0, r
    state = bundle.load_training_state(Path("checkpoints/old"))
    assert state["step"] == resumed["step"] and state["val_loss"] == resumed["val_loss"]
    assert (
        weights_sha256(torch.load("checkpoints/old/model.pt", weights_only=True)) == resumed["weights_sha256"]
    )
    config = json.loads(Path("checkpoints/old/config.json").read_text())
    assert list(config) == list(bundle.CONFIG_KEYS) and {k: config[k] for k in NANOGPT} == NANOGPT


def test_the_nanogpt_config_sets_nanogpts_architecture():
    """configs/nanogpt_cpu.yaml is nanoGPT's architecture one flag away: its model section (the
    options it leaves out at their defaults) gives every value of mypt.config.NANOGPT."""
    import yaml

    model = yaml.safe_load((Path(__file__).parents[1] / "configs" / "nanogpt_cpu.yaml").read_text())["model"]
    config = GPTConfig(**{k: v for k, v in model.items() if k in ARCHITECTURE_KEYS})
    assert {k: getattr(config, k) for k in NANOGPT} == NANOGPT


def test_non_default_options_train_and_round_trip_through_the_bundle(mypt, text_file):
    """Every option away from its default at once, through `mypt fit`: config.json records each, and
    the bundle loads into that architecture (the weights fit it) and samples."""
    options = {"pos_emb": "learned", "norm": "layernorm", "qk_norm": False, "mlp": "relu2", "mlp_hidden": 48,
               "tie_embeddings": True, "logit_softcap": 30.0, "zero_init_proj": False, "rope_base": 500.0}  # fmt: skip
    flags = [
        a
        for k, v in options.items()
        for a in (f"--model.{k}", str(v).lower() if isinstance(v, bool) else str(v))
    ]
    r = mypt(
        "fit", *TINY, "--data.input_file", text_file, "--model_name", "m", "--trainer.max_steps", "2", *flags
    )
    assert r.code == 0, r
    config = json.loads(Path("checkpoints/m/config.json").read_text())
    assert {k: config[k] for k in options} == options
    model, _, _ = load_model("m")
    assert model.config == bundle.gpt_config(config)
    assert model.transformer.h[0].mlp.c_fc.weight.shape == (48, 32) and "wpe" in model.transformer
    r = mypt("generate", "m", "--max_new_tokens", "5", "--seed", "1")
    assert r.code == 0 and len(r.out) > 5, r
