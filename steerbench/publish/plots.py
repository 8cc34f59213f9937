"""The leaderboard's figures (matplotlib, PNG and SVG): per board, the first task's primary
metric against what its constraints bound, one curve per method. Same data, same bytes
(``save_figure`` strips what would vary between builds)."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from steerbench.files import save_figure


def file_stem(name: str) -> str:
    """A file name for ``name`` that stays inside its folder and is unique to it: the name
    itself when it is already a plain file name, else its plain characters plus a hash of
    the whole name (so "a/b" and "a_b", or "." and "_", never share a file)."""
    plain = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:60].lstrip(".")
    if plain == name and plain:
        return plain
    return f"{plain or 'model'}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}"


def _curves(ax: Any, rows: pd.DataFrame, column: str, primary: str) -> None:
    """One method per curve on ``ax``: ``primary`` against ``column``, points labelled by
    strength."""
    for method, group in rows.groupby("method", sort=False):
        group = group.sort_values("strength", na_position="first")
        x = pd.to_numeric(group[column], errors="coerce")  # missing -> NaN, not None
        y = pd.to_numeric(group[primary], errors="coerce")
        ax.plot(x, y, marker="o", label=method)
        for (_, r), xv, yv in zip(group.iterrows(), x, y):
            if not r["is_unsteered"] and not (math.isnan(xv) or math.isnan(yv)):
                ax.annotate(
                    f"{r['strength']:g}",
                    (xv, yv),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    ax.set_xlabel(column)
    ax.set_ylabel(f"{primary} (target set)")
    ax.grid(alpha=0.3)


def plot(table: pd.DataFrame, out: Path, task: Any) -> list[str]:
    """Per model, the task's primary metric against each metric its constraints bound on
    the target set or the model (refusal vs quality and vs MMLU for the default tasks), one
    curve per method. Returns the figures' file stems, one per board in table order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    primary = task.metric
    bounded = list(
        dict.fromkeys(c.metric for c in task.constraints if c.role in ("target", "model"))
    ) or [primary]
    names = []
    for model, rows in table.groupby("model", sort=False):
        slug = file_stem(model)
        fig, axes = plt.subplots(1, len(bounded), figsize=(5 * len(bounded), 4), squeeze=False)
        for ax, column in zip(axes[0], bounded):
            if column not in rows.columns or primary not in rows.columns:
                ax.set_visible(False)
                continue
            _curves(ax, rows, column, primary)
        axes[0][0].legend(fontsize=8)
        fig.suptitle(model)
        fig.tight_layout()
        save_figure(fig, out / slug)
        plt.close(fig)
        names.append(slug)
    return names
