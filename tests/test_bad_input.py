"""Every bad input a user can give, in one table: each ends in exactly one `mypt: error: ...` line on
stderr, a non-zero exit, no traceback, and the bundle already on disk exactly as it was.

Most cases run in-process (the `mypt` fixture) for speed; a few run through a real child process to
prove that nothing else, a traceback or a usage text, reaches the terminal.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch  # noqa: F401 - imported here, Lightning's log handler writes to the session's stderr
import numpy as np
import pytest
import torch
from conftest import TINY, dante_text, run_mypt_subprocess

from mypt import bundle
from mypt.cli import main
from mypt.model import GPT, GPTConfig

QUICK = [*TINY, "--dashboard.max_new_tokens", "0"]
BUNDLE = Path("checkpoints/tiny")
FIT = ("fit", "--ckpt_path", "checkpoints/tiny", "--trainer.max_steps", "4")
INSPECT = ("inspect", "checkpoints/tiny")
GENERATE = ("generate", "checkpoints/tiny", "--max_new_tokens", "5", "--seed", "1")
MARKER = "payload_ran"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny trained bundle (2 steps), copied into each test's folder by `saved`."""
    root = tmp_path_factory.mktemp("template")
    text = root / "dante.txt"
    text.write_text(dante_text(20_000), encoding="utf-8")
    cwd, cache = os.getcwd(), os.environ.get("MYPT_CACHE_DIR")
    os.chdir(root)
    os.environ["MYPT_CACHE_DIR"] = str(root / "token_cache")
    try:
        code = main(["fit", *QUICK, "--data.input_file", str(text), "--model_name", "tiny",
                     "--trainer.max_steps", "2", "--trainer.val_check_interval", "2"])  # fmt: skip
    finally:
        os.chdir(cwd)
        if cache is None:
            os.environ.pop("MYPT_CACHE_DIR", None)
        else:
            os.environ["MYPT_CACHE_DIR"] = cache
    assert code == 0
    return root / "checkpoints" / "tiny"


@pytest.fixture
def saved(template: Path) -> Path:
    shutil.copytree(template, BUNDLE)
    return BUNDLE


def snapshot() -> dict[str, bytes]:
    """Every file under checkpoints/ (hidden siblings included), to prove nothing was touched."""
    root = Path("checkpoints")
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_one_error_line(r, expect: str) -> None:
    assert r.code != 0, r
    assert "Traceback" not in r.err and "Traceback" not in r.out, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mypt: error: "), r
    assert expect.lower() in lines[0].lower(), (expect, lines[0])


# ------------------------------------------------------------------ the text file and the settings


def _write(name: str, data: bytes | str) -> Callable[[Path], str]:
    def make(tmp: Path) -> str:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
        return str(path)

    return make


OK = dante_text(3000)  # a good text beside a bad one
INPUT_FILES = {
    "missing": (lambda tmp: str(tmp / "nowhere.txt"), "does not exist"),
    "empty": (_write("empty.txt", b""), "is empty"),
    "binary": (_write("blob.txt", b"Nel mezzo\x00\x01\x02\xff" * 100), "looks binary"),
    "not_utf8": (_write("latin1.txt", "perché la diritta via era smarrita\n".encode("latin-1") * 50), "not UTF-8"),
    "shorter_than_a_window": (_write("short.txt", "Nel mezzo del cammin\n"), "too short for block_size"),
    # a corpus: folders, globs, lists, JSONL, Parquet, token shards
    "empty_folder": (lambda tmp: (tmp / "a_folder").mkdir() or str(tmp / "a_folder"), "folder"),
    "glob_matching_nothing": (lambda tmp: str(tmp / "books" / "*.txt"), "pattern"),
    "folder_without_text": (lambda tmp: _folder(tmp, {"photo.png": b"\x89PNG"}), "holds no text files"),
    "only_empty_files": (lambda tmp: _folder(tmp, {"a.txt": "", "b.md": ""}), "is empty"),
    "binary_among_many": (lambda tmp: _folder(tmp, {"a.txt": OK, "b.txt": b"Nel mezzo\x00"}),
                          "b.txt looks binary (NUL byte at offset 9)"),
    "not_utf8_among_many": (lambda tmp: _folder(tmp, {"a.txt": OK, "c.txt": OK.encode() + b"perch\xe9"}),
                            f"c.txt is not UTF-8 text (bad byte at offset {len(OK.encode()) + 5})"),
    "symlink_loop": (lambda tmp: _folder(tmp, {"a.txt": OK}, link=("sub/loop", "..")), "symlink loop"),
    "same_file_twice": (lambda tmp: f"[{_write('x.txt', OK)(tmp)}, {tmp}/./x.txt]", "named twice"),
    "jsonl_not_json": (_write("notes.jsonl", '{"text": "Nel mezzo"}\n{oops\n'), "notes.jsonl line 2 is not JSON"),
    "jsonl_without_field": (_write("notes.jsonl", '{"body": "Nel mezzo"}\n'), "line 1 has no text field 'text'"),
    "shard_of_another_version": (lambda tmp: _shard(tmp, version=2), "has version 2"),
    "shard_truncated": (lambda tmp: _shard(tmp, n=5000), "truncated"),
    "shard_with_ids_beyond_gpt2": (lambda tmp: _shard(tmp, ids=[1, 2, 3, 50257]), "outside GPT-2"),
}  # fmt: skip


def _folder(tmp: Path, files: dict[str, str | bytes], link: tuple[str, str] | None = None) -> str:
    for name, data in files.items():
        _write(name, data)(tmp / "books")
    if link:
        (tmp / "books" / link[0]).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "books" / link[0]).symlink_to(link[1])
    return str(tmp / "books")


def _shard(tmp: Path, version: int = 1, n: int | None = None, ids: list[int] | None = None) -> str:
    ids = ids or list(range(1000, 3000))
    header = np.zeros(256, dtype="<i4")
    header[:3] = [20240520, version, len(ids) if n is None else n]
    path = tmp / "train_000.bin"
    path.write_bytes((header.tobytes() if ids[-1] < 50257 else b"") + np.asarray(ids, "<u2").tobytes())
    return str(path)


if importlib.util.find_spec("pyarrow"):

    def _parquet(tmp: Path) -> str:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"body": [OK]}), tmp / "rows.parquet")
        return str(tmp / "rows.parquet")

    INPUT_FILES["parquet_without_the_column"] = (_parquet, "rows.parquet has no column 'text'")


@pytest.mark.parametrize("case", list(INPUT_FILES))
@pytest.mark.parametrize("how", ["new_model", "resume"])
def test_bad_input_file(mypt, saved, tmp_path, case, how):
    make, expect = INPUT_FILES[case]
    path = make(tmp_path)
    before = snapshot()
    if how == "new_model":
        r = mypt(
            "fit", *QUICK, "--data.input_file", path, "--model_name", "fresh", "--trainer.max_steps", "2"
        )
        assert not Path("checkpoints/fresh").exists()
    else:
        r = mypt(*FIT, "--data.input_file", path)
    assert_one_error_line(r, expect)
    assert snapshot() == before


@pytest.mark.parametrize("how", ["resume", "fine_tune"])
def test_text_with_characters_outside_the_saved_vocabulary(mypt, saved, tmp_path, how):
    """Fine-tuning a char model on a text with new characters: the file, each missing character with
    its count, the model whose vocabulary it is, and what to do instead."""
    path = _write("new_chars.txt", "Nel mezzo € del cammin ¶¶ di nostra vita ☃☃☃\n" * 200)(tmp_path)
    before = snapshot()
    args = FIT if how == "resume" else ("fit", "--model.init_from", "tiny", "--model_name", "child")
    r = mypt(*args, "--data.input_file", path)
    assert_one_error_line(r, f"{path} has 3 characters that the char vocabulary of checkpoints/tiny lacks")
    assert "'☃' (600x), '¶' (400x), '€' (200x)" in r.err, r.err
    assert "a char vocabulary cannot grow: train a new model" in r.err.lower()
    assert "--data.tokenizer gpt2" in r.err
    assert snapshot() == before


SETTINGS = {
    "n_layer_zero": (["--model.n_layer", "0"], "n_layer must be a positive integer"),
    "n_head_negative": (["--model.n_head=-2"], "n_head must be a positive integer"),
    "n_embd_zero": (["--model.n_embd", "0"], "n_embd must be a positive integer"),
    "block_size_zero": (["--model.block_size", "0"], "block_size must be a positive integer"),
    "batch_size_zero": (["--data.batch_size", "0"], "batch_size must be a positive integer"),
    "batch_size_negative": (["--data.batch_size=-3"], "batch_size must be a positive integer"),
    "dropout_one": (["--model.dropout", "1.0"], "dropout must be in [0, 1)"),
    "dropout_negative": (["--model.dropout=-0.1"], "dropout must be in [0, 1)"),
    "n_embd_not_multiple_of_n_head": (["--model.n_embd", "30", "--model.n_head", "4"], "divisible by n_head"),
    "learning_rate_negative": (["--model.learning_rate=-1e-3"], "learning_rate must not be negative"),
    "train_split_above_one": (["--data.train_split", "1.5"], "train_split must be between 0 and 1"),
    "max_steps_unset": (["--trainer.max_steps=-1"], "--trainer.max_steps"),
    "vocab_size_given": (["--model.vocab_size=100"], "the vocabulary size is not a setting but the tokenizer's"),
    "val_check_interval_zero": (["--trainer.val_check_interval", "0"], "val_check_interval must be positive"),
    "n_layer_not_a_number": (["--model.n_layer", "two"], "n_layer"),
    "unknown_tokenizer": (["--data.tokenizer", "wordpiece"], "unknown tokenizer 'wordpiece'"),
    "unknown_flag": (["--model.n_layers", "2"], "--model.n_layers 2 (did you mean --model.n_layer?)"),
    # a prefix of one option is not that option: it would change a setting without a word
    "abbreviated_flag": (["--trainer.max_step", "3"], "--trainer.max_step 3 (did you mean --trainer.max_steps?)"),
    "abbreviated_flag_with_equals": (["--data.batch=4"], "--data.batch=4 (did you mean --data.batch_size?)"),
    "strategy_unknown": (["--trainer.strategy", "nope"], "invalid strategy name"),
    "fsdp_sharded_state": (
        ["--trainer.strategy", "mypt.fsdp.BundleFSDPStrategy", "--trainer.strategy.init_args.state_dict_type", "sharded"],
        "state_dict_type must be 'full'",
    ),
    "fsdp_cpu_offload_without_a_gpu": (
        ["--trainer.strategy", "fsdp_cpu_offload", "--trainer.accelerator", "cpu"], "cpu_offload moves weights from a GPU"
    ),
    "deepspeed_not_installed": (["--trainer.strategy", "deepspeed"], "DeepSpeed installed"),
    "devices_zero": (["--trainer.devices", "0"], "devices"),
    "accelerator_without_its_package": (["--trainer.accelerator", "tpu"], "torch_xla"),
    **({"gpu_on_a_pytorch_without_cuda": (
        ["--trainer.accelerator", "gpu"], "is built without CUDA (torch.version.cuda is None). `make install`"
    )} if torch.version.cuda is None else {}),
    "model_name_with_separator": (["--model_name", "runs/tiny"], "invalid model name"),
    "model_name_dot_dot": (["--model_name", ".."], "invalid model name"),
    "model_name_escaping": (["--model_name", "../escape"], "invalid model name"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(SETTINGS))
def test_bad_setting(mypt, saved, text_file, case):
    extra, expect = SETTINGS[case]
    before = snapshot()
    r = mypt("fit", *QUICK, "--data.input_file", text_file, "--trainer.max_steps", "2",
             *(["--model_name", "fresh"] if "--model_name" not in extra else []), *extra)  # fmt: skip
    assert_one_error_line(r, expect)
    assert snapshot() == before
    assert not Path("checkpoints/fresh").exists() and not Path("escape").exists()


YAML = {  # {config}: the config file's path
    "unknown_model_key": (
        "trainer:\n  max_steps: 2\nmodel:\n  n_layers: 2\n",
        "{config}, line 4: unknown key model.n_layers (did you mean model.n_layer?)",
    ),
    "unknown_top_level_key": ("epochs: 3\n", "{config}, line 1: unknown key epochs"),
    "not_yaml": ("model:\n  n_layer: 2\n  n_head: [unclosed\n", "{config}, line 3, column 11: this is not YAML"),
    "wrong_type": ("model:\n  n_layer: [1, 2]\n", "n_layer"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(YAML))
def test_bad_yaml_config(mypt, saved, text_file, tmp_path, case):
    """A config's mistake names the file and the line (not jsonargparse's "<unicode string>"), with
    the nearest key for a misspelt one."""
    content, expect = YAML[case]
    good = tmp_path / "good.yaml"
    good.write_text("model:\n  n_layer: 2\n")
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    before = snapshot()
    r = mypt("fit", "--config", good, "--config", config, *QUICK, "--data.input_file", text_file,
             "--model_name", "fresh")  # fmt: skip
    assert_one_error_line(r, expect.format(config=config))
    assert "<unicode string>" not in r.err
    assert snapshot() == before


def test_print_config_names_the_config_file_too(mypt, tmp_path):
    """--print_config reads the config the same way; jsonargparse words the unknown key otherwise there
    ("Group 'trainer' does not accept option 'max_step'")."""
    config = tmp_path / "typo.yaml"
    config.write_text("seed_everything: 3\ntrainer:\n  max_step: 100\n")
    r = mypt("fit", "--config", config, "--print_config")
    assert_one_error_line(
        r, f"{config}, line 3: unknown key trainer.max_step (did you mean trainer.max_steps?)"
    )


@pytest.mark.parametrize(
    ("args", "expect"),
    [(("generate", "tiny", "--max_new", "5"), "--max_new 5 (did you mean --max_new_tokens?)"),
     (("data", "notes.txt", "--vocab", "300"), "--vocab 300 (did you mean --vocab_size?)"),
     (("inspect", "tiny", "--jsn"), "--jsn (did you mean --json?)"),
     (("validate", "tiny", "--trainer.limit_val", "2"), "did you mean --trainer.limit_val_batches?"),
     (("list", "--nothing_like_it"), "unrecognized arguments: --nothing_like_it")],
)  # fmt: skip
def test_every_command_refuses_abbreviated_flags(mypt, saved, args, expect):
    before = snapshot()
    assert_one_error_line(mypt(*args), expect)
    assert snapshot() == before


def test_mypt_debug_shows_the_traceback(mypt, saved, monkeypatch):
    """MYPT_DEBUG=1: the error is raised with its traceback instead of the one line."""
    from mypt.errors import MyptError

    monkeypatch.setenv("MYPT_DEBUG", "1")
    with pytest.raises(MyptError, match="no bundle at nope"):
        main(["generate", "nope"])
    with pytest.raises(MyptError, match="val_check_interval must be positive"):
        main(["fit", *FIT[1:], "--trainer.val_check_interval", "0"])


def test_missing_yaml_config(mypt, saved):
    assert_one_error_line(mypt("fit", "--config", "nowhere.yaml"), "nowhere.yaml")


@pytest.mark.parametrize(
    ("extra", "expect"),
    [(["--model.block_size", "32"], "block_size=16"),  # above what the bundle was built with
     (["--model.n_head", "4"], "n_head=2"),
     (["--model.vocab_size", "100"], "--model.vocab_size 100 conflicts with the saved architecture (vocab_size=")],
)  # fmt: skip
def test_resume_with_a_bigger_window_or_other_architecture(mypt, saved, extra, expect):
    before = snapshot()
    assert_one_error_line(mypt(*FIT, *extra), expect)
    assert snapshot() == before


# A fine-tune with a bigger window than the parent's: refused where the parent has a position table
# (tests/test_resume.py::test_fine_tune_takes_a_new_context_where_positions_are_rotary, which also
# trains the RoPE case it now allows).


# ------------------------------------------------------------------ --ckpt_path and bundle files


def test_ckpt_path_that_does_not_exist(mypt, saved):
    assert_one_error_line(mypt("fit", "--ckpt_path", "checkpoints/nope"), "no bundle at checkpoints/nope")
    assert_one_error_line(mypt("inspect", "nope"), "no bundle at nope")
    assert_one_error_line(mypt("generate", "nope"), "no bundle at nope")


def test_ckpt_path_that_is_not_a_bundle(mypt, saved, text_file, tmp_path):
    (tmp_path / "plain_folder").mkdir()
    before = snapshot()
    for target, expect in (
        (tmp_path / "plain_folder", "not a mypt bundle"),
        (text_file, "not a bundle folder"),
    ):
        for args in (("fit", "--ckpt_path", target), ("inspect", target), ("generate", target)):
            assert_one_error_line(mypt(*args), expect)
    assert snapshot() == before


def _damage(file: Path, how: str) -> None:
    data = file.read_bytes()
    if how == "missing":
        file.unlink()
    elif how == "empty":
        file.write_bytes(b"")
    elif how == "truncated":
        file.write_bytes(data[: len(data) // 2])
    elif file.suffix == ".json":  # invalid
        file.write_text('{"step": 2,, "broken": }')
    else:  # corrupt: same size, bytes flipped in the middle
        middle = len(data) // 2
        file.write_bytes(
            data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]
        )


# which commands read which file; the manifest may be absent (a bundle written by hand), not broken
READERS = {
    bundle.CONFIG_FILE: ("fit", "inspect", "generate"),
    bundle.TOKENIZER_FILE: ("fit", "inspect", "generate"),
    bundle.TRAINING_STATE_FILE: ("fit", "inspect"),
    bundle.MODEL_FILE: ("fit", "inspect", "generate"),
    bundle.OPTIMIZER_FILE: ("fit",),  # inspect shows the rest and names the damage (test_best_model.py)
    bundle.MANIFEST_FILE: ("fit", "inspect", "generate"),
}
COMMANDS = {"fit": FIT, "inspect": INSPECT, "generate": GENERATE}
DAMAGE_CASES = [
    (name, how, command)
    for name, commands in READERS.items()
    for how in ("missing", "empty", "truncated", "invalid" if name.endswith(".json") else "corrupt")
    for command in commands
    if not (name == bundle.MANIFEST_FILE and how == "missing")
    and not (command == "inspect" and how == "corrupt")  # inspect reads JSON only: sizes, not hashes
]


@pytest.mark.parametrize(("name", "how", "command"), DAMAGE_CASES)
def test_damaged_bundle_file(mypt, saved, name, how, command):
    _damage(saved / name, how)
    before = snapshot()
    assert_one_error_line(mypt(*COMMANDS[command]), name)
    assert snapshot() == before


def test_a_bundle_without_a_manifest_is_still_read(mypt, saved):
    """A bundle written by hand or by another tool following the design note has no manifest."""
    (saved / bundle.MANIFEST_FILE).unlink()
    assert mypt(*INSPECT).code == 0
    assert mypt(*GENERATE).code == 0


def _rewrite_manifest(path: Path, name: str) -> None:
    """What a careful attacker (or a hand edit) does: make the manifest agree with the new file."""
    manifest = json.loads((path / bundle.MANIFEST_FILE).read_text())
    data = (path / name).read_bytes()
    manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (path / bundle.MANIFEST_FILE).write_text(json.dumps(manifest))


def test_weights_whose_shapes_disagree_with_config(mypt, saved):
    other = GPT(GPTConfig(block_size=16, vocab_size=json.loads((saved / "config.json").read_text())["vocab_size"],
                          n_layer=2, n_head=2, n_embd=16))  # fmt: skip
    torch.save(other.state_dict(), saved / bundle.MODEL_FILE)
    _rewrite_manifest(saved, bundle.MODEL_FILE)
    before = snapshot()
    for args in (FIT, GENERATE):
        assert_one_error_line(mypt(*args), "model.pt does not match config.json")
    assert snapshot() == before


def test_tokenizer_whose_vocabulary_disagrees_with_config(mypt, saved):
    tokenizer = json.loads((saved / bundle.TOKENIZER_FILE).read_text())
    tokenizer["chars"] = tokenizer["chars"][:-1]
    (saved / bundle.TOKENIZER_FILE).write_text(json.dumps(tokenizer))
    _rewrite_manifest(saved, bundle.TOKENIZER_FILE)
    before = snapshot()
    for args in (FIT, INSPECT, GENERATE):
        assert_one_error_line(mypt(*args), "characters but config.json says vocab_size")
    assert snapshot() == before


@pytest.mark.parametrize(
    ("name", "change", "expect"),
    [(bundle.CONFIG_FILE, {"n_embd": 31}, "divisible by n_head"),
     (bundle.CONFIG_FILE, {"dropout": 1.5}, "dropout must be in [0, 1)"),
     (bundle.CONFIG_FILE, {"batch_size": 0}, "batch_size must be a positive integer"),
     (bundle.TRAINING_STATE_FILE, {"step": "ten"}, "step must be a non-negative integer"),
     (bundle.TRAINING_STATE_FILE, {"step": 1}, "come from different saves"),
     (bundle.TOKENIZER_FILE, {"token_kind": "wordpiece"}, "unknown token_kind 'wordpiece'"),
     (bundle.TOKENIZER_FILE, {"token_kind": "bpe"}, "'tokenizer' must be the JSON object of a Hugging Face")],
)  # fmt: skip
def test_json_that_parses_but_holds_impossible_values(mypt, saved, name, change, expect):
    data = json.loads((saved / name).read_text())
    (saved / name).write_text(json.dumps({**data, **change}))
    _rewrite_manifest(saved, name)
    before = snapshot()
    assert_one_error_line(mypt(*FIT), expect)
    assert snapshot() == before


class _Payload:
    """A pickle that runs code when loaded: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _plant_pickle(path: Path, name: str, marker: Path) -> None:
    torch.save({"weights": _Payload(marker)}, path / name)
    _rewrite_manifest(path, name)


def test_the_payload_is_live(tmp_path):
    """Control: loaded unsafely, the planted pickle does run, so the tests below prove something."""
    marker = tmp_path / MARKER
    torch.save({"weights": _Payload(marker)}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    ("name", "command"),
    [(bundle.MODEL_FILE, "fit"), (bundle.MODEL_FILE, "generate"), (bundle.OPTIMIZER_FILE, "fit")],
)
def test_a_pickle_that_would_run_code_is_refused(mypt, saved, tmp_path, name, command):
    marker = tmp_path / MARKER
    _plant_pickle(saved, name, marker)
    before = snapshot()
    assert_one_error_line(mypt(*COMMANDS[command]), "refused: loading it could run code")
    assert not marker.exists()
    assert snapshot() == before


# ------------------------------------------------------------------ through a real process


def _assert_clean_failure(r, expect: str) -> None:
    """A child process's stderr: Lightning's own info lines may come first; the error is one last line."""
    assert r.code != 0, r
    assert "Traceback" not in r.err and "Traceback" not in r.out, r
    assert "usage:" not in r.err.lower(), r
    errors = [line for line in r.err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("mypt: error: "), r
    assert r.err.strip().splitlines()[-1] == errors[0]
    assert expect in errors[0], r


def test_errors_reach_the_terminal_as_one_line(saved, tmp_path, text_file):
    """A parse-time (jsonargparse) error, a malicious pickle found after Lightning started, and a
    truncated model.pt for `generate`, each in a real process."""
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  n_layers: 2\n")
    r = run_mypt_subprocess("fit", "--config", config, "--data.input_file", text_file, cwd=tmp_path)
    _assert_clean_failure(r, "n_layers")

    marker = tmp_path / MARKER
    _plant_pickle(saved, bundle.OPTIMIZER_FILE, marker)
    before = snapshot()
    r = run_mypt_subprocess(*FIT, cwd=tmp_path)
    _assert_clean_failure(r, "refused: loading it could run code")
    assert not marker.exists() and snapshot() == before

    _damage(saved / bundle.MODEL_FILE, "truncated")
    r = run_mypt_subprocess(*GENERATE, cwd=tmp_path)
    _assert_clean_failure(r, "truncated")
