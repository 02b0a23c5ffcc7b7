"""`mypt list` and `mypt inspect A B`: comparing runs and following lineage without opening files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY


@pytest.fixture
def two_models(mypt, text_file) -> None:
    """checkpoints/base (20 steps) and checkpoints/child (fine-tuned from it for 10 steps, lr 3e-4)."""
    r = mypt("fit", *TINY, "--data.input_file", text_file, "--model_name", "base", "--trainer.max_steps", "20",
             "--dashboard.max_new_tokens", "0")  # fmt: skip
    assert r.code == 0, r
    r = mypt("fit", *TINY, "--data.input_file", text_file, "--model.init_from", "base", "--model_name", "child",
             "--trainer.max_steps", "10", "--model.learning_rate", "3e-4", "--dashboard.max_new_tokens", "0")  # fmt: skip
    assert r.code == 0, r


def _state(name: str) -> dict:
    return json.loads(Path(f"checkpoints/{name}/training_state.json").read_text())


def test_list_shows_one_line_per_model_with_lineage(mypt, two_models):
    r = mypt("list")
    assert r.code == 0, r
    header, *rows = r.out.strip().split("\n")
    assert header.split() == ["NAME", "STEP", "VAL", "LOSS", "BPB", "BEST@STEP", "TOKENIZER", "PARAMS", "SIZE",
                              "PARENT"]  # fmt: skip
    by_name = {row.split()[0]: row.split() for row in rows}
    assert set(by_name) == {"base", "child"}
    assert by_name["base"][1] == "20" and by_name["child"][1] == "10"
    assert by_name["base"][2] == f"{_state('base')['val_loss']:.4f}"
    assert by_name["child"][2] == f"{_state('child')['val_loss']:.4f}"
    assert by_name["base"][5] == by_name["child"][5] == "char"
    assert by_name["base"][-1] == "-" and by_name["child"][-1] == "checkpoints/base@20"

    rows = json.loads(mypt("list", "--json").out)
    size = sum(p.stat().st_size for p in Path("checkpoints/base").iterdir() if p.is_file())  # not best/
    assert [(row["name"], row["step"], row["size"]) for row in rows][0] == ("base", 20, size)


def test_list_reports_a_broken_bundle_and_goes_on(mypt, two_models, tmp_path):
    Path("checkpoints/child/training_state.json").write_text("{not json")
    r = mypt("list")
    assert r.code == 0, r
    assert "base" in r.out and "child  (unreadable:" in r.out and "training_state.json" in r.out
    r = mypt("list", "--checkpoint_dir", tmp_path / "empty")
    assert r.code == 0 and "no models under" in r.out


def test_inspect_two_bundles_marks_what_differs(mypt, two_models, monkeypatch):
    r = mypt("inspect", "base", "child")
    assert r.code == 0, r
    rows = {line[2:].split()[0]: line for line in r.out.strip().split("\n")[2:-1]}
    differs = {key for key, line in rows.items() if line.startswith("*")}
    assert {
        "step",
        "val_loss",
        "training_config.max_iters",
        "training_config.learning_rate",
        "parent",
    } <= differs
    assert not differs & {
        "config.n_layer",
        "config.n_embd",
        "config.vocab_size",
        "tokenizer.token_kind",
        "params",
    }
    assert rows["step"][2:].split()[1:] == ["20", "10"]
    assert rows["parent"][2:].split()[1:] == ["-", "checkpoints/base@20"]
    assert r.out.strip().split("\n")[-1] == f"{len(differs)} of {len(rows)} values differ (*)"
    assert "\033[" not in r.out  # no colour when stdout is not a terminal

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    coloured = mypt("inspect", "base", "child").out
    assert coloured.count("\033[1;33m") == len(differs)

    both = json.loads(mypt("inspect", "base", "child", "--json").out)
    assert [info["name"] for info in both] == ["base", "child"]
    r = mypt("inspect", "base", "nothing")
    assert r.code == 2 and r.err.startswith("mypt: error: no bundle at nothing")


def test_reading_commands_do_not_import_lightning(two_models):
    """`mypt list`, `inspect A B` and `export` start fast: Lightning is never imported."""
    code = (
        "import sys; from mypt.cli import main\n"
        "for args in (['list'], ['inspect', 'base', 'child'], ['export', 'base', 'out']):\n"
        "    assert main(args) == 0, args\n"
        "print('LIGHTNING' if any(m.split('.')[0] in ('lightning', 'pytorch_lightning') for m in sys.modules) else 'CLEAN')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().split("\n")[-1] == "CLEAN"


def test_a_fine_tune_keeps_its_parents_batch_size_and_hugging_face_origin(mypt, text_file):
    """A bundle converted from Hugging Face that has a best model since: fine-tunes from it and from
    its best/ each record the step and the Hugging Face origin, and keep its batch size (6) unless
    --data.batch_size is given."""
    from mypt import bundle
    from mypt.model import GPT, GPTConfig
    from mypt.tokenizer import CharTokenizer

    tokenizer = CharTokenizer.from_text(text_file.read_text(encoding="utf-8"))
    arch = {"block_size": 16, "vocab_size": tokenizer.vocab_size, "n_embd": 32, "n_head": 2, "n_layer": 2,
            "dropout": 0.0, "bias": True}  # fmt: skip
    config = GPTConfig(**arch)
    bundle.write_bundle(
        "checkpoints/conv", model_state=GPT(config).state_dict(),
        config={"batch_size": 6, **config.to_dict(), "device": "cpu"}, tokenizer=tokenizer.to_dict(),
        training_state={"step": 0, "imported_from": "hf-folder", "training_config": {}, "history": []},
        optimizer_state=None, best={"step": 0, "val_loss": 4.0},
    )  # fmt: skip
    run = ("--trainer.max_steps", "1", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar",
           "false", "--dashboard.max_new_tokens", "0", "--data.input_file", text_file)  # fmt: skip
    for parent, name in (("checkpoints/conv", "a"), ("checkpoints/conv/best", "b")):
        r = mypt("fit", *run, "--model.init_from", parent, "--model_name", name)
        assert r.code == 0, r
        assert _state(name)["init_from"] == {
            "path": str(Path(parent)),
            "step": 0,
            "imported_from": "hf-folder",
        }
        assert bundle.load_config(Path(f"checkpoints/{name}"))["batch_size"] == 6
    rows = {row["name"]: row for row in json.loads(mypt("list", "--json").out)}
    assert rows["b"]["parent"] == f"{Path('checkpoints/conv/best')}@0 (hf:hf-folder)"
    r = mypt("fit", *run, "--model.init_from", "a", "--model_name", "c", "--data.batch_size", "3")
    assert r.code == 0 and bundle.load_config(Path("checkpoints/c"))["batch_size"] == 3, r
    # the origin of the weights stays known down the line
    assert _state("c")["init_from"]["imported_from"] == "hf-folder"
