"""Resume through the `mypt` entry point: overrides win, the architecture is protected, resume is exact."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from conftest import TINY, dante_text

from mypt import bundle
from mypt.checkpointing import BundleCheckpoint, capture_rng


def _state(name: str = "tiny") -> dict:
    return json.loads(Path(f"checkpoints/{name}/training_state.json").read_text())


def _fit(mypt, text_file, *extra: str, name: str = "tiny"):
    return mypt("fit", *TINY, "--data.input_file", text_file, "--model_name", name, *extra)


def _fine_tune(mypt, text_file, parent: str, name: str, *extra: str):
    """A fine-tune of checkpoints/PARENT into checkpoints/NAME, quiet, with two validation batches."""
    return mypt(
        "fit", "--model.init_from", f"checkpoints/{parent}", "--model_name", name, "--data.input_file", text_file,
        "--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar", "false", *extra,
    )  # fmt: skip


def test_resume_with_new_max_steps_and_learning_rate(mypt, text_file, monkeypatch):
    r = _fit(mypt, text_file, "--trainer.max_steps", "20", "--model.learning_rate", "3e-4")
    assert r.code == 0, r
    before = _state()
    assert before["step"] == 20
    assert before["training_config"] == {
        "max_iters": 20, "eval_interval": 10, "eval_iters": 2, "learning_rate": 0.0003, "start_step": 0,
    }  # fmt: skip

    seen_lrs: list[float] = []
    from mypt.module import GPTModule

    original = GPTModule.on_train_start

    seen_groups: list[dict] = []

    def spy(self):
        original(self)
        seen_lrs.extend(g["lr"] for g in self.optimizers().param_groups)
        seen_groups.extend(
            {k: g[k] for k in ("weight_decay", "betas", "momentum") if k in g}
            for g in self.optimizers().param_groups
        )

    monkeypatch.setattr(GPTModule, "on_train_start", spy)
    r = mypt(
        "fit", "--ckpt_path", "checkpoints/tiny", "--trainer.max_steps", "40", "--model.learning_rate", "1e-4",
        "--model.weight_decay", "0.05", "--model.beta2", "0.95", "--model.muon_lr_ratio", "8",
        "--model.muon_momentum", "0.9",
    )  # fmt: skip
    assert r.code == 0, r
    assert seen_groups == [
        {"weight_decay": 0.05, "momentum": 0.9},  # Muon: the blocks' matrices
        {"weight_decay": 0.05, "betas": (0.9, 0.95)},  # AdamW: embeddings and head
        {"weight_decay": 0.0, "betas": (0.9, 0.95)},  # AdamW: norms and biases
    ]
    assert "model.learning_rate  0.0003 -> 0.0001" in r.out
    assert "trainer.max_steps    20 -> 40" in r.out
    assert "model.muon_lr_ratio  2.5 -> 8.0" in r.out
    assert "next step's learning rate: 0.0001 (Muon 0.0008)" in r.out
    assert seen_lrs == [pytest.approx(8e-4), pytest.approx(1e-4), pytest.approx(1e-4)]  # the new LRs, really

    after = _state()
    assert after["step"] == 40
    assert after["training_config"]["max_iters"] == 40
    assert after["training_config"]["learning_rate"] == 0.0001
    assert after["training_config"]["start_step"] == 20
    assert after["training_config"]["eval_interval"] == 10  # kept from the saved run
    assert [(h["start_step"], h["end_step"]) for h in after["history"]] == [(0, 20), (20, 40)]
    overrides = after["history"][1]["overrides"]
    assert overrides[-12:-8] == ["--trainer.max_steps", "40", "--model.learning_rate", "1e-4"]
    assert after["settings"]["model"]["weight_decay"] == 0.05
    assert after["data"]["input_file"] == str(text_file)  # data settings came from the bundle


def test_rerunning_a_config_resumes_instead_of_overwriting(mypt, text_file, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(f"model_name: tiny\ndata:\n  input_file: {text_file}\ntrainer:\n  max_steps: 10\n")
    assert mypt("fit", "--config", config, *TINY).code == 0
    weights = bundle.load_model_state(Path("checkpoints/tiny"))
    r = mypt("fit", "--config", config, *TINY, "--trainer.max_steps", "20")
    assert r.code == 0, r
    assert "already holds a model: resuming it" in r.out
    assert _state()["training_config"]["start_step"] == 10
    r = mypt("fit", "--config", config, *TINY, "--trainer.max_steps", "20", "--restart", "true")
    assert r.code == 0, r
    assert _state()["training_config"]["start_step"] == 0
    kept = [p for p in Path("checkpoints").iterdir() if p.name.startswith("tiny.replaced-")]
    assert len(kept) == 1 and _state(kept[0].name)["step"] == 20  # the old model was kept, not lost
    assert set(weights) == set(bundle.load_model_state(Path("checkpoints/tiny")))


@pytest.mark.parametrize(
    ("flag", "value", "key"),
    [("--model.n_layer", "3", "n_layer"), ("--model.n_embd", "64", "n_embd"), ("--model.dropout", "0.1", "dropout"),
     ("--data.batch_size", "8", "batch_size"), ("--model.block_size", "32", "block_size"),
     ("--model.bias", "true", "bias"), ("--model.n_head", "4", "n_head")],
)  # fmt: skip
def test_architecture_override_is_refused(mypt, text_file, flag, value, key):
    assert _fit(mypt, text_file, "--trainer.max_steps", "10").code == 0
    before = Path("checkpoints/tiny/model.pt").read_bytes()
    r = mypt("fit", "--ckpt_path", "checkpoints/tiny", "--trainer.max_steps", "20", flag, value)
    assert r.code != 0
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mypt: error: "), r
    assert key in lines[0] and value in lines[0].lower()
    # a fine-tune can change dropout, batch_size and (RoPE, the default: no position table) block_size;
    # another shape is a new model (test_bundle.py follows both)
    assert ("init_from" if key in ("dropout", "batch_size", "block_size") else "a new model") in lines[0]
    assert Path("checkpoints/tiny/model.pt").read_bytes() == before


def test_fine_tune_records_lineage(mypt, text_file):
    assert _fit(mypt, text_file, "--trainer.max_steps", "10", name="base").code == 0
    r = _fine_tune(mypt, text_file, "base", "child", "--model.dropout", "0.1", "--trainer.max_steps", "10",
                   "--trainer.val_check_interval", "5")  # fmt: skip
    assert r.code == 0, r
    child = _state("child")
    assert child["init_from"] == {"path": "checkpoints/base", "step": 10}
    assert child["training_config"]["start_step"] == 0
    config = json.loads(Path("checkpoints/child/config.json").read_text())
    assert config["dropout"] == 0.1 and config["n_embd"] == 32  # architecture from the parent
    assert json.loads(Path("checkpoints/child/tokenizer.json").read_text()) == json.loads(
        Path("checkpoints/base/tokenizer.json").read_text()
    )
    r = mypt("fit", "--model.init_from", "checkpoints/base", "--model_name", "child2", "--data.input_file",
             text_file, "--model.n_embd", "64", "--trainer.max_steps", "10")  # fmt: skip
    assert r.code != 0 and "n_embd" in r.err


def test_fine_tune_takes_a_new_context_where_positions_are_rotary(mypt, text_file):
    """RoPE fixes no weight's shape: a fine-tune trains the parent's weights on longer (or shorter)
    windows and generates past the parent's context with the cache; a learned position table has a
    row per position, so there the new context is a new model, refused in one line."""
    assert _fit(mypt, text_file, "--trainer.max_steps", "4", name="short").code == 0
    parent = bundle.load_model_state(Path("checkpoints/short"))
    r = _fine_tune(mypt, text_file, "short", "long", "--model.block_size", "48", "--trainer.max_steps", "2",
                   "--dashboard.max_new_tokens", "0")  # fmt: skip
    assert r.code == 0, r
    config = bundle.load_config(Path("checkpoints/long"))
    assert config["block_size"] == 48 and config["n_embd"] == 32  # the rest from the parent
    assert bundle.load_training_state(Path("checkpoints/long"))["init_from"]["path"] == "checkpoints/short"
    assert set(bundle.load_model_state(Path("checkpoints/long"))) == set(parent)
    r = mypt("generate", "long", "--max_new_tokens", "40", "--seed", "1")
    assert r.code == 0 and len(r.out) > 40, r

    r = _fit(mypt, text_file, "--trainer.max_steps", "2", "--model.pos_emb", "learned", name="table")
    assert r.code == 0, r
    before = Path("checkpoints/table/model.pt").read_bytes()
    r = _fine_tune(mypt, text_file, "table", "table_long", "--model.block_size", "48")
    lines = r.err.strip().splitlines()
    assert r.code == 2 and len(lines) == 1 and lines[0].startswith("mypt: error: "), r
    assert "block_size=16" in lines[0] and "a new model" in lines[0], lines[0]
    assert not Path("checkpoints/table_long").exists()
    assert Path("checkpoints/table/model.pt").read_bytes() == before


def test_exact_resume_matches_an_uninterrupted_run(mypt, text_file, monkeypatch):
    """0 -> 2N in one run equals 0 -> N, then resume -> 2N: same loss at every step, equal weights;
    with gradient accumulation, so the resumed batch stream must start at step x accumulation."""
    losses: dict[str, dict[int, float]] = {}
    interrupt_at: dict[str, int] = {"halves": 9}
    from mypt.module import GPTModule

    original = GPTModule.training_step

    def record(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        name = self.logger.name
        losses.setdefault(name, {})[self.global_step] = loss.item()
        if interrupt_at.get(name) == self.global_step:
            del interrupt_at[name]
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: stop after this step, bundle saved
        return loss

    monkeypatch.setattr(GPTModule, "training_step", record)
    common = (  # dropout: the RNG must be restored too
        "--model.dropout", "0.1", "--trainer.max_steps", "20", "--trainer.accumulate_grad_batches", "2",
    )  # fmt: skip
    assert _fit(mypt, text_file, *common, name="whole").code == 0
    r = _fit(mypt, text_file, *common, name="halves")
    assert r.code == 128 + signal.SIGINT and "stopped by SIGINT at step 10" in r.err, r
    assert _state("halves")["step"] == 10
    r = mypt("fit", "--ckpt_path", "checkpoints/halves")
    assert r.code == 0, r
    assert "settings unchanged" in r.out
    assert losses["halves"] == losses["whole"]
    a = bundle.load_model_state(Path("checkpoints/whole"))
    b = bundle.load_model_state(Path("checkpoints/halves"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _loss_in_table(out: str, key: str) -> float:
    """The value Lightning's results table prints for `key` (e.g. `│ val/loss │ 3.9876... │`)."""
    row = next(line for line in out.splitlines() if f" {key} " in line)
    return float(row.replace("│", " ").replace("|", " ").split()[-1])


def test_validate_and_test_a_bundle_by_name(mypt, text_file):
    assert _fit(mypt, text_file, "--trainer.max_steps", "10").code == 0
    saved = _state()["val_loss"]
    r = mypt("validate", "tiny", "--trainer.enable_progress_bar", "false")
    assert r.code == 0, r
    # the same windows give the same validation loss
    assert _loss_in_table(r.out, "val/loss") == pytest.approx(saved, rel=1e-5), r.out
    r = mypt("test", "tiny", "--trainer.enable_progress_bar", "false")
    assert r.code == 0, r
    assert "mypt: test evaluates the validation split" in r.out
    assert _loss_in_table(r.out, "test/loss") == pytest.approx(saved, rel=1e-5), r.out
    assert _state()["step"] == 10  # evaluating does not rewrite the bundle


def test_a_folder_that_is_not_a_bundle_is_never_replaced(mypt, text_file):
    folder = Path("checkpoints/tiny")
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    r = _fit(mypt, text_file, "--trainer.max_steps", "5")
    assert r.code == 2 and "is not a mypt bundle" in r.err
    assert (folder / "notes.txt").read_text() == "mine"


def test_resume_from_another_folder_finds_the_text_and_says_when_it_changed(mypt, tmp_path, monkeypatch):
    """A relative --data.input_file names the text from where training started; a resume from
    another folder still finds it (the bundle records its absolute path too), and a text that changed
    since the save is reported instead of used silently."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    text = project / "data" / "inferno.txt"
    text.write_text(dante_text(60_000), encoding="utf-8")
    monkeypatch.chdir(project)
    r = mypt(
        "fit",
        *TINY,
        "--data.input_file",
        "data/inferno.txt",
        "--model_name",
        "rel",
        "--trainer.max_steps",
        "10",
    )
    assert r.code == 0, r
    saved = json.loads((project / "checkpoints/rel" / bundle.TRAINING_STATE_FILE).read_text())["data"]
    assert saved["input_file"] == "data/inferno.txt" and saved["input_path"] == str(text.resolve())

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = mypt("fit", "--ckpt_path", project / "checkpoints/rel", "--trainer.max_steps", "15")
    assert r.code == 0, r
    assert "data.input_file" not in r.out and "text changed" not in r.out, r.out  # the same file

    with text.open("a", encoding="utf-8") as f:
        f.write("E quindi uscimmo a riveder le stelle.\n")
    r = mypt("fit", "--ckpt_path", project / "checkpoints/rel", "--trainer.max_steps", "20")
    assert r.code == 0, r
    assert "the text changed since the bundle was saved (" in r.out and "inferno.txt, sha256 " in r.out, r.out
    assert "for a new model of it, give another --model_name" in r.out
    assert bundle.load_training_state(project / "checkpoints/rel")["step"] == 20


def test_each_rank_takes_back_its_own_rng_states_and_older_bundles_still_restore():
    """optimizer.pt holds one RNG state per rank (rng_per_rank); bundles from before hold rank zero's
    alone (rng). A rank the saved run did not have keeps the generators it was seeded with."""
    torch.manual_seed(5)
    states = [capture_rng()]
    after = torch.rand(3)
    torch.manual_seed(6)
    states.append(capture_rng())
    after_rank1 = torch.rand(3)
    saver = BundleCheckpoint("checkpoints/x")
    for saved, rank, expected in (
        ({"rng_per_rank": states}, 0, after),
        ({"rng_per_rank": states}, 1, after_rank1),
        ({"rng": states[0]}, 0, after),  # an older bundle
    ):
        torch.manual_seed(7)
        saver._rank = rank  # as setup() records it
        saver.load_state_dict(saved)
        assert torch.equal(torch.rand(3), expected), (saved.keys(), rank)
    torch.manual_seed(7)
    own = torch.rand(3)
    torch.manual_seed(7)
    saver._rank = 2  # a third process now: nothing saved for it
    saver.load_state_dict({"rng_per_rank": states})
    assert torch.equal(torch.rand(3), own)
