"""The behaviours board: a behaviours run (``<results>/<behaviour>/`` per behaviour, see
``steerbench.run.behaviour_tasks``) as one page that answers "which method steers which
behaviour, at what cost".

Each behaviour's tasks are decided by the leaderboard's own rules (``verdicts.standings``:
strengths chosen on validation items, reported on held-out ones, ranks from every paired
test with Holm's correction), so nothing here re-implements a verdict. On top of them:

- the method x behaviour matrix: each method's change in the behaviour's score (p(matching)
  of an A/B behaviour, MC2 of TruthfulQA) from the unsteered model at its chosen strength,
  per direction, with its 95 % interval and rank;
- the entanglement matrix: at each behaviour's chosen strengths, the change in every other
  behaviour's score (paired t-test against the same unsteered cell, Holm-corrected over
  all the off-diagonal tests of the run), as a heatmap and as a list of what is decided;
- dose-response: every swept strength's score against its MMLU change (the
  validation numbers, which every strength has), one curve per method (a Pareto picture).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from steerbench.errors import SteerbenchError
from steerbench.files import save_figure
from steerbench.publish.verdicts import Standings, TaskRanking, standings
from steerbench.run.behaviour_tasks import behaviour_metric, metric_behaviour

DIRECTIONS = (("increase", "↑"), ("decrease", "↓"))


@dataclass(frozen=True)
class Behaviour:
    """One behaviour's decided board and the paired tests behind it."""

    name: str
    standings: Standings
    comparisons: pd.DataFrame | None
    frame: pd.DataFrame

    def ranking(self, direction: str) -> TaskRanking:
        name = f"{direction}-{self.name}"  # behaviour_tasks.behaviour_tasks names them so
        return next(r for r in self.standings.rankings if r.task.name == name)

    @property
    def unsteered_key(self) -> str | None:
        table = self.standings.table
        keys = table.loc[table["is_unsteered"].astype(bool), "cell_key"]
        return keys.iloc[0] if not keys.empty else None


def behaviour_dirs(results: Path) -> list[Path]:
    """The behaviour folders of a behaviours run, in name order."""
    found = (
        sorted(p for p in results.iterdir() if (p / "results.parquet").is_file())
        if results.is_dir()
        else []
    )
    if not found:
        raise SteerbenchError(
            f"{results} holds no behaviour results (<behaviour>/results.parquet); run a "
            f"config with behaviours first (steerbench run behaviours)"
        )
    return found


def load_behaviour(directory: Path) -> Behaviour:
    from steerbench.publish.sources import load_generations, load_results, tasks_for
    from steerbench.stats.comparisons import compare_cells

    frame = load_results([directory])
    generations = load_generations([directory])
    comparisons = compare_cells(generations) if not generations.empty else None
    decided = standings(frame, tasks_for([directory]), comparisons)
    return Behaviour(directory.name, decided, comparisons, frame)


def _interval(value: Any, low: Any, high: Any) -> str:
    """A signed difference and its interval, "+0.12 [+0.03, +0.21]" ("–" when missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.2f} [{low:+.2f}, {high:+.2f}]"


def method_matrix(behaviours: list[Behaviour]) -> pd.DataFrame:
    """(method, direction) x behaviour: the change in its score from the unsteered model
    at the chosen strength, "Δ [low, high] @ strength, rank r" (the task ranking's mark), or
    "–" with no qualifying strength."""
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for behaviour in behaviours:
        for direction, arrow in DIRECTIONS:
            verdict = behaviour.ranking(direction)
            for _, row in verdict.ranking.iterrows():
                if row["is_unsteered"]:
                    continue
                text = "–"
                if not row["failed"]:
                    interval = _interval(row["delta"], row["delta_ci_low"], row["delta_ci_high"])
                    text = f"{interval} @ {row['strength']:g}, rank {verdict.mark(row)}"
                cells.setdefault((row["method"], arrow), {})[behaviour.name] = text
    index = pd.MultiIndex.from_tuples(list(cells), names=["method", "direction"])
    return pd.DataFrame(list(cells.values()), index=index).fillna("–")


def entanglement(behaviours: list[Behaviour]) -> pd.DataFrame:
    """One row per (steered behaviour, direction, method, measured behaviour) at the chosen
    strength: the paired change of the measured behaviour's score from the unsteered model,
    its interval, n and p, Holm-corrected over every off-diagonal test of the run."""
    from steerbench.metric import MODEL_LEVEL
    from steerbench.stats.comparisons import pair
    from steerbench.stats.ranking import holm

    rows = []
    for behaviour in behaviours:
        unsteered = behaviour.unsteered_key
        for direction, arrow in DIRECTIONS:
            for _, cell in behaviour.ranking(direction).ranking.iterrows():
                if cell["is_unsteered"] or cell["failed"] or unsteered is None:
                    continue
                for measured in _measured(behaviour):
                    metric = behaviour_metric(measured)
                    test = pair(
                        behaviour.comparisons, metric, MODEL_LEVEL, cell["cell_key"], unsteered
                    )
                    if test is None:
                        continue
                    rows.append(
                        {
                            "steered": behaviour.name,
                            "direction": arrow,
                            "method": cell["method"],
                            "strength": cell["strength"],
                            "measured": measured,
                            "delta": test["difference"],
                            "ci_low": test["ci_low"],
                            "ci_high": test["ci_high"],
                            "n": int(test["n"]),
                            "p_value": test["p_value"],
                        }
                    )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    side = table["steered"] != table["measured"]
    table["p_holm"] = math.nan
    table.loc[side, "p_holm"] = holm(list(table.loc[side, "p_value"]))
    return table


def _measured(behaviour: Behaviour) -> list[str]:
    """The behaviours whose score the run measured beside this one (itself first)."""
    scored = {metric_behaviour(m) for m in behaviour.frame["metric"]} - {None}
    return [behaviour.name, *sorted(b for b in scored if b and b != behaviour.name)]


def heatmap(table: pd.DataFrame, out: Path) -> str | None:
    """Steered behaviour and direction (rows) x measured behaviour (columns): the mean over
    methods of the change in its score; a dot marks an entry with a Holm-significant
    off-diagonal test. Returns the figure's stem."""
    if table.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = table.assign(row=table["steered"] + " " + table["direction"])
    means = table.pivot_table(index="row", columns="measured", values="delta", aggfunc="mean")
    decided = table.assign(sig=table["p_holm"] < 0.05).pivot_table(
        index="row", columns="measured", values="sig", aggfunc="max"
    )
    limit = max(float(means.abs().max().max()), 0.05)
    fig, ax = plt.subplots(figsize=(1.1 * len(means.columns) + 3, 0.45 * len(means) + 2))
    image = ax.imshow(means.to_numpy(dtype=float), cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_xticks(range(len(means.columns)), means.columns, rotation=35, ha="right")
    ax.set_yticks(range(len(means.index)), means.index)
    for i, row in enumerate(means.index):
        for j, column in enumerate(means.columns):
            value = means.loc[row, column]
            if not math.isnan(value):
                mark = "•" if bool(decided.loc[row, column] == 1) else ""
                ax.text(j, i, f"{value:+.2f}{mark}", ha="center", va="center", fontsize=7)
    ax.set_xlabel("measured behaviour (Δ score vs unsteered)")
    ax.set_ylabel("steered behaviour, direction")
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    save_figure(fig, out / "entanglement")
    plt.close(fig)
    return "entanglement"


def dose_response(behaviours: list[Behaviour], out: Path) -> str:
    """Per behaviour: every strength's validation score against its validation MMLU
    change from the unsteered model (the cost axis; the strength's own number where MMLU
    was not swept), one curve per method. Returns the figure's stem."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(len(behaviours), 4)
    rows = math.ceil(len(behaviours) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.4 * rows), squeeze=False)
    for ax, behaviour in zip(axes.flat, behaviours):
        table = behaviour.standings.table
        own = f"validation:{behaviour_metric(behaviour.name)}"
        cost = "validation:mmlu"
        base = table.loc[table["is_unsteered"].astype(bool)]
        has_cost = cost in table.columns and table[cost].notna().any()
        for method, group in table.groupby("method", sort=False):
            if group["is_unsteered"].all():
                continue
            group = pd.concat([group, base]).sort_values("strength", na_position="first")
            y = pd.to_numeric(group[own], errors="coerce") if own in group else None
            if y is None:
                continue
            if has_cost:
                x = pd.to_numeric(group[cost], errors="coerce") - float(base[cost].iloc[0])
            else:
                x = pd.to_numeric(group["strength"], errors="coerce").fillna(0.0)
            ax.plot(x, y, marker="o", label=method)
        ax.axhline(0.5, color="grey", lw=0.5, ls=":")
        ax.set_title(behaviour.name, fontsize=9)
        ax.set_xlabel("MMLU Δ (validation)" if has_cost else "strength")
        ax.set_ylabel(f"{behaviour_metric(behaviour.name)}, validation")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(behaviours) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "dose-response")
    plt.close(fig)
    return "dose-response"
