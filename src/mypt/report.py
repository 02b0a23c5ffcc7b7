"""Bundle information as text for people (`mypt inspect`), laid out like the design note's example."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from mypt.bundle import BEST_DIR, DEFAULT_ROOT, flat_settings, read_best


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def format_info(info: dict) -> str:
    lines = [f"Model: {info['name']} ({info['path']})", "", "=== CONFIG ==="]
    lines += [f"  {k}: {v}" for k, v in info["config"].items()]
    lines += ["", "=== TOKENIZER ==="]
    lines += [f"  {k}: {v}" for k, v in info["tokenizer"].items()]
    state = info["training_state"]
    lines += ["", "=== TRAINING STATE ==="]
    if not state:
        lines.append("No training state recorded.")
    else:
        lines.append(f"Last recorded training step: {state.get('step')}")
        if state.get("val_loss") is not None:
            lines.append(f"Validation loss: {state['val_loss']:.4f}{_bpb_text(state.get('val_bpb'))}")
        lines += best_lines(info)
        lines.append("Training configuration:")
        lines += [f"  {k}: {v}" for k, v in state.get("training_config", {}).items()]
        data = state.get("data")
        if data:
            sha = (data.get("sha256") or "")[:12]
            files = (
                f"{data['n_files']} files, {human_bytes(data.get('total_bytes', 0))}, "
                if data.get("n_files", 1) > 1
                else ""
            )
            lines.append(
                f"Data: {data.get('input_file')} ({files}sha256 {sha}…, {data.get('tokenizer')} tokenizer)"
            )
        if "seed" in state:
            lines.append(f"Seed: {state['seed']}")
        lines.append(lineage_line(state))
        history = state.get("history", [])
        if history:
            lines.append("History:")
            for run in history:
                loss = run.get("val_loss")
                loss_text = f"val loss {loss:.4f}" if isinstance(loss, (int, float)) else "no val loss"
                lr = run.get("settings", {}).get("learning_rate")
                stopped = f", stopped: {run['stopped']}" if run.get("stopped") else ""
                lines.append(
                    f"  run {run.get('run')}: steps {run.get('start_step')} -> {run.get('end_step')}, "
                    f"lr {lr}, {loss_text}, {run.get('started_at')} .. {run.get('ended_at')}{stopped}"
                )
    for name, damage in (info.get("damaged") or {}).items():
        lines.append(
            f"Damaged: {damage}: the weights still load (generate, validate, export, --model.init_from), "
            f"but training cannot resume from this bundle without {name}"
        )
    lines += ["", "=== FILES ==="]
    lines.append(f"Parameters: {info['num_params'] / 1e6:.2f}M")
    lines += [f"  {name:<20} {human_bytes(size):>10}" for name, size in info["files"].items()]
    best_files = (info.get("best") or {}).get("files", {})
    lines += [f"  {'best/' + name:<20} {human_bytes(size):>10}" for name, size in best_files.items()]
    return "\n".join(lines)


def lineage_line(state: dict) -> str:
    """Where a model came from, as `mypt list`'s PARENT says it: a fine-tune's parent (and the
    Hugging Face model its weights first came from), a conversion from Hugging Face, or neither."""
    parent = state.get("init_from")
    if isinstance(parent, dict) and parent.get("path"):
        origin = parent.get("imported_from")
        origin_text = f" (originally the Hugging Face model {origin})" if origin else ""
        return f"Lineage: fine-tuned from {parent['path']} at step {parent.get('step')}{origin_text}"
    if state.get("imported_from"):
        return f"Lineage: converted from the Hugging Face model {state['imported_from']}"
    return "Lineage: trained from scratch"


def _bpb_text(bpb: object) -> str:
    return f" ({bpb:.4f} bits per byte)" if isinstance(bpb, (int, float)) else ""


def best_lines(info: dict) -> list[str]:
    """Where the best model is and how good, and, when the last validation is worse, that plainly."""
    best = info.get("best")
    if not best:
        return ["Best model: none kept yet"]
    lines = [
        f"Best model: step {best['step']}, val loss {best['val_loss']:.4f}{_bpb_text(best.get('val_bpb'))}, "
        f"from run {best.get('run')}: {best['path']}"
    ]
    last = info["training_state"].get("val_loss")
    if isinstance(last, (int, float)) and last > best["val_loss"]:
        lines.append(
            f"val loss has risen {last - best['val_loss']:.4f} since step {best['step']}: overfitting; the best "
            f"model is kept at {best['path']} (mypt generate {info['name']} --best)"
        )
    return lines


# ---------------------------------------------------------------------------------- mypt data


def format_corpus(data: dict, n_documents: int | None, tokenizer, cache_dir, hit: bool) -> str:
    """What `mypt data` prints: the corpus as training will see it."""
    n_tokens, n_bytes = data["n_tokens"], data["total_bytes"]  # the text's UTF-8 bytes
    n_files, on_disk = data["n_files"], data.get("total_file_bytes", n_bytes)
    disk = f"; {human_bytes(on_disk)} on disk" if on_disk != n_bytes else ""
    n_val_files = sum(1 for f in data["files"] if f.get("val"))
    separator = "none" if tokenizer.eot_id is None else f"{tokenizer.eot_text!r} (id {tokenizer.eot_id})"
    split = (
        f"{n_val_files} validation files held out"
        if n_val_files
        else f"first {data['train_split']:.0%} of each document trains"
    )
    lines = [
        f"inputs       {n_files} file{'s' if n_files != 1 else ''}, {human_bytes(n_bytes)} "
        f"({n_bytes:,} bytes of text{disk})",
        f"documents    {n_documents:,}" if n_documents is not None else "documents    token shards",
        f"tokens       {n_tokens:,} ({n_tokens / max(n_bytes, 1):.3f} tokens/byte)",
        f"train / val  {data['n_train_tokens']:,} / {data['n_val_tokens']:,} tokens ({split})",
        f"tokenizer    {data['tokenizer']}, vocabulary {tokenizer.vocab_size:,}, separator {separator}",
        f"cache        {cache_dir or 'none: token shards are read in place'}"
        + (" (already tokenised)" if hit and cache_dir else ""),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- mypt list


def parent_of(state: dict) -> str:
    """Where a model came from: the bundle it was fine-tuned from, a Hugging Face import, or '-'."""
    parent = state.get("init_from")
    if isinstance(parent, dict) and parent.get("path"):
        origin = f" (hf:{parent['imported_from']})" if parent.get("imported_from") else ""
        return f"{parent['path']}@{parent.get('step')}{origin}"
    source = state.get("imported_from")
    if source:
        return f"hf:{source}"
    return "-"


def tokenizer_label(summary: dict) -> str | None:
    """`char`, `gpt2`, or `bpe-4096`: a learnt BPE is told apart by its size."""
    kind = summary.get("token_kind")
    return f"{kind}-{summary['vocab_size']}" if kind == "bpe" else kind


def list_row(info: dict) -> dict:
    """One model's line in `mypt list`, as values (also what `mypt list --json` prints)."""
    state = info["training_state"]
    return {
        "name": info["name"],
        "step": state.get("step"),
        "val_loss": state.get("val_loss"),
        "val_bpb": state.get("val_bpb"),
        "best_val_loss": (info.get("best") or {}).get("val_loss"),
        "best_step": (info.get("best") or {}).get("step"),
        "tokenizer": tokenizer_label(info["tokenizer"]),
        "params": info["num_params"],
        "size": sum(info["files"].values()),
        "parent": parent_of(state),
        "damaged": info.get("damaged") or {},
    }


def _number(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def format_list(rows: list[dict], problems: list[tuple[str, str]]) -> str:
    """A table: one line per bundle; bundles that cannot be read get a line saying why."""
    header = ("NAME", "STEP", "VAL LOSS", "BPB", "BEST@STEP", "TOKENIZER", "PARAMS", "SIZE", "PARENT")
    table = [header]
    for row in rows:
        best = row["best_val_loss"]
        table.append(
            (
                row["name"],
                "-" if row["step"] is None else str(row["step"]),
                _number(row["val_loss"]),
                _number(row["val_bpb"]),
                f"{best:.4f}@{row['best_step']}" if isinstance(best, (int, float)) else "-",
                str(row["tokenizer"]),
                f"{row['params'] / 1e6:.2f}M",
                human_bytes(row["size"]),
                row["parent"],
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table]
    lines += [
        f"{row['name']}  (cannot resume: {why})" for row in rows for why in row.get("damaged", {}).values()
    ]
    lines += [f"{name}  (unreadable: {reason})" for name, reason in problems]
    return "\n".join(lines)


# ------------------------------------------------------------------------- mypt inspect A B

DIFF_MARK = "*"
_HIGHLIGHT = ("\033[1;33m", "\033[0m")  # bold yellow, then reset


def comparable(info: dict) -> dict[str, object]:
    """A bundle's facts as flat `section.key` -> value, in display order, for side-by-side views."""
    state = info["training_state"]
    flat: dict[str, object] = {f"config.{k}": v for k, v in info["config"].items()}
    flat.update({f"tokenizer.{k}": v for k, v in info["tokenizer"].items()})
    flat["params"] = info["num_params"]
    flat["size"] = human_bytes(sum(info["files"].values()))
    flat["step"] = state.get("step")
    flat["val_loss"] = state.get("val_loss")
    flat["val_bpb"] = state.get("val_bpb")
    best = info.get("best") or {}
    flat["best.step"] = best.get("step")
    flat["best.val_loss"] = best.get("val_loss")
    flat.update({f"training_config.{k}": v for k, v in state.get("training_config", {}).items()})
    flat.update(flat_settings(state))
    data = state.get("data") or {}
    flat.update({f"data.{k}": v for k, v in data.items() if k not in ("batch_size", "block_size", "files")})
    flat["seed"] = state.get("seed")
    flat["parent"] = parent_of(state)
    flat["runs"] = len(state.get("history", []))
    return flat


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + "…"  # a sha256
    return "-" if value is None else str(value)


def format_comparison(a: dict, b: dict, color: bool = False) -> str:
    """Two bundles side by side; rows whose values differ start with `*` (and are coloured on a TTY)."""
    left, right = comparable(a), comparable(b)
    keys = list(left) + [k for k in right if k not in left]
    rows = [(k, _cell(left.get(k)), _cell(right.get(k))) for k in keys]
    key_w = max(len(k) for k, _, _ in rows)
    a_w = max([len(a["name"])] + [len(v) for _, v, _ in rows])
    lines = [f"  {'':<{key_w}}  {a['name']:<{a_w}}  {b['name']}"]
    lines.append(f"  {'':<{key_w}}  {a['path']:<{a_w}}  {b['path']}")
    differing = 0
    for key, va, vb in rows:
        same = left.get(key) == right.get(key)
        line = f"{' ' if same else DIFF_MARK} {key:<{key_w}}  {va:<{a_w}}  {vb}"
        if not same:
            differing += 1
            if color:
                line = _HIGHLIGHT[0] + line + _HIGHLIGHT[1]
        lines.append(line.rstrip())
    lines.append(f"{differing} of {len(rows)} values differ ({DIFF_MARK})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the end of a fit


def early_stop_line(step: int, why: str, best: dict | None) -> str:
    """Why early stopping ended the run, and where the best model is."""
    kept = (
        f"; the best model (step {best['step']}, val loss {best['val_loss']:.4f}) is kept at {best['path']}"
        if best
        else ""
    )
    return f"mypt: early stopping at step {step}: {why}{kept}"


def run_end_line(path, step: int, val_loss: float | None, val_bpb: float | None, best: dict | None) -> str:
    """One line when fit ends: the bundle, its step and quality, the best model, the next command."""
    quality = (
        f"val loss {val_loss:.4f}{f', {val_bpb:.4f} bits per byte' if val_bpb is not None else ''}"
        if val_loss is not None
        else "not validated"
    )
    line = f"mypt: bundle {path} at step {step} ({quality})"
    name = path.name if path.parent == Path(DEFAULT_ROOT) else str(path)
    next_command = f"mypt generate {name}"
    if best:
        if best["step"] == step:
            line += "; it is the best model so far"
        else:
            line += f"; best model: step {best['step']}, val loss {best['val_loss']:.4f}, in {best['path']}"
            next_command += " --best"
    return f"{line}; next: {next_command}"


def evaluation_line(verb: str, source: Path | None, state: dict, best: bool) -> str:
    """What `mypt validate` / `test` evaluate: the bundle and its step, or its best model's."""
    if source is None:
        return f"mypt: {verb} a new, untrained model (no --ckpt_path)"
    if best:
        info = read_best(source) or {}
        return (
            f"mypt: {verb} the best model of {source}: {source / BEST_DIR}, step {info.get('step')} "
            f"(val loss {info.get('val_loss', float('nan')):.4f} when kept)"
        )
    step = state.get("step")
    return f"mypt: {verb} {source} at step {step}" if step is not None else f"mypt: {verb} {source}"


def sample_heading(index: int, prompts: list[str]) -> str:
    """The line above each `mypt predict` sample: which prompt, and the seed that `mypt generate
    --seed` takes to give the same text."""
    return f"=== sample {index + 1} of {len(prompts)}: prompt {prompts[index]!r}, seed {index} ==="


# -- command-line and config mistakes ------------------------------------------------------------


def nearest_option(given: str, options: list[str]) -> str | None:
    """The option a mistyped `given` most likely meant: the one option it begins (an abbreviation),
    else the closest spelling (difflib), else None."""
    name = given.split("=", 1)[0]
    longer = [option for option in options if option.startswith(name) and option != name]
    if len(longer) == 1:
        return longer[0]
    close = difflib.get_close_matches(name, longer or options, n=1, cutoff=0.75)
    return close[0] if close else None


def unrecognized_line(unknown: list[str], options: list[str]) -> str:
    """'unrecognized arguments: --trainer.max_step 100 (did you mean --trainer.max_steps?)'."""
    hints = [(arg.split("=", 1)[0], nearest_option(arg, options)) for arg in unknown if arg.startswith("-")]
    hints = [(arg, option) for arg, option in hints if option is not None]
    line = f"unrecognized arguments: {' '.join(unknown)}"
    if len(hints) == 1:
        line += f" (did you mean {hints[0][1]}?)"
    elif hints:
        line += f" (did you mean {', '.join(f'{option} for {arg}' for arg, option in hints)}?)"
    return line


def argument_error_line(message: str, args: list[str], parsers: dict) -> str:
    """jsonargparse's error as one line: a mistyped flag with the nearest one; a config file's mistake
    (a YAML syntax error, where jsonargparse says 'in "<unicode string>"'; an unknown key, with the
    nearest known key; a bad value) with the file's path and line. `parsers`: each subcommand's parser."""
    subcommand = next((arg for arg in args if arg in parsers), None)
    options = [o for a in parsers[subcommand]._actions for o in a.option_strings] if subcommand else []
    message = " ".join(message.split())
    if message.startswith("unrecognized arguments: "):
        return unrecognized_line(message.removeprefix("unrecognized arguments: ").split(), options)
    return _config_error_line(message, args, options) or message


def _config_files(args: list[str]) -> list[str]:
    files = [value for flag, value in zip(args, args[1:], strict=False) if flag == "--config"]
    return files + [arg.removeprefix("--config=") for arg in args if arg.startswith("--config=")]


def _config_error_line(message: str, args: list[str], options: list[str]) -> str | None:
    import yaml  # jsonargparse's YAML reader: the files parse here as they parse there

    texts = {}
    for path in _config_files(args):
        try:
            texts[path] = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
    for path, text in texts.items() if "<unicode string>" in message else ():
        try:
            yaml.safe_load(text)
        except yaml.MarkedYAMLError as e:
            mark = e.context_mark or e.problem_mark
            what = ", ".join(str(part) for part in (e.context, e.problem) if part)
            return f"{path}, line {mark.line + 1}, column {mark.column + 1}: this is not YAML ({what})"
        except yaml.YAMLError as e:
            return f"{path}: this is not YAML ({' '.join(str(e).split())})"
    # "Subcommand 'fit' does not accept option 'model.n_layers'"; "Group 'trainer' ... 'max_step'"
    unknown = re.search(r"(?:Group '([^']+)'|Subcommand '[^']+') does not accept option '([^']+)'", message)
    bad_value = re.search(r'Parser key "([^"]+)"', message)
    if unknown:
        key = ".".join(part for part in unknown.groups() if part)
    else:
        key = bad_value.group(1) if bad_value else None
    if key is None or (bad_value and any(arg.split("=", 1)[0] == f"--{key}" for arg in args)):
        return None  # not from a config file: the command line gave the value
    for path, text in texts.items():  # jsonargparse reads them in order and stops at the first mistake
        line = _yaml_key_line(text, key)
        if line is None:
            continue
        if bad_value:
            return f"{path}, line {line}: {message}"
        nearest = nearest_option(key, [option.removeprefix("--") for option in options])
        return f"{path}, line {line}: unknown key {key}" + (f" (did you mean {nearest}?)" if nearest else "")
    return None


def _yaml_key_line(text: str, key: str) -> int | None:
    """The line (from 1) where the dotted `key` (model.n_layer) is set in a YAML mapping, or None."""
    import yaml

    node = yaml.compose(text)
    for part in key.split("."):
        if not isinstance(node, yaml.MappingNode):
            return None
        found = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
        if found is None:
            return None
        key_node, node = found
    return key_node.start_mark.line + 1


def duration_text(seconds: float) -> str:
    """'45 s', '2 min 5 s', '1 h 20 min': a duration as a person reads it."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def budget_line(summary: dict, stopped: str | None) -> str:
    """How a run with --trainer.max_time spent its budget: start-up, training, validation, saving
    (mypt.budget.TimeBudget.summary), and how it ended."""
    parts, counts = summary["parts"], summary["counts"]
    spent = summary["spent_before"] + summary["this_run"]
    shares = [
        f"start-up {duration_text(parts['start-up'])}",
        f"training {duration_text(parts['training'])} ({counts['steps']:,} steps)",
        f"validation {duration_text(parts['validation'])} ({counts['validations']})",
        f"saving {duration_text(parts['saving'])} ({counts['saves']})",
    ]
    if parts.get("other", 0) >= 0.05:
        shares.append(f"the rest {duration_text(parts['other'])}")
    before = f"; {duration_text(summary['spent_before'])} by earlier runs" if summary["spent_before"] else ""
    return (
        f"mypt: time budget {duration_text(summary['budget'])}: {duration_text(spent)} spent "
        f"({spent / summary['budget']:.0%}{before}); this run: {', '.join(shares)}"
        + (f"; {stopped}" if stopped else "")
    )
