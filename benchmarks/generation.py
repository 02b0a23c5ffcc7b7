"""Generation throughput of `mypt generate`'s sampler (mypt.sampling.sample) on a fresh model."""

from __future__ import annotations

import statistics
import time

import torch

from mypt.model import GPT, GPTConfig
from mypt.sampling import sample
from mypt.tokenizer import Tokenizer


def generation_speed(
    config: GPTConfig,
    tokenizer: Tokenizer,
    new_tokens: int,
    repeats: int,
    use_cache: bool = True,
    device: str = "cpu",
) -> dict:
    """Tokens per second of sample() from a one-token prompt, median of `repeats` runs (sample returns
    text, so each run ends when the device has finished)."""
    torch.manual_seed(0)
    model = GPT(config).to(device).eval()
    prompt = tokenizer.decode([1])
    times = []
    for seed in range(repeats):
        start = time.perf_counter()
        sample(model, tokenizer, prompt, max_new_tokens=new_tokens, seed=seed, use_cache=use_cache)
        times.append(time.perf_counter() - start)
    return {"new_tokens": new_tokens, "tokens_per_sec": new_tokens / statistics.median(times)}
