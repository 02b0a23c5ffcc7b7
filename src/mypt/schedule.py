"""The learning-rate schedule: linear warm-up, then cosine decay to a floor.

The schedule is a list of segments, each starting at a step. A new model has one segment (with
warm-up). Resuming with a new learning_rate or max_steps starts a new segment at the resume step,
so the LR is always a pure function of the step and the settings of the current run:

- nothing changed: the saved segments are kept and the schedule continues exactly;
- new learning_rate: the new segment starts at that LR and decays to its floor at max_steps;
- new max_steps (same learning_rate): the new segment starts at the LR the old schedule had reached
  (continuous, no jump back up to the old peak) and decays to the floor at the new max_steps.
"""

from __future__ import annotations

import math

from mypt.errors import MyptError


def check_last_step(max_steps: int | None) -> None:
    """The schedule decays toward a last step: refuse a run without one (Lightning's -1, "no limit")."""
    if max_steps is None or max_steps < 0:
        raise MyptError("set --trainer.max_steps: the learning-rate schedule needs a last step")


def make_segment(
    start_step: int,
    end_step: int,
    learning_rate: float,
    start_lr: float,
    min_lr: float,
    warmup_steps: int = 0,
) -> dict:
    """One segment as stored in training_state.json (`lr_schedule`)."""
    return {
        "start_step": int(start_step),
        "end_step": int(end_step),
        "learning_rate": float(learning_rate),  # the setting the user gave for this segment
        "start_lr": float(start_lr),  # the LR the cosine starts from (after any warm-up)
        "min_lr": float(min_lr),
        "warmup_steps": int(warmup_steps),
    }


def lr_at(step: int, segments: list[dict]) -> float:
    """The LR used for optimizer step `step` (0-based: the step about to be taken)."""
    seg = segments[0]
    for candidate in segments:
        if candidate["start_step"] <= step:
            seg = candidate
    t = step - seg["start_step"]
    warmup = seg["warmup_steps"]
    if t < warmup:
        return seg["start_lr"] * (t + 1) / (warmup + 1)
    decay_steps = seg["end_step"] - seg["start_step"] - warmup
    if decay_steps <= 0 or step >= seg["end_step"]:
        return seg["min_lr"]
    ratio = (t - warmup) / decay_steps
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return seg["min_lr"] + coeff * (seg["start_lr"] - seg["min_lr"])


def new_schedule(max_steps: int, learning_rate: float, min_lr_ratio: float, warmup_steps: int) -> list[dict]:
    return [
        make_segment(0, max_steps, learning_rate, learning_rate, learning_rate * min_lr_ratio, warmup_steps)
    ]


def continue_schedule(
    segments: list[dict] | None,
    step: int,
    max_steps: int,
    learning_rate: float,
    min_lr_ratio: float,
) -> list[dict]:
    """The schedule for a run resuming at `step` with the given settings (see module docstring)."""
    min_lr = learning_rate * min_lr_ratio
    if not segments:  # a bundle written without a schedule: start a decaying segment here
        return [make_segment(step, max_steps, learning_rate, learning_rate, min_lr)]
    last = segments[-1]
    if (
        math.isclose(last["learning_rate"], learning_rate, rel_tol=1e-12)
        and last["end_step"] == max_steps
        and math.isclose(last["min_lr"], min_lr, rel_tol=1e-12)
    ):
        return list(segments)
    if math.isclose(last["learning_rate"], learning_rate, rel_tol=1e-12):
        start_lr = lr_at(step, segments)  # same LR asked for: stay continuous
    else:
        start_lr = learning_rate  # the user asked for this LR: use it now
    kept = [s for s in segments if s["start_step"] < step]
    return kept + [make_segment(step, max_steps, learning_rate, start_lr, min_lr)]
