"""The LR schedule: warm-up, cosine, floor; and the declared policy on resume."""

from __future__ import annotations

import itertools

import pytest

from mypt.schedule import continue_schedule, lr_at, new_schedule

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
