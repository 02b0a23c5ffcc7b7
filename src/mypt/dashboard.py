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

import sys
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from mypt.config import ARCHITECTURE_KEYS
from mypt.errors import MyptError
from mypt.fsdp import whole_model
from mypt.sampling import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPT, DEFAULT_TEMPERATURE, DEFAULT_TOP_K, sample

SAMPLE_TAG = "samples"
# a run is said to be long, with its expected duration, once its first steps are timed
ESTIMATE_AFTER_STEPS = 10
LONG_RUN_S = 30 * 60
# the scalars the HParams tab shows beside each model's settings (their latest values)
HPARAM_METRICS = ("val/loss", "val/bpb", "train/loss")  # bpb: compares models across tokenizers
TRAINING = ("learning_rate", "min_lr_ratio", "warmup_steps", "weight_decay", "beta1", "beta2", "init_from")


def now() -> float:
    return time.monotonic()


class TrainingClock:
    """The seconds this run spent on training steps, for the time left: from the end of its first step
    (start-up, a resume's restore and the first step's warm-up left out), with each validation and the
    save after it left out (from the validation's start to the next training batch). A resumed run or
    one that just validated would otherwise expect its validations' pace from its training steps."""

    def __init__(self) -> None:
        self.first_step: int | None = None  # the step the clock started at
        self.seconds = 0.0
        self._since: float | None = None  # None: paused (before the first step, or validating)

    def step_end(self, step: int) -> None:
        """At every training batch's end."""
        t = now()
        if self.first_step is None:
            self.first_step = step
        elif self._since is not None:
            self.seconds += t - self._since
        self._since = t

    def pause(self) -> None:
        """At a validation's start."""
        if self._since is not None:
            self.seconds += now() - self._since
            self._since = None

    def go_on(self) -> None:
        """At a training batch's start: a validation before it no longer counts."""
        if self._since is None and self.first_step is not None:
            self._since = now()

    def steps(self, step: int) -> int:
        return 0 if self.first_step is None else step - self.first_step

    def per_step(self, step: int) -> float | None:
        return self.seconds / self.steps(step) if self.steps(step) > 0 else None

    def left(self, step: int, total: int) -> float | None:
        """Seconds to reach step `total` at this run's pace so far."""
        per_step = self.per_step(step)
        return None if per_step is None else per_step * max(0, total - step)


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
        self._clock = TrainingClock()
        self._estimated = False

    # -- how long the run will take ---------------------------------------------------------

    def on_train_batch_start(self, *_: Any) -> None:
        self._clock.go_on()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._clock.pause()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        """After the first few steps, say how long the run will take when that is long (the
        design note's model for 5,000 steps on a 2-core CPU: about 3 hours)."""
        step = trainer.global_step
        self._clock.step_end(step)
        if self._clock.steps(step) != ESTIMATE_AFTER_STEPS or self._estimated or not trainer.is_global_zero:
            return
        self._estimated = True
        per_step = self._clock.per_step(step)
        left = self._clock.left(step, trainer.max_steps)
        if left >= LONG_RUN_S:
            advice = ""
            if pl_module.device.type == "cpu":
                advice = "; on a CPU, configs/dante_cpu.yaml (4 layers, 128 wide) trains in minutes"
            print(
                f"\nmypt: about {per_step:.2g} s a step: the {trainer.max_steps - step} steps left take "
                f"about {_duration(left)} on this {pl_module.device.type}{advice}",
                file=sys.stderr,
            )

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
                # SummaryWriter's own writer, as TensorBoardLogger.log_hyperparams uses it (that method
                # would also log each metric as a 0 at step 0); torch is pinned below 3 and
                # test_dashboards reads the session back
                file_writer = logger.experiment._get_file_writer()
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


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def as_markdown_block(text: str) -> str:
    """TensorBoard renders text as Markdown: indent it as a code block to keep line breaks and verse."""
    return "\n".join("    " + line for line in text.split("\n"))


def _tensorboard_writers(trainer: pl.Trainer) -> list:
    if not trainer.is_global_zero:
        return []
    return [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


class StepProgressBar(TQDMProgressBar):
    """TQDM bar over optimizer steps: `step 1200/2000 [02:10, 1 min left, train/loss=1.52, tokens/s=18.7k]`,
    the time left from the training steps only (TrainingClock; tqdm's own counts validations in)."""

    MIN_INTERVAL_S = 0.25
    _last_draw = 0.0
    # tqdm's bar with mypt's time left in place of tqdm's remaining time and rate
    TRAIN_BAR_FORMAT = "{{l_bar}}{{bar}}| {{n_fmt}}/{{total_fmt}} [{{elapsed}}{left}{{postfix}}]"

    def __init__(self) -> None:
        super().__init__()
        self._clock = TrainingClock()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._count_steps(trainer)  # a resumed run re-enters its epoch without on_train_epoch_start

    def on_train_batch_start(self, *_: Any) -> None:
        self._clock.go_on()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._clock.pause()
        super().on_validation_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        super().on_train_epoch_start(trainer)
        self._count_steps(trainer)

    def _count_steps(self, trainer: pl.Trainer) -> None:
        bar = self.train_progress_bar
        if trainer.max_steps is not None and trainer.max_steps > 0:
            bar.reset(total=trainer.max_steps)
        bar.n = bar.initial = bar.last_print_n = trainer.global_step
        bar.bar_format = self.TRAIN_BAR_FORMAT.format(left="")  # the time left once steps are timed
        bar.set_description("step")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        step = trainer.global_step
        self._clock.step_end(step)
        if bar is None or bar.disable or not self._should_update(step, bar.total):
            return
        t = time.monotonic()
        if t - self._last_draw >= self.MIN_INTERVAL_S or step == bar.total:
            # redrawing costs about a millisecond: a few times a second is all a person can read
            self._last_draw = t
            left = self._clock.left(step, bar.total) if bar.total else None
            bar.bar_format = self.TRAIN_BAR_FORMAT.format(left=f", {_duration(left)} left" if left else "")
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        return _metrics_text(super().get_metrics(trainer, pl_module))


def _metrics_text(items: dict[str, Any]) -> dict[str, Any]:
    """The progress metrics as a person reads them: tokens/s in thousands, losses to 3 decimals."""
    items = dict(items)
    items.pop("v_num", None)
    rate = items.pop("tokens_per_sec", None)
    if isinstance(rate, (int, float)):
        items["tokens/s"] = f"{rate / 1000:.1f}k" if rate >= 1000 else f"{rate:.0f}"
    for key, value in items.items():
        if isinstance(value, float):
            items[key] = f"{value:.3f}"
    return items


class StepProgressLines(ProgressBar):
    """Progress for output that is not a terminal (a file, CI, nohup, SLURM): one plain line every
    `every_s` seconds and after each validation, instead of a bar whose every redraw (and every
    validation bar) lands in the file."""

    def __init__(self, every_s: float = 30.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._enabled = True
        self._last = 0.0
        self._clock = TrainingClock()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = time.monotonic()

    def on_train_batch_start(self, *_: Any) -> None:
        self._clock.go_on()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        self._clock.step_end(trainer.global_step)
        if self._enabled and time.monotonic() - self._last >= self.every_s:
            self._line(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._clock.pause()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled and trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._line(trainer, pl_module)

    def _line(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = time.monotonic()
        step, total = trainer.global_step, trainer.max_steps
        parts = [f"step {step}/{total}"]
        parts += [f"{k} {v}" for k, v in _metrics_text(self.get_metrics(trainer, pl_module)).items()]
        left = self._clock.left(step, total)
        if left is not None and step < total:
            parts.append(f"{_duration(left)} left")
        print("  ".join(parts), flush=True)


def progress_callback() -> ProgressBar:
    """A bar on a terminal; plain lines when the output goes to a file or a pipe."""
    return StepProgressBar() if sys.stdout.isatty() else StepProgressLines()


class StepTensorBoardLogger(TensorBoardLogger):
    """TensorBoard's logger without Lightning's `epoch` scalar: mypt trains by steps, and the epoch is
    always 0."""

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)


def start_header(
    trainer: pl.Trainer, pl_module: pl.LightningModule, dm: Any, dirpath: Any, resume_step: int | None
) -> str:
    """mypt's few lines at the start of a run: what is trained, how big, on what, and from where."""
    what = f"resuming at step {resume_step}" if resume_step is not None else "a new model"
    init_from = pl_module.hparams.get("init_from")
    if init_from and resume_step is None:
        what = f"a new model fine-tuned from {init_from}"
    tokens = dm.batch_size * dm.block_size * trainer.accumulate_grad_batches * trainer.world_size
    steps = f"{trainer.max_steps} steps"
    if resume_step is not None:  # max_steps counts from the model's first step, not this run's
        steps = f"to step {trainer.max_steps}, {trainer.max_steps - resume_step} to go"
    devices = (
        f"{trainer.num_devices} x {type(trainer.accelerator).__name__.removesuffix('Accelerator').lower()}"
    )
    return "\n".join(
        [
            f"mypt: training {dirpath} ({what}): {_count(pl_module.model.num_params())} parameters, "
            f"{dm.tokenizer_kind} tokenizer ({dm.vocab_size} tokens)",
            f"  {tokens:,} tokens a step (batch {dm.batch_size} x block {dm.block_size} x accumulate "
            f"{trainer.accumulate_grad_batches} x {trainer.world_size} rank{'s' if trainer.world_size > 1 else ''}), "
            f"{steps}, validating every {trainer.val_check_interval}",
            f"  on {devices}, precision {trainer.precision} (--lightning_messages true: Lightning's own lines)",
        ]
    )
