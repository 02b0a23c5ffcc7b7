"""The LR schedule: warm-up, cosine or warmup-stable-decay, floor; and the declared policy on resume."""

from __future__ import annotations

import itertools

import pytest

from mypt.errors import MyptError
from mypt.schedule import check_shape, continue_schedule, lr_at, new_schedule

LR, RATIO, WARMUP, MAX = 1e-3, 0.1, 10, 110


def test_warmup_middle_end():
    s = new_schedule(MAX, LR, RATIO, WARMUP)
    assert lr_at(0, s) == pytest.approx(LR / 11)
    assert lr_at(9, s) == pytest.approx(LR * 10 / 11)
    assert lr_at(10, s) == pytest.approx(LR)  # peak right after warm-up
    assert lr_at(60, s) == pytest.approx((LR + LR * RATIO) / 2)  # half-way through the cosine
    assert lr_at(110, s) == pytest.approx(LR * RATIO)
    assert lr_at(500, s) == pytest.approx(LR * RATIO)  # the floor after max_steps
    values = [lr_at(t, s) for t in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_unchanged_settings_continue_exactly():
    s = new_schedule(MAX, LR, RATIO, WARMUP)
    assert continue_schedule(s, 50, MAX, LR, RATIO) == s


def test_new_learning_rate_starts_a_segment_at_that_lr():
    s = new_schedule(MAX, LR, RATIO, WARMUP)
    c = continue_schedule(s, 50, 200, 1e-4, RATIO)
    assert [lr_at(t, c) for t in range(50)] == [lr_at(t, s) for t in range(50)]  # the past is unchanged
    assert lr_at(50, c) == pytest.approx(1e-4)  # exactly what the user asked for
    assert lr_at(200, c) == pytest.approx(1e-5)  # decays to the new floor at the new max_steps
    assert all(lr_at(t, c) <= 1e-4 for t in range(50, 300))


def test_new_max_steps_is_continuous_without_jumping_back_to_the_peak():
    s = new_schedule(MAX, LR, RATIO, WARMUP)
    c = continue_schedule(s, 100, 300, LR, RATIO)
    assert lr_at(100, c) == pytest.approx(lr_at(100, s))  # continuous at the resume step
    assert max(lr_at(t, c) for t in range(100, 300)) <= lr_at(100, s) + 1e-15
    assert lr_at(300, c) == pytest.approx(LR * RATIO)


def test_schedule_without_history_starts_decaying_at_resume():
    c = continue_schedule(None, 1000, 2000, 1e-4, RATIO)
    assert lr_at(1000, c) == pytest.approx(1e-4) and lr_at(2000, c) == pytest.approx(1e-5)


# -- warmup-stable-decay ---------------------------------------------------------------------
DECAY = 0.3  # the last 30 steps of MAX = 100 decay: steps 70..99, the floor from 100
WMAX = 100


def wsd(max_steps=WMAX, lr=LR):
    return new_schedule(max_steps, lr, RATIO, WARMUP, "wsd", DECAY)


def test_wsd_warmup_flat_linear_decay_floor():
    s = wsd()
    assert lr_at(0, s) == pytest.approx(LR / 11) and lr_at(9, s) == pytest.approx(LR * 10 / 11)
    assert all(lr_at(t, s) == LR for t in range(10, 71))  # flat until the decay starts at step 70
    assert lr_at(85, s) == pytest.approx(LR - (LR - LR * RATIO) * 15 / 30)  # linear, half-way
    assert lr_at(100, s) == pytest.approx(LR * RATIO) and lr_at(500, s) == pytest.approx(LR * RATIO)
    steps = [lr_at(t + 1, s) - lr_at(t, s) for t in range(70, 99)]
    assert max(steps) == pytest.approx(min(steps))  # a straight line


def test_wsd_unchanged_settings_continue_exactly():
    s = wsd()
    for step in (5, 50, 80):
        assert continue_schedule(s, step, WMAX, LR, RATIO, "wsd", DECAY) == s


def test_wsd_new_max_steps_in_the_flat_phase_only_moves_the_decay():
    s = wsd()
    for step in (5, 50):  # during the warm-up, and in the flat phase
        c = continue_schedule(s, step, 200, LR, RATIO, "wsd", DECAY)
        assert [lr_at(t, c) for t in range(step)] == [lr_at(t, s) for t in range(step)]
        assert [lr_at(t, c) for t in range(step, 140)] == [
            lr_at(t, s) if t < 10 else LR for t in range(step, 140)
        ]
        assert lr_at(170, c) == pytest.approx(LR - (LR - LR * RATIO) * 30 / 60)  # the last 60 of 200 decay
        assert lr_at(200, c) == pytest.approx(LR * RATIO)


def test_wsd_new_max_steps_during_the_decay_goes_on_from_the_lr_reached():
    s = wsd()
    c = continue_schedule(s, 85, 200, LR, RATIO, "wsd", DECAY)
    assert [lr_at(t, c) for t in range(85)] == [lr_at(t, s) for t in range(85)]
    reached = lr_at(85, s)
    assert lr_at(85, c) == pytest.approx(reached)  # no jump back to the flat LR
    assert lr_at(86, c) < reached  # the decay goes on: no second flat phase
    assert lr_at(85 + 46, c) == pytest.approx(reached - (reached - LR * RATIO) * 46 / 115)  # linear to 200
    assert lr_at(200, c) == pytest.approx(LR * RATIO)
    assert all(a >= b for a, b in itertools.pairwise([lr_at(t, c) for t in range(85, 201)]))


def test_wsd_new_learning_rate_is_flat_at_it_then_decays():
    s = wsd()
    c = continue_schedule(s, 50, 200, 1e-4, RATIO, "wsd", DECAY)
    assert [lr_at(t, c) for t in range(50)] == [lr_at(t, s) for t in range(50)]
    assert all(lr_at(t, c) == pytest.approx(1e-4) for t in range(50, 141))
    assert lr_at(200, c) == pytest.approx(1e-5)
    late = continue_schedule(s, 90, 100, 1e-4, RATIO, "wsd", DECAY)  # asked for in the decay: decays from it
    assert lr_at(90, late) == pytest.approx(1e-4) and lr_at(95, late) == pytest.approx((1e-4 + 1e-5) / 2)


def test_a_segment_without_a_shape_is_cosine():
    """Bundles saved before WSD existed store cosine segments without a "shape" key."""
    s = new_schedule(MAX, LR, RATIO, WARMUP)
    old = [{k: v for k, v in seg.items() if k != "shape"} for seg in s]
    assert [lr_at(t, old) for t in range(120)] == [lr_at(t, s) for t in range(120)]
    assert continue_schedule(old, 50, MAX, LR, RATIO) == old  # resumed unchanged: kept as saved
    switched = continue_schedule(old, 50, MAX, LR, RATIO, "wsd", DECAY)  # cosine -> wsd: continuous
    assert lr_at(50, switched) == pytest.approx(lr_at(50, old)) and lr_at(110, switched) == pytest.approx(
        LR * RATIO
    )


def test_bad_schedule_settings_are_refused():
    with pytest.raises(MyptError, match="lr_schedule must be one of wsd, cosine"):
        check_shape("linear", 0.3)
    with pytest.raises(MyptError, match="decay_ratio must be between 0 and 1"):
        check_shape("wsd", 1.5)
