"""Checkpoint and corpus costs: bundle write/read against one torch.save, inspect of a large bundle,
tokenisation throughput, the cached second load, and the memory a load takes."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import find_text, peak_rss_mb

from mypt import bundle
from mypt.model import GPT, GPTConfig
from mypt.token_cache import load_tokens
from mypt.tokenizer import GPT2_PADDED_VOCAB_SIZE


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _bundle_parts(config: GPTConfig, step: int) -> dict:
    return {
        "config": {**config.to_dict(), "batch_size": 12, "device": "cpu"},
        "tokenizer": {"token_kind": "gpt2"}
        if config.vocab_size == GPT2_PADDED_VOCAB_SIZE
        else {"token_kind": "char", "chars": [chr(32 + i) for i in range(config.vocab_size)]},
        "training_state": {"step": step, "optimizer_file": bundle.OPTIMIZER_FILE, "history": []},
    }


def checkpoint_cost(config: GPTConfig, repeats: int) -> dict:
    """Write and read a bundle (model + AdamW state after one step) against one torch.save/load of
    the same tensors, alternating the two so that disk and page-cache noise hits both."""
    torch.manual_seed(0)
    model = GPT(config)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long))[1].backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    timers = {
        "bundle_write_s": lambda: _write(target, state, config),
        "torch_save_s": lambda: torch.save(state, plain),
        "bundle_read_s": lambda: _read(target),
        "torch_load_s": lambda: torch.load(plain, weights_only=True),
    }
    with tempfile.TemporaryDirectory() as tmp:
        target, plain = Path(tmp) / "bench", Path(tmp) / "plain.pt"
        times: dict[str, list[float]] = {name: [] for name in timers}
        for _ in range(repeats):
            for name, fn in timers.items():
                times[name].append(_median_time(fn, 1))
        result = {name: statistics.median(values) for name, values in times.items()}
        result["bundle_bytes"] = sum(bundle.file_sizes(target).values())
        result["torch_save_bytes"] = plain.stat().st_size
    result["write_ratio"] = result["bundle_write_s"] / result["torch_save_s"]
    result["read_ratio"] = result["bundle_read_s"] / result["torch_load_s"]
    return result


def _write(target: Path, state: dict, config: GPTConfig) -> None:
    bundle.write_bundle(
        target, model_state=state["model"], optimizer_state=state["optimizer"], **_bundle_parts(config, 1)
    )


def _read(target: Path) -> None:
    """What resuming reads: the weights (checked against config.json) and the optimizer state."""
    bundle.build_model(target, bundle.load_config(target))
    bundle.load_optimizer_state(target)


def inspect_cost(config: GPTConfig, repeats: int) -> dict:
    """get_model_info and `mypt inspect` on a bundle of `config` (weights only, no optimizer) and,
    for the same commands' fixed cost, on a tiny bundle."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        result = {}
        tiny = GPTConfig(block_size=8, vocab_size=config.vocab_size, n_layer=1, n_head=1, n_embd=8)
        for name, cfg in (("large", config), ("tiny", tiny)):
            path = Path(tmp) / name
            bundle.write_bundle(
                path, model_state=GPT(cfg).state_dict(), optimizer_state=None, **_bundle_parts(cfg, 0)
            )
            result[f"{name}_bytes"] = sum(bundle.file_sizes(path).values())
            result[f"{name}_get_model_info_s"] = _median_time(
                lambda p=path: bundle.get_model_info(p), repeats
            )
            command = [sys.executable, "-m", "mypt", "inspect", str(path)]
            result[f"{name}_mypt_inspect_s"] = _median_time(
                lambda c=command: subprocess.run(c, check=True, capture_output=True), repeats
            )
    return result


# -- the corpus --------------------------------------------------------------------------------


def make_corpus(folder: Path, megabytes: int) -> Path:
    """At least `megabytes` MB of text: the shared corpora repeated."""
    text = find_text("divina_commedia.txt").read_text() + find_text("tinyshakespeare.txt").read_text()
    copies = megabytes * 1_000_000 // len(text.encode()) + 1
    path = folder / f"corpus_{megabytes}mb.txt"
    path.write_text(text * copies)
    return path


def load_child(path: str, kind: str, cache_dir: str) -> None:
    """Entry of `storage.py load FILE KIND CACHE`: one load_tokens in a fresh process; prints JSON."""
    before = peak_rss_mb()
    start = time.perf_counter()
    cache = load_tokens(path, kind, cache_dir=cache_dir)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "hit": cache.hit, "peak_rss_mb": peak_rss_mb(),
                      "rss_before_mb": before, "array_mb": cache.tokens.nbytes / 1e6}))  # fmt: skip


def _load(path: Path, kind: str, cache_dir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "load", str(path), kind, str(cache_dir)],
        check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def data_cost(sizes_mb: tuple[int, ...]) -> dict:
    """Per corpus size and tokenizer: first load (tokenise) and cached load, each in a fresh process."""
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes_mb:
            corpus = make_corpus(Path(tmp), size)
            mb = corpus.stat().st_size / 1e6
            for kind in ("char", "gpt2"):
                cache_dir = Path(tmp) / f"cache-{size}-{kind}"
                first, cached = _load(corpus, kind, cache_dir), _load(corpus, kind, cache_dir)
                assert not first["hit"] and cached["hit"], "the second load must reuse the cache"
                result[f"{kind}_{size}mb"] = {
                    "corpus_mb": mb,
                    "tokenise_mb_per_s": mb / first["seconds"],
                    "first_s": first["seconds"],
                    "cached_s": cached["seconds"],
                    "speedup": first["seconds"] / cached["seconds"],
                    "first_peak_rss_mb": first["peak_rss_mb"],
                    "cached_peak_rss_mb": cached["peak_rss_mb"],
                    "import_rss_mb": first["rss_before_mb"],
                    "array_mb": first["array_mb"],
                }
            corpus.unlink()
    return result


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "load":
        load_child(*sys.argv[2:])
    else:
        sys.exit("usage: storage.py load FILE KIND CACHE_DIR")
