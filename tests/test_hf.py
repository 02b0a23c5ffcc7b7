"""The Hugging Face bridge through `mypt export` and `mypt fit --model.init_from`: equal logits both ways,
for nanoGPT's architecture (GPT2LMHeadModel) and the default one (Qwen3ForCausalLM; LlamaForCausalLM
without QK-norm)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY

from mypt import bundle, load_model
from mypt.config import NANOGPT
from mypt.tokenizer import GPT2_PADDED_VOCAB_SIZE, GPT2_VOCAB_SIZE

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

DATA = Path(__file__).parent / "data"
# nanoGPT's architecture, which exports to GPT2LMHeadModel
NANOGPT_ARGS = [
    a for k, v in NANOGPT.items() for a in (f"--model.{k}", str(v).lower() if isinstance(v, bool) else str(v))
]
VERSE = "Nel mezzo\ndel cammin\ndi nostra vita\n"


def _logits_both(bundle_path: str | Path, hf_dir: Path, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    model, _, _ = load_model(bundle_path)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir)
    hf_model.eval()
    idx = torch.tensor([ids])
    with torch.no_grad():
        ours, _ = model(idx, idx)  # with targets: logits at every position
        theirs = hf_model(idx).logits
    return ours, theirs


def _pipeline_equals_generate(mypt, name: str, out: Path, prompt: str, max_new_tokens: int) -> str:
    """transformers' pipeline, loading the export by its folder alone, continues a prompt greedily
    exactly as `mypt generate --temperature 0` does. Returns the continuation."""
    generator = transformers.pipeline("text-generation", model=str(out))
    theirs = generator(prompt, max_new_tokens=max_new_tokens, do_sample=False)[0]["generated_text"]
    r = mypt("generate", name, "--prompt", prompt, "--max_new_tokens", max_new_tokens, "--temperature", "0")
    assert r.code == 0, r
    assert theirs == r.out.removesuffix("\n") and len(theirs) > len(prompt)
    return theirs.removeprefix(prompt)


def _small_gpt2(path: Path, activation: str = "gelu") -> transformers.GPT2LMHeadModel:
    """A GPT-2 that transformers builds and saves locally: the test never downloads anything."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=GPT2_VOCAB_SIZE,
        n_positions=64,
        activation_function=activation,
    )
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():  # non-zero biases and LayerNorm parameters, so the mapping of each one matters
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(path)
    return model


def _small_qwen3(path: Path, **config) -> transformers.Qwen3ForCausalLM:
    """A Qwen3 of GPT-2's vocabulary that transformers builds and saves locally (no download)."""
    torch.manual_seed(0)
    settings = dict(
        vocab_size=GPT2_VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
    )  # fmt: skip
    model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**{**settings, **config}))
    with torch.no_grad():  # norm weights away from 1, so the mapping of each one matters
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(path)
    return model


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


UMASK = os.umask(0)
os.umask(UMASK)


def test_export_char_bundle_gives_equal_logits_and_imports_back(mypt, text_file):
    r = mypt("fit", *TINY, *NANOGPT_ARGS, "--data.input_file", text_file, "--model_name", "tiny",
             "--trainer.max_steps", "10")  # fmt: skip
    assert r.code == 0, r
    r = mypt("export", "checkpoints/tiny", "--format", "hf", "out")
    assert r.code == 0, r
    assert {"config.json", "model.safetensors", "mypt_tokenizer.json"} <= {
        p.name for p in Path("out").iterdir()
    }
    hf_config = json.loads(Path("out/config.json").read_text())
    assert hf_config["model_type"] == "gpt2" and hf_config["activation_function"] == "gelu"
    assert hf_config["vocab_size"] == bundle.load_config(Path("checkpoints/tiny"))["vocab_size"]
    _, tokenizer, _ = load_model("tiny")
    ids = tokenizer.encode("Nel mezzo del cam")[:16]
    ours, theirs = _logits_both("checkpoints/tiny", Path("out"), ids)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    # a tokenizer transformers loads, so that its pipeline works with a char vocabulary too
    text = "Nel mezzo del cammin\n\n  di nostra vita"
    assert transformers.AutoTokenizer.from_pretrained("out").encode(text) == tokenizer.encode(text)
    _pipeline_equals_generate(mypt, "tiny", Path("out"), "Nel mezzo", 6)

    # back into mypt: fine-tune from the exported folder; the converted parent keeps the weights exactly
    r = mypt("fit", *TINY, "--data.input_file", text_file, "--model.init_from", "out", "--model_name", "again",
             "--trainer.max_steps", "2")  # fmt: skip
    assert r.code == 0, r
    original = bundle.load_model_state(Path("checkpoints/tiny"))
    converted = bundle.load_model_state(Path("checkpoints/out-hf"))
    assert original.keys() == converted.keys()  # bias=False came back as bias=False
    assert all(torch.equal(original[k], converted[k]) for k in original)
    assert bundle.read_json(Path("checkpoints/out-hf/tokenizer.json")) == tokenizer.to_dict()
    child = bundle.load_training_state(Path("checkpoints/again"))
    assert child["init_from"] == {"path": "checkpoints/out-hf", "step": 0, "imported_from": "out"}
    # an export's folder already named -hf converts under its own name, not dante-hf-hf
    shutil.copytree("out", "tiny-hf")
    r = mypt("fit", *TINY, "--data.input_file", text_file, "--model.init_from", "tiny-hf/", "--model_name",
             "again2", "--trainer.max_steps", "1")  # fmt: skip
    assert r.code == 0, r
    assert sorted(p.name for p in Path("checkpoints").iterdir()) == [
        "again",
        "again2",
        "out-hf",
        "tiny",
        "tiny-hf",
    ]
    assert bundle.load_training_state(Path("checkpoints/again2"))["init_from"]["imported_from"] == "tiny-hf/"
    assert mode(Path("out/model.safetensors")) == mode(Path("out/config.json")) == 0o666 & ~UMASK


def test_old_bundle_exports_to_gpt2_with_the_logits_of_before(mypt):
    """A bundle whose config.json predates the architecture options is nanoGPT's: GPT2LMHeadModel,
    with the logits the model code of before computed (tests/data/nanogpt_bundle_reference.pt)."""
    shutil.copytree(DATA / "nanogpt_bundle", "checkpoints/old")
    r = mypt("export", "old", "out")
    assert r.code == 0, r
    assert "GPT2LMHeadModel" in r.out
    hf_config = json.loads(Path("out/config.json").read_text())
    assert hf_config["architectures"] == ["GPT2LMHeadModel"] and hf_config["tie_word_embeddings"] is True
    reference = torch.load(DATA / "nanogpt_bundle_reference.pt", weights_only=True)
    hf_model = transformers.GPT2LMHeadModel.from_pretrained("out").eval()
    with torch.no_grad():
        theirs = hf_model(reference["idx"]).logits
    torch.testing.assert_close(theirs, reference["logits"], atol=1e-5, rtol=0)


def test_default_architecture_exports_to_qwen3_with_pipeline_and_back(mypt):
    """The default architecture is Qwen3ForCausalLM's: equal logits, pipeline output equal to `mypt
    generate` across lines (every newline kept: no text character is a special token of the char
    tokenizer), and an exact way back through --model.init_from."""
    Path("verse.txt").write_text(VERSE * 1500, encoding="utf-8")
    # a text this regular teaches a tiny model in 40 steps to continue across lines
    r = mypt("fit", *TINY, "--data.input_file", "verse.txt", "--model_name", "verse", "--trainer.max_steps", "40",
             "--model.block_size", "64")  # fmt: skip
    assert r.code == 0, r
    r = mypt("export", "verse", "out")
    assert r.code == 0, r
    assert "Qwen3ForCausalLM" in r.out
    hf_config = json.loads(Path("out/config.json").read_text())
    assert hf_config["architectures"] == ["Qwen3ForCausalLM"] and hf_config["num_key_value_heads"] == 2
    assert (hf_config["head_dim"], hf_config["intermediate_size"], hf_config["rms_norm_eps"]) == (
        16,
        96,
        1e-6,
    )
    model, tokenizer, config = load_model("verse")
    ours, theirs = _logits_both("verse", Path("out"), tokenizer.encode(VERSE * 2)[:64])
    assert (ours - theirs).abs().max() <= 1e-4
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained("out")
    text = "Nel mezzo\ndel cammin"
    assert hf_tokenizer.decode(hf_tokenizer(text)["input_ids"], skip_special_tokens=True) == text
    continuation = _pipeline_equals_generate(mypt, "verse", Path("out"), "Nel mezzo\ndel", 40)
    assert continuation.count("\n") >= 2 and continuation.strip("\n").count("\n") >= 1, continuation
    # an empty prompt starts from a newline in both, as the config's bos_token_id says
    assert _pipeline_equals_generate(mypt, "verse", Path("out"), "", 20).count("\n") >= 2

    r = mypt("fit", *TINY, "--data.input_file", "verse.txt", "--model.init_from", "out", "--model_name", "again",
             "--model.block_size", "64", "--trainer.max_steps", "1")  # fmt: skip
    assert r.code == 0, r
    back = bundle.load_config(Path("checkpoints/out-hf"))
    assert {k: back[k] for k in config if k != "batch_size"} == {
        k: config[k] for k in config if k != "batch_size"
    }
    original = bundle.load_model_state(Path("checkpoints/verse"))
    converted = bundle.load_model_state(Path("checkpoints/out-hf"))
    assert original.keys() == converted.keys() and all(
        torch.equal(original[k], converted[k]) for k in original
    )


def test_bpe_default_architecture_keeps_its_padding_rows_both_ways(mypt, text_file):
    """RMSNorm has no bias, so no padding row can have a constant low logit: the export keeps mypt's
    trained padding rows (vocab_size 320 for 300 tokens, as Qwen3's own checkpoints pad), and the
    import gets every row back exactly."""
    r = mypt("fit", *TINY, "--data.input_file", text_file, "--data.tokenizer", "bpe", "--data.vocab_size", "300",
             "--model_name", "own", "--trainer.max_steps", "10")  # fmt: skip
    assert r.code == 0, r
    assert mypt("export", "own", "out").code == 0
    hf_config = json.loads(Path("out/config.json").read_text())
    assert hf_config["vocab_size"] == 320 and hf_config["bos_token_id"] == hf_config["eos_token_id"] == 0
    _, tokenizer, _ = load_model("own")
    assert len(transformers.AutoTokenizer.from_pretrained("out")) == 300
    ours, theirs = _logits_both(
        "own", Path("out"), tokenizer.encode("Nel mezzo del cammin di nostra vita")[:16]
    )
    assert ours.shape == theirs.shape and (ours - theirs).abs().max() <= 1e-4
    _pipeline_equals_generate(mypt, "own", Path("out"), "Nel mezzo", 8)
    r = mypt("fit", *TINY, "--data.input_file", text_file, "--model.init_from", "out", "--model_name", "again",
             "--trainer.max_steps", "1")  # fmt: skip
    assert r.code == 0, r
    original = bundle.load_model_state(Path("checkpoints/own"))
    converted = bundle.load_model_state(Path("checkpoints/out-hf"))
    assert all(torch.equal(original[k], converted[k]) for k in original)


def test_without_qk_norm_a_tied_model_exports_to_llama_and_back(mypt, text_file):
    r = mypt("fit", *TINY, "--data.input_file", text_file, "--model.qk_norm", "false", "--model.tie_embeddings",
             "true", "--model.rope_base", "500", "--model_name", "flat", "--trainer.max_steps", "3")  # fmt: skip
    assert r.code == 0, r
    assert mypt("export", "flat", "out").code == 0
    hf_config = json.loads(Path("out/config.json").read_text())
    assert hf_config["architectures"] == ["LlamaForCausalLM"] and hf_config["tie_word_embeddings"] is True
    _, tokenizer, _ = load_model("flat")
    ours, theirs = _logits_both("flat", Path("out"), tokenizer.encode("Nel mezzo del cam")[:16])
    assert (ours - theirs).abs().max() <= 1e-4
    r = mypt("fit", *TINY, "--data.input_file", text_file, "--model.init_from", "out", "--model_name", "again",
             "--trainer.max_steps", "1")  # fmt: skip
    assert r.code == 0, r
    config = bundle.load_config(Path("checkpoints/out-hf"))
    assert (config["qk_norm"], config["tie_embeddings"], config["rope_base"]) == (False, True, 500.0)
    original = bundle.load_model_state(Path("checkpoints/flat"))
    converted = bundle.load_model_state(Path("checkpoints/out-hf"))
    assert all(torch.equal(original[k], converted[k]) for k in original)


@pytest.mark.parametrize(
    "options, change",
    [
        (["--model.mlp", "relu2"], "--model.mlp swiglu"),
        (["--model.pos_emb", "learned"], "--model.pos_emb rope"),
        (["--model.logit_softcap", "15"], "--model.logit_softcap 0"),
    ],
)
def test_an_architecture_no_class_computes_is_refused_in_one_line(mypt, text_file, options, change):
    r = mypt("fit", *TINY, *options, "--data.input_file", text_file, "--model_name", "odd", "--trainer.max_steps", "1",
             "--trainer.val_check_interval", "1", "--trainer.limit_val_batches", "1")  # fmt: skip
    assert r.code == 0, r
    r = mypt("export", "odd", "out")
    assert r.code == 2 and r.err.count("\n") == 1 and r.err.startswith("mypt: error:"), r
    assert change in r.err and "Traceback" not in r.err
    assert not Path("out").exists()


def test_export_gpt2_bundle_keeps_the_real_vocabulary_and_tokenizer(mypt, text_file):
    r = mypt("fit", *TINY, *NANOGPT_ARGS, "--data.input_file", text_file, "--data.tokenizer", "gpt2", "--model.bias", "true",
             "--model_name", "gpt2", "--trainer.max_steps", "2")  # fmt: skip
    assert r.code == 0, r
    r = mypt("export", "gpt2", "out")
    assert r.code == 0, r
    assert json.loads(Path("out/config.json").read_text())["vocab_size"] == GPT2_VOCAB_SIZE
    _, tokenizer, config = load_model("gpt2")
    assert config["vocab_size"] == GPT2_PADDED_VOCAB_SIZE
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained("out")
    text = "Nel mezzo del cammin di nostra vita"
    assert hf_tokenizer.encode(text) == tokenizer.encode(text)
    ours, theirs = _logits_both("gpt2", Path("out"), tokenizer.encode(text))
    torch.testing.assert_close(ours[..., :GPT2_VOCAB_SIZE], theirs, atol=1e-5, rtol=0)
    _pipeline_equals_generate(mypt, "gpt2", Path("out"), "Nel mezzo", 6)


def test_export_bpe_bundle_tokenizer_pipeline_and_back(mypt, text_file):
    # nanoGPT's architecture with an untied head and its own MLP width: GPT-2 has both settings
    r = mypt("fit", *TINY, *NANOGPT_ARGS, "--model.tie_embeddings", "false", "--model.mlp_hidden", "48",
             "--data.input_file", text_file, "--data.tokenizer", "bpe", "--data.vocab_size", "300",
             "--model.bias", "true", "--model_name", "own", "--trainer.max_steps", "10")  # fmt: skip
    assert r.code == 0, r
    r = mypt("export", "own", "out")
    assert r.code == 0, r
    hf_config = json.loads(Path("out/config.json").read_text())
    assert hf_config["vocab_size"] == 300 and hf_config["bos_token_id"] == hf_config["eos_token_id"] == 0
    assert (hf_config["model_type"], hf_config["n_inner"], hf_config["tie_word_embeddings"]) == (
        "gpt2",
        48,
        False,
    )
    _, tokenizer, config = load_model("own")
    assert config["vocab_size"] == 320
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained("out")
    text = "Nel mezzo\t\tdel cammin 🎉 日本語\n\n\n  perché più là"
    assert hf_tokenizer.encode(text) == tokenizer.encode(text)
    assert hf_tokenizer.decode(tokenizer.encode(text)) == text
    assert hf_tokenizer.eos_token == hf_tokenizer.bos_token == "<|endoftext|>"
    ours, theirs = _logits_both("own", Path("out"), tokenizer.encode(text)[:16])
    torch.testing.assert_close(ours[..., :300], theirs, atol=1e-5, rtol=0)
    _pipeline_equals_generate(mypt, "own", Path("out"), "Nel mezzo", 8)

    # back into mypt: the same BPE, the padding rows restored
    r = mypt("fit", *TINY, "--data.input_file", text_file, "--model.init_from", "out", "--model_name", "again",
             "--trainer.max_steps", "1")  # fmt: skip
    assert r.code == 0, r
    assert (
        Path("checkpoints/out-hf/tokenizer.json").read_bytes()
        == Path("checkpoints/own/tokenizer.json").read_bytes()
    )
    assert bundle.load_config(Path("checkpoints/out-hf"))["vocab_size"] == 320
    model, _, _ = load_model("out-hf")
    idx = torch.tensor([tokenizer.encode(text)[:16]])
    with torch.no_grad():
        back, _ = model(idx, idx)
    torch.testing.assert_close(back[..., :300], ours[..., :300], atol=1e-5, rtol=0)
    assert back[..., 300:].max() < back[..., :300].min() - 100  # the padding rows never win


def test_fine_tune_from_a_local_gpt2_folder(mypt, text_file):
    hf_model = _small_gpt2(Path("small-gpt2"))
    r = mypt("fit", "--model.init_from", "small-gpt2", "--model_name", "ft", "--data.input_file", text_file,
             "--data.tokenizer", "gpt2", "--data.batch_size", "2", "--trainer.max_steps", "2",
             "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false")  # fmt: skip
    assert r.code == 0, r
    parent = Path("checkpoints/small-gpt2-hf")
    config = bundle.load_config(parent)
    assert (config["n_layer"], config["n_embd"], config["n_head"], config["block_size"]) == (2, 32, 2, 64)
    assert config["vocab_size"] == GPT2_PADDED_VOCAB_SIZE and config["bias"] is True
    model, tokenizer, _ = load_model(parent)
    idx = torch.tensor([tokenizer.encode("Nel mezzo del cammin di nostra vita")])
    with torch.no_grad():
        ours, _ = model(idx, idx)
        theirs = hf_model.eval()(idx).logits
    torch.testing.assert_close(ours[..., :GPT2_VOCAB_SIZE], theirs, atol=1e-5, rtol=0)
    # the padding rows can never outrank a real token, for any input
    assert ours[..., GPT2_VOCAB_SIZE:].max() < theirs.min() - 100

    child = bundle.load_training_state(Path("checkpoints/ft"))
    assert child["init_from"]["path"] == str(parent) and child["step"] == 2
    assert bundle.load_training_state(parent)["imported_from"] == "small-gpt2"
    listing = mypt("list").out
    assert "hf:small-gpt2" in listing and f"{parent}@0" in listing


def test_a_qwen3_of_gpt2s_vocabulary_imports_with_padding_rows_that_never_win(tmp_path):
    """A Qwen3 of GPT-2's 50257 tokens gets mypt's 47 padding rows, each the mean of the output rows:
    its logit is the tokens' mean logit, so it never outranks the likeliest token and holds less
    probability than an average token. (`--model.init_from` of a folder: the round trips above.)"""
    from mypt.hf import import_hf

    hf_model = _small_qwen3(tmp_path / "small", rope_parameters={"rope_type": "default", "rope_theta": 2e4})
    parent = import_hf(str(tmp_path / "small"), tmp_path / "checkpoints" / "small")
    config = bundle.load_config(parent)
    assert config["vocab_size"] == GPT2_PADDED_VOCAB_SIZE and config["block_size"] == 64
    assert (config["qk_norm"], config["mlp_hidden"], config["rope_base"]) == (True, 64, 2e4)
    model, tokenizer, _ = load_model(parent)
    idx = torch.tensor([tokenizer.encode("Nel mezzo del cammin di nostra vita")])
    with torch.no_grad():
        ours, _ = model(idx, idx)
        theirs = hf_model.eval()(idx).logits
    assert (ours[..., :GPT2_VOCAB_SIZE] - theirs).abs().max() <= 1e-4
    padding = ours[..., GPT2_VOCAB_SIZE:]
    torch.testing.assert_close(padding, theirs.mean(-1, keepdim=True).expand_as(padding), atol=1e-4, rtol=0)
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()
    probs = ours.softmax(-1)
    assert (probs[..., GPT2_VOCAB_SIZE:].amax(-1) <= 1 / GPT2_VOCAB_SIZE).all()


DIFFERS = "odd differs from mypt's GPT: "


@pytest.mark.parametrize(
    "kind, config, error",
    [
        (
            "Qwen3Config",
            {"num_key_value_heads": 1},
            DIFFERS + "num_key_value_heads 1 != num_attention_heads 2",
        ),
        ("Qwen3Config", {"head_dim": 8}, DIFFERS + "head_dim 8 != hidden_size / num_attention_heads"),
        (
            "Qwen3Config",
            {"rope_parameters": {"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}},
            DIFFERS + "RoPE scaling 'linear'",
        ),
        ("Qwen3Config", {}, "odd has a vocabulary of 64 tokens and no mypt_tokenizer.json"),
        ("MistralConfig", {}, "odd is a 'mistral' model: mypt imports gpt2, llama and qwen3 models only"),
    ],
)
def test_import_refuses_what_mypt_cannot_use_in_one_line(mypt, text_file, kind, config, error):
    settings = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=2, head_dim=16)  # fmt: skip
    getattr(transformers, kind)(**{**settings, **config}).save_pretrained("odd")  # refused before any weights
    r = mypt("fit", "--model.init_from", "odd", "--model_name", "ft", "--data.input_file", text_file)
    assert r.code == 2 and r.err.count("\n") == 1 and r.err.startswith(f"mypt: error: {error}"), r
    assert not Path("checkpoints").exists() or not any(Path("checkpoints").iterdir())


def test_llama_with_another_rms_norm_eps_imports_with_a_stated_gap(tmp_path, capsys):
    from mypt.hf import import_hf

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=GPT2_VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32, rms_norm_eps=1e-5,
    )  # fmt: skip
    hf_model = transformers.LlamaForCausalLM(config)
    hf_model.save_pretrained(tmp_path / "llama")
    import_hf(str(tmp_path / "llama"), tmp_path / "checkpoints" / "llama")
    assert "uses RMSNorm eps 1e-05 and mypt 1e-06" in capsys.readouterr().err
    model, _, config = load_model(tmp_path / "checkpoints" / "llama")
    assert config["qk_norm"] is False and config["mlp_hidden"] == 64
    idx = torch.arange(20).unsqueeze(0)
    with torch.no_grad():
        ours, _ = model(idx, idx)
        theirs = hf_model.eval()(idx).logits
    torch.testing.assert_close(ours[..., :GPT2_VOCAB_SIZE], theirs, atol=1e-2, rtol=0)


def test_tanh_gelu_models_import_with_a_stated_gap(tmp_path, capsys):
    from mypt.hf import import_hf

    hf_model = _small_gpt2(tmp_path / "tanh", activation="gelu_new")
    import_hf(str(tmp_path / "tanh"), tmp_path / "checkpoints" / "tanh")
    assert "tanh approximation of GELU" in capsys.readouterr().err
    model, _, _ = load_model(tmp_path / "checkpoints" / "tanh")
    idx = torch.arange(20).unsqueeze(0)
    with torch.no_grad():
        ours, _ = model(idx, idx)
        theirs = hf_model.eval()(idx).logits
    torch.testing.assert_close(ours[..., :GPT2_VOCAB_SIZE], theirs, atol=1e-2, rtol=0)


def test_export_errors_are_one_line(mypt, text_file, monkeypatch):
    assert (
        mypt(
            "fit", *TINY, "--data.input_file", text_file, "--model_name", "tiny", "--trainer.max_steps", "2"
        ).code
        == 0
    )
    Path("taken").mkdir()
    Path("taken/file").write_text("x")
    r = mypt("export", "tiny", "taken")
    assert r.code == 2 and r.err.startswith("mypt: error: taken exists and is not empty")
    r = mypt("export", "nothing_here", "out")
    assert r.code == 2 and "no bundle at nothing_here" in r.err

    monkeypatch.setitem(sys.modules, "transformers", None)  # as if the hf extra were not installed
    r = mypt("export", "tiny", "out")
    assert r.code == 2 and r.err.count("\n") == 1 and "pip install mypt[hf]" in r.err
    assert not Path("out").exists()
    r = mypt("fit", "--model.init_from", "gpt2", "--model_name", "x", "--data.input_file", text_file)
    assert r.code == 2 and "pip install mypt[hf]" in r.err and "Traceback" not in r.err
