"""Bundle information as text for people (`mypt inspect`), laid out like the design note's example."""

from __future__ import annotations

from mypt.bundle import flat_settings


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
            lines.append(f"Validation loss: {state['val_loss']:.4f}")
        lines.append("Training configuration:")
        lines += [f"  {k}: {v}" for k, v in state.get("training_config", {}).items()]
        data = state.get("data")
        if data:
            sha = (data.get("sha256") or "")[:12]
            lines.append(f"Data: {data.get('input_file')} (sha256 {sha}…, {data.get('tokenizer')} tokenizer)")
        if "seed" in state:
            lines.append(f"Seed: {state['seed']}")
        parent = state.get("init_from")
        lines.append(
            f"Lineage: fine-tuned from {parent['path']} at step {parent['step']}"
            if parent
            else "Lineage: trained from scratch"
        )
        history = state.get("history", [])
        if history:
            lines.append("History:")
            for run in history:
                loss = run.get("val_loss")
                loss_text = f"val loss {loss:.4f}" if isinstance(loss, (int, float)) else "no val loss"
                lr = run.get("settings", {}).get("learning_rate")
                lines.append(
                    f"  run {run.get('run')}: steps {run.get('start_step')} -> {run.get('end_step')}, "
                    f"lr {lr}, {loss_text}, {run.get('started_at')} .. {run.get('ended_at')}"
                )
    lines += ["", "=== FILES ==="]
    lines.append(f"Parameters: {info['num_params'] / 1e6:.2f}M")
    lines += [f"  {name:<20} {human_bytes(size):>10}" for name, size in info["files"].items()]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- mypt list


def parent_of(state: dict) -> str:
    """Where a model came from: the bundle it was fine-tuned from, a Hugging Face import, or '-'."""
    parent = state.get("init_from")
    if isinstance(parent, dict) and parent.get("path"):
        return f"{parent['path']}@{parent.get('step')}"
    source = state.get("imported_from")
    if source:
        return f"hf:{source}"
    return "-"


def list_row(info: dict) -> dict:
    """One model's line in `mypt list`, as values (also what `mypt list --json` prints)."""
    state = info["training_state"]
    return {
        "name": info["name"],
        "step": state.get("step"),
        "val_loss": state.get("val_loss"),
        "tokenizer": info["tokenizer"].get("token_kind"),
        "params": info["num_params"],
        "size": sum(info["files"].values()),
        "parent": parent_of(state),
    }


def format_list(rows: list[dict], problems: list[tuple[str, str]]) -> str:
    """A table: one line per bundle; bundles that cannot be read get a line saying why."""
    header = ("NAME", "STEP", "VAL LOSS", "TOKENIZER", "PARAMS", "SIZE", "PARENT")
    table = [header]
    for row in rows:
        loss = row["val_loss"]
        table.append(
            (
                row["name"],
                "-" if row["step"] is None else str(row["step"]),
                f"{loss:.4f}" if isinstance(loss, (int, float)) else "-",
                str(row["tokenizer"]),
                f"{row['params'] / 1e6:.2f}M",
                human_bytes(row["size"]),
                row["parent"],
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table]
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
    flat.update({f"training_config.{k}": v for k, v in state.get("training_config", {}).items()})
    flat.update(flat_settings(state))
    data = state.get("data") or {}
    flat.update({f"data.{k}": v for k, v in data.items() if k not in ("batch_size", "block_size")})
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
