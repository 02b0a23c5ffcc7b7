"""The bundle's precedence rules: a saved bundle's settings become the defaults of the run that
resumes or evaluates it, its architecture is checked, and the resume report says what changed.
Precedence, lowest first: built-in defaults < the saved bundle (when resuming) < a --config file <
the command line. The architecture is the exception: a value that differs from config.json stops the
run, because the weights cannot take it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser

from mypt import budget, bundle, corpus
from mypt.config import ARCHITECTURE_KEYS, DATA_ARCHITECTURE_KEYS, with_nanogpt_defaults
from mypt.errors import MyptError
from mypt.schedule import continue_schedule, lr_at

# where the design note's training_config keys live on the command line
TRAINING_CONFIG_KEYS = {
    "max_iters": "trainer.max_steps",
    "eval_interval": "trainer.val_check_interval",
    "eval_iters": "trainer.limit_val_batches",
    "learning_rate": "model.learning_rate",
}
# what a fine-tune (--model.init_from) may change of its parent's config.json: neither shapes the weights
FINE_TUNABLE = ("dropout", "batch_size")


def fine_tunable(saved: dict) -> tuple[str, ...]:
    """FINE_TUNABLE, and the context length where positions are rotary: RoPE's angles are computed for
    any length and no weight has its shape (a learned position table has one row per position). So a
    fine-tune can train a model on longer text, or an imported one, whose context is often 32k or more,
    on windows a CPU can take."""
    rotary = with_nanogpt_defaults(saved).get("pos_emb") == "rope"
    return FINE_TUNABLE + (("block_size",) if rotary else ())


def bundle_defaults(subcommand: str, source: Path) -> tuple[dict, dict, dict[str, Any]]:
    """The bundle's config.json, its training state and the defaults they give the command's parser."""
    # evaluating needs the weights alone: a best model, an import, a bundle whose optimizer.pt is damaged
    (bundle.check_resumable if subcommand == "fit" else bundle.check_weights)(source)
    saved_config = bundle.load_config(source)
    saved_state = bundle.weights_state(source)  # a best model's: its bundle's settings
    tokenizer = bundle.read_json(source / bundle.TOKENIZER_FILE)
    defaults: dict[str, Any] = {
        "model_name": source.name,
        "checkpoint_dir": str(source.parent),
        "data.tokenizer_file": str(source / bundle.TOKENIZER_FILE),
        "data.tokenizer": tokenizer.get("token_kind"),
    }
    defaults.update(_architecture_defaults(saved_config))
    # a bundle saved before these settings existed was trained with nanoGPT's AdamW and cosine decay
    defaults.update({"model.optimizer": "adamw", "model.lr_schedule": "cosine"})
    saved = saved_settings(saved_state)
    # precision and compile chosen for the machine that trained are chosen again for this one; an
    # evaluation keeps the recorded precision, so that `mypt validate` gives the val loss the run saved
    automatic = saved_state.get("precision_choice", {}).get("automatic", [])
    if subcommand != "fit":
        automatic = [name for name in automatic if name == "compile"]
    skip = {"trainer.precision" if name == "precision" else f"model.{name}" for name in automatic}
    defaults.update({k: v for k, v in saved.items() if not k.startswith("data.") and k not in skip})
    defaults.update(budget.resume_defaults(saved_state))  # its budget and step cap
    for key in ("input_file", "train_split", "seed", "url", "val_files", "text_field", "extensions"):
        if f"data.{key}" in saved:
            defaults[f"data.{key}"] = saved[f"data.{key}"]
    data = saved_state.get("data", {})
    if data.get("input_file") and not corpus.spec_exists(data["input_file"]):
        # relative paths recorded in another working folder: the files where it was trained
        if data.get("input_path") and corpus.spec_exists(data["input_path"]):
            defaults["data.input_file"] = data["input_path"]
    if "seed" in saved_state:
        defaults["seed_everything"] = saved_state["seed"]
    return saved_config, saved_state, defaults


def parent_defaults(parent: Path) -> dict[str, Any]:
    """What a fine-tune takes of its parent (--model.init_from): the architecture and the tokenizer."""
    config = bundle.load_config(parent)
    tokenizer = bundle.read_json(parent / bundle.TOKENIZER_FILE)
    defaults = _architecture_defaults(config)
    defaults["data.tokenizer_file"] = str(parent / bundle.TOKENIZER_FILE)
    defaults["data.tokenizer"] = tokenizer.get("token_kind")
    return defaults


def set_defaults(parser: LightningArgumentParser, defaults: dict[str, Any]) -> None:
    """`defaults` (command-line names) as the parser's defaults: a --config file and flags still win."""
    skipped = ("model.vocab_size", "model.init_from")  # linked; lineage is recorded, not re-applied
    for key, value in defaults.items():
        if key not in skipped:
            # a key this command does not take (a setting another version recorded) is left out;
            # jsonargparse's set_defaults raises KeyError for it, as documented
            with contextlib.suppress(KeyError):
                parser.set_defaults({key: value})


def check_architecture(
    cfg, saved: dict, source: Path, allowed: tuple[str, ...], vocab_size: str | None = None
) -> None:
    """A value given for an architecture key that differs from the saved one (`allowed` aside) stops
    the run with the fine-tune or new-model command that can take it."""
    requested = {k: cfg.model[k] for k in ARCHITECTURE_KEYS if k != "vocab_size"}
    requested["batch_size"] = cfg.data.batch_size
    if vocab_size is not None:  # given on the command line, as text
        requested["vocab_size"] = int(vocab_size) if vocab_size.strip().isdigit() else vocab_size
    tunable = fine_tunable(saved)
    for key, value in requested.items():
        if key in allowed or key not in saved or value == saved[key]:
            continue
        flag = "--data.batch_size" if key == "batch_size" else f"--model.{key}"
        if key in tunable:  # met on a resume only: a fine-tune may change it
            advice = (
                f"a fine-tune into a new bundle can: `mypt fit --model.init_from {source} --model_name "
                f"NEW_NAME {flag} {value}` (with the text to train on)"
            )
        else:
            change = "--data.tokenizer KIND" if key == "vocab_size" else f"{flag} {value}"
            advice = (
                f"a fine-tune keeps its parent's weights, so it can change {', '.join(tunable[:-1])} and "
                f"{tunable[-1]} only; {key} {value} is a new model: train it from scratch under a new name, "
                f"`mypt fit --model_name NEW_NAME {change}` (with the text and the other settings)"
            )
        raise MyptError(
            f"{flag} {value} conflicts with the saved architecture ({key}={saved[key]} in "
            f"{source / bundle.CONFIG_FILE}): the weights cannot take it; {advice}"
        )


def _architecture_defaults(config: dict) -> dict[str, Any]:
    defaults = {f"model.{k}": config[k] for k in ARCHITECTURE_KEYS if k in config}
    defaults.update({f"data.{k}": config[k] for k in DATA_ARCHITECTURE_KEYS if k in config})
    return defaults


def saved_settings(state: dict) -> dict[str, Any]:
    """A bundle's recorded settings under their command-line names (`trainer.max_steps`,
    `model.learning_rate`, `data.input_file`, ...): the design note's training_config, then the
    saved settings, then the data's record."""
    training_config = state.get("training_config") or {}
    values = {
        dest: training_config[key] for key, dest in TRAINING_CONFIG_KEYS.items() if key in training_config
    }
    values.update(bundle.flat_settings(state))
    values.update({f"data.{k}": v for k, v in (state.get("data") or {}).items()})
    return values


def _flat_settings(cfg) -> dict[str, Any]:
    values = {
        f"trainer.{k}": cfg.trainer.get(k)
        for k in (
            "max_steps",
            "val_check_interval",
            "limit_val_batches",
            "gradient_clip_val",
            "accumulate_grad_batches",
        )
    }
    values.update({f"model.{k}": v for k, v in vars(cfg.model).items() if k not in ARCHITECTURE_KEYS})
    values.update(
        {
            f"data.{k}": cfg.data.get(k)
            for k in ("input_file", "train_split", "seed", "val_files", "text_field", "extensions")
        }
    )
    return values


def resume_report(source: Path, saved: dict, cfg, files: list[dict] | None = None) -> str:
    """The old -> new table of settings that differ from the saved run, which input files changed,
    and the LR of the next step. `files`: the inputs as they are now (path, bytes, sha256)."""
    old = saved_settings(saved)
    new = _flat_settings(cfg)
    if new["data.input_file"] and old.get("data.input_path") == corpus.absolute_spec(new["data.input_file"]):
        old["data.input_file"] = new["data.input_file"]  # the same files, named from another folder
    changed = [(k, old[k], v) for k, v in new.items() if k in old and old[k] != v and k != "model.init_from"]
    step = int(saved.get("step", 0))
    m = cfg.model
    segments = continue_schedule(
        saved.get("lr_schedule"), step, cfg.trainer.max_steps, m.learning_rate, m.min_lr_ratio,
        m.lr_schedule, m.decay_ratio,
    )  # fmt: skip
    lines = [f"Resuming {source} at step {step} (to max_steps {cfg.trainer.max_steps})"]
    if changed:
        width = max(len(k) for k, _, _ in changed)
        lines.append("  setting".ljust(width + 2) + "  saved -> now")
        lines += [f"  {k.ljust(width)}  {o} -> {n}" for k, o, n in changed]
    else:
        lines.append("  settings unchanged: the schedule continues exactly")
    lines += _input_changes(saved.get("data", {}), files, new["data.input_file"])
    lr = lr_at(step, segments)
    muon = f" (Muon {lr * m.muon_lr_ratio:.6g})" if m.optimizer == "muon" else ""
    lines.append(f"  next step's learning rate: {lr:.6g}{muon}")
    return "\n".join(lines)


class NothingToTrain(Exception):
    """The bundle is already at max_steps: the run ends, successfully, before it starts."""


def check_steps_left(source: Path, step: int, max_steps: int) -> None:
    """Resuming a bundle already at --trainer.max_steps: say so, and end the run (NothingToTrain)."""
    if step >= max_steps:
        print(
            f"mypt: {source} is already at step {step} of --trainer.max_steps {max_steps}: "
            "nothing to train (raise --trainer.max_steps to continue it, or give another --model_name)"
        )
        raise NothingToTrain


def _input_changes(saved: dict, files: list[dict] | None, input_file) -> list[str]:
    """Report lines naming the input files that changed, appeared or disappeared since the save."""
    if not files:
        return []
    now_sha256 = corpus.combined_digest([f["sha256"] for f in files])
    saved_sha256 = saved.get("sha256")
    if not saved_sha256 or saved_sha256 == now_sha256:
        return []
    before = {f["path"]: f["sha256"] for f in saved.get("files", [])}
    if len(files) == 1 and len(before) <= 1:  # one text, as bundles always recorded it
        return [
            f"  the text changed since the bundle was saved ({saved.get('input_file')}, sha256 "
            f"{saved_sha256[:12]}… -> {input_file}, {now_sha256[:12]}…): training continues on the new text; "
            "for a new model of it, give another --model_name"
        ]
    after = {f["path"]: f["sha256"] for f in files}
    root = os.path.commonpath([*before, *after]) if before or after else ""
    root = root if os.path.isdir(root) else os.path.dirname(root)

    def names(paths: list[str]) -> str:
        shown = [os.path.relpath(p, root) if root else p for p in paths[:5]]
        return ", ".join(shown) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")

    kinds = (
        ("changed", [p for p in after if p in before and before[p] != after[p]]),
        ("added", [p for p in after if p not in before]),
        ("gone", [p for p in before if p not in after]),
    )
    parts = [f"{len(paths)} {kind} ({names(paths)})" for kind, paths in kinds if paths]
    if not parts:
        parts = ["the same files in another order"]
    return [
        f"  the input files changed since the bundle was saved: {'; '.join(parts)}; "
        "training continues on the files as they are now; for a new model of them, give another --model_name"
    ]
