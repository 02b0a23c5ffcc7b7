"""GPT2LMHeadModel: nanoGPT's architecture (learned positions, LayerNorm, GELU), which is GPT-2's,
so the weights map one to one under the same names:

- GPT-2 stores c_attn, c_proj and c_fc as Conv1D, (in, out); mypt uses nn.Linear, (out, in):
  those matrices are transposed both ways.
- GPT-2 always has biases; a `bias: false` bundle exports zero biases (the same function), and
  all-zero biases import back as `bias: false`.
- The export keeps the vocabulary rows the tokenizer can produce (50257 of a gpt2 bundle's 50304;
  a bpe bundle's tokens of its multiple of 64): their logits are exactly mypt's. The import adds
  the padding rows back, built so that their logit is PAD_LOGIT for every input (see
  `padding_rows`), so the imported model's probabilities are GPT-2's.
- mypt's GELU is the exact one. A model exported by mypt says so (`activation_function: gelu`) and
  imports back exactly; the published GPT-2 weights use the tanh approximation (`gelu_new`), so
  their logits in mypt differ slightly (the import prints by how much), which fine-tuning absorbs.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from mypt.config import NANOGPT, GPTConfig
from mypt.hf.mapping import EMBEDDING, HEAD, Entry, HFClass

CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # stored (in, out) by GPT-2
EXACT_ACTIVATIONS = ("gelu",)  # torch's exact GELU, as mypt's
TANH_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's, and GPT-2's
PAD_LOGIT = -1.0e4


def padding_rows(ln_f_weight: torch.Tensor, ln_f_bias: torch.Tensor, rows: int) -> torch.Tensor:
    """Output rows whose logit is PAD_LOGIT for every input: the final LayerNorm's output is
    g * n + b with n of zero mean, so a row u = t / g gives t * sum(n) + t * (b / g).sum() =
    t * (b / g).sum(), a constant. Zero rows (logit 0) would outrank GPT-2's negative logits."""
    width = ln_f_weight.numel()
    if rows == 0:
        return ln_f_weight.new_zeros(0, width)
    inverse = 1.0 / ln_f_weight.double()
    total = float((ln_f_bias.double() * inverse).sum())
    if not torch.isfinite(inverse).all() or abs(total) < 1e-3:
        return ln_f_weight.new_zeros(rows, width)
    row = (PAD_LOGIT / total) * inverse
    return row.to(ln_f_weight.dtype).expand(rows, width).clone()


class GPT2(HFClass):
    name = "GPT2LMHeadModel"
    model_type = "gpt2"
    ignored = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of older transformers

    requires = {
        "pos_emb": "learned",
        "norm": "layernorm",
        "mlp": "gelu",
        "qk_norm": False,
        "logit_softcap": 0.0,
    }

    def table(self, cfg: GPTConfig) -> list[Entry]:
        names = ["transformer.wpe.weight", "transformer.ln_f.weight"]
        layer = ["ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"]
        names += [f"transformer.h.{{i}}.{m}.weight" for m in layer]
        if cfg.bias:
            names += ["transformer.ln_f.bias", *(f"transformer.h.{{i}}.{m}.bias" for m in layer)]
        if not cfg.tie_embeddings:
            names.append(HEAD)
        table = [Entry(EMBEDDING, (EMBEDDING,))]
        return table + [Entry(n, (n,), n.endswith(tuple(f"{m}.weight" for m in CONV1D))) for n in names]

    def hf_config(self, transformers: Any, cfg: GPTConfig, vocab_rows: int, bos: int | None, eos: int | None):
        return transformers.GPT2Config(
            vocab_size=vocab_rows, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
            n_head=cfg.n_head, n_inner=cfg.mlp_width, activation_function="gelu", resid_pdrop=cfg.dropout,
            embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, layer_norm_epsilon=LAYER_NORM_EPS,
            tie_word_embeddings=cfg.tie_embeddings, bos_token_id=bos, eos_token_id=eos,
        )  # fmt: skip

    def to_hf(self, state: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
        out = super().to_hf(state, cfg)
        if not cfg.bias:  # GPT-2 has biases everywhere: zeros compute the same function
            for name, tensor in list(out.items()):
                if name.endswith(tuple(f"{m}.weight" for m in CONV1D)):
                    out[name.removesuffix("weight") + "bias"] = torch.zeros(
                        tensor.shape[-1], dtype=tensor.dtype
                    )
                elif re.search(r"\.ln_(1|2|f)\.weight$", name):
                    out[name.removesuffix("weight") + "bias"] = torch.zeros_like(tensor)
        return out

    def problems(self, hf_config: Any) -> list[str]:
        problems = []
        if abs(hf_config.layer_norm_epsilon - LAYER_NORM_EPS) > 1e-12:
            problems.append(f"layer_norm_epsilon {hf_config.layer_norm_epsilon} (mypt uses {LAYER_NORM_EPS})")
        if getattr(hf_config, "scale_attn_by_inverse_layer_idx", False):
            problems.append("scale_attn_by_inverse_layer_idx")
        if not getattr(hf_config, "scale_attn_weights", True):
            problems.append("scale_attn_weights false")
        if hf_config.activation_function not in EXACT_ACTIVATIONS + TANH_ACTIVATIONS:
            problems.append(f"activation_function {hf_config.activation_function!r}")
        return problems

    def approximation(self, hf_config: Any) -> str | None:
        if hf_config.activation_function in TANH_ACTIVATIONS:
            return "uses the tanh approximation of GELU and mypt the exact GELU"
        return None

    def mypt_config(self, hf_config: Any, hf_state: dict[str, torch.Tensor]) -> dict:
        width = hf_config.n_embd
        hidden = hf_config.n_inner or 4 * width
        biases = [v for k, v in hf_state.items() if k.endswith(".bias") and not k.endswith(self.ignored)]
        return {
            "block_size": hf_config.n_positions,
            "n_embd": width,
            "n_head": hf_config.n_head,
            "n_layer": hf_config.n_layer,
            "dropout": float(hf_config.resid_pdrop),
            # GPT-2 has biases; all-zero ones are a mypt export of bias=False
            "bias": any(bool(b.any()) for b in biases),
            **NANOGPT,
            "mlp_hidden": 0 if hidden == 4 * width else hidden,
            "tie_embeddings": bool(getattr(hf_config, "tie_word_embeddings", True)),
        }

    def to_mypt(self, hf_state: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
        if not cfg.bias:  # the zero biases of a bias=False export
            hf_state = {
                k: v for k, v in hf_state.items() if not k.endswith(".bias") or k.endswith(self.ignored)
            }
        return super().to_mypt(hf_state, cfg)

    def padding(self, state: dict[str, torch.Tensor], cfg: GPTConfig, rows: int) -> torch.Tensor:
        weight = state["transformer.ln_f.weight"]
        bias = state.get("transformer.ln_f.bias", torch.zeros_like(weight))
        return padding_rows(weight, bias, rows)
