"""What every transformers class of the bridge has in common: a mapping table between mypt's tensor
names and the class's, applied both ways, and the questions export and import ask of a class.

Each class (gpt2.py, llama.py, qwen3.py) is one `HFClass`: its table, its config both ways, the
mypt options it represents, and what it does with the vocabulary's padding rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mypt.config import GPTConfig
from mypt.errors import MyptError

EMBEDDING = "transformer.wte.weight"  # mypt's token embedding
HEAD = "lm_head.weight"  # the output layer, in mypt and in every class here


@dataclass(frozen=True)
class Entry:
    """One mypt tensor and the transformers tensor(s) it is. `{i}` stands for a layer's index."""

    mypt: str
    hf: tuple[str, ...]  # several when mypt fuses them into one matrix: its rows, in this order
    transpose: bool = False  # GPT-2's Conv1D stores (in, out), nn.Linear (out, in)


def flag(key: str, value: object) -> str:
    """The command-line flag that sets a model option: `--model.mlp swiglu`."""
    text = (
        str(value).lower() if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else value
    )
    return f"--model.{key} {text}"


def expand(table: list[Entry], n_layer: int) -> list[Entry]:
    """The table with one entry per layer where it names `{i}`."""
    out = []
    for entry in table:
        if "{i}" not in entry.mypt:
            out.append(entry)
            continue
        for i in range(n_layer):
            out.append(Entry(entry.mypt.format(i=i), tuple(n.format(i=i) for n in entry.hf), entry.transpose))
    return out


def to_hf(table: list[Entry], state: dict[str, torch.Tensor], n_layer: int) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for entry in expand(table, n_layer):
        parts = state[entry.mypt].detach().chunk(len(entry.hf), dim=0)
        for name, part in zip(entry.hf, parts, strict=True):
            out[name] = (part.t() if entry.transpose else part).contiguous().clone()
    return out


def to_mypt(
    table: list[Entry], hf_state: dict[str, torch.Tensor], n_layer: int, ignored: tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """mypt's tensors from a transformers state dict, every one of its tensors used (bar `ignored`
    suffixes: buffers some versions save); float32."""
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for entry in expand(table, n_layer):
        missing = [n for n in entry.hf if n not in hf_state]
        if missing:
            raise MyptError(f"the weights lack {missing[0]}")
        parts = [hf_state[n].detach().float() for n in entry.hf]
        state[entry.mypt] = torch.cat([p.t() if entry.transpose else p for p in parts]).contiguous()
        used.update(entry.hf)
    left = [n for n in hf_state if n not in used and not n.endswith(ignored)]
    if left:
        raise MyptError(f"the weights hold {len(left)} tensors mypt has no place for, e.g. {left[0]}")
    return state


class HFClass:
    """One transformers class the bridge writes and reads."""

    name = ""  # e.g. "Qwen3ForCausalLM"
    model_type = ""  # its config.json's model_type
    # the export keeps the vocabulary's padding rows (mypt's trained ones, so a round trip is exact)
    # instead of the rows the tokenizer names only
    keeps_padding = False
    ignored: tuple[str, ...] = ()  # state-dict suffixes that are buffers, not weights

    def model_class(self, transformers: Any) -> Any:
        cls = getattr(transformers, self.name, None)
        if cls is None:
            raise MyptError(
                f"transformers {transformers.__version__} has no {self.name}: pip install -U transformers"
            )
        return cls

    # the model options the class computes, and their values in it
    requires: dict[str, object] = {}

    def options_to_change(self, cfg: GPTConfig) -> list[str]:
        """The flags (`--model.mlp swiglu`) a model would need for this class to compute it; none
        when it does."""
        return [flag(k, v) for k, v in self.requires.items() if getattr(cfg, k) != v]

    def table(self, cfg: GPTConfig) -> list[Entry]:
        raise NotImplementedError

    def hf_config(self, transformers: Any, cfg: GPTConfig, vocab_rows: int, bos: int | None, eos: int | None):
        raise NotImplementedError

    def to_hf(self, state: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
        """The class's state dict. A tied head is in the table once, as the token embedding."""
        table = self.table(cfg)
        out = to_hf(table, state, cfg.n_layer)
        if cfg.tie_embeddings:
            out[HEAD] = out[next(e.hf[0] for e in table if e.mypt == EMBEDDING)]
        return out

    def problems(self, hf_config: Any) -> list[str]:
        """What in a transformers config mypt's GPT cannot compute, in words; none when it can."""
        raise NotImplementedError

    def approximation(self, hf_config: Any) -> str | None:
        """Why mypt's logits differ slightly from the class's for this config (the import states the
        measured gap), or None when they are the same."""
        return None

    def mypt_config(self, hf_config: Any, hf_state: dict[str, torch.Tensor]) -> dict:
        """mypt's architecture keys (all but vocab_size) for a transformers model."""
        raise NotImplementedError

    def to_mypt(self, hf_state: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
        """mypt's state dict, the vocabulary not padded yet (see padding)."""
        if cfg.tie_embeddings:
            hf_state = {k: v for k, v in hf_state.items() if k != HEAD}
        state = to_mypt(self.table(cfg), hf_state, cfg.n_layer, self.ignored)
        if cfg.tie_embeddings:
            state[HEAD] = state[EMBEDDING]
        return state

    def padding(self, state: dict[str, torch.Tensor], cfg: GPTConfig, rows: int) -> torch.Tensor:
        """`rows` rows for the output layer beyond the tokenizer's tokens that never outrank a token."""
        raise NotImplementedError
