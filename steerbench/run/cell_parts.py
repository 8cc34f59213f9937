"""A cell's parts: its validation part (the splits that choose a strength) and its
evaluation part (the reported numbers), so that a run can sweep every strength on the
validation split alone and evaluate only the strengths it chose (``evaluate: chosen``).

A whole cell (``evaluate: all``) is stored under its key, ``cells/<key>/``; a part under
``cells/<key>.<part>/``. Both carry the cell's key in their rows, so the consolidated tables
and everything that reads them see one cell whatever way it was run, and a whole cell also
counts as each of its parts (a rerun in the other mode recomputes nothing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from steerbench.metric import SPLIT_EVALUATION, SPLIT_VALIDATION
from steerbench.run.results import is_finished

Part = Literal["validation", "evaluation"]
PARTS: tuple[Part, ...] = ("validation", "evaluation")  # SPLIT_VALIDATION, SPLIT_EVALUATION


def splits_of(part: Part | None) -> tuple[str, ...]:
    """The splits a part generates and scores (a whole cell: both)."""
    return (SPLIT_EVALUATION, SPLIT_VALIDATION) if part is None else (part,)


def part_directory(key: str, part: Part | None) -> str:
    """The directory name under ``cells/`` of a cell's part (its key for a whole cell)."""
    return key if part is None else f"{key}.{part}"


def part_finished(results: Path, key: str, part: Part | None) -> bool:
    """Whether the part is on disk: as itself, or inside the whole cell; a whole cell needs
    its own directory or both parts."""
    if is_finished(results, key):
        return True
    if part is None:
        return all(is_finished(results, part_directory(key, p)) for p in PARTS)
    return is_finished(results, part_directory(key, part))
