"""Bundle information as text for people (`mypt inspect`), laid out like the design note's example."""

from __future__ import annotations


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
