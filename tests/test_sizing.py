"""--model.size auto: the rule (repetition-aware tokens per parameter), explicit settings win, bad sizes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import mypt.train_cli  # noqa: F401  (imported before any budget's clock starts)
from mypt import sizing
from mypt.sizing import Shape, choose, effective_tokens, given_keys, shape_for_depth, with_given


def test_repeated_tokens_are_worth_less_and_saturate():
    assert effective_tokens(5e5, 1e6) == 5e5  # under one epoch: every token is new
    assert 1.9e6 < effective_tokens(2e6, 1e6) < 2e6  # a second epoch is worth a little less
    # Muennighoff et al.: repeats beyond R* = 15.4 are worth ever less, toward U (1 + R*)
    many = effective_tokens(1e9, 1e6)
    assert 15e6 < many <= 16.4e6
    assert effective_tokens(2e9, 1e6) - many < 0.01 * many


def _fake_speed(tokens_per_second_at_1m: float):
    """A machine whose step time grows with the parameters, like FLOPs."""

    def measure(shape: Shape) -> tuple[float, None]:
        flops = 6 * max(shape.params, 1e4) * shape.tokens_per_step
        return flops / (tokens_per_second_at_1m * 6 * 1e6), None

    return measure


def test_the_rule_grows_the_model_with_the_budget_and_shrinks_it_for_a_small_text():
    big_text, small_text = 10**8, 2 * 10**4
    short = choose(60, big_text, _fake_speed(1e5), {}, "test", measure_seconds=60)
    long = choose(3600, big_text, _fake_speed(1e5), {}, "test", measure_seconds=60)
    assert long.shape.params > short.shape.params
    # the same hour on a tiny text: many epochs, so a smaller model than the large text gets
    tiny = choose(3600, small_text, _fake_speed(1e5), {}, "test", measure_seconds=60)
    assert tiny.shape.params < long.shape.params and tiny.epochs > 100
    # the choice is the candidate nearest the rule's effective tokens per parameter
    ratios = {
        c["n_layer"]: effective_tokens(
            Shape(
                *(c[k] for k in ("n_layer", "n_embd", "n_head", "block_size", "batch_size"))
            ).tokens_per_step
            / c["step_seconds"]
            * sizing.LIGHTNING_SPEED
            * 3600,
            big_text,
        )
        / (12 * c["n_layer"] * c["n_embd"] ** 2)
        for c in long.measured
    }
    nearest = min(ratios, key=lambda d: abs(math.log(ratios[d] / sizing.TOKENS_PER_PARAM)))
    assert long.shape.n_layer == nearest


def test_given_settings_are_kept_in_every_candidate():
    given = {"model.n_layer": 3, "data.batch_size": 5}
    shapes = sizing.candidates(given)
    assert shapes and all(s.n_layer == 3 and s.batch_size == 5 for s in shapes)
    assert (
        with_given(shape_for_depth(8), {"model.n_embd": 100}).n_embd
        % with_given(shape_for_depth(8), {"model.n_embd": 100}).n_head
        == 0
    )


def test_given_keys_reads_flags_and_config_files(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  n_layer: 4\ntrainer:\n  max_steps: 10\n")
    given = given_keys(["fit", "--config", str(config), "--data.batch_size=8", "--model.n_embd", "64"])
    assert given == {"model.n_layer": 4, "trainer.max_steps": 10, "data.batch_size": 8, "model.n_embd": 64}


def test_explicit_settings_win_over_auto_and_the_choice_is_recorded(mypt, text_file):
    r = mypt(
        "fit", "--data.input_file", text_file, "--model_name", "sized", "--model.size", "auto",
        "--model.n_layer", "1", "--data.batch_size", "3", "--trainer.max_time", "00:00:00:08",
        "--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar", "false", "--dashboard.max_new_tokens", "0",
    )  # fmt: skip
    assert r.code == 0, r
    state = json.loads(Path("checkpoints/sized/training_state.json").read_text())
    config = json.loads(Path("checkpoints/sized/config.json").read_text())
    choice = state["size_choice"]
    assert choice["reason"] == "--model.size auto"
    assert choice["given"] == ["data.batch_size", "model.n_layer"]
    assert config["n_layer"] == 1 and config["batch_size"] == 3
    assert all(c["n_layer"] == 1 and c["batch_size"] == 3 for c in choice["candidates"])
    assert {k: config[k] for k in ("n_embd", "n_head", "block_size")} == {
        k: choice["chosen"][k] for k in ("n_embd", "n_head", "block_size")
    }
    line = f"mypt: {choice['line']}"
    assert line in r.out and "given: data.batch_size, model.n_layer" in line
    assert f"about {choice['epochs']:.0f} epochs" in line or "epochs of this text" in line


@pytest.mark.parametrize(
    "args, says",
    [
        (["--model.size", "huge", "--trainer.max_time", "00:00:01:00"], "--model.size 'huge' is not a size"),
        (["--model.size", "auto"], "--model.size auto sizes the model for a time budget"),
    ],
)
def test_a_bad_size_is_one_line(mypt, text_file, args, says):
    r = mypt("fit", "--data.input_file", text_file, "--model_name", "sized", *args)
    assert r.code == 2, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mypt: error: ") and says in lines[0], r
    assert not Path("checkpoints/sized").exists()
