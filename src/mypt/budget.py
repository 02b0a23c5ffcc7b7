"""The time budget: `--trainer.max_time` drives the run, start-up included.

With a budget the learning-rate schedule still counts steps (so a run can be rerun by steps), but
its last step is planned from the measured time of a step, of a validation and of a save:

- until the decay begins, the last step is re-estimated after every step (WSD's flat phase, or a
  cosine's warm-up, does not depend on where the run ends), so the decay is placed from what this
  machine is doing now, not from a guess made at the start;
- once the decay has begun the last step is fixed; only when the machine's speed drifts, so that
  the run would overrun its budget by more than `SHRINK` of it or end early by more than `DRIFT`,
  is it planned again, as a new schedule segment from the LR reached (continuous: the same rule as
  a resume with a new max_steps), recorded in `budget.replans`;
- the plan leaves time for the validations to come, the final validation and save and the exit, so
  the run ends with the LR at its floor, validated and saved, inside the budget; if the time runs
  out anyway (the machine slowed down), it stops early rather than overrun.

`--trainer.max_steps` with a budget is a cap: whichever ends first. Lightning's own `Timer`
(`Trainer(max_time=...)`) is not used: it would stop at the budget and then validate and save past
it. Under DDP rank zero's clock decides the stop and the last step for every rank. The budget is
the model's: a resume counts what is left of it (the time spent is recorded in
training_state.json, `budget`), and a larger `--trainer.max_time` extends the run: before the
decay began, the flat phase goes on and the decay moves to the new end; after it began (or once the
run had ended), the schedule goes on from the LR reached to the floor at the new end, as a larger
max_steps does (mypt.schedule). Every step at which a phase began is recorded (`budget.phases`),
with the segments of `lr_schedule`, so that a budget run can be rerun exactly by steps.
"""

from __future__ import annotations

import collections
import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from mypt import corpus, sizing
from mypt.errors import MyptError
from mypt.report import duration_text
from mypt.schedule import continue_schedule, decay_start, lr_at

# Re-plan a fixed decay only when the run would end this far (fraction of the budget) from its end:
# at 1% a loaded 2-core machine re-planned every 20 steps (the step time moves by 10-30%).
DRIFT = 0.02
# Steps are planned as this much slower than measured, so that a machine that slows down a little
# still reaches the planned last step (and the LR its floor) instead of being stopped early.
SAFETY = 1.03
# ...and a fixed decay is planned earlier only once it would overrun by this much of the budget.
SHRINK = 0.005
# Time kept for what follows the last save: the end lines and the interpreter's exit, which frees
# torch and Lightning (1.4 s of CPU). On the shared 2-core CPU under load it took 2.7-9.3 s after
# the last save, 0.11-0.76 of the run's start-up time (median 0.27, 17 runs of benchmarks/sizing.py):
# a quarter of the start-up, at least a second (a run inside another process has no exit).
EXIT_SECONDS = 1.0
EXIT_PER_STARTUP = 0.25


def exit_seconds(startup: float) -> float:
    return min(15.0, max(EXIT_SECONDS, EXIT_PER_STARTUP * startup))


# Before a validation has been timed: a validation batch costs about this fraction of a training
# step (a forward pass without the backward and the optimizer: 0.3-0.4 measured), and a save this long.
VAL_BATCH_PER_STEP = 0.4
FIRST_SAVE_SECONDS = 0.5
# The warm-up takes at most this share of a budget run's steps.
WARMUP_SHARE = 0.1
PARTS = ("start-up", "training", "validation", "saving")


def parse_max_time(value: Any) -> float | None:
    """Seconds of a `--trainer.max_time` value, in the forms Lightning's Timer takes: "DD:HH:MM:SS",
    a dict of timedelta's arguments ({"minutes": 5}), or a timedelta. None: no budget."""
    if value is None:
        return None
    flag = "--trainer.max_time"
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, dict):
        try:
            seconds = timedelta(**value).total_seconds()
        except (TypeError, ValueError, OverflowError) as e:
            raise MyptError(
                f"{flag} {value}: {e} (a dict of timedelta's arguments, e.g. {{minutes: 5}})"
            ) from None
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(-?)(\d+):(\d\d):(\d\d):(\d\d)\s*", value)
        if not match:
            raise MyptError(
                f"{flag} {value!r} is not a duration: give DD:HH:MM:SS (00:00:10:00 is ten minutes), "
                "or a dict such as {minutes: 10}"
            )
        days, hours, minutes, secs = (int(match.group(i)) for i in range(2, 6))
        seconds = timedelta(days=days, hours=hours, minutes=minutes, seconds=secs).total_seconds()
        if match.group(1):
            seconds = -seconds
    else:
        raise MyptError(f"{flag} {value!r} is not a duration: give DD:HH:MM:SS, e.g. 00:00:10:00")
    if seconds <= 0:
        raise MyptError(f"{flag} {value}: the time budget must be positive")
    return seconds


def max_time_text(seconds: float) -> str:
    """Lightning's DD:HH:MM:SS form of a number of seconds (what the bundle records)."""
    s = int(round(seconds))
    return f"{s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def resume_defaults(saved_state: dict) -> dict[str, Any]:
    """A bundle trained for a budget resumes with it (what is left of it) and with the step cap the
    user gave, not the planned last step that training_state.json records as max_steps."""
    saved = saved_state.get("budget")
    if not saved:
        return {}
    return {"trainer.max_time": saved["max_time"], "trainer.max_steps": saved.get("max_steps", -1)}


def plan_steps(
    seconds_left: float,
    step_seconds: float,
    val_seconds: float,
    save_seconds: float,
    interval: int | None,
    exit_time: float = EXIT_SECONDS,
) -> int:
    """Training steps that fit in `seconds_left`, with a validation and a save every `interval`
    steps and one of each at the end, and the exit."""
    usable = seconds_left - val_seconds - save_seconds - exit_time
    alone = max(0, int(usable / max(step_seconds, 1e-9)))
    if not interval or alone <= interval:
        return alone  # no validation before the last one (which, at `interval`, is the same)
    per_step = step_seconds + (val_seconds + save_seconds) / interval
    return max(interval, int(usable / max(per_step, 1e-9)))


class TimeBudget(Callback):
    """Plans the run's last step so that it ends, validated, saved and with the LR at its floor,
    within `seconds` of the process's start (plus what earlier runs of the model spent). Register it
    after the BundleCheckpoint: it adds its record to the training_state.json that one writes."""

    def __init__(
        self,
        seconds: float,
        started: float,
        max_steps: int | None = None,
        step_seconds: float | None = None,
        extra_state: dict | None = None,
    ) -> None:
        """
        Args:
            seconds: The budget (for the model: earlier runs' time counts against it).
            started: time.monotonic() when this process started the command.
            max_steps: The user's step cap (None or -1: time alone).
            step_seconds: Seconds a step was measured to take at start-up, for the first plan.
            extra_state: Entries added to training_state.json as they are (the size choice).
        """
        self.seconds = float(seconds)
        self.started = started
        self.max_steps = max_steps if max_steps is not None and max_steps > 0 else None
        self.first_step_seconds = step_seconds
        self.extra_state = dict(extra_state or {})
        self.spent_before: dict[str, float] = dict.fromkeys(PARTS, 0.0)  # earlier runs of this model
        self.spent: dict[str, float] = dict.fromkeys(PARTS, 0.0)  # this run
        self.counts = {"steps": 0, "validations": 0, "saves": 0}
        self.phases: list[dict] = []  # {"phase", "start_step"}: where each began, across runs
        self.replans: list[int] = []  # steps at which a fixed decay was planned again
        self.stopped: str | None = None  # why the budget ended the run
        self._step_times: collections.deque[float] = collections.deque(maxlen=64)
        self._last_mark: float | None = None  # end of the last step (None after a validation or save)
        self._mark: float | None = None  # start of the current validation / save
        self._val_seconds: float | None = None
        self._save_seconds: float | None = None
        self._saving_since: float | None = None
        self._fixed = False  # the decay began: the last step stays unless the speed drifts
        self.exit_seconds = EXIT_SECONDS  # from the start-up's time, once it is known

    # -- what is left ---------------------------------------------------------------------------

    def elapsed(self) -> float:
        """Seconds of the budget spent so far, earlier runs included."""
        return sum(self.spent_before.values()) + time.monotonic() - self.started

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def step_seconds(self, recent: int | None = None) -> float:
        """The mean time of the last 64 steps (or of the last `recent`)."""
        times = list(self._step_times)[-recent:] if recent else self._step_times
        if times:
            return sum(times) / len(times)
        return self.first_step_seconds or 0.1

    def planning_step_seconds(self) -> float:
        """Once the decay has begun, the slower of the last 8 steps' mean and the last 64's: a machine
        that slows down is followed within a few steps (under load the step time moves by 10-30%
        within seconds), one that speeds up slowly."""
        long = self.step_seconds()
        return SAFETY * (max(long, self.step_seconds(8)) if self._fixed else long)

    def val_seconds(self, trainer: pl.Trainer) -> float:
        if self._val_seconds is not None:
            return self._val_seconds
        batches = trainer.limit_val_batches if isinstance(trainer.limit_val_batches, int) else 50
        return batches * VAL_BATCH_PER_STEP * self.step_seconds()

    def save_seconds(self) -> float:
        return self._save_seconds if self._save_seconds is not None else FIRST_SAVE_SECONDS

    def planned_end(self, trainer: pl.Trainer) -> int:
        interval = trainer.val_check_interval if isinstance(trainer.val_check_interval, int) else None
        steps = plan_steps(
            self.remaining(),
            self.planning_step_seconds(),
            self.val_seconds(trainer),
            self.save_seconds(),
            interval,
            self.exit_seconds,
        )
        end = trainer.global_step + steps
        return min(end, self.max_steps) if self.max_steps else end

    # -- Lightning state (resumes with the bundle) ----------------------------------------------

    def state_dict(self) -> dict:
        return self.record()

    def load_state_dict(self, state_dict: dict) -> None:
        spent = state_dict.get("spent_total_by_part") or {}
        self.spent_before = {part: float(spent.get(part, 0.0)) for part in PARTS}
        self.phases = list(state_dict.get("phases", []))
        self.replans = list(state_dict.get("replans", []))

    def record(self) -> dict:
        """training_state.json's `budget`: the budget, how it was spent, and the steps to rerun it."""
        now = dict(self.spent)
        if self._saving_since is not None:  # a save in progress counts as long as the last one did
            now["saving"] += self.save_seconds()
        total = {part: round(self.spent_before[part] + now[part], 3) for part in PARTS}
        return {
            "max_time": max_time_text(self.seconds),
            "seconds": self.seconds,
            "max_steps": self.max_steps or -1,
            "spent_total": round(sum(total.values()), 3),
            "spent_total_by_part": total,
            "spent_this_run": {part: round(v, 3) for part, v in now.items()},
            "step_seconds": round(self.step_seconds(), 6),
            "validation_seconds": None if self._val_seconds is None else round(self._val_seconds, 4),
            "save_seconds": None if self._save_seconds is None else round(self._save_seconds, 4),
            "phases": self.phases,
            "replans": self.replans,
            "stopped": self.stopped,
        }

    # -- the plan -------------------------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        now = time.monotonic()
        self.spent["start-up"] = now - self.started
        self.exit_seconds = exit_seconds(self.spent["start-up"])
        self._last_mark = now
        if pl_module.lr_segments:  # a resume: the schedule continues; fixed if its decay had begun
            self._note_phase(trainer.global_step, pl_module)
        self._apply(trainer, pl_module, False, self._replanned_end(trainer))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        if self.counts["steps"] == 0 and batch_idx == 0:  # the module has built its schedule now
            self._set_end(trainer, pl_module, trainer.max_steps)
        self._note_phase(trainer.global_step, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # a micro-batch: the step is not taken yet
        now = time.monotonic()
        if self._last_mark is not None:
            duration = now - self._last_mark
            self.spent["training"] += duration
            if self.counts["steps"] >= 2:  # the first steps warm kernels and caches up
                self._step_times.append(duration)
        self.counts["steps"] += 1
        self._last_mark = now
        if trainer.should_stop:
            return
        left = self.remaining() - self.val_seconds(trainer) - self.save_seconds() - self.exit_seconds
        stop = left < self.step_seconds(8)  # the time is up before the planned end: stop inside the budget
        end = None
        if not stop and self.counts["steps"] >= 3:
            self._note_phase(trainer.global_step, pl_module)  # of the next step
            end = self._replanned_end(trainer)
        self._apply(trainer, pl_module, stop, end)

    def _apply(self, trainer: pl.Trainer, pl_module, stop: bool, end: int | None) -> None:
        """Stop now, or move the last step to `end` (None: keep it). With several ranks, rank zero's
        clock decides for all: each must stop at the same step."""
        if trainer.world_size > 1:
            stop, end = trainer.strategy.broadcast((stop, end), src=0)
        if stop:
            self.stopped = (
                f"time budget {max_time_text(self.seconds)} spent at step {trainer.global_step}, "
                "before the LR reached its floor"
            )
            trainer.should_stop = True
        elif end is not None:
            if self._fixed:
                self.replans.append(trainer.global_step)
            self._set_end(trainer, pl_module, end)

    def _replanned_end(self, trainer: pl.Trainer) -> int | None:
        """Where the last step moves to (None: it stays): to where the budget ends, freely until the
        decay begins. After that, earlier as soon as the planned end no longer fits (the machine
        slowed down, by SHRINK of the budget: overrunning is worse than a shorter decay); later only when the run
        would end more than DRIFT of the budget early, and not within 20 steps of the last such move."""
        end, step = self.planned_end(trainer), trainer.global_step
        current = trainer.max_steps
        if self._fixed:
            if current - step <= 2 or end == current:
                return None  # the last steps: the time check in on_train_batch_end stops in time
            if end < current and (current - end) * self.step_seconds() < SHRINK * self.seconds:
                return None  # a step or two: SAFETY's margin takes it (a segment each was 23 in 45 s)
            if end > current:
                recent = self.replans and step - self.replans[-1] < 20
                if (end - current) * self.step_seconds() <= DRIFT * self.seconds or recent:
                    return None
        return end

    def _set_end(self, trainer: pl.Trainer, pl_module, end: int) -> None:
        """Make `end` the run's last step: Lightning's max_steps (the bundle callback validates and
        saves at it) and the schedule's (its LR reaches the floor there)."""
        step = trainer.global_step
        end = max(end, step + 1)
        if self.max_steps:
            end = min(end, self.max_steps)
        trainer.fit_loop.epoch_loop.max_steps = end
        segments = getattr(pl_module, "lr_segments", None)
        if not segments:
            return  # none yet: the module builds its schedule from trainer.max_steps
        last = segments[-1]
        if step < last["start_step"] + last["warmup_steps"]:
            # a warm-up longer than WARMUP_SHARE of the run would leave no time at the peak LR (or,
            # in a short budget, none to decay): shortened, as the warm-up goes
            last["warmup_steps"] = min(
                last["warmup_steps"],
                max(step - last["start_step"], int(WARMUP_SHARE * (end - last["start_step"]))),
            )
            if last.get("shape") == "wsd":
                begin = last["start_step"] + last["warmup_steps"]
                last["decay_start"] = max(step, decay_start(begin, last["end_step"], last["decay_ratio"]))
        if last["end_step"] == end:
            return
        if last.get("shape", "cosine") == "cosine" and step < last["start_step"] + last["warmup_steps"]:
            last["end_step"] = end  # a cosine's warm-up does not depend on where it ends
            return
        hp = pl_module.hparams
        shape = (
            {"shape": hp["lr_schedule"], "decay_ratio": hp.get("decay_ratio", 0.0)}
            if "lr_schedule" in hp
            else {}
        )
        pl_module.lr_segments = continue_schedule(
            segments, step, end, hp["learning_rate"], hp["min_lr_ratio"], **shape
        )

    def _note_phase(self, step: int, pl_module) -> None:
        """Record the step at which warm-up, the flat phase and the decay began; fix the last step once
        the decay has begun."""
        segments = getattr(pl_module, "lr_segments", None)
        if not segments:
            return
        seg = next((s for s in reversed(segments) if s["start_step"] <= step), segments[0])
        if step < seg["start_step"] + seg["warmup_steps"]:
            phase = "warm-up"
        elif seg.get("shape", "cosine") == "wsd" and step < seg.get("decay_start", 0):
            phase = "stable"
        elif step >= seg["end_step"]:
            phase = "floor"
        else:
            phase = "decay"
        if phase == "decay" and not self._fixed:
            self._fixed = True
        if not self.phases or self.phases[-1]["phase"] != phase:
            self.phases.append({"phase": phase, "start_step": step, "lr": lr_at(step, segments)})

    # -- validations and saves ------------------------------------------------------------------

    def on_validation_start(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._mark = time.monotonic()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if self._mark is None:
            return
        now = time.monotonic()
        self._val_seconds = now - self._mark
        self.spent["validation"] += self._val_seconds
        self.counts["validations"] += 1
        self._mark = None
        self._saving_since = now  # the bundle callback saves at the end of every validation

    def on_validation_end(self, trainer: pl.Trainer, pl_module) -> None:
        self._end_save()

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        self._end_save()
        self._end_reason(trainer)

    def _end_reason(self, trainer: pl.Trainer) -> None:
        if self.stopped is None and 0 < trainer.max_steps <= trainer.global_step:
            capped = self.max_steps is not None and trainer.global_step >= self.max_steps
            self.stopped = (
                f"max_steps {self.max_steps} reached within the time budget"
                if capped
                else f"time budget {max_time_text(self.seconds)}: the LR reached its floor at step "
                f"{trainer.global_step}"
            )

    def _end_save(self) -> None:
        if self._saving_since is None:
            return
        now = time.monotonic()
        self._save_seconds = now - self._saving_since
        self.spent["saving"] += self._save_seconds
        self.counts["saves"] += 1
        self._saving_since = None
        self._last_mark = now  # the next step is timed from here: validation and save not counted

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module, checkpoint: dict) -> None:
        parts = checkpoint.get("mypt")
        if not parts:
            return
        state = parts["training_state"]
        state["budget"] = self.record()
        state.update(self.extra_state)
        self._end_reason(trainer)
        history = state.get("history") or []
        if history and self.stopped and trainer.should_stop:
            history[-1]["stopped"] = self.stopped
        if history:
            history[-1]["budget"] = {
                "max_time": max_time_text(self.seconds),
                **self.record()["spent_this_run"],
            }

    # -- the end line ---------------------------------------------------------------------------

    def summary(self) -> dict:
        """How this run spent the budget (for the end line)."""
        total = time.monotonic() - self.started
        parts = dict(self.spent)
        parts["other"] = max(0.0, total - sum(parts.values()))
        return {
            "budget": self.seconds,
            "spent_before": sum(self.spent_before.values()),
            "this_run": total,
            "parts": parts,
            "counts": dict(self.counts),
        }


class KeptRecords(Callback):
    """The training_state.json entries of earlier runs that this run does not write itself: a model
    sized or trained for a budget keeps its `size_choice` and `budget` record when it is resumed
    by steps (or its budget record is replaced, by the TimeBudget registered before this one)."""

    KEYS = ("size_choice", "budget")

    def __init__(self, saved_state: dict) -> None:
        self.entries = {key: saved_state[key] for key in self.KEYS if key in saved_state}

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module, checkpoint: dict) -> None:
        parts = checkpoint.get("mypt")
        if parts:
            for key, value in self.entries.items():
                parts["training_state"].setdefault(key, value)


# A bundle trained for a budget, resumed by steps: Lightning would ask for the TimeBudget whose state
# the checkpoint holds; the budget record is kept (KeptRecords) and a later budget run restores it
warnings.filterwarnings("ignore", message=r".*callbacks used to create the checkpoint.*'TimeBudget'")


# -- the plan at start-up ---------------------------------------------------------------------------

# What start-up still costs once the arguments are parsed (reading the text, building the model and
# the Trainer): counted against the budget before the first step is timed. The plan is corrected
# from the clock at the first step, so this only sizes the first estimate.
STARTUP_REST = 1.5
DEFAULT_VALIDATIONS = 8  # a budget run left to choose validates about this often (and at its end)


class NothingLeft(Exception):
    """A resumed model has spent its budget (or reached its step cap): nothing to train."""


@dataclass
class StartPlan:
    seconds: float
    spent_before: float
    max_steps: int | None
    step_seconds: float
    planned_steps: int
    interval: int | None
    choice: sizing.Choice | None
    left: float  # seconds left at the plan, after the start-up so far

    def callback(self, started: float) -> TimeBudget:
        extra = {"size_choice": self.choice.record()} if self.choice else {}
        return TimeBudget(self.seconds, started, self.max_steps, self.step_seconds, extra)

    def lines(self) -> list[str]:
        lines = [self.choice.line()] if self.choice else []
        left = self.left
        spent = (
            f", {duration_text(self.spent_before)} of it spent by earlier runs" if self.spent_before else ""
        )
        cap = f", at most --trainer.max_steps {self.max_steps}" if self.max_steps else ""
        every = f", validating every {self.interval} steps" if self.interval else ""
        lines.append(
            f"mypt: time budget {duration_text(self.seconds)} ({max_time_text(self.seconds)}{spent}): about "
            f"{self.planned_steps:,} steps in the {duration_text(left)} left at {self.step_seconds:.3g} s a step "
            f"(measured){cap}{every}; the LR reaches its floor as the budget ends, then the last validation "
            "and save"
        )
        return lines


def plan_fit(
    cfg,
    args: list[str],
    started: float,
    saved_state: dict | None,
    fine_tuning: bool,
    size: str | None,
    build: Callable[[dict], tuple[torch.nn.Module, torch.optim.Optimizer]],
    precision_for: Callable[[int, int], str | None],
    device: str,
) -> StartPlan | None:
    """Check the budget and the size asked for, size the model when asked (or when a new model is
    given a budget and no architecture), and plan the first estimate of the run's steps. Sets the
    chosen values in `cfg` (trainer.max_steps becomes the planned last step; Lightning's max_time is
    taken out: see the module docstring). None: no budget (a run by steps)."""
    seconds = parse_max_time(cfg.trainer.get("max_time"))
    sizing.check_size(size)
    resuming = saved_state is not None
    given = sizing.given_keys(args)
    if size == "auto" and (resuming or fine_tuning):
        what = "resumes a trained model" if resuming else "fine-tunes a model (--model.init_from)"
        raise MyptError(
            f"--model.size auto: this run {what}, whose architecture is fixed; to size a new model for a "
            "budget, give another --model_name (or --restart true)"
        )
    if seconds is None:
        if size == "auto":
            raise MyptError(
                "--model.size auto sizes the model for a time budget: give --trainer.max_time too"
            )
        return None
    cfg.trainer.max_time = None  # mypt's TimeBudget, not Lightning's Timer: see the module docstring
    saved_budget = (saved_state or {}).get("budget")
    spent_before = float(saved_budget.get("spent_total", 0.0)) if saved_budget else 0.0
    cap = cfg.trainer.max_steps if "trainer.max_steps" in given or saved_budget else -1
    cap = cap if cap is not None and cap > 0 else None
    step = int((saved_state or {}).get("step", 0))
    left = seconds - spent_before - (time.monotonic() - started) - STARTUP_REST
    if resuming and (left <= 0 or (cap is not None and step >= cap)):
        reason = f"--trainer.max_steps {cap}" if cap is not None and step >= cap else (
            f"its time budget {max_time_text(seconds)} ({duration_text(spent_before)} spent)"
        )  # fmt: skip
        raise NothingLeft(
            f"mypt: the model is at step {step} and has reached {reason}: nothing to train (raise "
            "--trainer.max_time to continue it, or give another --model_name)"
        )
    unique, vocab = sizing.corpus_estimate(
        corpus.resolve_inputs(cfg.data.input_file),
        cfg.data.tokenizer,
        cfg.data.train_split,
        cfg.data.vocab_size,
    )

    def measure(shape: sizing.Shape) -> tuple[float, str | None]:
        kwargs = {**vars(cfg.model), "vocab_size": vocab, "compile": False, "init_from": None}
        kwargs.update(
            {k.removeprefix("model."): v for k, v in shape.settings().items() if k.startswith("model.")}
        )
        model, optimizer = build(kwargs)
        precision = precision_for(shape.n_embd, shape.tokens_per_step)
        seconds_ = sizing.time_step(
            model, optimizer, shape.batch_size, shape.block_size, vocab, precision, device
        )
        return seconds_, precision

    choice = None
    architecture = sizing.architecture_given(given)
    if size == "auto" or (size is None and not resuming and not fine_tuning and not architecture):
        reason = "--model.size auto" if size == "auto" else "a new model, a budget and no architecture given"
        values = {key: _get(cfg, key) for key in sizing.CHOSEN_KEYS if key in given}
        measure_for = min(sizing.MEASURE_SECONDS, 0.05 * max(left, 0.0))
        choice = sizing.choose(
            max(left, 1.0) * sizing.TRAINING_SHARE, unique, measure, values, reason, measure_for
        )
        for key, value in choice.shape.settings().items():
            _set(cfg, key, value)
        cfg.data.block_size = cfg.model.block_size  # linked at parsing, which has happened
        step_seconds = choice.step_seconds
        left = seconds - spent_before - (time.monotonic() - started) - STARTUP_REST
    else:
        shape = sizing.Shape(
            cfg.model.n_layer, cfg.model.n_embd, cfg.model.n_head, cfg.model.block_size, cfg.data.batch_size
        )
        step_seconds = measure(shape)[0] / sizing.LIGHTNING_SPEED
        left -= step_seconds * 3  # the timing itself
    val_seconds = _val_batches(cfg) * VAL_BATCH_PER_STEP * step_seconds
    exit_time = exit_seconds(time.monotonic() - started + STARTUP_REST)
    interval = cfg.trainer.val_check_interval if isinstance(cfg.trainer.val_check_interval, int) else None
    if "trainer.val_check_interval" not in given and not resuming:
        rough = plan_steps(left, step_seconds, val_seconds, FIRST_SAVE_SECONDS, None, exit_time)
        # about DEFAULT_VALIDATIONS validations, but not so many that they take more than a fifth of
        # the time; never more steps than the run has (it validates at its end anyway)
        fewest = math.ceil(4 * (val_seconds + FIRST_SAVE_SECONDS) / step_seconds)
        interval = max(1, min(interval or rough, rough, max(rough // DEFAULT_VALIDATIONS, fewest)))
        if plan_steps(left, step_seconds, val_seconds, FIRST_SAVE_SECONDS, interval, exit_time) < interval:
            interval = max(1, rough)  # a short budget: the validation at the end only
        cfg.trainer.val_check_interval = interval
    planned = plan_steps(left, step_seconds, val_seconds, FIRST_SAVE_SECONDS, interval, exit_time)
    if cap is not None:
        planned = min(planned, cap - step)
    if planned < max(1, interval or 1):
        raise MyptError(
            f"--trainer.max_time {max_time_text(seconds)} is too small: {duration_text(max(left, 0))} are left "
            f"after start-up{' and earlier runs' if spent_before else ''}, about {planned} steps at "
            f"{step_seconds:.3g} s a step (measured), fewer than one validation interval "
            f"(--trainer.val_check_interval {interval}): give a larger budget or a smaller interval"
        )
    segments = (saved_state or {}).get("lr_schedule") or []
    if saved_budget and segments and step < segments[-1]["end_step"] <= step + 2 * planned:
        # the saved plan: the schedule continues exactly, corrected from the clock at the first steps
        planned = min(segments[-1]["end_step"], cap or segments[-1]["end_step"]) - step
    cfg.trainer.max_steps = step + planned
    return StartPlan(seconds, spent_before, cap, step_seconds, planned, interval, choice, left)


def _val_batches(cfg) -> int:
    limit = cfg.trainer.get("limit_val_batches")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else 50


def _get(cfg, key: str):
    group, name = key.split(".")
    return cfg[group][name]


def _set(cfg, key: str, value) -> None:
    group, name = key.split(".")
    cfg[group][name] = value
