"""The leaderboard build: results in, ``README.md``, ``index.html`` and the plots out.

``build`` reads results directories (and everything submitted to ``leaderboard/results/``,
``sources``), decides each board's ranking per task once (``verdicts``: strengths chosen on
the validation split, ranked on the evaluation split with paired tests) and hands the same
standings to each renderer: the Markdown (``tables``), the HTML page (``page``), the
figures (``plots``) and, when asked, the project README's tables (``readme``). Results get
in through ``intake`` (``publish``, ``submit``).
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Any

from steerbench.errors import SteerbenchError
from steerbench.files import atomic_write_text
from steerbench.publish.page import render_page
from steerbench.publish.plots import plot
from steerbench.publish.readme import headline, update_readme
from steerbench.publish.sources import load_generations, load_results, submissions, tasks_for
from steerbench.publish.tables import board_markdown
from steerbench.publish.verdicts import standings


def build(sources: list[Path], out: Path, *, readme: Path | None = None) -> Path:
    """Write ``README.md``, ``index.html`` and the plots: per model, each task's ranking
    and the full sweep; a cross-model summary of ranks first. With ``readme``, the first
    model's task rankings also replace the tables between that file's leaderboard markers."""
    from steerbench.stats.comparisons import compare_cells

    if out.exists() and not out.is_dir():
        raise SteerbenchError(f"--out {out} is a file; give the leaderboard's directory")
    if readme is not None and not readme.is_file():
        raise SteerbenchError(f"--readme {readme} does not exist; give the README to update")
    frame = load_results(sources, submissions(out))
    generations = load_generations(sources)
    comparisons = compare_cells(generations) if not generations.empty else None
    tasks = tasks_for(sources)
    decided = standings(frame, tasks, comparisons)
    out.mkdir(parents=True, exist_ok=True)
    plots = dict(zip(decided.models, plot(decided.table, out, tasks[0])))
    atomic_write_text(out / "README.md", board_markdown(decided, plots))
    atomic_write_text(out / "index.html", render_page(decided, plots, generations))
    if readme is not None:
        update_readme(readme, headline(decided))
    return out


_MOVED_NAMES = {
    "steerbench.publish.cells": ("Column", "board_labels", "cell_table", "columns", "target_set"),
    "steerbench.publish.intake": ("PUBLISHED_FILES", "publish", "submit"),
    "steerbench.publish.page": ("examples", "pareto_points"),
    "steerbench.publish.plots": ("file_stem", "plot"),
    "steerbench.publish.readme": ("README_END", "README_START", "update_readme"),
    "steerbench.publish.sources": (
        "LEDGER",
        "load_results",
        "published_sources",
        "submissions",
        "tasks_for",
    ),
    "steerbench.publish.tables": ("summary_table",),
    "steerbench.publish.text": (
        "INTERVALS",
        "NO_STRENGTH",
        "RANK_RULE",
        "chosen_text",
        "delta_text",
        "p_text",
    ),
    "steerbench.publish.verdicts": (
        "constraint_failure",
        "meets",
        "rank_task",
        "select_strength",
        "why_no_strength",
    ),
}
"""Where the public names this module (once ``steerbench.leaderboard``) held now live."""


def __getattr__(name: str) -> Any:
    """Old imports from here (``from steerbench.leaderboard import cell_table``) keep
    working, with a ``DeprecationWarning`` naming the module to import from."""
    home = next((m for m, names in _MOVED_NAMES.items() if name in names), None)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"{__name__}.{name} moved to {home}; import it from there", DeprecationWarning, stacklevel=2
    )
    return getattr(importlib.import_module(home), name)
