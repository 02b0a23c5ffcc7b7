"""What a person watching a training run sees: TensorBoard extras and the terminal progress bar.

`TrainingDashboard` adds to the scalars the LightningModule logs (train/loss, val/loss, lr,
tokens_per_sec, mfu, and grad_norm, which clipping computes):

- a text sample from a fixed prompt and seed at every validation (TensorBoard's Text tab), so the
  same prompt shows the model learning step after step;
- the architecture and training settings as HParams, with `val/loss`, `val/bpb` and `train/loss`
  as the metrics, so `tensorboard --logdir logs` compares models in the HParams tab.

`StepProgressBar` counts optimizer steps toward max_steps (a resumed run shows 1000/2000, not 0/1000)
with loss, tokens/s and the time left.
"""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from mypt.config import ARCHITECTURE_KEYS
from mypt.errors import MyptError
from mypt.fsdp import whole_model
from mypt.sampling import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPT, DEFAULT_TEMPERATURE, DEFAULT_TOP_K, sample

SAMPLE_TAG = "samples"
# the scalars the HParams tab shows beside each model's settings (their latest values)
HPARAM_METRICS = ("val/loss", "val/bpb", "train/loss")  # bpb: compares models across tokenizers
TRAINING = ("learning_rate", "min_lr_ratio", "warmup_steps", "weight_decay", "beta1", "beta2", "init_from")


class TrainingDashboard(Callback):
    def __init__(
        self,
        prompt: str = DEFAULT_PROMPT,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float = DEFAULT_TEMPERATURE,
        top_k: int | None = DEFAULT_TOP_K,
        seed: int = 1337,
    ) -> None:
        """TensorBoard extras: a text sample at each validation, and HParams.

        Args:
            prompt: Text the validation samples start from (its characters must be in a char
                tokenizer's vocabulary).
            max_new_tokens: Tokens sampled at each validation; 0 logs no samples.
            temperature: Sampling temperature of the validation samples.
            top_k: Sample from the k most likely tokens only.
            seed: Seed of the validation samples: the same at every validation, so that samples at
                different steps differ only because the model does.
        """
        if max_new_tokens < 0:
            raise MyptError(f"dashboard.max_new_tokens must not be negative, got {max_new_tokens}")
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.seed = seed

    # -- text samples -----------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check the prompt before the first step rather than fail at the first validation."""
        if self.max_new_tokens == 0:
            return
        tokenizer = trainer.datamodule.tokenizer
        try:
            tokenizer.encode(self.prompt)
        except MyptError as e:
            if self.prompt != DEFAULT_PROMPT:
                raise MyptError(f"--dashboard.prompt: {e}") from None
            self.prompt = tokenizer.decode([0])  # a vocabulary without newlines: start from its first token

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or self.max_new_tokens == 0:
            return
        if not any(isinstance(logger, TensorBoardLogger) for logger in trainer.loggers):
            return
        with whole_model(trainer, pl_module.model) as model:  # under FSDP, every rank gathers
            writers = _tensorboard_writers(trainer)
            if model is None or not writers:
                return
            text = sample(
                model,
                trainer.datamodule.tokenizer,
                self.prompt,
                self.max_new_tokens,
                self.temperature,
                self.top_k,
                self.seed,
            )
        for writer in writers:
            # at the val/loss point of the same validation (GPTModule logs it at the bundle's step)
            writer.add_text(SAMPLE_TAG, as_markdown_block(text), trainer.global_step)

    # -- hparams ----------------------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write this run's settings as an HParams session. Its metrics are the scalar tags already
        logged (val/loss, train/loss): TensorBoard shows their latest values, so a run stopped early
        or resumed later is compared by where it is now, and no value is logged twice."""
        if not trainer.is_global_zero:
            return
        params = run_hparams(trainer, pl_module)
        experiment, start, end = hparams_summaries(params, {tag: 0.0 for tag in HPARAM_METRICS})
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                file_writer = logger.experiment._get_file_writer()  # as TensorBoardLogger.log_hyperparams
                for summary in (experiment, start, end):
                    file_writer.add_summary(summary, trainer.global_step)


def run_hparams(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """Architecture and training settings as flat scalars (TensorBoard takes numbers, text, booleans)."""
    hparams = dict(pl_module.hparams)
    params: dict[str, Any] = {k: hparams[k] for k in ARCHITECTURE_KEYS + TRAINING if k in hparams}
    params["max_steps"] = trainer.max_steps
    params["accumulate_grad_batches"] = trainer.accumulate_grad_batches
    params["gradient_clip_val"] = trainer.gradient_clip_val
    params["precision"] = str(trainer.precision)
    dm = trainer.datamodule
    if dm is not None:
        params["batch_size"] = dm.batch_size
        params["tokenizer"] = dm.tokenizer_kind
        params["input_file"] = dm.input_file
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in params.items()}


def as_markdown_block(text: str) -> str:
    """TensorBoard renders text as Markdown: indent it as a code block to keep line breaks and verse."""
    return "\n".join("    " + line for line in text.split("\n"))


def _tensorboard_writers(trainer: pl.Trainer) -> list:
    if not trainer.is_global_zero:
        return []
    return [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


class StepProgressBar(TQDMProgressBar):
    """TQDM bar over optimizer steps: `step 1200/2000 [02:10<01:27, train/loss=1.52, tokens/s=18.7k]`."""

    MIN_INTERVAL_S = 0.25
    _last_draw = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._count_steps(trainer)  # a resumed run re-enters its epoch without on_train_epoch_start

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        super().on_train_epoch_start(trainer)
        self._count_steps(trainer)

    def _count_steps(self, trainer: pl.Trainer) -> None:
        bar = self.train_progress_bar
        if trainer.max_steps is not None and trainer.max_steps > 0:
            bar.reset(total=trainer.max_steps)
        bar.n = bar.initial = bar.last_print_n = trainer.global_step  # ETA from this run's own rate
        bar.set_description("step")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        step = trainer.global_step
        if bar is None or bar.disable or not self._should_update(step, bar.total):
            return
        now = time.monotonic()
        if now - self._last_draw >= self.MIN_INTERVAL_S or step == bar.total:
            # redrawing costs about a millisecond: a few times a second is all a person can read
            self._last_draw = now
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        rate = items.pop("tokens_per_sec", None)
        if isinstance(rate, (int, float)):
            items["tokens/s"] = f"{rate / 1000:.1f}k" if rate >= 1000 else f"{rate:.0f}"
        for key, value in items.items():
            if isinstance(value, float):
                items[key] = f"{value:.3f}"
        return items
