"""LlamaForCausalLM: mypt's modern architecture without QK-norm (RoPE, RMSNorm, SwiGLU, no bias),
and the base of Qwen3ForCausalLM (qwen3.py), which adds the per-head q/k RMSNorm.

- mypt fuses q, k and v into attn.c_attn (rows: q, then k, then v) and SwiGLU's gate and up into
  mlp.c_fc (rows: gate, then up); transformers keeps them apart: the fused matrices are split by
  rows on export and concatenated on import. Every matrix is (out, in) on both sides.
- RoPE: both use the "rotate_half" layout (channel i pairs with i + head_dim / 2) with float32
  tables, and RMSNorm with eps 1e-6 and a weight, so the logits agree: bit for bit in float32 on a
  CPU (measured on random models of 6 x 384 and 12 x 768; the export checks every model on a probe).
- One key/value head per query head (num_key_value_heads = num_attention_heads), head_dim =
  hidden_size / num_attention_heads, RoPE without scaling: an import of anything else is refused.
- The vocabulary's padding rows are exported with the rest (vocab_size may exceed the tokenizer's
  tokens, as Qwen3's own checkpoints do): with RMSNorm there is no final bias, so no row can have a
  constant logit as GPT-2's padding does (`gpt2.padding_rows`), and keeping mypt's trained rows makes
  the round trip exact. A model with fewer rows than mypt pads to (a gpt2-tokenizer model of 50257)
  gets rows equal to the mean of its output rows: each one's logit is the mean of the tokens' logits
  for every input, so it never outranks the most likely token (greedy decoding is unchanged) and by
  Jensen's inequality takes at most 1 / vocab of the probability, far less once the model is trained.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from mypt.config import GPTConfig
from mypt.hf.mapping import EMBEDDING, HEAD, Entry, HFClass
from mypt.model import RMS_NORM_EPS


class Llama(HFClass):
    name = "LlamaForCausalLM"
    model_type = "llama"
    config_name = "LlamaConfig"
    qk_norm = False
    keeps_padding = True
    ignored = ("rotary_emb.inv_freq",)  # a buffer older versions saved

    requires = {
        "pos_emb": "rope", "norm": "rmsnorm", "qk_norm": False, "mlp": "swiglu", "bias": False, "logit_softcap": 0.0
    }  # fmt: skip

    def table(self, cfg: GPTConfig) -> list[Entry]:
        attn, mlp = "model.layers.{i}.self_attn", "model.layers.{i}.mlp"
        table = [
            Entry(EMBEDDING, ("model.embed_tokens.weight",)),
            Entry("transformer.h.{i}.ln_1.weight", ("model.layers.{i}.input_layernorm.weight",)),
            Entry("transformer.h.{i}.attn.c_attn.weight", tuple(f"{attn}.{p}_proj.weight" for p in "qkv")),
            Entry("transformer.h.{i}.attn.c_proj.weight", (f"{attn}.o_proj.weight",)),
            Entry("transformer.h.{i}.ln_2.weight", ("model.layers.{i}.post_attention_layernorm.weight",)),
            Entry("transformer.h.{i}.mlp.c_fc.weight", (f"{mlp}.gate_proj.weight", f"{mlp}.up_proj.weight")),
            Entry("transformer.h.{i}.mlp.c_proj.weight", (f"{mlp}.down_proj.weight",)),
            Entry("transformer.ln_f.weight", ("model.norm.weight",)),
        ]
        if self.qk_norm:
            table += [
                Entry(f"transformer.h.{{i}}.attn.{n}.weight", (f"{attn}.{n}.weight",))
                for n in ("q_norm", "k_norm")
            ]
        if not cfg.tie_embeddings:
            table.append(Entry(HEAD, (HEAD,)))
        return table

    def hf_config(self, transformers: Any, cfg: GPTConfig, vocab_rows: int, bos: int | None, eos: int | None):
        config_class = getattr(transformers, self.config_name)
        if "rope_parameters" in inspect.signature(config_class.__init__).parameters:  # transformers 5
            rope = {"rope_parameters": {"rope_type": "default", "rope_theta": float(cfg.rope_base)}}
        else:
            rope = {"rope_theta": float(cfg.rope_base)}
        extra = {} if self.qk_norm else {"mlp_bias": False}
        return config_class(
            vocab_size=vocab_rows, hidden_size=cfg.n_embd, intermediate_size=cfg.mlp_width,
            num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_head,
            head_dim=cfg.head_dim, hidden_act="silu", max_position_embeddings=cfg.block_size,
            rms_norm_eps=RMS_NORM_EPS, tie_word_embeddings=cfg.tie_embeddings, attention_bias=False,
            attention_dropout=cfg.dropout, bos_token_id=bos, eos_token_id=eos, **rope, **extra,
        )  # fmt: skip

    def problems(self, hf_config: Any) -> list[str]:
        problems = []
        heads, width = hf_config.num_attention_heads, hf_config.hidden_size
        kv_heads = getattr(hf_config, "num_key_value_heads", None) or heads
        if kv_heads != heads:
            problems.append(
                f"num_key_value_heads {kv_heads} != num_attention_heads {heads} (grouped-query attention; "
                "mypt's has a key and value head per query head)"
            )
        head_dim = getattr(hf_config, "head_dim", None) or width // heads
        if width % heads or head_dim != width // heads:
            problems.append(
                f"head_dim {head_dim} != hidden_size / num_attention_heads = {width} / {heads} "
                "(mypt's heads split the width)"
            )
        _, kind, partial = rope_settings(hf_config)
        if kind != "default":
            problems.append(f"RoPE scaling {kind!r} (mypt's RoPE has none)")
        if partial != 1.0:
            problems.append(f"partial_rotary_factor {partial} (mypt rotates every channel)")
        if hf_config.hidden_act != "silu":
            problems.append(f"hidden_act {hf_config.hidden_act!r} (mypt's SwiGLU uses silu)")
        for name in ("attention_bias", "mlp_bias"):
            if getattr(hf_config, name, False):
                problems.append(f"{name} true (mypt's modern architecture has no biases)")
        return problems

    def approximation(self, hf_config: Any) -> str | None:
        eps = hf_config.rms_norm_eps
        if abs(eps - RMS_NORM_EPS) > 1e-12:
            return f"uses RMSNorm eps {eps:g} and mypt {RMS_NORM_EPS:g}"
        return None

    def mypt_config(self, hf_config: Any, hf_state: dict[str, torch.Tensor]) -> dict:
        width, heads = hf_config.hidden_size, hf_config.num_attention_heads
        derived = GPTConfig(n_embd=width, n_head=heads, pos_emb="learned", mlp="swiglu").mlp_width
        hidden = hf_config.intermediate_size
        return {
            "block_size": hf_config.max_position_embeddings,
            "n_embd": width,
            "n_head": heads,
            "n_layer": hf_config.num_hidden_layers,
            "dropout": float(getattr(hf_config, "attention_dropout", 0.0)),
            "bias": False,
            "pos_emb": "rope",
            "rope_base": float(rope_settings(hf_config)[0]),
            "norm": "rmsnorm",
            "qk_norm": self.qk_norm,
            "mlp": "swiglu",
            "mlp_hidden": 0 if hidden == derived else hidden,
            "tie_embeddings": bool(getattr(hf_config, "tie_word_embeddings", False)),
            "logit_softcap": 0.0,
        }

    def padding(self, state: dict[str, torch.Tensor], cfg: GPTConfig, rows: int) -> torch.Tensor:
        head = state[HEAD]
        return head.mean(dim=0, keepdim=True).expand(rows, head.size(1)).clone()


def rope_settings(hf_config: Any) -> tuple[float, str, float]:
    """(theta, rope type, partial rotary factor) from a transformers 4 (rope_theta, rope_scaling) or
    5 (rope_parameters) config."""
    params = getattr(hf_config, "rope_parameters", None)
    if isinstance(params, dict) and "full_attention" in params:  # one set per layer type
        params = params["full_attention"]
    if not isinstance(params, dict) or not params:
        params = {**(getattr(hf_config, "rope_scaling", None) or {})}
        params.setdefault("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    kind = params.get("rope_type", params.get("type")) or "default"
    partial = params.get("partial_rotary_factor", getattr(hf_config, "partial_rotary_factor", None))
    return float(params.get("rope_theta", 10000.0)), kind, float(partial if partial is not None else 1.0)
