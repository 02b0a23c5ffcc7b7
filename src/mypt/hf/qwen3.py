"""Qwen3ForCausalLM: mypt's default architecture (RoPE, RMSNorm, per-head QK-norm, SwiGLU, no bias),
the class llama.cpp's converter and vLLM take. Llama's table (llama.py) plus the q and k RMSNorm
weights, which both apply to each head before RoPE. Sliding-window attention is refused on import.
"""

from __future__ import annotations

from typing import Any

from mypt.hf.llama import Llama


class Qwen3(Llama):
    name = "Qwen3ForCausalLM"
    model_type = "qwen3"
    config_name = "Qwen3Config"
    qk_norm = True
    requires = {**Llama.requires, "qk_norm": True}

    def problems(self, hf_config: Any) -> list[str]:
        problems = super().problems(hf_config)
        layer_types = getattr(hf_config, "layer_types", None) or []
        if getattr(hf_config, "use_sliding_window", False) or any(t != "full_attention" for t in layer_types):
            problems.append("sliding-window attention (mypt's attends to the whole context)")
        return problems
