"""A corpus at scale: a folder tokenised on one core and on every core, the cached reload, peak memory
against corpus size, and training from token shards against training from the text.

Each load runs in a fresh process (pinned to one core for the one-core figure) so imports, caches and
peak memory are its own; memory is the peak summed over the process and its tokenising workers.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from common import find_text

HERE = Path(__file__).resolve().parent


def make_folder(folder: Path, megabytes: int, file_mb: int = 8) -> Path:
    """A folder of `megabytes` MB of text in files of `file_mb` MB: the shared corpora repeated, each
    file opened by its own number so that no two have the same sha256."""
    text = find_text("divina_commedia.txt").read_text() + find_text("tinyshakespeare.txt").read_text()
    body = text * (file_mb * 1_000_000 // len(text.encode()) + 1)
    folder.mkdir(parents=True, exist_ok=True)
    hour_ago = time.time() - 3600  # dated back, as a corpus that sits on disk is (see file_digest)
    for i in range(max(1, megabytes // file_mb)):
        (folder / f"{i:04d}.txt").write_text(f"{i}\n{body}")
        os.utime(folder / f"{i:04d}.txt", (hour_ago, hour_ago))
    return folder


class TreeMemory:
    """Peak resident memory of this process and its descendants (the tokenising workers), sampled."""

    def __init__(self, interval: float = 0.05) -> None:
        import psutil

        self.me, self.peak, self.interval = psutil.Process(), 0.0, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in [self.me, *self.me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total / 1e6)
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def load_child(folder: str, kind: str, cache_dir: str, workers: str, cores: str) -> None:
    """Entry of `tokenisation.py load FOLDER KIND CACHE WORKERS CORES`: one load in a fresh process
    (CORES > 0 pins it to that many cores); prints JSON."""
    if int(cores) > 0:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: int(cores)])
    from mypt.corpus import resolve_inputs
    from mypt.token_cache import load_corpus

    with TreeMemory() as memory:
        start = time.perf_counter()
        corpus = load_corpus(resolve_inputs(folder), kind, cache_dir=cache_dir, workers=int(workers))
        seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "hit": corpus.hit, "peak_tree_mb": memory.peak,
                      "n_tokens": corpus.n_tokens}))  # fmt: skip


def _load(folder: Path, kind: str, cache_dir: Path, workers: int, cores: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "load", str(folder), kind, str(cache_dir), str(workers), str(cores)],
        check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])},
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def tokenisation_cost(plan: dict[str, tuple[int, ...]]) -> dict:
    """Per tokenizer and folder size (MB): first tokenisation on one core and on every core, then the
    cached reload."""
    cores = len(os.sched_getaffinity(0))
    result: dict = {"cores": cores}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sorted({s for sizes in plan.values() for s in sizes}):
            folder = make_folder(Path(tmp) / f"corpus_{size}mb", size)
            mb = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
            for kind, sizes in plan.items():
                if size not in sizes:
                    continue
                one = _load(folder, kind, Path(tmp) / f"one-{size}-{kind}", 1, 1)
                many = _load(folder, kind, Path(tmp) / f"all-{size}-{kind}", cores, 0)
                cached = _load(folder, kind, Path(tmp) / f"all-{size}-{kind}", cores, 0)
                assert not one["hit"] and not many["hit"] and cached["hit"]
                assert one["n_tokens"] == many["n_tokens"], "one core and many must give the same ids"
                result[f"{kind}_{size}mb"] = {
                    "corpus_mb": mb,
                    "one_core_mb_per_s": mb / one["seconds"],
                    "all_cores_mb_per_s": mb / many["seconds"],
                    "speedup": one["seconds"] / many["seconds"],
                    "per_core_mb_per_s": mb / many["seconds"] / cores,
                    "first_s": many["seconds"],
                    "cached_s": cached["seconds"],
                    "cached_speedup": many["seconds"] / cached["seconds"],
                    "peak_tree_mb_one": one["peak_tree_mb"],
                    "peak_tree_mb_all": many["peak_tree_mb"],
                }
            for f in folder.iterdir():
                f.unlink()
    return result


# -- training from shards ---------------------------------------------------------------------


def write_shards(folder: Path, ids: np.ndarray, n_train: int) -> Path:
    """llm.c shards of `ids`: the first 90% in `n_train` train shards, the rest in one val shard."""
    folder.mkdir(parents=True, exist_ok=True)
    cut = int(len(ids) * 0.9)
    parts = [("val", 0, ids[cut:])] + [
        ("train", i + 1, part) for i, part in enumerate(np.array_split(ids[:cut], n_train))
    ]
    for split, i, part in parts:
        header = np.zeros(256, dtype="<i4")
        header[:3] = [20240520, 1, len(part)]
        (folder / f"shakespeare_{split}_{i:06d}.bin").write_bytes(
            header.tobytes() + part.astype("<u2").tobytes()
        )
    return folder


def shard_training(steps: int, rounds: int, warmup: int) -> dict:
    """configs/shakespeare_gpt2.yaml trained from the text and from llm.c shards of the same ids,
    alternating runs of `steps` steps, `rounds` times each; tokens/s is the median step."""
    from training import Interleave, _cwd, _env, _quiet, run_mypt, summarize

    from mypt.tokenizer import GPT2Tokenizer

    config = HERE.parent / "configs" / "shakespeare_gpt2.yaml"
    text = find_text("tinyshakespeare.txt")
    ids = np.asarray(GPT2Tokenizer().encode(text.read_text()), dtype=np.uint16)
    times: dict[str, list] = {"text": [], "shards": []}
    with tempfile.TemporaryDirectory() as tmp, _quiet(), _env(MYPT_CACHE_DIR=f"{tmp}/cache"), _cwd(tmp):
        shards = write_shards(Path(tmp) / "shards", ids, 4)
        for r in range(rounds):
            for name, source in (("text", text), ("shards", shards)):
                timer = Interleave({}, steps)
                args = ["--config", str(config), "--data.input_file", str(source),
                        "--model_name", f"{name}{r}", "--trainer.max_steps", str(steps),
                        "--trainer.val_check_interval", str(steps), "--trainer.limit_val_batches", "2"]  # fmt: skip
                run_mypt(args, timer)
                times[name] += timer.times["mypt"][warmup:]
    tokens = 12 * 64  # batch_size x block_size of the config
    out = {name: summarize(t, 0, tokens) for name, t in times.items()}
    out["ratio"] = out["shards"]["tokens_per_sec"] / out["text"]["tokens_per_sec"]
    out["steps_timed"] = statistics.median([len(t) for t in times.values()])
    return out


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "load":
        load_child(*sys.argv[2:])
    else:
        sys.exit("usage: tokenisation.py load FOLDER KIND CACHE_DIR WORKERS CORES")
