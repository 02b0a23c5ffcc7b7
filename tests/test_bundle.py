"""The bundle format on its own: atomic writes, the manifest, recovery of a cut-short swap, safe loads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from mypt import bundle
from mypt.config import NANOGPT
from mypt.errors import MyptError
from mypt.model import GPT, GPTConfig

CONFIG = {"batch_size": 4, "block_size": 8, "vocab_size": 5, "n_embd": 8, "n_head": 2, "n_layer": 1,
          "dropout": 0.0, "bias": False, "device": "cpu"}  # fmt: skip
TOKENIZER = {"token_kind": "char", "chars": list("abcde")}


def write(path: Path, step: int, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = GPT(bundle.gpt_config(CONFIG))
    state = model.state_dict()
    bundle.write_bundle(
        path,
        model_state=state,
        config=CONFIG,
        tokenizer=TOKENIZER,
        training_state={"step": step, "optimizer_file": bundle.OPTIMIZER_FILE, "training_config": {}},
        optimizer_state={
            "global_step": step,
            "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(3)}}}],
        },
    )
    return state


def files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def siblings() -> list[str]:
    return sorted(p.name for p in Path("checkpoints").iterdir() if p.name.startswith("."))


def test_config_keys_come_from_gptconfig_in_the_design_notes_order():
    from mypt.config import ARCHITECTURE_KEYS

    assert bundle.CONFIG_KEYS == (
        "batch_size",
        "block_size",
        "vocab_size",
        "n_embd",
        "n_head",
        "n_layer",
        "dropout",
        "bias",
        "device",
        "pos_emb",
        "rope_base",
        "norm",
        "qk_norm",
        "mlp",
        "mlp_hidden",
        "tie_embeddings",
        "logit_softcap",
        "zero_init_proj",
    )  # fmt: skip  (the design note's keys first, then the architecture options added since)
    assert set(ARCHITECTURE_KEYS) == set(GPTConfig().to_dict())


def test_write_then_load_round_trip():
    path = Path("checkpoints/m")
    state = write(path, 10)
    assert sorted(os.listdir(path)) == sorted([*bundle.BUNDLE_FILES, bundle.MANIFEST_FILE])
    manifest = json.loads((path / bundle.MANIFEST_FILE).read_text())
    assert manifest["step"] == 10 and manifest["format_version"] == bundle.FORMAT_VERSION
    for name, entry in manifest["files"].items():
        assert entry["size"] == (path / name).stat().st_size
    model, tokenizer, config = bundle.load_model(path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert tokenizer.decode(tokenizer.encode("abc")) == "abc" and config == {**CONFIG, **NANOGPT}
    assert siblings() == []


def test_every_pt_file_of_a_trained_bundle_loads_with_weights_only(mypt, text_file):
    """Lightning's loop state, the RNG states and the optimizer: tensors and plain containers only."""
    from conftest import TINY

    r = mypt("fit", *TINY, "--dashboard.max_new_tokens", "0", "--data.input_file", text_file,
             "--model_name", "real", "--trainer.max_steps", "2")  # fmt: skip
    assert r.code == 0, r
    pt_files = sorted(Path("checkpoints/real").glob("*.pt"))
    assert [p.name for p in pt_files] == [bundle.MODEL_FILE, bundle.OPTIMIZER_FILE]
    for file in pt_files:
        assert isinstance(torch.load(file, weights_only=True), dict)


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_write_that_fails_half_way_leaves_the_old_bundle(monkeypatch, failure):
    path = Path("checkpoints/m")
    write(path, 10)
    before = files(path)
    real_write_file = bundle._write_file

    def fail_on_optimizer(file: Path, payload):
        if file.name == bundle.OPTIMIZER_FILE:  # model.pt of the new bundle is already written
            raise failure
        return real_write_file(file, payload)

    monkeypatch.setattr(bundle, "_write_file", fail_on_optimizer)
    with pytest.raises(MyptError if isinstance(failure, OSError) else KeyboardInterrupt) as raised:
        write(path, 20, seed=1)
    if isinstance(failure, OSError):
        assert "No space left on device" in str(
            raised.value
        ) and "previous bundle (step 10) is intact" in str(raised.value)
    assert files(path) == before and siblings() == []


def test_a_signal_between_the_two_renames_puts_the_old_bundle_back(monkeypatch):
    path = Path("checkpoints/m")
    write(path, 10)
    before = files(path)
    real_rename = os.rename

    def rename(src, dst):
        if Path(src).name.startswith(".m.new-"):
            raise KeyboardInterrupt  # the old bundle has just been moved aside
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        write(path, 20, seed=1)
    assert files(path) == before and siblings() == []


def test_non_finite_weights_are_never_written():
    path = Path("checkpoints/m")
    state = write(path, 10)
    before = files(path)
    broken = {k: v.clone() for k, v in state.items()}
    next(iter(broken.values()))[0] = float("nan")
    with pytest.raises(MyptError, match=r"nan or inf; the previous bundle \(step 10\) is intact"):
        bundle.write_bundle(path, model_state=broken, config=CONFIG, tokenizer=TOKENIZER,
                            training_state={"step": 20}, optimizer_state={})  # fmt: skip
    assert files(path) == before


def test_manifest_catches_truncation_and_corruption():
    path = Path("checkpoints/m")
    write(path, 10)
    model_file = path / bundle.MODEL_FILE
    data = model_file.read_bytes()
    model_file.write_bytes(data[:-100])
    with pytest.raises(MyptError, match=r"model.pt is \d+ bytes but manifest.json says \d+: truncated"):
        bundle.load_model(path)
    with pytest.raises(MyptError, match="truncated"):
        bundle.get_model_info(path)  # inspect sees it too, by size alone
    model_file.write_bytes(data[:-100] + bytes(100))  # same size, different bytes
    with pytest.raises(MyptError, match="does not match its sha256 in manifest.json: the file is corrupt"):
        bundle.load_model(path)


def test_a_bundle_without_a_manifest_loads():
    """Bundles written by hand (or by a tool following the design note) have no manifest."""
    path = Path("checkpoints/m")
    write(path, 10)
    (path / bundle.MANIFEST_FILE).unlink()
    bundle.load_model(path)
    bundle.check_resumable(path)


def test_a_bundle_from_a_newer_format_is_refused():
    path = Path("checkpoints/m")
    write(path, 10)
    manifest = json.loads((path / bundle.MANIFEST_FILE).read_text())
    (path / bundle.MANIFEST_FILE).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(MyptError, match="newer mypt"):
        bundle.get_model_info(path)


def _aside(path: Path, kind: str, step: int, complete: bool = True) -> Path:
    """A copy of a bundle as a save cut short leaves it beside the final path."""
    scratch = path.with_name(f"scratch{step}")
    write(scratch, step, seed=step)
    target = path.with_name(f".{path.name}.{kind}-{step:08x}")
    os.rename(scratch, target)
    if not complete:
        (target / bundle.MANIFEST_FILE).unlink()
    return target


def test_recovery_prefers_the_newest_complete_copy(capsys):
    path = Path("checkpoints/m")
    _aside(path, "old", 10)
    _aside(path, "new", 20)
    assert bundle.resolve_bundle("m") == path
    assert "recovered bundle checkpoints/m" in capsys.readouterr().err
    assert bundle.load_training_state(path)["step"] == 20
    write(path, 30)  # the next save clears what the interrupted one left
    assert siblings() == []


def test_recovery_ignores_an_incomplete_new_copy():
    path = Path("checkpoints/m")
    _aside(path, "old", 10)
    _aside(path, "new", 20, complete=False)  # killed before its manifest was written
    assert bundle.is_bundle(path)
    assert bundle.load_training_state(path)["step"] == 10
    bundle.verify_bundle(path)


def test_an_incomplete_copy_alone_is_not_a_bundle():
    path = Path("checkpoints/m")
    _aside(path, "new", 20, complete=False)
    with pytest.raises(MyptError, match="no bundle at"):
        bundle.resolve_bundle(path)


def test_get_model_info_reads_json_only(monkeypatch):
    path = Path("checkpoints/m")
    write(path, 10)

    def forbidden(*args, **kwargs):
        raise AssertionError("get_model_info must not load tensors or hash files")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(bundle, "sha256_file", forbidden)
    info = bundle.get_model_info("m")
    assert info["training_state"]["step"] == 10
    assert info["num_params"] == GPT(bundle.gpt_config(CONFIG)).num_params()  # nanoGPT's: no option keys
    assert set(info["files"]) == {*bundle.BUNDLE_FILES, bundle.MANIFEST_FILE}


@pytest.mark.parametrize("name", ["a/b", "..", "../x", "", ".hidden", "a\\b"])
def test_model_names_that_would_leave_the_checkpoint_folder(name):
    with pytest.raises(MyptError, match="invalid model name"):
        bundle.bundle_path(name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_all_finite_is_exact_even_when_the_norm_overflows(dtype):
    """The fast finiteness check goes by the norm; a norm that overflows (huge but finite weights)
    must not read as nan/inf, and one nan or inf anywhere must."""
    # the float32 norm overflows for float32 and bfloat16 (float16 cannot hold such values)
    big = torch.full((1000,), 3e4 if dtype == torch.float16 else 1e30, dtype=dtype)
    assert bundle.all_finite(big) and bundle.all_finite(torch.zeros(3, dtype=dtype))
    for bad in (float("nan"), float("inf"), -float("inf")):
        t = torch.ones(64, 64, dtype=dtype)
        t[17, 3] = bad
        assert not bundle.all_finite(t)


def test_a_model_name_shadowed_by_its_text_folder_finds_the_bundle():
    # `mypt fit --data.input_file books/` names its model `books`; `mypt generate books`, run in the
    # same folder, must reach checkpoints/books, not the text folder `books/`
    Path("books").mkdir()
    (Path("books") / "a.txt").write_text("text")
    write(Path("checkpoints/books"), 5)
    assert bundle.resolve_bundle("books") == Path("checkpoints/books")
    with pytest.raises(MyptError, match="books is not a mypt bundle"):
        bundle.resolve_bundle("books/")  # a path names that folder only


def test_a_bare_name_opens_what_mypt_list_shows(mypt):
    """A name `mypt list` shows opens that bundle, even when a folder of the same name is here (a
    copy of a bundle, or the README's Hugging Face export `dante-hf/`); a path opens the folder."""
    write(Path("checkpoints/m"), 5)
    write(Path("m"), 7, seed=1)  # a bundle copied here under the same name
    r = mypt("inspect", "m")
    assert r.code == 0 and "Last recorded training step: 5" in r.out, r
    assert "m names checkpoints/m" in r.err and "./m" in r.err, r.err  # the other one, and how to name it
    r = mypt("inspect", "./m")
    assert r.code == 0 and "Last recorded training step: 7" in r.out and not r.err, r

    Path("h").mkdir()  # a transformers folder, as `mypt export NAME h/` writes it
    (Path("h") / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1}))
    write(Path("checkpoints/h"), 3)  # the bundle `--model.init_from h/` converted it into
    r = mypt("inspect", "h")
    assert r.code == 0 and "Last recorded training step: 3" in r.out, r
    r = mypt("inspect", "h/")
    line = r.err.strip()
    assert r.code == 2 and "\n" not in line and line.startswith("mypt: error: h/ is a Hugging Face"), r
    assert "--model.init_from h/" in line


def _advice(line: str) -> list[str]:
    """The `mypt fit ...` command an error line advises, as arguments (NEW_NAME and all)."""
    import re

    found = re.search(r"`mypt fit ([^`]*)`", line)
    assert found, line
    return found.group(1).split()


def test_architecture_errors_give_advice_that_works_when_followed(mypt, text_file):
    from conftest import TINY

    run = ("--trainer.max_steps", "2", "--trainer.limit_val_batches", "1")
    assert mypt("fit", *TINY, *run, "--data.input_file", text_file, "--model_name", "base").code == 0
    given = (*TINY, *run, "--data.input_file", text_file)

    # a new depth on resume, then as a fine-tune: a new model, trained from scratch under a new name
    for attempt in (("--ckpt_path", "base"), ("--model.init_from", "base", "--model_name", "v")):
        r = mypt("fit", *given, *attempt, "--model.n_layer", "3")
        line = r.err.strip().splitlines()[-1]
        assert r.code == 2 and "n_layer=2" in line and "a new model" in line, r
        assert "dropout" in line and "batch_size" in line  # what a fine-tune can change
        advice = _advice(line)
        assert "--model.init_from" not in advice and "--ckpt_path" not in advice, line
        new_name = [a.replace("NEW_NAME", f"deep{len(attempt)}") for a in advice]
        r = mypt("fit", *given, *new_name)
        assert r.code == 0, (line, r)
        assert bundle.load_config(Path(f"checkpoints/deep{len(attempt)}"))["n_layer"] == 3

    # a new dropout on resume: a fine-tune into a new bundle can take it
    r = mypt("fit", *given, "--ckpt_path", "base", "--model.dropout", "0.1")
    line = r.err.strip().splitlines()[-1]
    assert r.code == 2 and "dropout=0.0" in line, r
    advice = _advice(line)
    assert "--model.init_from" in advice and "--model.dropout" in advice, line
    r = mypt("fit", *given, *[a.replace("NEW_NAME", "wet") for a in advice])
    assert r.code == 0, (line, r)
    assert bundle.load_config(Path("checkpoints/wet"))["dropout"] == 0.1
    lineage = bundle.load_training_state(Path("checkpoints/wet"))["init_from"]
    assert lineage["path"] == str(Path("checkpoints/base"))
