"""The architecture of a GPT, as one dataclass: the single source of truth for config.json.

Kept apart from model.py, and free of torch, so that reading a bundle's description (`mypt inspect`,
`mypt list`, `mypt.get_model_info`) starts in a tenth of a second instead of importing torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class GPTConfig:
    """The architecture: every value that fixes the shape of the weights (plus dropout, which is
    fixed for a model's lifetime by convention, as in the design note)."""

    # in the design note's config.json order
    block_size: int = 256
    vocab_size: int = 65
    n_embd: int = 384
    n_head: int = 6
    n_layer: int = 6
    dropout: float = 0.0
    bias: bool = False

    def __post_init__(self) -> None:
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> GPTConfig:
        return cls(**{k: v for k, v in values.items() if k in ARCHITECTURE_KEYS})


# The architecture's keys, from the dataclass: the LightningModule's `model.*` arguments that fix
# the weights, and (with the data's batch size) config.json. Every other list of them derives from
# these two.
ARCHITECTURE_KEYS: tuple[str, ...] = tuple(f.name for f in fields(GPTConfig))
# config.json keys that are the data's arguments (`data.*`), not the model's
DATA_ARCHITECTURE_KEYS: tuple[str, ...] = ("batch_size",)
