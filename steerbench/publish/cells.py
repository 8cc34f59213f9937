"""The cell table: one row per (model, method, strength) cell, every evaluation number a
column named by its set, so the ranking rules and the renderers read one shape whatever
metrics and sets the results hold (no metric is special-cased)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from steerbench.metric import MODEL_LEVEL


@dataclass(frozen=True)
class Column:
    """One displayed number: ``key`` in the cell table, its header and format."""

    key: str
    header: str
    digits: int = 2
    signed: bool = False
    interval: bool = False


def roles(frame: pd.DataFrame) -> dict[str, str | None]:
    """eval_set -> role (None: not recorded), from the rows (version-1 files without roles:
    the first set is the target, the others over-refusal, as a config without ``roles``
    says)."""
    found: dict[str, str | None] = {}
    sets = [s for s in dict.fromkeys(frame["eval_set"]) if s != MODEL_LEVEL]
    for name in sets:
        known = frame.loc[(frame["eval_set"] == name) & frame["role"].notna(), "role"]
        found[name] = known.iloc[0] if not known.empty else None
    if sets and not any(found.values()):
        found = {name: "target" if i == 0 else "over_refusal" for i, name in enumerate(sets)}
    return found


def target_set(frame: pd.DataFrame) -> str | None:
    """The eval_set whose role is the target (the one the tasks' primary metric reads)."""
    return next((s for s, role in roles(frame).items() if role == "target"), None)


def column_key(eval_set: str | None, metric: str, target: str | None) -> str:
    """A number's cell-table column: the bare metric for the target set and model-level
    metrics, ``metric:set`` for the other sets."""
    return metric if eval_set in (MODEL_LEVEL, target) else f"{metric}:{eval_set}"


def columns(frame: pd.DataFrame) -> list[Column]:
    """What the tables show, in order: the target set's metrics (with intervals), then each
    other set's, then model-level metrics with their change from the unsteered model;
    whatever metrics the results hold, named by set (no metric is special-cased here)."""
    evaluation = frame[frame["split"] == "evaluation"]
    target = target_set(evaluation)
    order = [target] + [s for s in roles(evaluation) if s != target] + [MODEL_LEVEL]
    out = []
    for eval_set in order:
        metrics = dict.fromkeys(evaluation.loc[evaluation["eval_set"] == eval_set, "metric"])
        for metric in metrics:
            key = column_key(eval_set, metric, target)
            header = metric if eval_set == MODEL_LEVEL else f"{metric} ({eval_set})"
            digits = _digits(metric)
            out.append(Column(key, header, digits, interval=eval_set == target))
            if eval_set == MODEL_LEVEL:
                out.append(Column(f"{key}_delta", f"{metric} Δ", 2, signed=True))
    return out


def _digits(metric: str) -> int:
    """Rates read well with 2 decimals; means of per-item scores (near-1 fluency, small
    divergences) need 3."""
    from steerbench.metric import METRICS

    return 2 if metric in METRICS.names() and METRICS.get(metric).kind == "rate" else 3


def board_labels(frame: pd.DataFrame) -> dict[str, str]:
    """cell_key -> the table it is compared in: its model, or "model [config]" when a model
    has results from several configs (other prompts or splits: not comparable cell to cell,
    and each needs its own unsteered row). A submitted file's cells form their own board,
    "model [config, submitted <file>]", with the file's own unsteered row, so a submission
    is never ranked on the official board."""
    submission = frame["submission"] if "submission" in frame else pd.Series(None, frame.index)
    official = frame[submission.isna()]
    configs = official.groupby("model")["config_name"].nunique()
    labels = {}
    for r in frame.assign(submission=submission).drop_duplicates("cell_key").itertuples():
        if isinstance(r.submission, str):
            labels[r.cell_key] = f"{r.model} [{r.config_name}, submitted {r.submission[:8]}]"
        elif configs.get(r.model, 1) == 1:
            labels[r.cell_key] = r.model
        else:
            labels[r.cell_key] = f"{r.model} [{r.config_name}]"
    return labels


def _optional(value: Any) -> float | None:
    return None if pd.isna(value) else float(value)


def _cell_row(key: str, cell: pd.DataFrame, board: str, target: str | None) -> dict[str, Any]:
    """One cell's row of the table: its identity, then its numbers (see ``cell_table``)."""
    first = cell.iloc[0]
    row: dict[str, Any] = {
        "model": board,
        "method": first["method"],
        "method_name": first["method_name"],
        "strength": _optional(first["strength"]),
        "is_unsteered": bool(first["is_unsteered"]),
        "cell_key": key,
        "seconds": _optional(first["seconds"]),
    }
    for _, r in cell.iterrows():
        value = _optional(r["value"])
        if r["split"] == "validation":
            row[f"validation:{column_key(r['eval_set'], r['metric'], target)}"] = value
            continue
        name = column_key(r["eval_set"], r["metric"], target)
        row[name] = value
        row[f"{name}_ci_low"] = _optional(r["ci_low"])
        row[f"{name}_ci_high"] = _optional(r["ci_high"])
    return row


def cell_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: every evaluation-split number as a column (see ``columns``), and
    every validation-split number as ``validation:<its column>`` (a cell of a run that
    evaluates only the chosen strengths may have those alone). Its ``model`` column is the
    cell's board (``board_labels``); ``reference`` marks the rows shown as "*(reference)*"
    (the unsteered model and control methods)."""
    evaluated = frame[frame["split"] == "evaluation"]
    target = target_set(evaluated if not evaluated.empty else frame)
    boards = board_labels(frame)
    rows = [
        _cell_row(key, cell, boards[key], target)
        for key, cell in frame.groupby("cell_key", sort=False)
    ]
    table = pd.DataFrame(rows)
    for model_level in evaluated.loc[evaluated["eval_set"] == MODEL_LEVEL, "metric"].unique():
        unsteered = table[table["is_unsteered"]].groupby("model")[model_level].first()
        table[f"{model_level}_delta"] = table.apply(
            lambda r, m=model_level, base=unsteered: (
                None
                if pd.isna(r.get(m)) or pd.isna(base.get(r["model"]))
                else r[m] - base[r["model"]]
            ),
            axis=1,
        )
    table["reference"] = table["is_unsteered"] | table["method_name"].map(is_control)
    return table.astype(object).where(table.notna(), None)


def is_control(name: str) -> bool:
    """Whether a method is a control (random directions...): shown as a reference row."""
    from steerbench.method import METHODS

    return name in METHODS.names() and bool(METHODS.get(name).is_control)


def number(row: Any, key: str) -> float | None:
    """A cell's number under ``key`` as a float, or None when missing (NaN, absent, or a
    row that is no row, like the ``{}`` standing for a board without an unsteered cell)."""
    value = row.get(key) if hasattr(row, "get") else None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def strength_text(row: Any) -> str:
    """A cell's strength as the tables show it ("–" for the unsteered model)."""
    if row.get("is_unsteered") or row.get("strength") is None:
        return "–"
    return f"{row['strength']:g}"
