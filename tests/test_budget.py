"""--trainer.max_time drives a run: it ends inside the budget, validated, with the LR at its floor;
a resume counts what is left; bad budgets are refused with one line and nothing saved touched."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from conftest import TINY

import mypt.train_cli  # noqa: F401  (imported before any budget's clock starts: 3-10 s on a loaded machine)
from mypt.budget import parse_max_time
from mypt.errors import MyptError
from mypt.schedule import lr_at


def _state(name: str = "tiny") -> dict:
    return json.loads(Path(f"checkpoints/{name}/training_state.json").read_text())


def _fit(mypt, text_file, *extra: str, name: str = "tiny"):
    return mypt("fit", *TINY, "--data.input_file", text_file, "--model_name", name, *extra)


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_a_budget_run_ends_inside_it_validated_with_the_lr_at_its_floor(mypt, text_file):
    start = time.monotonic()
    r = _fit(mypt, text_file, "--trainer.max_time", "00:00:00:10")
    wall = time.monotonic() - start
    assert r.code == 0, r
    state = _state()
    budget, segments, step = state["budget"], state["lr_schedule"], state["step"]
    # time alone decided (no max_steps given: not the default 5000), and the run stayed inside 10 s
    assert budget["max_steps"] == -1 and 10 < step < 5000
    assert budget["spent_total"] <= 10.0 and wall < 10.0 + 1.0
    assert set(budget["spent_total_by_part"]) == {"start-up", "training", "validation", "saving"}
    # warm-up, the flat phase, then a real decay (not a drop at the end)
    assert [p["phase"] for p in budget["phases"]] == ["warm-up", "stable", "decay"]
    assert step - budget["phases"][-1]["start_step"] >= 0.2 * step
    # the LR reached its floor as the budget ended; a machine that slows down in the last steps is
    # stopped inside the budget a step or two early instead, the LR within 10% of the decay above it
    peak, floor = segments[0]["learning_rate"], segments[-1]["min_lr"]
    assert lr_at(step - 1, segments) - floor <= 0.1 * (peak - floor)
    stopped = state["history"][-1]["stopped"]
    if stopped != f"time budget 00:00:00:10 spent at step {step}, before the LR reached its floor":
        assert stopped == f"time budget 00:00:00:10: the LR reached its floor at step {step}"
        assert lr_at(step, segments) == pytest.approx(floor)
        # what is needed to rerun it by steps: the last step is max_iters, the phases' steps recorded
        assert state["training_config"]["max_iters"] == step == segments[-1]["end_step"]
    # the final validation is of the last step, and the end line says how the budget went
    assert f"at step {step} (val loss {state['val_loss']:.4f}" in r.out
    assert "mypt: time budget 10 s:" in r.out and "start-up" in r.out and "saving" in r.out


def test_max_steps_with_a_budget_ends_at_whichever_comes_first(mypt, text_file):
    r = _fit(mypt, text_file, "--trainer.max_time", "00:00:01:00", "--trainer.max_steps", "15")
    assert r.code == 0, r
    state = _state()
    assert state["step"] == 15 and state["budget"]["max_steps"] == 15
    assert state["history"][-1]["stopped"] == "max_steps 15 reached within the time budget"
    assert lr_at(15, state["lr_schedule"]) == pytest.approx(state["lr_schedule"][-1]["min_lr"])


def test_a_new_model_with_a_budget_is_sized_and_a_resume_counts_what_is_left(mypt, text_file):
    quiet = ["--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar", "false"]
    quiet += ["--dashboard.max_new_tokens", "0", "--data.input_file", text_file, "--model_name", "tiny"]
    r = mypt("fit", *quiet, "--trainer.max_time", "00:00:00:08")
    assert r.code == 0, r
    first = _state()
    # no architecture given: sized for the budget by default, and it says so
    choice = first["size_choice"]
    assert choice["reason"] == "a new model, a budget and no architecture given"
    assert f"mypt: {choice['line']}" in r.out and "epochs of this text" in choice["line"]
    config = json.loads(Path("checkpoints/tiny/config.json").read_text())
    assert {k: config[k] for k in choice["chosen"]} == choice["chosen"]
    spent = first["budget"]["spent_total"]
    saved = _digest(Path("checkpoints/tiny"))
    # the architecture of a trained model is fixed: --model.size auto is refused, nothing touched
    r = mypt("fit", "--ckpt_path", "checkpoints/tiny", "--model.size", "auto")
    assert r.code == 2 and r.err.startswith("mypt: error: --model.size auto: this run resumes"), r
    # the same budget again: it is spent, nothing to train, nothing written
    r = mypt("fit", "--ckpt_path", "checkpoints/tiny")
    assert r.code == 0 and "nothing to train" in r.out, r
    assert _digest(Path("checkpoints/tiny")) == saved
    # a larger budget: this run gets what is left of it, and the schedule goes on from the floor
    r = mypt("fit", "--ckpt_path", "checkpoints/tiny", "--trainer.max_time", "00:00:00:16")
    assert r.code == 0, r
    second = _state()
    budget = second["budget"]
    assert second["step"] > first["step"]
    assert budget["spent_total"] <= 16.0
    assert sum(budget["spent_this_run"].values()) <= 16.0 - spent + 0.5
    assert budget["spent_total"] == pytest.approx(spent + sum(budget["spent_this_run"].values()), abs=0.01)
    assert second["lr_schedule"][: len(first["lr_schedule"])] == first["lr_schedule"]
    assert [h["budget"]["max_time"] for h in second["history"]] == ["00:00:00:08", "00:00:00:16"]
    assert "spent by earlier runs" in r.out and "by earlier runs)" in r.out
    # resumed by steps alone, it keeps its size choice and budget record
    more = str(second["step"] + 3)
    r = mypt(
        "fit", "--ckpt_path", "checkpoints/tiny", "--trainer.max_time", "null", "--trainer.max_steps", more
    )
    assert r.code == 0 and "TimeBudget" not in r.err, r
    third = _state()
    assert third["step"] == int(more) and third["size_choice"] == choice and third["budget"] == budget


@pytest.mark.parametrize(
    "value, says",
    [
        ("5 minutes", "is not a duration"),
        ("00:00:00:00", "must be positive"),
        ("-00:00:01:00", "must be positive"),
        ('{"minutes": -1}', "must be positive"),
        ("00:00:00:01", "is too small"),
    ],
)
def test_a_bad_budget_is_one_line_and_nothing_is_written(mypt, text_file, value, says):
    r = _fit(mypt, text_file, f"--trainer.max_time={value}")
    assert r.code == 2, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mypt: error: ") and says in lines[0], r
    assert not Path("checkpoints/tiny").exists()


def test_a_budget_smaller_than_one_validation_interval_is_refused(mypt, text_file):
    r = _fit(mypt, text_file, "--trainer.max_time", "00:00:00:04", "--trainer.val_check_interval", "100000")
    assert r.code == 2 and "fewer than one validation interval" in r.err, r
    assert not Path("checkpoints/tiny").exists()


def test_parse_max_time_takes_lightnings_forms():
    from datetime import timedelta

    assert parse_max_time("00:01:02:03") == 3723
    assert parse_max_time({"minutes": 5}) == 300
    assert parse_max_time(timedelta(seconds=90)) == 90
    assert parse_max_time(None) is None
    with pytest.raises(MyptError, match="not a duration"):
        parse_max_time("1:2:3")
