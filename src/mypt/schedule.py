"""The learning-rate schedule: linear warm-up, then either cosine decay to a floor or
warmup-stable-decay (WSD: a flat LR, then a linear decay to the floor over the last part of the run).

The schedule is a list of segments, each starting at a step. A new model has one segment (with
warm-up). Resuming with a new learning_rate or max_steps starts a new segment at the resume step,
so the LR is always a pure function of the step and the settings of the current run:

- nothing changed: the saved segments are kept and the schedule continues exactly;
- new learning_rate: the new segment starts at that LR and decays to its floor at max_steps (WSD:
  flat at that LR, then its decay over the last decay_ratio of max_steps);
- new max_steps (same learning_rate): the new segment starts at the LR the old schedule had reached
  (continuous, no jump back up to the old peak) and decays to the floor at the new max_steps. WSD
  before its decay began: the flat phase (and any warm-up left) goes on and only the decay moves to
  the last decay_ratio of the new max_steps; WSD during its decay: linear from the LR reached to the
  floor at the new max_steps.

A segment stored without a "shape" key (bundles from before WSD existed) is cosine.
"""

from __future__ import annotations

import math

from mypt.errors import MyptError

SHAPES = ("wsd", "cosine")


def check_last_step(max_steps: int | None) -> None:
    """The schedule decays toward a last step: refuse a run without one (Lightning's -1, "no limit")."""
    if max_steps is None or max_steps < 0:
        raise MyptError("set --trainer.max_steps: the learning-rate schedule needs a last step")


def check_shape(shape: str, decay_ratio: float) -> None:
    if shape not in SHAPES:
        raise MyptError(f"lr_schedule must be one of {', '.join(SHAPES)}, got {shape!r}")
    if not 0.0 <= decay_ratio <= 1.0:
        raise MyptError(f"decay_ratio must be between 0 and 1, got {decay_ratio}")


def decay_start(start_step: int, end_step: int, decay_ratio: float) -> int:
    """Where a WSD decay over the last decay_ratio of a run of end_step steps begins (not before the
    segment's start)."""
    return max(int(start_step), int(end_step) - round(decay_ratio * end_step))


def make_segment(
    start_step: int,
    end_step: int,
    learning_rate: float,
    start_lr: float,
    min_lr: float,
    warmup_steps: int = 0,
    shape: str = "cosine",
    decay_ratio: float = 0.0,
    decay_from: int | None = None,
) -> dict:
    """One segment as stored in training_state.json (`lr_schedule`). decay_from: the first step of
    a WSD decay (default: the last decay_ratio of end_step, after any warm-up)."""
    segment = {
        "start_step": int(start_step),
        "end_step": int(end_step),
        "learning_rate": float(learning_rate),  # the setting the user gave for this segment
        "start_lr": float(start_lr),  # the LR the decay (or WSD's flat phase) starts from, after warm-up
        "min_lr": float(min_lr),
        "warmup_steps": int(warmup_steps),
        "shape": shape,
    }
    if shape == "wsd":
        if decay_from is None:
            decay_from = decay_start(start_step + warmup_steps, end_step, decay_ratio)
        segment["decay_ratio"] = float(decay_ratio)
        segment["decay_start"] = int(decay_from)
    return segment


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
    if step >= seg["end_step"]:
        return seg["min_lr"]
    if seg.get("shape", "cosine") == "wsd":
        begin = seg["decay_start"]
        if step < begin:
            return seg["start_lr"]
        ratio = (step - begin) / (seg["end_step"] - begin)  # linear, measured against 1-sqrt (benchmarks)
        return seg["start_lr"] + ratio * (seg["min_lr"] - seg["start_lr"])
    decay_steps = seg["end_step"] - seg["start_step"] - warmup
    if decay_steps <= 0:
        return seg["min_lr"]
    ratio = (t - warmup) / decay_steps
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return seg["min_lr"] + coeff * (seg["start_lr"] - seg["min_lr"])


def new_schedule(
    max_steps: int,
    learning_rate: float,
    min_lr_ratio: float,
    warmup_steps: int,
    shape: str = "cosine",
    decay_ratio: float = 0.0,
) -> list[dict]:
    return [
        make_segment(
            0, max_steps, learning_rate, learning_rate, learning_rate * min_lr_ratio, warmup_steps,
            shape, decay_ratio,
        )
    ]  # fmt: skip


def continue_schedule(
    segments: list[dict] | None,
    step: int,
    max_steps: int,
    learning_rate: float,
    min_lr_ratio: float,
    shape: str = "cosine",
    decay_ratio: float = 0.0,
) -> list[dict]:
    """The schedule for a run resuming at `step` with the given settings (see module docstring)."""
    min_lr = learning_rate * min_lr_ratio
    if not segments:  # a bundle written without a schedule: start a decaying segment here
        return [make_segment(step, max_steps, learning_rate, learning_rate, min_lr, 0, shape, decay_ratio)]
    last = segments[-1]
    same_lr = math.isclose(last["learning_rate"], learning_rate, rel_tol=1e-12)
    same_shape = last.get("shape", "cosine") == shape and (
        shape != "wsd" or math.isclose(last["decay_ratio"], decay_ratio, rel_tol=1e-12)
    )
    if (
        same_lr
        and same_shape
        and last["end_step"] == max_steps
        and math.isclose(last["min_lr"], min_lr, rel_tol=1e-12)
    ):
        return list(segments)
    if same_lr and same_shape and shape == "wsd" and step < last["decay_start"]:
        # still warming up or flat: the steps taken did not depend on where the decay starts, so the
        # segment goes on (its warm-up included) with its decay moved to the new end
        begin = max(step, decay_start(last["start_step"] + last["warmup_steps"], max_steps, decay_ratio))
        moved = make_segment(
            last["start_step"], max_steps, learning_rate, last["start_lr"], min_lr, last["warmup_steps"],
            shape, decay_ratio, begin,
        )  # fmt: skip
        return [s for s in segments[:-1] if s["start_step"] < step] + [moved]
    kept = [s for s in segments if s["start_step"] < step]
    if same_lr:
        start_lr = lr_at(step, segments)  # same LR asked for: stay continuous
        # WSD resumed in its decay (or changed to WSD): decay from here, without a new flat phase
        begin = step if lr_at(step, segments) < last["start_lr"] else None
    else:
        start_lr = learning_rate  # the user asked for this LR: use it now
        begin = None
    if begin is None and shape == "wsd":
        begin = decay_start(step, max_steps, decay_ratio)
    return kept + [
        make_segment(step, max_steps, learning_rate, start_lr, min_lr, 0, shape, decay_ratio, begin)
    ]
