"""The LightningModule: training hooks around the plain GPT."""

from __future__ import annotations

import math
import time

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.throughput import Throughput
from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

from mypt.bundle import build_model, load_config, resolve_bundle
from mypt.config import ARCHITECTURE_KEYS
from mypt.errors import MyptError
from mypt.fsdp import BundleFSDPStrategy
from mypt.model import GPT, GPTConfig
from mypt.optim import (
    adamw_kwargs,
    apply_settings,
    check_optimizer,
    check_strategy,
    muon_parameter_names,
    optimizer_of,
    set_lr,
    setup_optimizer,
)
from mypt.precision import auto_compile, peak_flops
from mypt.sampling import sample
from mypt.schedule import check_last_step, check_shape, continue_schedule, lr_at, new_schedule


def is_logging_step(trainer: pl.Trainer, step: int) -> bool:
    """Whether Lightning's logger writes the metrics of optimizer step number `step`, counted from 1
    (the step being taken is global_step + 1; once taken, it is global_step). Lightning writes when
    it is a multiple of log_every_n_steps (0 means no logging), and at a step after which the run
    was asked to stop (its last: Lightning would write stale values of earlier steps there)."""
    every = trainer.log_every_n_steps
    return every > 0 and (step % every == 0 or trainer.should_stop)


def unwrapped_name(name: str) -> str:
    """A parameter's name without the wrappers FSDP and activation checkpointing insert."""
    return name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")


class GPTModule(pl.LightningModule):
    def __init__(
        self,
        n_layer: int = 6,
        n_head: int = 6,
        n_embd: int = 384,
        block_size: int = 256,
        vocab_size: int = 65,
        dropout: float = 0.0,
        bias: bool = False,
        pos_emb: str = "rope",
        rope_base: float = 10000.0,
        norm: str = "rmsnorm",
        qk_norm: bool = True,
        mlp: str = "swiglu",
        mlp_hidden: int = 0,
        tie_embeddings: bool = False,
        logit_softcap: float = 0.0,
        zero_init_proj: bool = True,
        learning_rate: float = 4e-3,
        min_lr_ratio: float = 0.1,
        warmup_steps: int = 100,
        weight_decay: float = 0.1,
        beta1: float = 0.9,
        beta2: float = 0.99,
        optimizer: str = "muon",
        muon_lr_ratio: float = 2.5,
        muon_momentum: float = 0.95,
        lr_schedule: str = "wsd",
        decay_ratio: float = 0.6,
        optimizer_impl: str = "auto",
        compile: bool | None = None,
        init_from: str | None = None,
    ) -> None:
        """A GPT and how to train it.

        Args:
            n_layer: Transformer blocks.
            n_head: Attention heads per block.
            n_embd: Embedding width (a multiple of n_head).
            block_size: Context length in tokens.
            vocab_size: Vocabulary size (linked from the data's tokenizer).
            dropout: Dropout probability, in [0, 1).
            bias: Bias in Linear and LayerNorm layers.
            pos_emb: Positions: ``rope`` (rotary, in attention) or ``learned`` (GPT-2's table).
            rope_base: RoPE's base period (theta).
            norm: ``rmsnorm`` or ``layernorm``.
            qk_norm: RMSNorm of each head's queries and keys.
            mlp: ``swiglu``, ``relu2`` (ReLU squared) or ``gelu``.
            mlp_hidden: The MLP's hidden width; 0: 4 x n_embd, or about 8/3 x n_embd for SwiGLU.
            tie_embeddings: The output layer shares the token embedding's matrix.
            logit_softcap: Cap the logits at +-this by cap * tanh(logits / cap); 0: off.
            zero_init_proj: Start the residual projections at zero (else GPT-2's scaled init).
            learning_rate: Peak learning rate of AdamW (every parameter AdamW steps). The schedule
                scales every LR from it: Muon's is muon_lr_ratio x learning_rate, so a new value on
                resume moves both.
            min_lr_ratio: Floor of the decay, as a fraction of the peak.
            warmup_steps: Linear warm-up steps of a new model.
            weight_decay: Weight decay, applied to matrices only (AdamW's decoupled decay and Muon's).
            beta1: AdamW beta1.
            beta2: AdamW beta2.
            optimizer: ``muon``: Muon (torch.optim.Muon) on the 2-D matrices inside the transformer
                blocks, AdamW on embeddings, head, norms and biases; ``adamw``: AdamW on everything
                (nanoGPT's recipe). See mypt.optim and docs/benchmarks.md for the measurements.
            muon_lr_ratio: Muon's LR as a multiple of learning_rate (2.5: 0.01, the best of 0.01, 0.02
                and 0.04 in benchmarks/time_to_loss.py's sweep).
            muon_momentum: Muon's (Nesterov) momentum.
            lr_schedule: ``wsd`` (warm-up, a flat LR, then a linear decay to the floor over the last
                decay_ratio of max_steps) or ``cosine`` (warm-up, then cosine decay to the floor).
            decay_ratio: The fraction of max_steps over which ``wsd`` decays (0.6: the best of 0.2, 0.4
                and 0.6 measured).
            optimizer_impl: AdamW kernels: ``auto`` (fused on CUDA and CPU, the fastest there as
                measured in docs/benchmarks.md; foreach elsewhere), ``fused``, ``foreach`` or ``for-loop``.
            compile: Compile the model with torch.compile. Unset, chosen for the hardware (see
                mypt.precision): on for CUDA GPUs; off on a CPU, where it gains a few percent after
                20-40 s of compiling (docs/benchmarks.md).
            init_from: A bundle to fine-tune from: its weights and tokenizer start this new model.
        """
        super().__init__()
        self.save_hyperparameters()
        try:
            self.config = GPTConfig(**{k: self.hparams[k] for k in ARCHITECTURE_KEYS})
        except ValueError as e:
            raise MyptError(str(e)) from None
        for name in (
            "learning_rate", "weight_decay", "beta1", "beta2", "min_lr_ratio", "warmup_steps",
            "muon_lr_ratio", "muon_momentum",
        ):  # fmt: skip
            if getattr(self.hparams, name) < 0:
                raise MyptError(f"{name} must not be negative, got {getattr(self.hparams, name)}")
        if optimizer_impl not in ("auto", "fused", "foreach", "for-loop"):
            raise MyptError(
                f"optimizer_impl must be auto, fused, foreach or for-loop, got {optimizer_impl!r}"
            )
        check_optimizer(optimizer)
        check_shape(lr_schedule, decay_ratio)
        self.model = GPT(self.config)
        # decided here, on whole tensors: under FSDP the optimizer sees flattened shards
        self._decayed = {name for name, p in self.model.named_parameters() if p.dim() >= 2}
        self._muon = muon_parameter_names(self.model)
        # training FLOPs per token (for MFU), counted once on the whole model: under FSDP each rank's
        # parameters are flat local shards, and a count taken then would be world_size times too low
        self.flops_per_token: int = self.model.flops_per_token()
        if init_from:
            parent = resolve_bundle(init_from)
            self.model.load_state_dict(build_model(parent, load_config(parent)).state_dict())
        self.lr_segments: list[dict] | None = None  # the LR schedule; see mypt.schedule
        self._throughput: Throughput | None = None  # Lightning's tokens/s, FLOP/s and MFU arithmetic
        # (clock, seconds spent training, samples on this device) at the last throughput reading
        self._timer: tuple[float, float, int] | None = None
        self._validation_started: float | None = None
        self._validation_time = 0.0  # seconds of evaluation since the last reading
        self._token_bytes: torch.Tensor | None = None  # UTF-8 bytes of each token id, for bits per byte
        self._eval_sums: torch.Tensor | None = None  # (nats, bytes) over this evaluation's windows

    def configure_model(self) -> None:
        compile_model = self.hparams.compile
        if compile_model is None:  # not chosen by `mypt fit`: GPTModule used on its own
            compile_model = auto_compile(self.device.type)
        if compile_model:
            self.model.compile()

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        return self.model(idx, targets)

    # -- steps ------------------------------------------------------------------------------

    def _loss(self, batch) -> torch.Tensor:
        x, y = batch
        _, loss = self.model(x, y)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        lr = self.lr_at(self.global_step)
        set_lr(self.optimizers(), lr)
        loss = self._loss(batch)
        if is_logging_step(self.trainer, self.global_step + 1):
            # only on the steps the logger writes: self.log costs ~0.5 ms of Python per call, which
            # on a small CPU model is a few percent of a step (see docs/benchmarks.md)
            self.log("train/loss", loss, prog_bar=True)
            self.log("lr", lr)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self.log("val/loss", self._evaluate(batch), prog_bar=True, sync_dist=True)

    def test_step(self, batch, batch_idx: int) -> None:
        self.log("test/loss", self._evaluate(batch), sync_dist=True)

    # -- bits per byte ----------------------------------------------------------------------

    def _evaluate(self, batch) -> torch.Tensor:
        """The batch's mean loss per token; adds its total nats and the UTF-8 bytes of its targets
        to the evaluation's sums, from which bits per byte are computed at its end."""
        loss = self._loss(batch)
        token_bytes = self._byte_lengths()
        if token_bytes is not None:
            _, y = batch
            dtype = torch.float32 if self.device.type == "mps" else torch.float64  # mps has no float64
            sums = torch.stack([loss.detach().to(dtype) * y.numel(), token_bytes[y].sum().to(dtype)])
            self._eval_sums = sums if self._eval_sums is None else self._eval_sums + sums
        return loss

    def _byte_lengths(self) -> torch.Tensor | None:
        """UTF-8 bytes per token id on this device, from the data's tokenizer (None when it has none)."""
        if self._token_bytes is None:
            tokenizer = getattr(getattr(self.trainer, "datamodule", None), "tokenizer", None)
            if not hasattr(tokenizer, "token_byte_lengths"):
                return None
            self._token_bytes = torch.tensor(tokenizer.token_byte_lengths(), dtype=torch.int64)
        if self._token_bytes.device != self.device:
            self._token_bytes = self._token_bytes.to(self.device)
        return self._token_bytes

    def _log_bits_per_byte(self, stage: str) -> None:
        """`<stage>/bpb`: the evaluation's total nats / ln 2 / the bytes its windows decode to, summed
        over every rank first. Unlike the loss per token, it compares models with different tokenizers."""
        sums, self._eval_sums = self._eval_sums, None
        if sums is None:
            return
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        if sums[1] > 0:
            # the same value on every rank; sync_dist only keeps Lightning from warning about it
            self.log(f"{stage}/bpb", (sums[0] / math.log(2) / sums[1]).float(), sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._eval_sums = None

    def on_validation_epoch_end(self) -> None:
        self._log_bits_per_byte("val")
        if self.trainer.state.fn == "fit":
            # the x of this validation in the logger: the step of the bundle saved with it (Lightning
            # would use the count of batches before the last one, one less)
            self.log("step", float(self.global_step), sync_dist=True)

    def on_test_epoch_start(self) -> None:
        self._eval_sums = None

    def on_test_epoch_end(self) -> None:
        self._log_bits_per_byte("test")

    def predict_step(self, batch: tuple[int, str], batch_idx: int) -> tuple[int, str]:
        """(index, a sample continuing prompt number `index`): the same function as `mypt generate`,
        seeded by the prompt's index in the whole list, which on several ranks is not batch_idx."""
        index, prompt = batch
        return index, sample(self.model, self.trainer.datamodule.tokenizer, prompt, seed=index)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """tokens/s (and MFU where the device's peak is known) over the steps since the last logged
        step, computed by Lightning's Throughput on logging steps only (no synchronisation per step)."""
        step = self.global_step
        if self._throughput is None or not is_logging_step(self.trainer, step):
            return
        x, _ = batch
        batches = step * self.trainer.accumulate_grad_batches  # on this device
        samples = batches * x.shape[0]
        if self._timer is not None and samples <= self._timer[2]:
            return  # a micro-batch of the step already read (gradient accumulation)
        if self.device.type == "cuda":
            # kernels are queued asynchronously: the clock must wait for the steps it times to finish
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        if self._timer is None:
            training_seconds, new_samples = 0.0, 0
        else:
            # tokens_per_sec measures training steps, not the evaluations between them
            clock, training_seconds, last_samples = self._timer
            training_seconds += max(now - clock - self._validation_time, 1e-9)
            new_samples = samples - last_samples
        self._timer = (now, training_seconds, samples)
        self._validation_time = 0.0
        self._throughput.update(
            time=training_seconds,
            batches=batches,
            samples=samples,
            lengths=samples * x.shape[1],
            flops=self.flops_per_token * new_samples * x.shape[1],
        )
        metrics = self._throughput.compute()
        if "device/items_per_sec" in metrics:
            self.log(
                "tokens_per_sec", metrics["device/items_per_sec"] * self.trainer.world_size, prog_bar=True
            )
        if "device/mfu" in metrics:
            self.log("mfu", metrics["device/mfu"])

    def on_validation_start(self) -> None:
        self._validation_started = time.perf_counter()

    def on_validation_end(self) -> None:
        if self._validation_started is not None:
            self._validation_time += time.perf_counter() - self._validation_started
            self._validation_started = None

    # -- optimizer and schedule -------------------------------------------------------------

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """The run's optimizer, as mypt.optim lays it out (`--model.optimizer`)."""
        # None: called without a Trainer
        precision, strategy = (
            getattr(self._trainer, name, None) for name in ("precision_plugin", "strategy")
        )
        check_strategy(strategy, self.hparams.optimizer)
        sharded_scaler = isinstance(getattr(precision, "scaler", None), ShardedGradScaler)
        h = self.hparams
        return setup_optimizer(
            [(unwrapped_name(n), p) for n, p in self.model.named_parameters()],
            optimizer=h.optimizer,
            learning_rate=h.learning_rate,
            muon_lr_ratio=h.muon_lr_ratio,
            momentum=h.muon_momentum,
            weight_decay=h.weight_decay,
            betas=(h.beta1, h.beta2),
            decayed=self._decayed,
            muon_names=self._muon,
            adamw=adamw_kwargs(h.optimizer_impl, self.device, sharded_scaler),
        )

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """Unscale, clip, and log the gradient norm on logging steps (the norm that clipping computes,
        so it costs nothing more; taken after unscaling, before clipping).

        With a loss scaler (16-mixed), Lightning unscales before this hook only for optimizers that do
        not unscale inside their step; fused AdamW (the default) does, so its gradients arrive here
        still multiplied by the loss scale (65536 at first): they are unscaled here first, whatever
        the strategy (FSDP's precision plugin is not Lightning's MixedPrecision, and its clipping used
        to act on scaled gradients). Under FSDP each rank holds a shard of the gradient, so FSDP
        computes the norm over all of them; Lightning's own clipping refuses both cases."""
        strategy, scaler = self.trainer.strategy, getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None and getattr(optimizer, "_step_supports_amp_scaling", False):
            scaler.unscale_(optimizer)  # the step then sees that they are unscaled already
        by_norm = bool(gradient_clip_val) and gradient_clip_algorithm in (None, "norm")
        log_norm = is_logging_step(self.trainer, self.global_step + 1)  # the step being taken
        params = [p for group in optimizer.param_groups for p in group["params"]]
        norm = None
        if by_norm or log_norm:
            max_norm = gradient_clip_val if by_norm else float("inf")  # inf: measure only
            if isinstance(strategy, BundleFSDPStrategy):
                norm = strategy.clip_grad_norm(max_norm)
            else:
                norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if gradient_clip_val and not by_norm:  # by value, on logging steps too
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        if log_norm and norm is not None:
            self.log("grad_norm", norm, on_step=True, on_epoch=False)

    def lr_at(self, step: int) -> float:
        if self.lr_segments is None:
            self.lr_segments = new_schedule(
                self.trainer.max_steps,
                self.hparams.learning_rate,
                self.hparams.min_lr_ratio,
                self.hparams.warmup_steps,
                self.hparams.lr_schedule,
                self.hparams.decay_ratio,
            )
        return lr_at(step, self.lr_segments)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resume: the schedule continues, or starts a new segment if learning_rate/max_steps changed."""
        saved = checkpoint.get("mypt", {}).get("training_state", {})
        states = checkpoint.get("optimizer_states") or []
        trained_with = optimizer_of(states[0]) if states else self.hparams.optimizer
        if trained_with != self.hparams.optimizer:
            raise MyptError(
                f"--model.optimizer {self.hparams.optimizer}: this model was trained with {trained_with}, whose "
                f"optimizer state the bundle holds; resume with --model.optimizer {trained_with}, or start a "
                "new model from it with --model.init_from"
            )
        self.lr_segments = continue_schedule(
            saved.get("lr_schedule"),
            checkpoint.get("global_step", saved.get("step", 0)),
            self.trainer.max_steps,
            self.hparams.learning_rate,
            self.hparams.min_lr_ratio,
            self.hparams.lr_schedule,
            self.hparams.decay_ratio,
        )

    def on_train_start(self) -> None:
        """Settings given for this run win over those restored with the optimizer state."""
        check_last_step(self.trainer.max_steps)
        # the peak in the run's compute dtype: Lightning's figure on a GPU, measured on a CPU (0.1 s)
        peak = peak_flops(self.device, self.trainer.precision) if self.trainer.loggers else None
        self._throughput = Throughput(available_flops=peak, world_size=self.trainer.world_size, window_size=2)
        self._timer = None
        h = self.hparams
        apply_settings(
            self.optimizers(),
            muon_lr_ratio=h.muon_lr_ratio,
            momentum=h.muon_momentum,
            weight_decay=h.weight_decay,
            betas=(h.beta1, h.beta2),
        )
        set_lr(self.optimizers(), self.lr_at(self.global_step))
