"""Export and import through the transformers classes of gpt2.py, qwen3.py and llama.py, and the
Hugging Face starting points of `--model.init_from`.

The export picks the class that computes the bundle's architecture (the one that needs the fewest
options changed; a combination none computes is refused, naming the options to change), writes
it with its tokenizer, and checks before writing that transformers gives mypt's logits. The import
reads the class from config.json's model_type and refuses, in one line, what mypt's GPT cannot
compute (grouped-query attention, RoPE scaling, ...).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from mypt import bundle
from mypt.config import GPTConfig
from mypt.errors import MyptError
from mypt.hf.gpt2 import GPT2
from mypt.hf.llama import Llama
from mypt.hf.mapping import EMBEDDING, HEAD, HFClass
from mypt.hf.qwen3 import Qwen3
from mypt.hf.vocab import MYPT_TOKENIZER_FILE, bos_token_id, hf_tokenizer_for, token_rows, tokenizer_of
from mypt.model import GPT
from mypt.tokenizer import tokenizer_from_dict

CLASSES: tuple[HFClass, ...] = (Qwen3(), Llama(), GPT2())  # the nearest first, on a tie
BY_MODEL_TYPE = {c.model_type: c for c in CLASSES}
IMPORT_BATCH_SIZE = 8  # config.json needs one; a fine-tune sets its own with --data.batch_size
MYPT_CONFIG_FILE = "mypt_config.json"  # mypt's config.json, kept beside an export: its batch size comes back
EXPORT_TOLERANCE = 1e-4  # max |logit difference| on a probe, float32, before anything is written
# Hub names tried for --model.init_from: the published GPT-2 sizes, or any "owner/name"
GPT2_HUB_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2")
_HUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def require_transformers() -> Any:
    try:
        import safetensors  # noqa: F401 - the weights format of the export
        import transformers
    except ImportError:
        raise MyptError(
            "the Hugging Face bridge needs transformers and safetensors: pip install mypt[hf]"
        ) from None
    transformers.utils.logging.disable_progress_bar()  # no "Writing model shards" bars in mypt's output
    return transformers


# ------------------------------------------------------------------------------------- export


def class_for(cfg: GPTConfig, path: Path) -> HFClass:
    """The transformers class that computes this architecture; refused in one line, naming the
    options of the nearest class, when none does."""
    changes = {c.name: c.options_to_change(cfg) for c in CLASSES}
    nearest = min(CLASSES, key=lambda c: len(changes[c.name]))
    needed = changes[nearest.name]
    if needed:
        raise MyptError(
            f"{path} cannot be exported to Hugging Face: no transformers class computes its architecture; "
            f"the nearest, {nearest.name}, needs {' and '.join(needed)} (a model trained with "
            f"{'that option' if len(needed) == 1 else 'those options'} exports)"
        )
    return nearest


def export_hf(
    name_or_path: str | os.PathLike, out_dir: str | os.PathLike, root: str = bundle.DEFAULT_ROOT
) -> Path:
    """Write a bundle as a transformers folder (GPT2LMHeadModel, Qwen3ForCausalLM or
    LlamaForCausalLM, whichever computes its architecture): config.json, model.safetensors, a
    tokenizer AutoTokenizer loads (tokenizer.json, tokenizer_config.json), and mypt's tokenizer.json
    and config.json as mypt_tokenizer.json and mypt_config.json (a fine-tune from the folder keeps the
    bundle's batch size)."""
    transformers = require_transformers()
    model, tokenizer, _ = bundle.load_model(name_or_path, root=root)
    path = bundle.resolve_bundle(name_or_path, root)
    cfg = model.config
    hf_class = class_for(cfg, path)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise MyptError(f"{out} exists and is not empty: choose a new folder for the export")
    vocab_rows = cfg.vocab_size if hf_class.keeps_padding else token_rows(tokenizer)
    hf_tokenizer = hf_tokenizer_for(transformers, tokenizer, cfg.block_size)
    hf_config = hf_class.hf_config(
        transformers, cfg, vocab_rows, bos_token_id(tokenizer, hf_tokenizer), hf_tokenizer.eos_token_id
    )
    hf_model = hf_class.model_class(transformers)(hf_config)
    state = dict(model.state_dict())
    for name in (EMBEDDING, HEAD):
        state[name] = state[name][:vocab_rows]
    result = hf_model.load_state_dict(hf_class.to_hf(state, cfg), strict=False)
    unmapped = [k for k in result.missing_keys if not k.endswith(hf_class.ignored)] + result.unexpected_keys
    if unmapped:
        raise MyptError(f"{path}: weights do not map onto {hf_class.name}: {unmapped}")
    gap = logit_gap(model, hf_model)
    if not gap <= EXPORT_TOLERANCE:  # transformers changed how the class computes: write nothing wrong
        raise MyptError(
            f"transformers {transformers.__version__}'s {hf_class.name} gives logits {gap:.2g} away from "
            f"mypt's for {path}: not exported"
        )
    try:
        hf_model.save_pretrained(out, safe_serialization=True)
        hf_tokenizer.save_pretrained(out)
        shutil.copyfile(path / bundle.TOKENIZER_FILE, out / MYPT_TOKENIZER_FILE)
        shutil.copyfile(path / bundle.CONFIG_FILE, out / MYPT_CONFIG_FILE)
        _usual_file_modes(out)
    except OSError as e:
        raise MyptError(f"cannot write {out}: {e.strerror or e}") from None
    return out


def exported_class(out_dir: str | os.PathLike) -> str:
    """The transformers class an export folder holds, from its config.json."""
    return bundle.read_json(Path(out_dir) / "config.json").get("architectures", ["?"])[0]


def _usual_file_modes(folder: Path) -> None:
    """safetensors writes through a private temporary file (mode 0600): give every exported file
    the mode any new file gets here (0644 under the usual umask 022), readable as the others are."""
    umask = os.umask(0)
    os.umask(umask)
    for file in folder.iterdir():
        if file.is_file():
            file.chmod(0o666 & ~umask)


# ------------------------------------------------------------------------------------- import


def _load_hf_config(source: str) -> tuple[HFClass, Any]:
    transformers = require_transformers()
    try:
        hf_config = transformers.AutoConfig.from_pretrained(source)
    except (OSError, ValueError, KeyError) as e:
        reason = " ".join(str(e).split())[:300]
        raise MyptError(f"cannot load Hugging Face model {source}: {reason}") from None
    model_type = getattr(hf_config, "model_type", None)
    if model_type not in BY_MODEL_TYPE:
        raise MyptError(f"{source} is a {model_type!r} model: mypt imports gpt2, llama and qwen3 models only")
    hf_class = BY_MODEL_TYPE[model_type]
    problems = hf_class.problems(hf_config)
    if problems:
        raise MyptError(f"{source} differs from mypt's GPT: {', '.join(problems)}")
    return hf_class, hf_config


def _load_hf_model(hf_class: HFClass, source: str) -> Any:
    transformers = require_transformers()
    try:
        return hf_class.model_class(transformers).from_pretrained(source, torch_dtype=torch.float32)
    except (OSError, ValueError) as e:
        reason = " ".join(str(e).split())[:300]
        raise MyptError(f"cannot load Hugging Face model {source}: {reason}") from None


def _exported_batch_size(source: str) -> int:
    """The batch size the exported bundle trained at (its mypt_config.json), else IMPORT_BATCH_SIZE."""
    file = Path(source) / MYPT_CONFIG_FILE
    if not file.is_file():
        return IMPORT_BATCH_SIZE
    batch_size = bundle.read_json(file).get("batch_size")
    ok = isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0
    return batch_size if ok else IMPORT_BATCH_SIZE


def import_hf(source: str, dest: str | os.PathLike) -> Path:
    """Convert a transformers GPT-2, Qwen3 or Llama (a local folder, or a Hub name such as gpt2)
    into a mypt bundle at `dest`: step 0, no optimizer, `imported_from` recorded. Returns the bundle."""
    hf_class, hf_config = _load_hf_config(source)
    rows = hf_config.vocab_size
    tokenizer = tokenizer_of(source, rows)
    ours = tokenizer_from_dict(tokenizer, f"{source}/{MYPT_TOKENIZER_FILE}")
    if not token_rows(ours) <= rows <= ours.vocab_size or (
        rows != token_rows(ours) and not hf_class.keeps_padding
    ):
        raise MyptError(
            f"{source} has {rows} embedding rows but its {ours.kind} tokenizer "
            f"{token_rows(ours)} tokens: the tokenizer does not belong to these weights"
        )
    hf_model = _load_hf_model(hf_class, source)
    hf_state = hf_model.state_dict()
    config = GPTConfig(vocab_size=ours.vocab_size, **hf_class.mypt_config(hf_config, hf_state)).to_dict()
    config = {**config, "batch_size": _exported_batch_size(source), "device": "cpu"}
    config = {k: config[k] for k in bundle.CONFIG_KEYS}  # the order of every config.json
    cfg = bundle.gpt_config(config, Path(source) / "config.json")
    try:
        state = hf_class.to_mypt(hf_state, cfg)
    except MyptError as e:
        raise MyptError(f"{source}: {e}") from None
    if ours.vocab_size > rows:  # mypt's padding rows, which no token names
        extra = hf_class.padding(state, cfg, ours.vocab_size - rows)
        state[HEAD] = torch.cat([state[HEAD], extra]).contiguous()
        state[EMBEDDING] = (
            state[HEAD] if cfg.tie_embeddings else torch.cat([state[EMBEDDING], torch.zeros_like(extra)])
        )
    model = GPT(cfg)
    model.load_state_dict(state)  # checks every name and shape before anything is written
    reason = hf_class.approximation(hf_config)
    if reason:
        print(
            f"mypt: {source} {reason}: logits differ by up to {logit_gap(model, hf_model):.2g} on a probe "
            "input (fine-tuning absorbs it)",
            file=sys.stderr,
        )
    training_state = {
        "step": 0,
        "format_version": bundle.FORMAT_VERSION,
        "model_name": Path(dest).name,
        "imported_from": str(source),
        "hf_config": json.loads(hf_config.to_json_string()),
        "training_config": {},
        "history": [],
    }
    return bundle.write_bundle(
        dest, model_state=model.state_dict(), config=config, tokenizer=tokenizer,
        training_state=training_state, optimizer_state=None,
    )  # fmt: skip


@torch.no_grad()
def logit_gap(model: GPT, hf_model: Any, length: int = 16) -> float:
    """Largest |mypt logit - transformers logit| over a fixed probe sequence, on the shared vocabulary."""
    model.eval()
    hf_model.eval()
    vocab = hf_model.config.vocab_size
    length = min(length, model.config.block_size)
    idx = torch.arange(length).remainder(vocab).unsqueeze(0)
    ours, _ = model(idx, idx)  # with targets: logits at every position
    theirs = hf_model(idx).logits
    return float((ours[..., :vocab] - theirs).abs().max())


# ---------------------------------------------------------------------------- init_from


def is_hf_folder(path: Path) -> bool:
    """A transformers folder: its config.json names a model_type (a mypt config.json never does)."""
    file = path / "config.json"
    if not file.is_file():
        return False
    try:
        return "model_type" in bundle.read_json(file)
    except MyptError:
        return False


def resolve_init_from(init_from: str, root: str = bundle.DEFAULT_ROOT) -> Path:
    """The bundle a fine-tune starts from. A mypt bundle (path or name under `root`) is used as it
    is; a transformers folder or a Hub name (gpt2, gpt2-medium, ...) is converted once into
    <root>/<name> (a folder `x` into `x-hf`; `x-hf` keeps its name), which later runs then start from;
    the lineage of every fine-tune names both that bundle and the Hugging Face origin."""
    path = Path(init_from)
    if path.is_dir() and is_hf_folder(path):
        name = path.resolve().name  # a folder named like an export (dante-hf) keeps its name
        return _converted(init_from, Path(root) / (name if name.endswith("-hf") else f"{name}-hf"))
    if path.is_dir() or bundle.is_bundle(Path(root) / init_from):
        return bundle.resolve_bundle(init_from, root)
    hub_repo = _HUB_REPO.match(init_from) and not Path(init_from.split("/")[0]).is_dir()
    if not path.exists() and (init_from in GPT2_HUB_NAMES or hub_repo):
        return _converted(init_from, Path(root) / init_from.replace("/", "--"))
    return bundle.resolve_bundle(init_from, root)


def _converted(source: str, dest: Path) -> Path:
    if bundle.is_bundle(dest):
        return dest
    try:
        require_transformers()
    except MyptError as e:
        raise MyptError(
            f"no mypt bundle at {source}; to start from the Hugging Face model {source}, {e}"
        ) from None
    _, hf_config = _load_hf_config(source)  # what mypt cannot import is refused before the line below
    tokenizer_of(source, hf_config.vocab_size)
    print(f"mypt: converting Hugging Face model {source} into the bundle {dest}", file=sys.stderr)
    return import_hf(source, dest)
