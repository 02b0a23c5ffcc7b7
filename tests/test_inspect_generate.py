"""Reading a bundle without training: inspect, get_model_info, generate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, run_mypt_subprocess

from mypt import get_model_info


@pytest.fixture
def trained(mypt, text_file) -> Path:
    r = mypt(
        "fit", *TINY, "--data.input_file", text_file, "--model_name", "dante", "--trainer.max_steps", "20"
    )
    assert r.code == 0, r
    return Path("checkpoints/dante")


def test_get_model_info_as_in_the_design_note(trained):
    info = get_model_info("dante")
    training_config = info["training_state"]["training_config"]
    assert training_config["max_iters"] == 20 and training_config["learning_rate"] == 0.004
    assert info["config"]["n_layer"] == 2 and info["tokenizer"]["token_kind"] == "char"
    assert info["files"]["model.pt"] == (trained / "model.pt").stat().st_size
    assert info["num_params"] > 0


def test_inspect_text_and_json(mypt, trained):
    r = mypt("inspect", "dante")  # a bare name is looked up under checkpoints/
    assert r.code == 0, r
    for heading in ("=== CONFIG ===", "=== TOKENIZER ===", "=== TRAINING STATE ==="):
        assert heading in r.out
    assert "Last recorded training step: 20" in r.out
    assert "  max_iters: 20" in r.out and "  start_step: 0" in r.out
    assert "run 1: steps 0 -> 20" in r.out and "model.pt" in r.out
    r = mypt("inspect", "checkpoints/dante", "--json")
    assert r.code == 0, r
    data = json.loads(r.out)
    assert data["training_state"]["step"] == 20 and data["config"]["block_size"] == 16


def test_inspect_never_reads_the_weights(mypt, trained, monkeypatch):
    import torch

    def refuse(*args, **kwargs):
        raise AssertionError("inspect must not load tensors")

    monkeypatch.setattr(torch, "load", refuse)
    assert mypt("inspect", "dante").code == 0
    assert mypt("inspect", "dante", "--json").code == 0


def test_generate_is_deterministic_with_a_seed(mypt, trained):
    args = ("generate", "checkpoints/dante", "--prompt", "Nel mezzo", "--max_new_tokens", "40",
            "--temperature", "0.8", "--top_k", "200", "--seed", "1")  # fmt: skip
    a, b = mypt(*args), mypt(*args)
    assert a.code == 0, a
    assert (
        a.out == b.out and a.out.startswith("Nel mezzo") and len(a.out.rstrip("\n")) == len("Nel mezzo") + 40
    )
    assert mypt(*args[:-1], "2").out != a.out


def test_generate_names_a_character_outside_the_vocabulary(mypt, trained):
    r = mypt("generate", "dante", "--prompt", "Nel mezzo ✈", "--max_new_tokens", "5")
    assert r.code == 2 and r.err.strip() == "mypt: error: character '✈' is not in the model's vocabulary"


def run_python(code: str) -> subprocess.CompletedProcess:
    """`python -c CODE` in a fresh interpreter here, to see which modules a command imports."""
    return subprocess.run([sys.executable, "-c", code], cwd=Path.cwd(), capture_output=True, text=True)


def test_readers_do_not_import_lightning(tmp_path, trained):
    r = run_python(
        "import sys; from mypt.cli import main; main(['inspect', 'dante']);"
        "main(['generate', 'dante', '--max_new_tokens', '3', '--seed', '0']);"
        "sys.exit(1 if any(m.startswith('lightning') for m in sys.modules) else 0)"
    )
    assert r.returncode == 0, r.stderr


def test_inspect_and_list_do_not_import_torch(trained):
    """Describing a bundle reads its JSON files only, so `mypt inspect`, `mypt list` and
    `mypt.get_model_info` answer without torch's second of start-up (docs/benchmarks.md)."""
    r = run_python(
        "import sys, mypt; from mypt.cli import main; main(['inspect', 'dante']); main(['list']);"
        "main(['inspect', 'dante', 'dante', '--json']); mypt.get_model_info('dante');"
        "sys.exit(3 if 'torch' in sys.modules else 0)"
    )
    assert r.returncode == 0, r.stderr
    assert "Model: dante" in r.stdout
    # and the names that need torch are still there, imported on first use
    r = run_python("import mypt; m, tok, cfg = mypt.load_model('dante'); assert isinstance(m, mypt.GPT)")
    assert r.returncode == 0, r.stderr


def test_generate_a_bundle_trained_elsewhere(mypt, trained, monkeypatch):
    """A bundle whose tensors were saved on a GPU (their storages tagged cuda:0) generates on a CPU."""
    expected = mypt("generate", "dante", "--max_new_tokens", "5", "--seed", "0")
    config = json.loads((trained / "config.json").read_text())
    weights = torch.load(trained / "model.pt", weights_only=True)
    with monkeypatch.context() as m:  # what torch.save writes for tensors that live on a GPU
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(weights, trained / "model.pt")
    if not torch.cuda.is_available():  # control: loaded as saved, these tensors need a GPU
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(trained / "model.pt", weights_only=True)
    config["device"] = "cuda"
    (trained / "config.json").write_text(json.dumps(config))
    (trained / "manifest.json").unlink()  # the manifest would (rightly) flag the edits
    r = run_mypt_subprocess("generate", "dante", "--max_new_tokens", "5", "--seed", "0", cwd=Path.cwd())
    assert r.code == 0, r
    assert r.out == expected.out


def test_predict_samples_each_prompt(mypt, trained):
    """One sample per prompt, each exactly what `mypt generate` gives with the prompt's index as seed."""
    r = mypt("predict", "dante", "--data.prompts", '["Nel mezzo", "Amor"]',
             "--trainer.enable_progress_bar", "false")  # fmt: skip
    assert r.code == 0, r
    samples = [mypt("generate", "dante", "--prompt", prompt, "--seed", str(seed)).out
               for seed, prompt in enumerate(["Nel mezzo", "Amor"])]  # fmt: skip
    assert all(len(sample) > len("Nel mezzo") + 100 for sample in samples)  # 200 new characters each
    assert r.out.endswith(
        f"=== sample 1 of 2: prompt 'Nel mezzo', seed 0 ===\n{samples[0]}\n"
        f"=== sample 2 of 2: prompt 'Amor', seed 1 ===\n{samples[1]}"
    ), (r.out, samples)


def test_help_lists_each_option_with_its_description_and_default(mypt):
    r = mypt("generate", "--help")
    assert r.code == 0
    text = " ".join(r.out.split())
    for expected in ("--prompt PROMPT text the sample continues (default: '\\n')",
                     "--max_new_tokens MAX_NEW_TOKENS tokens to sample after the prompt (default: 200)",
                     "(default: 0.8)", "--top_k TOP_K sample from the k most likely tokens only (default: 200)",
                     "--device DEVICE cpu, cuda or mps (default: cpu)"):  # fmt: skip
        assert expected in text, (expected, r.out)
    for command in ("inspect", "list", "export"):
        r = mypt(command, "--help")
        assert r.code == 0 and "(default: checkpoints)" in r.out, r


def _without_batch_size(args: list[str]) -> list[str]:
    i = args.index("--data.batch_size")
    return args[:i] + args[i + 2 :]


def test_the_readme_hf_steps_then_inspect_generate_validate_the_converted_bundle(mypt, text_file):
    """The README's steps: export to dante-hf/, fine-tune from it. `mypt list` shows the converted
    bundle dante-hf; `inspect`, `generate` and `validate` of that name open it (not the export folder
    here), and inspect says where it came from, as list and training_state.json do."""
    pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    run = ("--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--data.input_file", text_file)
    assert mypt("fit", *TINY, *run, "--model_name", "dante").code == 0
    assert mypt("export", "checkpoints/dante", "--format", "hf", "dante-hf/").code == 0
    r = mypt("fit", *TINY, *run, "--model.init_from", "dante-hf/", "--model_name", "again")
    assert r.code == 0, r
    assert "dante-hf" in mypt("list").out

    r = mypt("inspect", "dante-hf")
    assert r.code == 0, r
    assert "Lineage: converted from the Hugging Face model dante-hf/" in r.out, r.out
    r = mypt("inspect", "again")
    assert (
        "Lineage: fine-tuned from checkpoints/dante-hf at step 0 (originally the Hugging Face model dante-hf/)"
        in r.out
    )
    r = mypt("generate", "dante-hf", "--max_new_tokens", "5", "--seed", "0")
    assert r.code == 0 and len(r.out) > 5, r
    # evaluation needs the weights alone: the converted bundle has no optimizer.pt
    r = mypt("validate", "dante-hf", "--data.input_file", text_file, "--trainer.limit_val_batches", "1",
             "--trainer.enable_progress_bar", "false")  # fmt: skip
    assert r.code == 0 and "val/loss" in r.out, r


def test_a_fine_tune_from_an_export_keeps_the_parent_batch_size(mypt, text_file):
    """The parent trained at batch size 4; its export, converted back for a fine-tune, gives the
    fine-tune that batch size (not the converter's placeholder) unless --data.batch_size is given."""
    pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    from mypt import bundle
    from mypt.hf import IMPORT_BATCH_SIZE

    run = ("--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--data.input_file", text_file)
    assert mypt("fit", *TINY, *run, "--model_name", "dante").code == 0
    assert bundle.load_config(Path("checkpoints/dante"))["batch_size"] == 4 != IMPORT_BATCH_SIZE
    assert mypt("export", "dante", "out/").code == 0
    r = mypt("fit", *_without_batch_size(TINY), *run, "--model.init_from", "out/", "--model_name", "again")
    assert r.code == 0, r
    assert bundle.load_config(Path("checkpoints/again"))["batch_size"] == 4
