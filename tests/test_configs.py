"""Every shipped config parses, and says what the README promises."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_parses(mypt, config):
    r = mypt("fit", "--config", config, "--print_config")  # parsed and validated; unknown keys fail
    assert r.code == 0, r
    printed = yaml.safe_load(r.out)
    raw = yaml.safe_load(config.read_text())
    assert printed["model_name"] == raw["model_name"]
    assert printed["model"]["n_layer"] == raw["model"]["n_layer"]


def test_dante_cpu_is_small_and_dante_follows_the_design_note():
    cpu = yaml.safe_load((CONFIGS[0].parent / "dante_cpu.yaml").read_text())
    assert (cpu["model"]["n_layer"], cpu["model"]["n_embd"], cpu["model"]["block_size"]) == (4, 128, 64)
    dante = yaml.safe_load((CONFIGS[0].parent / "dante.yaml").read_text())["model"]
    assert (dante["n_layer"], dante["n_head"], dante["n_embd"], dante["block_size"]) == (6, 6, 384, 256)
