"""Text from a model: one plain function shared by `mypt generate` and anything else that samples.

The sampling defaults live here too, for `mypt generate`, the dashboard's validation samples and
`predict`. torch is imported by `sample` itself, so that `mypt generate --help` and the other
commands that read these defaults start without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mypt.errors import MyptError

if TYPE_CHECKING:
    from mypt.model import GPT
    from mypt.tokenizer import Tokenizer

DEFAULT_PROMPT = "\n"
DEFAULT_MAX_NEW_TOKENS = 200
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_K = 200


def sample(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str = DEFAULT_PROMPT,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = DEFAULT_TEMPERATURE,
    top_k: int | None = DEFAULT_TOP_K,
    seed: int | None = None,
    use_cache: bool = True,
) -> str:
    """The prompt followed by `max_new_tokens` sampled tokens. Same seed, same text."""
    import torch

    if max_new_tokens < 0:
        raise MyptError(f"max_new_tokens must not be negative, got {max_new_tokens}")
    if temperature < 0:
        raise MyptError(f"temperature must not be negative, got {temperature}")
    if top_k is not None and top_k <= 0:
        raise MyptError(f"top_k must be positive, got {top_k}")
    ids = tokenizer.encode(prompt or DEFAULT_PROMPT)
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
