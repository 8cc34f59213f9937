"""The leaderboard as one static HTML page (``templates/leaderboard.html``): model and
task switch, sortable tables, a scatter plot with tooltips and example generations. All
text from results is HTML-escaped by Jinja2's autoescaping."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from steerbench.publish.cells import number, strength_text
from steerbench.publish.text import (
    INTERVALS,
    NO_STRENGTH,
    RANK_RULE,
    VALIDATION_MARK,
    VALIDATION_NOTE,
    chosen_text,
    delta_text,
    describe_constraint,
    fmt,
    p_text,
    sweep_number,
)
from steerbench.publish.verdicts import Standings

_WIDTH, _HEIGHT, _PAD = 520, 320, 40
"""The scatter plot's size and margin, in SVG pixels."""


def _point(r: pd.Series, x_metric: str, primary: str) -> dict[str, Any] | None:
    """A cell as a point of the scatter plot, or None when it lacks either number."""
    x, y = number(r, x_metric), number(r, primary)
    if x is None or y is None:
        return None
    strength = "unsteered" if r["is_unsteered"] else f"{r['strength']:g}"
    return {
        "cx": round(_PAD + x * (_WIDTH - 2 * _PAD), 1),
        "cy": round(_HEIGHT - _PAD - y * (_HEIGHT - 2 * _PAD), 1),
        "method": r["method"],
        "strength": strength,
        "label": f"{r['method']} @ {strength}: {primary} {y:.2f}, {x_metric} {x:.2f}",
    }


def pareto_points(rows: pd.DataFrame, target: str | None, task: Any) -> dict[str, Any]:
    """The task's primary metric (target set) against the first model-level metric (MMLU
    for the default config), as SVG coordinates for the page's scatter plot; every point
    carries its method and strength."""
    primary = task.metric
    x_metric = next((k for k in rows.columns if k.endswith("_delta")), None)
    x_metric = x_metric.removesuffix("_delta") if x_metric else primary
    points = [_point(r, x_metric, primary) for _, r in rows.iterrows()]
    return {
        "x_metric": x_metric,
        "y_metric": primary,
        "target": target,
        "points": [p for p in points if p is not None],
        "ticks": [
            {
                "value": f"{v:g}",
                "x": _PAD + v * (_WIDTH - 2 * _PAD),
                "y": _HEIGHT - _PAD - v * (_HEIGHT - 2 * _PAD),
            }
            for v in (0.0, 0.25, 0.5, 0.75, 1.0)
        ],
        "width": _WIDTH,
        "height": _HEIGHT,
        "pad": _PAD,
    }


def examples(
    generations: pd.DataFrame, target: str | None, boards: dict[str, str], per_cell: int = 2
) -> list[dict[str, str]]:
    """A few generations per cell for the page (first prompts of the target set), under
    their board's name (``board_labels``)."""
    if generations.empty:
        return []
    shown = generations[
        (generations["split"] == "evaluation") & (generations["eval_set"] == target)
    ]
    from steerbench.run.results import GENERATIONS_SCHEMA

    labels = [  # the metrics' text columns (a classifier's label), whatever they are
        c for c in shown.columns if c not in GENERATIONS_SCHEMA.names and shown[c].dtype == object
    ]
    rows = []
    for _, group in shown.groupby("cell_key", sort=False):
        for _, r in group.head(per_cell).iterrows():
            rows.append(
                {
                    "model": boards.get(r["cell_key"], r["model"]),
                    "method": r["method"],
                    "strength": "–" if pd.isna(r["strength"]) else f"{r['strength']:g}",
                    "prompt": r["prompt"],
                    "response": r["response"],
                    "label": ", ".join(str(r[c]) for c in labels if isinstance(r[c], str)),
                }
            )
    return rows


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as the template reads them (JSON values: NaN -> None, numpy -> Python)."""
    return json.loads(frame.to_json(orient="records"))


def render_page(standings: Standings, plots: dict[str, str], generations: pd.DataFrame) -> str:
    """``index.html``, from the same standings as the Markdown (``plots``: board -> figure
    file stem; ``generations``: the per-item outputs the examples come from)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("steerbench.publish", "templates"),
        autoescape=select_autoescape(["html"]),
    )
    table, target, models = standings.table, standings.target, standings.models
    sections = [
        {
            "model": v.model,
            "task": v.task,
            "chosen_on": chosen_text(v.chosen_on),
            "power": v.power,
            "rows": _records(v.ranking),
        }
        for v in standings.rankings
    ]
    first_task = standings.tasks[0]
    return env.get_template("leaderboard.html").render(
        models=models,
        tasks=standings.tasks,
        target=target,
        summary=standings.summary,
        summary_keys=standings.summary_keys,
        sections=sections,
        sweeps={m: _records(standings.sweep(m)) for m in models},
        validation_only={
            m: any(
                sweep_number(r, c.key).endswith(VALIDATION_MARK)
                for r in _records(standings.sweep(m))
                for c in standings.columns
            )
            for m in models
        },
        validation_note=VALIDATION_NOTE,
        sweep_number=sweep_number,
        pareto={m: pareto_points(standings.board(m), target, first_task) for m in models},
        columns=standings.columns,
        plots=plots,
        examples=examples(generations, target, dict(zip(table["cell_key"], table["model"]))),
        fmt=fmt,
        delta=delta_text,
        p_text=p_text,
        rank_rule=RANK_RULE,
        intervals=INTERVALS,
        describe=describe_constraint,
        strength=strength_text,
        no_strength=NO_STRENGTH,
    )
