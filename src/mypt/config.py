"""The architecture of a GPT, as one dataclass: the single source of truth for config.json.

Kept apart from model.py, and free of torch, so that reading a bundle's description (`mypt inspect`,
`mypt list`, `mypt.get_model_info`) starts in a tenth of a second instead of importing torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

POS_EMBS = ("rope", "learned")
NORMS = ("rmsnorm", "layernorm")
MLPS = ("swiglu", "relu2", "gelu")


@dataclass
class GPTConfig:
    """The architecture: every value that fixes the shape of the weights or what they compute (plus
    dropout, which is fixed for a model's lifetime by convention, as in the design note).

    The defaults are a modern GPT, the architecture of transformers' Qwen3ForCausalLM; `NANOGPT`
    below holds the values that give nanoGPT's (GPT-2's) architecture instead."""

    # in the design note's config.json order
    block_size: int = 256
    vocab_size: int = 65
    n_embd: int = 384
    n_head: int = 6
    n_layer: int = 6
    dropout: float = 0.0
    bias: bool = False  # in every Linear, and in LayerNorm (RMSNorm has none)
    # the architecture options, appended after the design note's keys
    pos_emb: str = "rope"  # "rope": rotary positions in attention | "learned": GPT-2's wpe table
    rope_base: float = 10000.0  # RoPE's base period (theta)
    norm: str = "rmsnorm"  # "rmsnorm" (with a learnable weight) | "layernorm"
    qk_norm: bool = True  # RMSNorm of each head's queries and keys, before RoPE (as Qwen3)
    mlp: str = "swiglu"  # "swiglu" | "relu2" (ReLU squared) | "gelu"
    mlp_hidden: int = 0  # the MLP's hidden width; 0: derived, see mlp_width
    tie_embeddings: bool = False  # the output layer shares the token embedding's matrix
    logit_softcap: float = 0.0  # 0: off; else logits = cap * tanh(logits / cap)
    # An init choice, kept with the architecture so that a config rebuilds the same model from a seed
    # and so the ablation can turn it off; it does not change what trained weights compute.
    zero_init_proj: bool = True  # residual projections start at zero (else GPT-2's scaled normal)

    def __post_init__(self) -> None:
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name, allowed in (("pos_emb", POS_EMBS), ("norm", NORMS), ("mlp", MLPS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        for name in ("bias", "qk_norm", "tie_embeddings", "zero_init_proj"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if isinstance(self.mlp_hidden, bool) or not isinstance(self.mlp_hidden, int) or self.mlp_hidden < 0:
            raise ValueError(
                f"mlp_hidden must be a non-negative integer (0: derived), got {self.mlp_hidden!r}"
            )
        for name, low in (("rope_base", "positive"), ("logit_softcap", "non-negative")):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
                or (value == 0 and low == "positive")
            ):
                raise ValueError(f"{name} must be a {low} number, got {value!r}")
        if self.pos_emb == "rope" and self.head_dim % 2:
            raise ValueError(
                f"RoPE needs an even head size, got n_embd / n_head = {self.n_embd} / {self.n_head} = "
                f"{self.head_dim}: change --model.n_head or --model.n_embd (or --model.pos_emb learned)"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_width(self) -> int:
        """The MLP's hidden width (transformers' intermediate_size): mlp_hidden when set, else 4 x n_embd
        (GPT-2's), or for SwiGLU, whose three matrices would hold 1.5x the parameters at that width,
        8/3 x n_embd rounded up to a multiple of 32: about the parameters and FLOPs of a 4x MLP."""
        if self.mlp_hidden:
            return self.mlp_hidden
        if self.mlp == "swiglu":
            return -(-8 * self.n_embd // (3 * 32)) * 32
        return 4 * self.n_embd

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> GPTConfig:
        """From a config.json: a key it lacks takes its value of nanoGPT's architecture (NANOGPT), which
        is what a bundle written before the option existed holds."""
        return cls(**{k: v for k, v in with_nanogpt_defaults(values).items() if k in ARCHITECTURE_KEYS})


# nanoGPT's architecture (GPT-2's, as nanoGPT trains it): the option values of a config.json written
# before the options existed, and what configs/nanogpt_cpu.yaml sets to get that architecture back.
NANOGPT: dict[str, object] = {
    "pos_emb": "learned",
    "rope_base": 10000.0,
    "norm": "layernorm",
    "qk_norm": False,
    "mlp": "gelu",
    "mlp_hidden": 0,
    "tie_embeddings": True,
    "logit_softcap": 0.0,
    "zero_init_proj": False,
}


def with_nanogpt_defaults(config: dict) -> dict:
    """A config.json's keys, with each option it lacks set to nanoGPT's value (an older bundle)."""
    return {**config, **{k: v for k, v in NANOGPT.items() if k not in config}}


# The architecture's keys, from the dataclass: the LightningModule's `model.*` arguments that fix
# the weights, and (with the data's batch size) config.json. Every other list of them derives from
# these two.
ARCHITECTURE_KEYS: tuple[str, ...] = tuple(f.name for f in fields(GPTConfig))
# config.json keys that are the data's arguments (`data.*`), not the model's
DATA_ARCHITECTURE_KEYS: tuple[str, ...] = ("batch_size",)
assert set(NANOGPT) <= set(ARCHITECTURE_KEYS)
