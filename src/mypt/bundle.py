"""The checkpoint bundle: the one place that knows its file names, JSON schemas, atomic writes and
safe loads.

    checkpoints/<model_name>/
        model.pt             the GPT's state_dict (plain tensors)
        config.json          architecture, fixed once the model is created
        tokenizer.json       {"token_kind": "char", "chars": [...]}, {"token_kind": "gpt2"} or
                             {"token_kind": "bpe", "trained_on": {...}, "tokenizer": {HF tokenizer JSON}}
        training_state.json  step, optimizer_file, training_config, history, lineage, data, seed
        optimizer.pt         optimizer, loop and RNG state for an exact resume (tensors and plain containers)
        manifest.json        size and sha256 of every file above, written last
        best/                the weights with the lowest val loss so far: model.pt, config.json,
                             tokenizer.json, best.json (step, val loss, run) and its own manifest.json

A bundle is written into a temporary folder beside the old one, fsynced, then swapped in by rename,
so a process killed at any instant leaves a bundle whose files all come from the same step. If a
kill lands between the two renames of the swap, the next reader finds the complete copy and puts it
back in place. `best/` travels inside that swap: a save whose validation improved on the best makes
it from the save's own files (hard links: no second write), any other save links the previous
`best/` in, so the latest and the best are replaced together or not at all.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mypt.config import ARCHITECTURE_KEYS, DATA_ARCHITECTURE_KEYS, NANOGPT, GPTConfig, with_nanogpt_defaults
from mypt.errors import MyptError, json_error_text
from mypt.tokenizer import GPT2_VOCAB_SIZE, Tokenizer, tokenizer_from_dict

if TYPE_CHECKING:
    import torch

    from mypt.model import GPT

# torch is imported inside the functions that read or write tensors: describing a bundle
# (get_model_info, `mypt inspect`, `mypt list`) needs only its JSON files and runs without it

FORMAT_VERSION = 1
MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
TRAINING_STATE_FILE = "training_state.json"
OPTIMIZER_FILE = "optimizer.pt"
MANIFEST_FILE = "manifest.json"
BUNDLE_FILES = (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE, TRAINING_STATE_FILE, OPTIMIZER_FILE)
BEST_DIR = "best"
BEST_FILE = "best.json"
# what the best model holds: enough to use it (generate, export, validate), no optimizer
BEST_FILES = (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE, BEST_FILE)
# what evaluating (validate, test, predict), generating and exporting read: the weights and how to use them
WEIGHT_FILES = (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE)

# config.json holds exactly these keys, in this order: the design note's (device the last of them),
# then the architecture options added since (an older bundle lacks them: nanoGPT's values, NANOGPT)
CONFIG_KEYS = (
    *DATA_ARCHITECTURE_KEYS,
    *(k for k in ARCHITECTURE_KEYS if k not in NANOGPT),
    "device",
    *(k for k in ARCHITECTURE_KEYS if k in NANOGPT),
)
DEFAULT_ROOT = "checkpoints"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


# ---------------------------------------------------------------------------------------- paths


def validate_model_name(name: str) -> str:
    if not isinstance(name, str) or not _MODEL_NAME.match(name) or ".." in name:
        raise MyptError(
            f"invalid model name {name!r}: use letters, digits, '_', '-' and '.', with no path separators"
        )
    return name


def model_name_for(input_file: str | os.PathLike | list | None) -> str:
    """The model name a run gets when none is given: its text's file stem, or its folder's name
    (`data/dante.txt` -> `dante`; the first one of a list), so that a second text does not resume
    the first one's model."""
    first = input_file[0] if isinstance(input_file, (list, tuple)) and input_file else input_file
    if not first or not isinstance(first, (str, os.PathLike)):
        return "model"
    path = Path(first)
    for candidate in (path.name if path.is_dir() else path.stem, path.parent.name):
        name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", candidate).strip("._-")
        if name and _MODEL_NAME.match(name):
            return name
    return "model"


def bundle_path(model_name: str, root: str | os.PathLike = DEFAULT_ROOT) -> Path:
    return Path(root) / validate_model_name(model_name)


def resolve_bundle(name_or_path: str | os.PathLike, root: str | os.PathLike = DEFAULT_ROOT) -> Path:
    """A bundle folder from a path, or from a bare model name.

    A bare name (no path separator) is first the bundle `mypt list` shows under `root`, even when a
    folder of that name is here too: the text the model was named after (`mypt fit --data.input_file
    books/` trains checkpoints/books), the README's Hugging Face export `dante-hf/`, or a copy of the
    bundle (then a note names the one taken and how to name the other). A path (`./m`, `dante-hf/`)
    names that folder alone. Raises MyptError unless the folder is a mypt bundle (config.json, and
    not a transformers one); repairs a swap cut short by a kill.
    """
    text = str(name_or_path)
    here = Path(text)
    bare = os.sep not in text and "/" not in text
    under_root = Path(root) / text
    if bare and under_root != here and is_bundle(under_root):
        if is_bundle(here) and not _is_hf_folder(here) and here.resolve() != under_root.resolve():
            _note_once(
                f"mypt: {text} names {under_root} (the bundle `mypt list` shows); "
                f"for the bundle in this folder, name it ./{text}"
            )
        return under_root
    _recover_interrupted_swap(here)
    if here.is_dir():
        if _is_hf_folder(here):
            raise MyptError(
                f"{text} is a Hugging Face (transformers) model folder, not a mypt bundle: fine-tune from it "
                f"with --model.init_from {text} (converted once into a bundle under {root}/, which "
                "inspect, generate and validate then read)"
            )
        if (here / CONFIG_FILE).is_file():
            return here
        raise MyptError(f"{here} is not a mypt bundle: {CONFIG_FILE} is missing")
    if bare and under_root.is_dir():
        raise MyptError(f"{under_root} is not a mypt bundle: {CONFIG_FILE} is missing")
    if here.exists():
        raise MyptError(f"{text} is not a bundle folder")
    raise MyptError(f"no bundle at {text}" + (f" (nor {under_root})" if bare else ""))


_NOTED: set[str] = set()


def _note_once(line: str) -> None:
    """A note on stderr, once per process (a command resolves the same name more than once)."""
    key = f"{os.getcwd()}\0{line}"
    if key not in _NOTED:
        _NOTED.add(key)
        print(line, file=sys.stderr)


def _is_hf_folder(path: Path) -> bool:
    """A transformers model folder: its config.json names a model_type (a mypt config.json never does)."""
    file = path / CONFIG_FILE
    if not file.is_file():
        return False
    try:
        return "model_type" in read_json(file)
    except MyptError:
        return False


def is_bundle(path: str | os.PathLike) -> bool:
    path = Path(path)
    _recover_interrupted_swap(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def _siblings(path: Path, kind: str) -> list[Path]:
    parent = path.parent
    if not parent.is_dir():
        return []
    prefix = f".{path.name}.{kind}-"
    return [p for p in parent.iterdir() if p.name.startswith(prefix) and p.is_dir()]


def _recover_interrupted_swap(path: Path) -> None:
    """A kill between `rename(old, aside)` and `rename(new, final)` leaves no bundle at `path` but
    complete copies beside it: put the newest complete one back."""
    if path.exists():
        return
    complete = []
    for candidate in _siblings(path, "new") + _siblings(path, "old"):
        try:
            manifest = _read_manifest(candidate)
            _verify(candidate, manifest, check_hash=False)
        except MyptError:
            continue
        complete.append(
            (manifest.get("step", -1), candidate.name.startswith(f".{path.name}.new-"), candidate)
        )
    if not complete:
        return
    complete.sort(key=lambda item: (item[0], item[1]))
    best = complete[-1][2]
    try:
        os.rename(best, path)
        print(f"mypt: recovered bundle {path} from an interrupted save ({best.name})", file=sys.stderr)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------- writing


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes what passes through, so the manifest costs no second read."""

    def __init__(self, f) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.sha.update(b)
        self.size += len(b)
        return self.f.write(b)


def _write_file(path: Path, payload: Any) -> dict:
    """Write a JSON-able dict (.json) or a torch object (.pt); fsync; return its manifest entry."""
    with open(path, "wb") as f:
        writer = _HashingWriter(f)
        if path.suffix == ".json":
            writer.write((json.dumps(payload, indent=2, default=_json_default) + "\n").encode())
        else:
            import torch

            try:
                torch.save(payload, writer)
            except (
                RuntimeError
            ) as e:  # torch's zip writer hides a failed write (disk full) behind its own error
                raise _os_error_in(e) or e from None
        f.flush()
        os.fsync(f.fileno())
    return {"size": writer.size, "sha256": writer.sha.hexdigest()}


def _os_error_in(error: BaseException) -> OSError | None:
    """The OSError that caused `error`, if one did."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _json_default(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    torch = sys.modules.get("torch")  # a tensor can only exist once torch is imported
    if torch is not None and isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return str(value)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bundle(
    path: str | os.PathLike,
    *,
    model_state: dict[str, torch.Tensor],
    config: dict,
    tokenizer: dict,
    training_state: dict,
    optimizer_state: dict | None,
    best: dict | None = None,
) -> Path:
    """Write a complete bundle at `path`, atomically replacing any bundle already there.

    `best`: the best.json of these weights when they are the new best model; without it, the best
    model already at `path` (if it is whole) is kept. Refuses weights that are not finite (a
    diverged run must not replace its last good bundle). On any failure (disk full, unwritable
    folder, a signal) the previous bundle is left as it was.
    """
    path = Path(path)
    parent = path.parent
    not_finite = [k for k, v in model_state.items() if v.is_floating_point() and not all_finite(v)]
    if not_finite:
        raise MyptError(
            f"refusing to save {path}: weights {', '.join(not_finite[:3])} hold nan or inf; "
            f"{_previous_note(path)}"
        )
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MyptError(f"cannot create checkpoint folder {parent}: {e.strerror or e}") from None
    token = uuid.uuid4().hex[:8]
    tmp = parent / f".{path.name}.new-{token}"
    aside = parent / f".{path.name}.old-{token}"
    try:
        tmp.mkdir()
        files = {}
        files[CONFIG_FILE] = _write_file(tmp / CONFIG_FILE, config)
        files[TOKENIZER_FILE] = _write_file(tmp / TOKENIZER_FILE, tokenizer)
        # the two big files at once: hashing and writing one overlaps the other's (the GIL is
        # released in both), 1.8x -> 1.35x torch.save's time for them (docs/benchmarks.md)
        with ThreadPoolExecutor(max_workers=2) as pool:  # leaving it waits for both writes
            tensors = {MODEL_FILE: model_state, OPTIMIZER_FILE: optimizer_state}
            writes = {
                name: pool.submit(_write_file, tmp / name, obj)
                for name, obj in tensors.items()
                if obj is not None
            }
        files.update({name: write.result() for name, write in writes.items()})
        files[TRAINING_STATE_FILE] = _write_file(tmp / TRAINING_STATE_FILE, training_state)
        if best is not None:
            _write_best(tmp, files, best)
        elif _whole_best(path):
            _link_files(path / BEST_DIR, tmp / BEST_DIR, (*BEST_FILES, MANIFEST_FILE))
        # the manifest last: a copy with one is complete, best/ included (see _recover_interrupted_swap)
        manifest = {"format_version": FORMAT_VERSION, "step": training_state.get("step"), "files": files}
        _write_file(tmp / MANIFEST_FILE, manifest)
        _fsync_dir(tmp)
        if path.exists():
            os.rename(path, aside)
        os.rename(tmp, path)
        _fsync_dir(parent)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if aside.exists() and not path.exists():
            os.rename(aside, path)
        if isinstance(e, OSError):
            raise MyptError(
                f"could not save bundle to {path}: {e.strerror or e}; {_previous_note(path)}"
            ) from None
        raise
    shutil.rmtree(aside, ignore_errors=True)
    # leftovers of earlier saves that were killed half-way
    for stale in _siblings(path, "new") + _siblings(path, "old"):
        shutil.rmtree(stale, ignore_errors=True)
    return path


def _write_best(folder: Path, files: dict[str, dict], best: dict) -> None:
    """folder/best/ from the files just written in `folder` (their manifest entries in `files`)."""
    target = folder / BEST_DIR
    _link_files(folder, target, (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE))
    entries = {name: files[name] for name in (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE)}
    entries[BEST_FILE] = _write_file(target / BEST_FILE, best)
    manifest = {"format_version": FORMAT_VERSION, "step": best.get("step"), "files": entries}
    _write_file(target / MANIFEST_FILE, manifest)
    _fsync_dir(target)


def _whole_best(path: Path) -> bool:
    """Whether the bundle at `path` has a best model to keep (a damaged one, already reported when
    the bundle was read, is dropped: the next validation makes a new one)."""
    try:
        return read_best(path) is not None
    except MyptError:
        return False


def _link_files(source: Path, target: Path, names) -> None:
    """Hard links (no copy, no second write) of source/NAME in target/, or fsynced copies on a
    filesystem without hard links. Files are never changed in place, so a link stays valid."""
    target.mkdir(exist_ok=True)
    for name in names:
        try:
            os.link(source / name, target / name)
        except OSError:
            shutil.copyfile(source / name, target / name)
            with open(target / name, "rb+") as f:
                os.fsync(f.fileno())
    _fsync_dir(target)


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether no element is nan or inf. The norm is nan or inf when one is, and takes one pass
    instead of isfinite's two (10x faster on a CPU); only a non-finite norm (or an overflow of it)
    needs the exact check."""
    import torch

    norm = torch.linalg.vector_norm(tensor, dtype=torch.float32)
    return bool(torch.isfinite(norm)) or bool(torch.isfinite(tensor).all())


def _previous_note(path: Path) -> str:
    """What is left on disk after a failed save, for the error message."""
    if not (path / CONFIG_FILE).is_file():
        return "no earlier bundle was there"
    step = None
    if (path / MANIFEST_FILE).is_file():
        try:
            step = _read_manifest(path).get("step")
        except MyptError:
            pass
    return f"the previous bundle{f' (step {step})' if step is not None else ''} is intact"


# ---------------------------------------------------------------------------------------- reading


def _read_manifest(path: Path) -> dict:
    file = path / MANIFEST_FILE
    if not file.is_file():
        raise MyptError(f"{path}: {MANIFEST_FILE} is missing (an incomplete save?)")
    manifest = read_json(file)
    entries = manifest.get("files")
    if not isinstance(entries, dict) or not all(
        isinstance(e, dict) and isinstance(e.get("size"), int) and isinstance(e.get("sha256"), str)
        for e in entries.values()
    ):
        raise MyptError(f"{file} is damaged: 'files' must map each file name to its size and sha256")
    version = manifest.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise MyptError(
            f"{path} was written by a newer mypt (bundle format {version}); upgrade mypt to read it"
        )
    return manifest


def _verify(path: Path, manifest: dict, check_hash: bool, names: tuple[str, ...] | None = None) -> None:
    for name, entry in manifest["files"].items():
        if names is not None and name not in names:
            continue
        file = path / name
        if not file.is_file():
            raise MyptError(f"{file} is missing (listed in {MANIFEST_FILE})")
        size = file.stat().st_size
        if size != entry["size"]:
            raise MyptError(
                f"{file} is {size} bytes but {MANIFEST_FILE} says {entry['size']}: truncated or replaced"
            )
        if check_hash and sha256_file(file) != entry["sha256"]:
            raise MyptError(f"{file} does not match its sha256 in {MANIFEST_FILE}: the file is corrupt")


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, as hex: the manifest's checksums and the text's identity."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify_bundle(path: Path, check_hash: bool = True, names: tuple[str, ...] | None = None) -> None:
    """Check files against manifest.json (sizes always, sha256 when `check_hash`). A bundle with no
    manifest (written by hand, or by an older tool following the design note) is accepted as it is."""
    if (path / MANIFEST_FILE).exists():
        _verify(path, _read_manifest(path), check_hash, names)


def read_json(file: Path) -> dict:
    try:
        with open(file, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise MyptError(f"{file} is missing") from None
    except IsADirectoryError:
        raise MyptError(f"{file} is a directory, not a JSON file") from None
    except OSError as e:
        raise MyptError(f"cannot read {file}: {e.strerror or e}") from None
    if not raw.strip():
        raise MyptError(f"{file} is empty")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise MyptError(f"{file} is not valid JSON: it is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise MyptError(f"{file} is not valid JSON ({json_error_text(e)})") from None
    if not isinstance(data, dict):
        raise MyptError(f"{file} must hold a JSON object")
    return data


def load_torch_file(file: Path, map_location: str | torch.device = "cpu") -> Any:
    """torch.load with weights_only=True: tensors and plain containers, never arbitrary code."""
    if not file.is_file():
        raise MyptError(f"{file} is missing")
    if file.stat().st_size == 0:
        raise MyptError(f"{file} is empty")
    import torch

    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except Exception as e:  # UnpicklingError for a pickle that would run code; RuntimeError when truncated
        text = str(e).strip()
        reason = text.splitlines()[0] if text else type(e).__name__
        if "weights_only" in text or "Unsupported global" in text or "Unsupported operand" in text:
            reason = "it holds objects other than tensors (refused: loading it could run code)"
        raise MyptError(f"{file} cannot be loaded: {reason}") from None


def load_config(path: Path) -> dict:
    """config.json, checked: every key present and every value usable (positive sizes, n_embd a
    multiple of n_head, dropout in [0, 1), a positive batch_size). An architecture option it lacks
    (a bundle written before the option existed) is filled in with nanoGPT's value."""
    file = path / CONFIG_FILE
    config = read_json(file)
    missing = [k for k in CONFIG_KEYS if k not in config and k != "device" and k not in NANOGPT]
    if missing:
        raise MyptError(f"{file} lacks {', '.join(missing)}")
    config = with_nanogpt_defaults(config)
    gpt_config(config, file)
    batch_size = config["batch_size"]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise MyptError(f"{file}: batch_size must be a positive integer, got {batch_size!r}")
    return config


def gpt_config(config: dict, file: Path | None = None) -> GPTConfig:
    try:
        return GPTConfig.from_dict(config)
    except (ValueError, TypeError) as e:
        raise MyptError(f"{file or CONFIG_FILE}: {e}") from None


def load_tokenizer(path: Path, config: dict | None = None) -> Tokenizer:
    """tokenizer.json, checked against config.json's vocab_size: a char vocabulary must have exactly
    vocab_size characters; GPT-2's 50257 tokens must fit."""
    file = path / TOKENIZER_FILE
    tokenizer = tokenizer_from_dict(read_json(file), source=str(file))
    if config is None:
        return tokenizer
    if tokenizer.kind == "char" and tokenizer.vocab_size != config["vocab_size"]:
        raise MyptError(
            f"{file} has {tokenizer.vocab_size} characters but {CONFIG_FILE} says vocab_size "
            f"{config['vocab_size']}: the tokenizer does not belong to these weights"
        )
    if tokenizer.kind == "gpt2" and config["vocab_size"] < GPT2_VOCAB_SIZE:
        raise MyptError(
            f"{file} is GPT-2's tokenizer ({GPT2_VOCAB_SIZE} tokens) but {CONFIG_FILE} says vocab_size "
            f"{config['vocab_size']}: the tokenizer does not belong to these weights"
        )
    if tokenizer.kind == "bpe" and tokenizer.vocab_size != config["vocab_size"]:
        raise MyptError(
            f"{file} is a {tokenizer.n_tokens}-token BPE ({tokenizer.vocab_size} rows padded) but "
            f"{CONFIG_FILE} says vocab_size {config['vocab_size']}: the tokenizer does not belong to these weights"
        )
    return tokenizer


def _nonnegative_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def load_training_state(path: Path, required: bool = False) -> dict:
    """training_state.json, checked: `step` a non-negative integer, the sections of the right types.
    A missing file is an empty state unless `required` (resuming needs it)."""
    file = path / TRAINING_STATE_FILE
    if not file.exists() and not required:
        return {}
    state = read_json(file)
    if "step" in state and not _nonnegative_int(state["step"]):
        raise MyptError(f"{file}: step must be a non-negative integer, got {state['step']!r}")
    for key, kind in (("training_config", dict), ("data", dict), ("settings", dict), ("history", list)):
        if state.get(key) is not None and not isinstance(state[key], kind):
            raise MyptError(f"{file}: {key} must be a JSON {'object' if kind is dict else 'list'}")
    return state


def flat_settings(training_state: dict) -> dict[str, Any]:
    """training_state.json's `settings` as flat `section.key` -> value (`model.learning_rate`,
    `trainer.max_steps`): the names the command line uses."""
    settings = training_state.get("settings") or {}
    return {
        f"{section}.{key}": value
        for section in ("model", "trainer")
        for key, value in (settings.get(section) or {}).items()
    }


def check_weights(path: Path) -> None:
    """What reading the weights needs (evaluation, generation, export, a fine-tune's parent):
    config.json, tokenizer.json and model.pt there with the sizes the manifest records, and
    config.json and tokenizer.json agreeing. Any folder holding these three passes: a best model, an
    imported Hugging Face model (no optimizer.pt), a bundle whose optimizer.pt is damaged."""
    verify_bundle(path, check_hash=False, names=WEIGHT_FILES)
    load_tokenizer(path, load_config(path))
    if not (path / MODEL_FILE).is_file():
        raise MyptError(f"{path / MODEL_FILE} is missing")


def optimizer_damage(path: Path) -> str | None:
    """Why optimizer.pt cannot resume a run (missing, or its size not the manifest's), or None when
    it looks whole or the folder has never had one (an imported model, a best model)."""
    try:
        verify_bundle(path, check_hash=False, names=(OPTIMIZER_FILE,))
    except MyptError as e:
        return str(e)
    return None


def check_resumable(path: Path) -> None:
    """Everything `mypt fit --ckpt_path` needs, checked before any data is read or model built:
    every file listed in the manifest has its recorded size, config.json and tokenizer.json agree,
    training_state.json is there and names the manifest's step, optimizer.pt is there."""
    check_weights(path)
    fine_tune = f"to start a new run from these weights use --model.init_from {path} --model_name NEW_NAME"
    if not (path / TRAINING_STATE_FILE).exists() and not (path / OPTIMIZER_FILE).exists():
        what = "a best model" if (path / BEST_FILE).is_file() else "weights"
        raise MyptError(
            f"{path} holds {what} without {TRAINING_STATE_FILE} or {OPTIMIZER_FILE}, so training cannot "
            f"resume from it; {fine_tune}"
        )
    verify_bundle(path, check_hash=False, names=(TRAINING_STATE_FILE,))
    state = load_training_state(path, required=True)
    if (path / MANIFEST_FILE).exists():
        manifest_step = _read_manifest(path).get("step")
        if state.get("step") != manifest_step:
            raise MyptError(
                f"{path / TRAINING_STATE_FILE} says step {state.get('step')} but {MANIFEST_FILE} says "
                f"{manifest_step}: the files come from different saves"
            )
    damage = optimizer_damage(path)
    if damage is not None:
        raise MyptError(f"{damage}, so training cannot resume exactly; {fine_tune}")
    if not (path / OPTIMIZER_FILE).is_file():
        raise MyptError(f"{path / OPTIMIZER_FILE} is missing, so training cannot resume exactly; {fine_tune}")


def load_model_state(path: Path, map_location: str | torch.device = "cpu", verify: bool = True) -> dict:
    if verify:
        verify_bundle(path, check_hash=True, names=(MODEL_FILE,))
    import torch

    state = load_torch_file(path / MODEL_FILE, map_location)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MyptError(f"{path / MODEL_FILE} is not a state_dict of tensors")
    return state


def load_optimizer_state(path: Path, map_location: str | torch.device = "cpu") -> dict:
    verify_bundle(path, check_hash=True, names=(OPTIMIZER_FILE,))
    state = load_torch_file(path / OPTIMIZER_FILE, map_location)
    if not isinstance(state, dict):
        raise MyptError(f"{path / OPTIMIZER_FILE} does not hold a dictionary")
    return state


def build_model(path: Path, config: dict, map_location: str | torch.device = "cpu") -> GPT:
    """The GPT with the bundle's weights, checked against config.json (and config.json against
    tokenizer.json, so a model built here can always encode and decode with the bundle's tokenizer)."""
    from mypt.model import GPT

    model = GPT(gpt_config(config, path / CONFIG_FILE))
    load_tokenizer(path, config)
    state = load_model_state(path, map_location)
    expected = model.state_dict()
    problem = _state_dict_mismatch(expected, state)
    if problem:
        raise MyptError(f"{path / MODEL_FILE} does not match {CONFIG_FILE}: {problem}")
    model.load_state_dict(state)
    return model


def _state_dict_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str | None:
    """The first difference between the weights a config implies and those in a file, in words."""
    missing = [k for k in expected if k not in found]
    if missing:
        return f"{len(missing)} tensors missing, e.g. {missing[0]}"
    extra = [k for k in found if k not in expected]
    if extra:
        return f"{len(extra)} unexpected tensors, e.g. {extra[0]}"
    for key, tensor in expected.items():
        if found[key].shape != tensor.shape:
            return f"{key} has shape {list(found[key].shape)} but the config implies {list(tensor.shape)}"
    return None


def load_model(
    name_or_path: str | os.PathLike,
    device: str = "cpu",
    root: str | os.PathLike = DEFAULT_ROOT,
    best: bool = False,
) -> tuple[GPT, Tokenizer, dict]:
    """(model in eval mode on `device`, tokenizer, config) from a bundle, wherever it was trained;
    `best`: the weights with the lowest val loss instead of the latest."""
    path = resolve_best(name_or_path, root) if best else resolve_bundle(name_or_path, root)
    config = load_config(path)
    tokenizer = load_tokenizer(path, config)
    model = build_model(path, config, map_location=device).to(device)
    model.eval()
    return model, tokenizer, config


# ---------------------------------------------------------------------------------- the best model


def read_best(path: Path, warn: bool = False) -> dict | None:
    """best.json of the bundle at `path` with its folder as `path`, or None when it has no best
    model. A damaged or half-written best/ raises MyptError, or, when `warn`, is reported in one
    warning line and treated as absent (the latest bundle does not depend on it)."""
    folder = Path(path) / BEST_DIR
    if not folder.exists():
        return None
    try:
        manifest = _read_manifest(folder)
        missing = [name for name in BEST_FILES if name not in manifest["files"]]
        if missing:
            raise MyptError(f"{folder / MANIFEST_FILE} does not list {', '.join(missing)}")
        _verify(folder, manifest, check_hash=False)
        info = read_json(folder / BEST_FILE)
        loss = info.get("val_loss")
        if (
            not _nonnegative_int(info.get("step"))
            or not isinstance(loss, (int, float))
            or isinstance(loss, bool)
        ):
            raise MyptError(f"{folder / BEST_FILE} must hold a step and a val_loss")
        if manifest.get("step") != info["step"]:
            raise MyptError(
                f"{folder / BEST_FILE} says step {info['step']} but {MANIFEST_FILE} says {manifest.get('step')}"
            )
    except MyptError as e:
        if not warn:
            raise
        print(f"mypt: warning: the best model in {folder} is ignored: {e}", file=sys.stderr)
        return None
    return {**info, "path": str(folder)}


def weights_state(path: Path) -> dict:
    """The training_state.json that describes the weights in a folder: its own, or, for a best model
    (best.json, no training_state.json of its own), the bundle's it belongs to with best.json's step
    and val loss. {} for weights with no record (a folder of config.json, model.pt, tokenizer.json)."""
    path = Path(path)
    if (path / BEST_FILE).is_file() and not (path / TRAINING_STATE_FILE).exists():
        best = read_json(path / BEST_FILE)
        state = load_training_state(path.parent)
        return {**state, **{k: best.get(k) for k in ("step", "val_loss", "val_bpb")}}
    return load_training_state(path)


def lineage_record(path: Path) -> dict:
    """What a fine-tune records of the folder it starts from (training_state.json's `init_from`): its
    path, the step of its weights and, when they came from a Hugging Face model (converted, or
    fine-tuned from a conversion), `imported_from`, all from one read of weights_state."""
    state = weights_state(path)
    record = {"path": str(path), "step": state.get("step")}
    origin = state.get("imported_from") or (state.get("init_from") or {}).get("imported_from")
    if origin:
        record["imported_from"] = origin
    return record


def resolve_best(name_or_path: str | os.PathLike, root: str | os.PathLike = DEFAULT_ROOT) -> Path:
    """The best model's folder of a bundle (a folder every loader reads like a bundle)."""
    path = resolve_bundle(name_or_path, root)
    if read_best(path) is None:
        raise MyptError(
            f"{path} has no best model yet: it is kept at the first validation of a run "
            f"(unless --keep_best false); use the latest weights without --best"
        )
    return path / BEST_DIR


def file_sizes(path: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(path.iterdir()) if p.is_file()}


def get_model_info(name_or_path: str | os.PathLike, root: str | os.PathLike = DEFAULT_ROOT) -> dict:
    """Everything a person wants to know about a bundle, from its JSON files alone (fast for any size):
    `config`, `tokenizer`, `training_state`, `files` (name -> bytes), `path`, `num_params`, and
    `best`: the best model's best.json (`step`, `val_loss`, `val_bpb`, `run`, ...), `path` and `files`,
    or None, and `damaged`: file name -> what is wrong, for a damaged optimizer.pt (the rest of the
    bundle still reads and its weights still load; only resuming needs it).

    File sizes are checked against the manifest (a stat, no hashing), so a truncated file shows up here."""
    path = resolve_bundle(name_or_path, root)
    verify_bundle(path, check_hash=False, names=tuple(n for n in BUNDLE_FILES if n != OPTIMIZER_FILE))
    damage = optimizer_damage(path)
    config = load_config(path)
    tokenizer = load_tokenizer(path, config)
    summary = {"token_kind": tokenizer.kind}
    if tokenizer.kind == "char":
        summary["vocab_size"] = tokenizer.vocab_size
    if tokenizer.kind == "bpe":
        summary["vocab_size"] = tokenizer.n_tokens
        summary["merges"] = tokenizer.n_merges
        summary.update({k: v for k, v in tokenizer.trained_on.items() if k != "tokenizers_version"})
        summary["longest_tokens"] = tokenizer.longest_tokens(5)
    best = read_best(path, warn=True)
    if best is not None:
        best["files"] = file_sizes(path / BEST_DIR)
    return {
        "name": path.name,
        "path": str(path),
        "config": config,
        "tokenizer": summary,
        "training_state": load_training_state(path),
        "files": file_sizes(path),
        "num_params": count_params(gpt_config(config, path / CONFIG_FILE)),
        "best": best,
        "damaged": {OPTIMIZER_FILE: damage} if damage else {},
    }


def count_params(config: GPTConfig) -> int:
    """Parameters of a GPT with this config, by arithmetic (no weights read), as GPT.num_params():
    the input embeddings left out (the position table, and the token embedding when the head is untied:
    then lm_head's v x d is counted instead; tied, the one matrix counts once)."""
    d, v, L, h, bias = config.n_embd, config.vocab_size, config.n_layer, config.mlp_width, config.bias

    def linear(n_in: int, n_out: int) -> int:
        return n_in * n_out + (n_out if bias else 0)

    norm = d * (2 if bias and config.norm == "layernorm" else 1)  # RMSNorm: a weight, no bias
    qk_norm = 2 * config.head_dim if config.qk_norm else 0
    attn = linear(d, 3 * d) + linear(d, d) + qk_norm
    mlp = linear(d, 2 * h if config.mlp == "swiglu" else h) + linear(h, d)
    return v * d + L * (2 * norm + attn + mlp) + norm
