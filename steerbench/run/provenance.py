"""What produced a result, stored on every results row: the steerbench source (version and
git commit), the libraries that compute the numbers, and the device and dtype they ran in."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from steerbench import __version__


def git_commit() -> str | None:
    """The steerbench source commit (editable installs), "+dirty" when it has local edits."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], capture_output=True, text=True, cwd=here, timeout=5
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def provenance() -> dict[str, Any]:
    """The versions a run's numbers depend on; the same for every cell of one run."""
    import torch
    import transformers

    return {
        "steerbench_version": __version__,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "git_commit": git_commit(),
    }


def machine(lm: Any) -> dict[str, str]:
    """Where a loaded model computes: its device and the dtype of its weights."""
    return {
        "device": str(lm.device),
        "dtype": str(next(lm.model.parameters()).dtype).removeprefix("torch."),
    }
