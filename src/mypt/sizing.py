"""`--model.size auto`: the architecture, batch and schedule for a time budget, a corpus and this machine.

One dial, as in nanochat: the depth. Depth d gives the width (32 d), the heads (32 or 64 wide), the
context and the batch (`shape_for_depth`). Which depth is chosen for a budget follows a measured
rule (benchmarks/sizing.py, docs/benchmarks.md "Sizing for a time budget"):

1. each candidate's speed on this machine is measured at start-up (a warm-up step and two timed
   training steps of the real model and optimizer, in the precision the run would use), smallest
   first, until a candidate is too large to matter or `MEASURE_SECONDS` are spent;
2. its tokens for the budget, D = tokens/s x training time, are discounted for repetition: a text
   seen for many epochs is worth less than as many fresh tokens (Muennighoff et al. 2023,
   "Scaling data-constrained language models": D' = U + U R* (1 - exp(-R / R*)), U the unique
   tokens, R = D/U - 1 the repeats, R* = 15.4);
3. the candidate whose effective tokens per (non-embedding) parameter D'/N is nearest, in ratio, to
   `TOKENS_PER_PARAM` wins. Chinchilla's 20 was the starting point; the value here is the one the
   grid measured on this project's 2-core CPU, for budgets of minutes.

A small text thereby gets a small model: once its epochs pass R*, more time buys little effective
data, so D'/N falls with N faster than the time allows, and the rule stops growing the model.
Anything the user gave (a flag or a config's architecture, batch, learning rate) wins: it is set
in every candidate and only the rest is chosen.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mypt.errors import MyptError

SIZES = ("auto",)
# The fitted rule (docs/benchmarks.md "Sizing for a time budget"): effective tokens per
# non-embedding parameter of the best shape per budget in the grid, geometric mean: 0.53 at 1 min
# (3 x 96), 0.46 at 2 min (4 x 128), 1.6 at 4 min (3 x 96), Dante char on the shared 2-core CPU.
# Far below Chinchilla's 20: runs of a few hundred steps, where a larger model learns more per step
# and costs little more per step (small models are overhead-bound). Budgets of hours are outside
# what was measured; there the ratio is expected to grow toward 20.
TOKENS_PER_PARAM = 0.73
REPEAT_HALF_LIFE = 15.4  # R*: Muennighoff et al. 2023's fitted value for repeated data
MEASURE_SECONDS = 4.0  # at most this long timing candidates at start-up (less for small budgets)
DEPTHS = (1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24)
# A run's tokens/s over the bare step timed at start-up. Not corrected: the one auto run of the grid
# trained at 2.6x its start-up timing (the machine's load changed in between), which fixes no figure.
LIGHTNING_SPEED = 1.0
# Of the time left after start-up, the share that trains (the rest validates and saves): 0.72 over
# the grid's 18 runs (0.49-0.92; 20 validation batches each).
TRAINING_SHARE = 0.72
ARCHITECTURE_FLAGS = ("model.n_layer", "model.n_head", "model.n_embd", "model.block_size")
CHOSEN_KEYS = (*ARCHITECTURE_FLAGS, "data.batch_size")
# tokens per byte of the text when the tokenizer is learnt or fixed (measured on tiny Shakespeare
# and the Divina Commedia: bpe-4096 0.31-0.36, gpt2 0.30-0.41)
TOKENS_PER_BYTE = {"bpe": 0.34, "gpt2": 0.33}


@dataclass(frozen=True)
class Shape:
    n_layer: int
    n_embd: int
    n_head: int
    block_size: int
    batch_size: int

    def text(self) -> str:
        return f"{self.n_layer} x {self.n_embd}, context {self.block_size}, batch {self.batch_size}"

    def settings(self) -> dict:
        """The flags this shape sets."""
        return {
            "model.n_layer": self.n_layer,
            "model.n_embd": self.n_embd,
            "model.n_head": self.n_head,
            "model.block_size": self.block_size,
            "data.batch_size": self.batch_size,
        }

    @property
    def tokens_per_step(self) -> int:
        return self.block_size * self.batch_size

    @property
    def params(self) -> int:
        """Non-embedding parameters: the blocks' matrices (attention 4 d^2, MLP 8 d^2 per layer)."""
        return 12 * self.n_layer * self.n_embd**2


def shape_for_depth(depth: int) -> Shape:
    """The one dial: width 32 per layer; heads 32 wide up to 192, 64 wide above; context 64 for the
    narrowest, 128 up to 192 wide, 256 above; 16 windows a batch."""
    width = 32 * depth
    head = 32 if width <= 192 else 64
    context = 64 if width <= 96 else 128 if width <= 192 else 256
    return Shape(depth, width, max(1, width // head), context, 16)


def with_given(shape: Shape, given: dict) -> Shape:
    """`shape` with the settings the user gave in place of the dial's."""
    n_layer = given.get("model.n_layer", shape.n_layer)
    n_embd = given.get("model.n_embd", shape.n_embd)
    n_head = given.get("model.n_head")
    if n_head is None:
        head = shape.n_embd // shape.n_head
        n_head = max(1, n_embd // head)
        while n_embd % n_head:
            n_head -= 1
    elif "model.n_embd" not in given:
        n_embd = max(n_head, round(n_embd / n_head) * n_head)
    return Shape(
        n_layer, n_embd, n_head, given.get("model.block_size", shape.block_size),
        given.get("data.batch_size", shape.batch_size),
    )  # fmt: skip


def candidates(given: dict) -> list[Shape]:
    shapes: list[Shape] = []
    for depth in DEPTHS:
        shape = with_given(shape_for_depth(depth), given)
        if shape not in shapes:
            shapes.append(shape)
    return sorted(shapes, key=lambda s: (s.params, s.tokens_per_step))


def effective_tokens(tokens: float, unique: float, r_star: float = REPEAT_HALF_LIFE) -> float:
    """Muennighoff et al. 2023: `tokens` drawn from `unique` tokens are worth D' fresh ones."""
    if unique <= 0 or tokens <= unique:
        return tokens
    repeats = tokens / unique - 1
    return unique + unique * r_star * (1 - math.exp(-repeats / r_star))


@dataclass
class Candidate:
    shape: Shape
    step_seconds: float | None = None  # measured, bare (without Lightning)
    precision: str | None = None

    @property
    def tokens_per_second(self) -> float | None:
        if not self.step_seconds:
            return None
        return self.shape.tokens_per_step / self.step_seconds * LIGHTNING_SPEED


@dataclass
class Choice:
    shape: Shape
    tokens_per_second: float
    train_seconds: float
    tokens: float
    effective: float
    unique_tokens: int
    reason: str  # why sizing ran: "--model.size auto" or "no architecture given"
    given: list[str]
    measured: list[dict]
    step_seconds: float
    precision: str | None

    @property
    def epochs(self) -> float:
        return self.tokens / max(self.unique_tokens, 1)

    def line(self) -> str:
        """The one line a run states: what was chosen and why."""
        shape = self.shape
        kept = f"; given: {', '.join(self.given)}" if self.given else ""
        return (
            f"mypt: size auto ({self.reason}{kept}): {shape.text()}: {shape.params / 1e6:.2g} M parameters "
            f"for {_count(self.tokens)} tokens in {_duration(self.train_seconds)} at "
            f"{_count(self.tokens_per_second)} tokens/s; about {_epochs(self.epochs)} of this text "
            f"({self.effective / shape.params:.2g} effective tokens per parameter, the rule's "
            f"{TOKENS_PER_PARAM:g})"
        )

    def record(self) -> dict:
        """training_state.json's `size_choice`."""
        return {
            "size": "auto",
            "reason": self.reason,
            "line": self.line().removeprefix("mypt: "),
            "chosen": asdict(self.shape),
            "given": self.given,
            "params": self.shape.params,
            "tokens_per_second": round(self.tokens_per_second, 1),
            "train_seconds": round(self.train_seconds, 2),
            "tokens": int(self.tokens),
            "effective_tokens": int(self.effective),
            "unique_tokens": int(self.unique_tokens),
            "epochs": round(self.epochs, 2),
            "rule": {
                "tokens_per_param": TOKENS_PER_PARAM,
                "repeat_half_life": REPEAT_HALF_LIFE,
                "lightning_speed": LIGHTNING_SPEED,
                "training_share": TRAINING_SHARE,
            },
            "candidates": self.measured,
        }


def _count(n: float) -> str:
    return f"{n / 1e6:.3g} M" if n >= 1e6 else f"{n / 1e3:.3g} k" if n >= 1e3 else f"{n:.0f}"


def _duration(seconds: float) -> str:
    return (
        f"{seconds / 60:.0f} min"
        if seconds >= 600
        else f"{seconds / 60:.1f} min"
        if seconds >= 60
        else f"{seconds:.0f} s"
    )


def _epochs(epochs: float) -> str:
    return f"{epochs:.0f} epochs" if epochs >= 1.95 else f"{epochs:.2g} epochs"


def choose(
    train_seconds: float,
    unique_tokens: int,
    measure: Callable[[Shape], tuple[float, str | None]],
    given: dict,
    reason: str,
    measure_seconds: float = MEASURE_SECONDS,
) -> Choice:
    """The candidate for `train_seconds` of training on `unique_tokens` tokens (see the module
    docstring); `measure(shape)` -> (seconds per bare training step, precision) times one."""
    pool = [Candidate(s) for s in candidates(given)]
    deadline = time.monotonic() + measure_seconds
    best: tuple[float, Candidate] | None = None
    for candidate in pool:
        if time.monotonic() > deadline and best is not None:
            break
        candidate.step_seconds, candidate.precision = measure(candidate.shape)
        tokens = candidate.tokens_per_second * train_seconds
        ratio = effective_tokens(tokens, unique_tokens) / candidate.shape.params
        distance = abs(math.log(ratio / TOKENS_PER_PARAM))
        if best is None or distance < best[0]:
            best = (distance, candidate)
        if ratio < TOKENS_PER_PARAM / 4:
            break  # larger ones only have fewer tokens per parameter
    assert best is not None
    winner = best[1]
    tokens = winner.tokens_per_second * train_seconds
    return Choice(
        shape=winner.shape,
        tokens_per_second=winner.tokens_per_second,
        train_seconds=train_seconds,
        tokens=tokens,
        effective=effective_tokens(tokens, unique_tokens),
        unique_tokens=unique_tokens,
        reason=reason,
        given=sorted(given),
        measured=[
            {**asdict(c.shape), "step_seconds": round(c.step_seconds, 5), "precision": c.precision}
            for c in pool
            if c.step_seconds
        ],
        step_seconds=winner.step_seconds / LIGHTNING_SPEED,
        precision=winner.precision,
    )


# -- measuring a training step --------------------------------------------------------------------


def time_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    block_size: int,
    vocab_size: int,
    precision: str | None,
    device: str = "cpu",
    steps: int = 2,
) -> float:
    """Seconds of one training step (forward, backward, optimizer step) of `model`, the best of
    `steps` after one warm-up step, on random tokens from a private generator (the run's RNG must
    not move)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(vocab_size, (batch_size, block_size), generator=generator).to(device)
    y = torch.randint(vocab_size, (batch_size, block_size), generator=generator).to(device)
    model.to(device).train()
    dtype = torch.bfloat16 if precision and precision.startswith("bf16") else None
    dtype = torch.float16 if precision and precision.startswith("16") else dtype
    best = float("inf")
    for i in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast(device_type=device, dtype=dtype or torch.float32, enabled=dtype is not None):
            _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            best = min(best, time.perf_counter() - start)
    return best


# -- what the user gave --------------------------------------------------------------------------


def given_keys(args: list[str]) -> dict[str, object]:
    """The settings given explicitly on a `mypt fit` command line, by flag or in a --config file
    (dotted names, e.g. `model.n_layer`), with their values as given."""
    import yaml  # jsonargparse's own dependency

    given: dict[str, object] = {}
    items = list(args)
    for i, item in enumerate(items):
        if not item.startswith("--"):
            continue
        name, _, value = item[2:].partition("=")
        if not _ and i + 1 < len(items):
            value = items[i + 1]
        if name == "config" or name in ("model", "data", "trainer"):
            loaded = _load_mapping(value, yaml)
            prefix = "" if name == "config" else f"{name}."
            given.update(_flatten(loaded, prefix))
        else:
            given[name] = _scalar(value, yaml)
    return given


def _load_mapping(value: str, yaml) -> dict:
    path = Path(value)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8") if path.is_file() else value)
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _flatten(mapping: dict, prefix: str) -> dict:
    flat: dict[str, object] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and key in ("model", "data", "trainer", "init_args"):
            inner = prefix if key == "init_args" else f"{prefix}{key}."
            flat.update(_flatten(value, inner))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _scalar(value: str, yaml) -> object:
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def check_size(size: str | None) -> None:
    if size is not None and size not in SIZES:
        raise MyptError(
            f"--model.size {size!r} is not a size: give auto (the architecture chosen for --trainer.max_time, "
            "the text and this machine), or set --model.n_layer/n_embd/n_head/block_size yourself"
        )


# -- the corpus, before it is tokenised ----------------------------------------------------------


def corpus_estimate(
    files: list, tokenizer: str, train_split: float, bpe_vocab: int | None
) -> tuple[int, int]:
    """(training tokens, vocabulary size) of the corpus, estimated before it is tokenised: exact
    characters for a char tokenizer on texts up to 64 MB, a measured tokens-per-byte otherwise."""
    n_bytes = sum(f.size for f in files)
    vocab = 50304 if tokenizer == "gpt2" else bpe_vocab or 4096
    if tokenizer == "char":
        chars: set[str] = set()
        n = 0
        for f in files:
            if f.kind == "text" and f.size <= 64 * 2**20:
                text = Path(f.path).read_text(encoding="utf-8", errors="replace")
                n += len(text)
                chars.update(text)
            else:
                n += f.size
        return int(n * train_split), max(len(chars) + 1, 2)
    if files and all(f.kind == "shard" for f in files):
        return int(n_bytes / 2 * train_split), vocab
    return int(n_bytes * TOKENS_PER_BYTE.get(tokenizer, 0.33) * train_split), vocab


def architecture_given(given: dict) -> list[str]:
    """The architecture flags among the given settings, in flag order."""
    return [key for key in ARCHITECTURE_FLAGS if key in given]


def sized_given(given: dict) -> dict:
    """The given settings that the sizing keeps (architecture and batch), as ints where they are."""
    kept = {}
    for key in CHOSEN_KEYS:
        if key in given:
            value = given[key]
            kept[key] = (
                int(value) if isinstance(value, (int, str)) and re.fullmatch(r"\d+", str(value)) else value
            )
    return kept
