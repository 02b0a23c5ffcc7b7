"""What every benchmark needs: where the corpora are, and a process's peak memory."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def find_text(name: str) -> Path:
    """A corpus from the repo's data/ (filled by `make data`) or the shared folder beside it."""
    for folder in (REPO / "data", REPO.parent / "shared" / "data"):
        if (folder / name).is_file():
            return folder / name
    raise SystemExit(f"benchmark: {name} not found in data/ (run `make data`)")


def peak_rss_mb() -> float:
    """Peak resident memory of this process. Linux's VmHWM starts afresh at exec, whereas ru_maxrss
    carries over the parent's peak from fork, which would hide a child's own."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (
        1024 if sys.platform != "darwin" else 1024**2
    )
