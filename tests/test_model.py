"""The GPT: shapes, causal masking, weight tying, initialisation, sampling controls."""

from __future__ import annotations

import math

import pytest
import torch

from mypt.config import NANOGPT
from mypt.model import GPT, GPTConfig


def tiny(**overrides) -> GPT:
    """The default architecture, small; with random residual projections: zero-initialised, every block
    would start as the identity and attention (masking, the cache) would go untested."""
    torch.manual_seed(0)
    sizes = {"block_size": 16, "vocab_size": 50, "n_layer": 2, "n_head": 2, "n_embd": 32}
    return GPT(GPTConfig(**{**sizes, "zero_init_proj": False, **overrides}))


def test_shapes_with_and_without_targets():
    model = tiny()
    idx = torch.randint(0, 50, (3, 16))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 16, 50) and loss.ndim == 0
    logits, loss = model(idx)
    assert logits.shape == (3, 1, 50) and loss is None  # sampling only needs the last position


def test_initial_loss_is_near_uniform():
    model = tiny()
    idx, targets = torch.randint(0, 50, (2, 8, 16))
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(50)) < 0.2


def test_future_tokens_cannot_change_earlier_logits():
    model = tiny().eval()
    idx = torch.randint(0, 50, (1, 16))
    changed = idx.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 50
    a, _ = model(idx, idx)
    b, _ = model(changed, changed)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6)
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_nanogpt_embeddings_are_tied_and_residual_projections_scaled():
    model = tiny(**NANOGPT, n_layer=4)
    assert model.transformer.wte.weight is model.lm_head.weight
    proj = torch.cat([b.attn.c_proj.weight.flatten() for b in model.transformer.h])
    fc = torch.cat([b.mlp.c_fc.weight.flatten() for b in model.transformer.h])
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(8), rel=0.1)
    assert fc.std().item() == pytest.approx(0.02, rel=0.1)


def test_bias_is_optional():
    assert not any(n.endswith(".bias") for n, _ in tiny(bias=False).named_parameters())
    assert any(n.endswith("c_attn.bias") for n, _ in tiny(bias=True).named_parameters())


def test_sequence_longer_than_block_size_is_refused():
    with pytest.raises(ValueError, match="block_size"):
        tiny()(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize(
    "bad",
    [{"n_embd": 30, "n_head": 4}, {"n_layer": 0}, {"dropout": 1.0}, {"vocab_size": -1}, {"block_size": 0}],
)
def test_config_invariants(bad):
    with pytest.raises(ValueError):
        GPTConfig(**{"n_head": 2, "n_embd": 32, **bad})


def test_generate_respects_seed_top_k_and_temperature():
    model = tiny().eval()
    start = torch.zeros(1, 1, dtype=torch.long)
    a = model.generate(start, 20, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(1))
    b = model.generate(start, 20, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (1, 21)
    greedy = model.generate(start, 30, temperature=0)  # longer than block_size: the context is cropped
    assert greedy.shape == (1, 31)
    logits, _ = model(start)
    assert greedy[0, 1].item() == logits[0, -1].argmax().item()
    top1 = model.generate(start, 5, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(top1[:, :6], greedy[:, :6])  # top_k=1 is greedy


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_divides_the_logits(temperature):
    """A token is drawn from softmax(logits / temperature): 256 draws with the same generator match."""
    model = tiny().eval()
    start = torch.zeros(256, 1, dtype=torch.long)
    drawn = model.generate(start, 1, temperature=temperature, generator=torch.Generator().manual_seed(5))
    logits, _ = model(start)
    probs = torch.softmax(logits[:, -1, :] / temperature, dim=-1)
    expected = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(drawn[:, 1:], expected)
    plain = torch.multinomial(
        torch.softmax(logits[:, -1, :], dim=-1), 1, generator=torch.Generator().manual_seed(5)
    )
    assert not torch.equal(drawn[:, 1:], plain)  # the temperature changed what was drawn


def test_kv_cache_gives_the_logits_of_a_full_forward_pass():
    """Generation with the cache computes each new token from cached keys and values; its logits must
    be those of running the whole sequence through the model, at every position up to block_size."""
    from mypt.model import KVCache

    model = tiny(bias=True).eval()
    idx = torch.randint(0, 50, (2, 16))
    caches = [KVCache(model.config) for _ in model.transformer.h]
    with torch.no_grad():
        logits, _ = model(idx[:, :5], caches=caches, start=0)  # the prompt
        torch.testing.assert_close(logits, model(idx[:, :5])[0], rtol=0, atol=1e-5)
        for t in range(5, 16):  # then one token at a time
            logits, _ = model(idx[:, t : t + 1], caches=caches, start=t)
            torch.testing.assert_close(logits, model(idx[:, : t + 1])[0], rtol=0, atol=1e-5)


def test_generate_with_and_without_the_cache_agree_past_block_size():
    """Greedy decoding from a 3-token prompt to 40 tokens (the window slides past block_size 16, where
    the cache is dropped): the same tokens either way."""
    model = tiny().eval()
    prompt = torch.tensor([[1, 2, 3]])
    cached = model.generate(prompt, 37, temperature=0)
    assert cached.shape == (1, 40)
    assert torch.equal(cached, model.generate(prompt, 37, temperature=0, use_cache=False))


@pytest.mark.parametrize(
    ("impl", "fused", "foreach"),
    [("auto", True, None), ("fused", True, None), ("foreach", None, True), ("for-loop", None, False)],
)
def test_optimizer_impl_picks_the_adamw_kernels(impl, fused, foreach):
    """--model.optimizer_impl: auto takes the fused kernels on a CPU (the fastest, docs/benchmarks.md)."""
    import lightning.pytorch as pl

    from mypt.module import GPTModule

    module = GPTModule(
        n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=16, optimizer="adamw", optimizer_impl=impl
    )
    module.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    optimizer = module.configure_optimizers()
    assert optimizer.defaults["fused"] == fused and optimizer.defaults["foreach"] == foreach
    decayed, other = optimizer.param_groups
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() < 2 for p in other["params"])


def test_the_kv_cache_holds_the_positions_the_text_reaches_not_the_whole_context(monkeypatch):
    """A model with a long context (an imported RoPE model keeps Qwen3's 40,960) must not allocate
    block_size positions of keys and values per layer for a short sample."""
    from mypt import model as model_module

    sizes = []
    original = model_module.KVCache.update

    def update(self, pos, k, v):
        out = original(self, pos, k, v)
        sizes.append(self.k.size(2))
        return out

    monkeypatch.setattr(model_module.KVCache, "update", update)
    model = GPT(GPTConfig(block_size=4096, vocab_size=50, n_layer=1, n_head=2, n_embd=16)).eval()
    out = model.generate(torch.zeros(1, 3, dtype=torch.long), 5, temperature=0)
    assert out.shape == (1, 8) and set(sizes) == {8}, sizes
