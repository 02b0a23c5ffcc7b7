"""Text from a model: one plain function shared by `mypt generate` and anything else that samples."""

from __future__ import annotations

import torch

from mypt.errors import MyptError
from mypt.model import GPT
from mypt.tokenizer import Tokenizer


def sample(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str = "\n",
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 200,
    seed: int | None = None,
    use_cache: bool = True,
) -> str:
    """The prompt followed by `max_new_tokens` sampled tokens. Same seed, same text."""
    if max_new_tokens < 0:
        raise MyptError(f"max_new_tokens must not be negative, got {max_new_tokens}")
    if temperature < 0:
        raise MyptError(f"temperature must not be negative, got {temperature}")
    if top_k is not None and top_k <= 0:
        raise MyptError(f"top_k must be positive, got {top_k}")
    ids = tokenizer.encode(prompt or "\n")
    if not ids:
        raise MyptError("the prompt encodes to no tokens")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(
            idx,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            generator=generator,
            use_cache=use_cache,
        )
    finally:
        model.train(was_training)
    return tokenizer.decode(out[0].tolist())
