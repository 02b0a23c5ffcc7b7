"""Shared fixtures: a small text corpus, a private token cache, and ways to run `mypt`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Tiny test models run fastest on one thread, and the suite's child processes must not oversubscribe
# the cores (OpenMP threads spinning against each other make a 2-core machine ten times slower).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import lightning.pytorch  # noqa: E402, F401  (binds Lightning's log handler once, not to one test's capsys)
import pytest  # noqa: E402
import torch  # noqa: E402

from mypt.cli import main  # noqa: E402

torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FIXTURE_TEXT = Path(__file__).parent / "data" / "inferno_excerpt.txt"

# A tiny model that trains in a second or two on CPU.
TINY = [
    "--model.n_layer", "2", "--model.n_head", "2", "--model.n_embd", "32", "--model.block_size", "16",
    "--model.warmup_steps", "5", "--data.batch_size", "4",
    "--trainer.val_check_interval", "10", "--trainer.limit_val_batches", "2",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    "--dashboard.max_new_tokens", "0",
]  # fmt: skip


def dante_text(max_bytes: int | None = None) -> str:
    """The Divina Commedia when ../shared is there, else the excerpt kept in tests/data."""
    path = SHARED_DATA / "divina_commedia.txt"
    text = path.read_text(encoding="utf-8") if path.is_file() else FIXTURE_TEXT.read_text(encoding="utf-8")
    return text[:max_bytes] if max_bytes else text


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own folder with its own token cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MYPT_CACHE_DIR", str(tmp_path / "token_cache"))
    monkeypatch.delenv("MYPT_DEBUG", raising=False)


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "dante.txt"
    path.write_text(dante_text(60_000), encoding="utf-8")
    return path


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out[-2000:]!r}, err={self.err[-2000:]!r})"


@pytest.fixture
def mypt(capsys: pytest.CaptureFixture):
    """Run `mypt ARGS...` in this process; returns a Result with exit code, stdout and stderr."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse/jsonargparse --help and usage errors
            code = e.code if isinstance(e.code, int) else 1
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def run_mypt_subprocess(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> Result:
    """Run the real console entry point in a child process (for exit codes, signals, tracebacks)."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "mypt", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env,
    )  # fmt: skip
    return Result(proc.returncode, proc.stdout, proc.stderr)
