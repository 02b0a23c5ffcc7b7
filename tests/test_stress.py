"""The long crash test (`make stress`): SIGKILL a training run again and again, at random instants,
half of them aimed at a save in progress (half of those once it writes the best model); every
survivor bundle must load, its files must agree on the step, its best model must load, and the next
run must resume from it and train on."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conftest import TINY
from test_faults import assert_consistent_bundle, kill_and_check

from mypt import bundle
from mypt.errors import MyptError

KILLS = 24
# a model big enough that a save takes measurable time (model.pt ~0.8 MB, optimizer.pt ~1.6 MB),
# saved at every step, so random kills often land inside a save
STRESS_RUN = [
    *TINY, "--model.n_layer", "4", "--model.n_head", "4", "--model.n_embd", "64",
    "--dashboard.max_new_tokens", "0", "--trainer.max_steps", "100000",
    "--trainer.val_check_interval", "1", "--trainer.limit_val_batches", "1", "--model_name", "stress",
]  # fmt: skip


@pytest.mark.stress
def test_random_sigkills_always_leave_a_resumable_bundle(mypt, text_file, tmp_path, capsys):
    rng = random.Random(20240601)
    path = tmp_path / "checkpoints" / "stress"
    args = [*STRESS_RUN, "--data.input_file", str(text_file)]
    survived, in_save, in_best, steps, failures = 0, 0, 0, [], []
    for kill in range(1, KILLS + 1):
        # a quarter aimed at a save, a quarter at a save writing its best model, half at random
        aim = rng.choice([True, "best", False, False])
        try:
            step, caught_save, caught_best = kill_and_check(path, args, tmp_path, rng, during_save=aim)
        except (AssertionError, MyptError) as e:  # the survivor failed a check: count it and go on
            failures.append(f"kill {kill}: {type(e).__name__}: {e}")
            continue
        in_save += caught_save
        in_best += caught_best
        if steps and step < steps[-1]:  # never goes back to an older bundle
            failures.append(f"kill {kill}: back to step {step} after step {steps[-1]}")
        else:
            survived += 1
        steps.append(step)
    resumed = "not resumed"
    if steps and not failures:
        r = mypt("fit", "--ckpt_path", "checkpoints/stress", "--trainer.max_steps", steps[-1] + 3)
        if r.code != 0 or assert_consistent_bundle(path) != steps[-1] + 3:
            failures.append(f"the resume after the last kill failed: {r}")
        else:
            resumed = f"resumed and trained on to step {steps[-1] + 3}"
    with capsys.disabled():
        print(
            f"\nstress: {survived}/{KILLS} kills survived ({in_save} landed inside a save, {in_best} while "
            f"it wrote a new best model, every best model loadable); "
            f"bundle steps after each kill: {steps}; {resumed}"
        )
    assert not failures, "\n".join(failures)
    assert in_save >= 1


@pytest.mark.stress
def test_a_compiled_model_trains_saves_plain_weights_and_resumes_uncompiled(mypt, text_file):
    """--model.compile true (slow to compile on a CPU, hence here): the bundle holds the plain
    model's weights (no compile wrapper in their names), which a run without compile resumes."""
    common = [*TINY, "--data.input_file", str(text_file), "--model_name", "compiled"]
    r = mypt("fit", *common, "--model.compile", "true", "--trainer.max_steps", "4")
    assert r.code == 0, r
    weights = bundle.load_model_state(Path("checkpoints/compiled"))
    assert weights and not any("_orig_mod" in name for name in weights)
    r = mypt(
        "fit", "--ckpt_path", "checkpoints/compiled", "--model.compile", "false", "--trainer.max_steps", "6"
    )
    assert r.code == 0, r
    assert assert_consistent_bundle(Path("checkpoints/compiled")) == 6
