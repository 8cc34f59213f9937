"""The ranking rules, as data: which strength of each method a task takes (chosen on the
validation split, within the task's constraints, better than the unsteered model), why a
method has none, and the ranked rows with their paired differences from the unsteered
model (``steerbench.stats.ranking``). Nothing here knows Markdown or HTML: the tables and
the page render what these functions decide."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from steerbench.publish.cells import Column, cell_table, columns, number, strength_text, target_set
from steerbench.publish.cells import roles as set_roles
from steerbench.stats.power import power_statement


def _constraint_keys(constraint: Any, roles: Mapping[str, str | None]) -> list[str]:
    """The cell-table columns a constraint reads (every set of an over-refusal role)."""
    if constraint.role in ("model", "target"):
        return [constraint.metric]
    return [
        f"{constraint.metric}:{name}" for name, role in roles.items() if role == constraint.role
    ]


def _label(key: str) -> str:
    """A column key as the reasons name it: "refusal:benign" -> "refusal (benign)"."""
    label = key.replace("validation:", "validation ")
    if ":" in label:
        label = "{} ({})".format(*label.split(":", 1))
    return label


def _bound_failure(label: str, value: float, unsteered: float | None, constraint: Any) -> str:
    """How ``value`` breaks one of the constraint's bounds, or "" when it breaks none."""
    if constraint.min is not None and value < constraint.min - 1e-9:
        return f"{label} {value:.3g} < {constraint.min:g}"
    if constraint.max is not None and value > constraint.max + 1e-9:
        return f"{label} {value:.3g} > {constraint.max:g}"
    for bound, sign, verb in (
        (constraint.max_drop, -1, "drops"),
        (constraint.max_rise, 1, "rises"),
    ):
        if bound is None:
            continue
        if unsteered is None:
            return f"{label} of the unsteered model not measured"
        if sign * (value - unsteered) > bound + 1e-9:
            return f"{label} {verb} {abs(value - unsteered):.2f} > {bound:g}"
    return ""


def constraint_failure(
    row: Any, unsteered: Any, constraint: Any, roles: Mapping[str, str | None]
) -> str | None:
    """How a cell breaks a task constraint, with its numbers ("mmlu drops 0.12 > 0.05"),
    or None when it respects it. A constraint reads the validation split where the run
    measured it there (the strength is chosen there: a run that evaluates only the chosen
    strengths measures every constraint on validation), else the evaluation numbers. A
    number that is missing fails the constraint. ``unsteered``: the board's unsteered row,
    the base of relative bounds."""
    for key in _constraint_keys(constraint, roles):
        validation = f"validation:{key}"
        if number(row, validation) is not None:
            key = validation
        value = number(row, key)
        if value is None:
            return f"{_label(key)} not measured"
        failure = _bound_failure(_label(key), value, number(unsteered, key), constraint)
        if failure:
            return failure
    return None


def meets(row: Any, unsteered: Any, constraint: Any, roles: Mapping[str, str | None]) -> bool:
    """Whether a cell respects a task constraint (see ``constraint_failure``)."""
    return constraint_failure(row, unsteered, constraint, roles) is None


def _choosing_key(rows: pd.DataFrame, task: Any) -> tuple[str, str]:
    """(the column a strength is chosen by, its split): the primary metric on validation
    when the run measured it there, else on evaluation."""
    key = f"validation:{task.metric}"
    if key in rows.columns and rows[key].notna().any():
        return key, "validation"
    return task.metric, "evaluation"


def why_no_strength(
    rows: pd.DataFrame, unsteered: Any, task: Any, roles: Mapping[str, str | None]
) -> str:
    """Why none of a method's strengths qualifies for a task, strength by strength and with
    the numbers: the first constraint it breaks, or that it does not move the primary
    metric the task's way from the unsteered model on the split that chooses."""
    key, _ = _choosing_key(rows, task)
    base = number(unsteered, key)
    sign = 1 if task.goal == "minimize" else -1
    reasons = []
    for _, row in rows.sort_values("strength", na_position="first").iterrows():
        failure = next(
            (f for c in task.constraints if (f := constraint_failure(row, unsteered, c, roles))),
            None,
        )
        value = number(row, key)
        beaten = value is not None and base is not None and sign * (value - base) >= 0
        if failure is None and beaten:
            where = key.replace("validation:", "validation ")
            side = "below" if sign > 0 else "above"
            failure = f"{where} {value:.2f}, not {side} the unsteered {base:.2f}"
        reasons.append(f"{strength_text(row)}: {failure or 'no number to choose by'}")
    return "; ".join(reasons)


def select_strength(
    rows: pd.DataFrame, unsteered: Any, task: Any, roles: Mapping[str, str | None]
) -> tuple[pd.Series | None, str]:
    """A method's cell for a task: among its strengths that meet every constraint and move
    the primary metric the task's way from the unsteered model, the best primary metric on
    the validation split when the run has one (so the reported, evaluation number is not
    the one it was picked by), else on evaluation. Returns (row or None, the split that
    chose it)."""
    key, split = _choosing_key(rows, task)
    pool = [
        r
        for _, r in rows.iterrows()
        if all(meets(r, unsteered, c, roles) for c in task.constraints)
    ]
    scored = [(r, value) for r in pool if (value := number(r, key)) is not None]
    sign = 1 if task.goal == "minimize" else -1
    base = number(unsteered, key)
    if base is not None:  # a strength must beat doing nothing, on the same split
        scored = [(r, value) for r, value in scored if sign * (value - base) < 0]
    if not scored:
        return None, split
    best = min(scored, key=lambda pair: (sign * pair[1], abs(pair[0]["strength"] or 0)))
    return best[0], split


def chosen_strengths(frame: pd.DataFrame, tasks: list) -> set[tuple[str, str, float | None]]:
    """(board, method, strength) of every cell some task takes, the unsteered ones included,
    by the same rule the leaderboard ranks with: what a run that evaluates only the chosen
    strengths evaluates after its validation sweep."""
    table = cell_table(frame)
    roles = set_roles(frame)
    picked: set[tuple[str, str, float | None]] = set()
    for _, board in table.groupby("model", sort=False):
        unsteered = _unsteered_row(board)
        for task in tasks:
            chosen, _, _ = _choose(board, unsteered, task, roles)
            picked |= {(r["model"], r["method"], number(r, "strength")) for r in chosen}
    return picked


def _unsteered_row(table: pd.DataFrame) -> Any:
    """The board's unsteered row, or ``{}`` (no numbers) when the board has none."""
    unsteered = table[table["is_unsteered"]]
    return unsteered.iloc[0] if not unsteered.empty else {}


def _choose(
    table: pd.DataFrame, unsteered: Any, task: Any, roles: Mapping[str, str | None]
) -> tuple[list[pd.Series], list[pd.Series], str]:
    """Each method's chosen row, the methods with none (with the reason), and the split
    the strengths were chosen on."""
    chosen, failing, split = [], [], "evaluation"
    for _, rows in table.groupby("method", sort=False):
        if rows["is_unsteered"].all():
            chosen.append(rows.iloc[0])
            continue
        row, split = select_strength(rows, unsteered, task, roles)
        if row is not None:
            chosen.append(row)
        else:
            failing.append(rows.iloc[0].copy())
            failing[-1]["strength"] = None
            failing[-1]["why"] = why_no_strength(rows, unsteered, task, roles)
    return chosen, failing, split


def rank_task(
    table: pd.DataFrame,
    task: Any,
    roles: Mapping[str, str | None],
    target: str | None,
    comparisons: pd.DataFrame | None,
) -> tuple[pd.DataFrame, str]:
    """One model's ranking for a task: each method at its selected strength (the unsteered
    model and control methods always shown, marked as references), ranked on the primary
    metric of the evaluation split by ``steerbench.stats.ranking`` (every pair tested, Holm
    correction, rank = 1 + the number of methods significantly better). Each row carries
    its paired difference from the unsteered model (``delta``, its 95 % interval and the
    Holm-corrected p); "?" marks a method with a pair that has no paired test (results
    submitted without generations). Methods with no strength meeting the constraints
    follow, unranked."""
    from steerbench.stats.ranking import rank_cells

    unsteered = _unsteered_row(table)
    chosen, failing, split = _choose(table, unsteered, task, roles)
    out = pd.DataFrame(chosen) if chosen else table.iloc[:0]
    sign = 1 if task.goal == "minimize" else -1
    out = out.assign(_key=sign * pd.to_numeric(out.get(task.metric), errors="coerce"))
    out = out.sort_values("_key", na_position="last", kind="stable").drop(columns="_key")
    keys = list(out["cell_key"]) if "cell_key" in out else []
    ranking = rank_cells(keys, comparisons, task.metric, target, minimize=task.goal == "minimize")
    unsteered_key = unsteered.get("cell_key") if len(unsteered) else None
    versus = [
        ranking.versus(key, unsteered_key) if unsteered_key and key != unsteered_key else None
        for key in keys
    ]
    out = out.assign(
        rank=[ranking.ranks[k] for k in keys],
        tie=["?" if k in ranking.untested else "" for k in keys],
        delta=[v.difference if v else None for v in versus],
        delta_ci_low=[v.ci_low if v else None for v in versus],
        delta_ci_high=[v.ci_high if v else None for v in versus],
        delta_p_holm=[v.p_holm if v else None for v in versus],
        delta_significant=[v.significant if v else None for v in versus],
    )
    if failing:
        rest = pd.DataFrame(failing).assign(rank="–", tie="", failed=True)
        out = pd.concat([out.assign(failed=False), rest], ignore_index=True)
    else:
        out = out.assign(failed=False)
    return out.astype(object).where(out.notna(), None), split


@dataclass(frozen=True)
class TaskRanking:
    """One board's verdict on one task: the ranked rows (``rank_task``), the split the
    strengths were chosen on, and what differences the data could detect (``power``)."""

    model: str
    task: Any
    ranking: pd.DataFrame
    chosen_on: str
    power: str

    def mark(self, row: Any) -> str:
        """A ranked row's place as the summary shows it: "2", "1 ?", or "–" (no strength)."""
        return "–" if row["failed"] else f"{row['rank']}{' ' + row['tie'] if row['tie'] else ''}"


def unsteered_sizes(
    evaluation: pd.DataFrame, unsteered_key: str | None
) -> dict[tuple[str, str], int]:
    """(eval_set, metric) -> how many items the unsteered cell scored."""
    rows = evaluation[evaluation["cell_key"] == unsteered_key]
    return {
        (r.eval_set, r.metric): int(r.n - (r.n_missing if not pd.isna(r.n_missing) else 0))
        for r in rows.itertuples()
    }


def task_set(task: Any, target: str | None) -> str | None:
    """The set a task's primary metric is read on: the target set, or the model-level
    items of a model-level task (an A/B behaviour)."""
    from steerbench.metric import MODEL_LEVEL

    return MODEL_LEVEL if getattr(task, "role", "target") == "model" else target


def rank_board(
    table: pd.DataFrame,
    evaluation: pd.DataFrame,
    tasks: list,
    comparisons: pd.DataFrame | None,
) -> list[TaskRanking]:
    """Every task's ranking on one board (``table``: that board's cell rows), each with its
    power statement at the spread every swept cell shows against the unsteered model."""
    roles, target = set_roles(evaluation), target_set(evaluation)
    unsteered = table.loc[table["is_unsteered"].astype(bool), "cell_key"]
    unsteered_key = unsteered.iloc[0] if not unsteered.empty else None
    sizes = unsteered_sizes(evaluation, unsteered_key)
    out = []
    for task in tasks:
        where = task_set(task, target)
        ranking, chosen_on = rank_task(table, task, roles, where, comparisons)
        power = power_statement(
            comparisons, task, roles, where, unsteered_key, list(table["cell_key"]), sizes
        )
        out.append(TaskRanking(table["model"].iloc[0], task, ranking, chosen_on, power))
    return out


def summary_marks(rankings: list[TaskRanking]) -> dict[str, dict[tuple[str, str], str]]:
    """method -> (board, task name) -> its mark (``TaskRanking.mark``), methods in the order
    the rankings first list them."""
    summary: dict[str, dict[tuple[str, str], str]] = {}
    for verdict in rankings:
        for _, r in verdict.ranking.iterrows():
            summary.setdefault(r["method"], {})[(verdict.model, verdict.task.name)] = verdict.mark(
                r
            )
    return summary


@dataclass(frozen=True)
class Standings:
    """Everything the leaderboard shows, decided once for both renderers: the cell table
    (every board), the columns shown, the target set, the tasks and every board's
    ``TaskRanking`` per task (boards in the table's order, tasks in the config's)."""

    table: pd.DataFrame
    columns: list[Column]
    target: str | None
    tasks: list
    rankings: list[TaskRanking]

    @property
    def models(self) -> list[str]:
        """The boards, in the order the results list them."""
        return list(dict.fromkeys(self.table["model"]))

    @property
    def summary_keys(self) -> list[tuple[str, str]]:
        """The summary's columns: (board, task name)."""
        return [(m, t.name) for m in self.models for t in self.tasks]

    @property
    def summary(self) -> dict[str, dict[tuple[str, str], str]]:
        return summary_marks(self.rankings)

    def board(self, model: str) -> pd.DataFrame:
        """One board's cell rows."""
        return self.table[self.table["model"] == model]

    def sweep(self, model: str) -> pd.DataFrame:
        """One board's every cell, by method and strength."""
        return self.board(model).sort_values(["method", "strength"])

    def rankings_of(self, model: str) -> list[TaskRanking]:
        return [r for r in self.rankings if r.model == model]


def standings(frame: pd.DataFrame, tasks: list, comparisons: pd.DataFrame | None) -> Standings:
    """Rank every board of the results ``frame`` (``load_results``) on every task."""
    table = cell_table(frame)
    evaluation = frame[frame["split"] == "evaluation"]
    models = list(dict.fromkeys(table["model"]))
    rankings = [
        verdict
        for model in models
        for verdict in rank_board(table[table["model"] == model], evaluation, tasks, comparisons)
    ]
    return Standings(table, columns(frame), target_set(evaluation), tasks, rankings)
