"""The behaviours board as Markdown (``steerbench leaderboard behaviours``): the decisions
of ``behaviour_board`` rendered, every number with its interval and n, names escaped."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from steerbench.files import atomic_write_text
from steerbench.publish.behaviour_board import (
    DIRECTIONS,
    Behaviour,
    behaviour_dirs,
    dose_response,
    entanglement,
    heatmap,
    load_behaviour,
    method_matrix,
)
from steerbench.publish.markdown import md_cell
from steerbench.run.behaviour_tasks import behaviour_metric

SHOWN_ENTANGLEMENTS = 15


def _fmt(value: Any, spec: str = "+.2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def _sizes(behaviour: Behaviour) -> dict[tuple[str, str], int]:
    """(cell key, metric) -> items scored on the evaluation split."""
    rows = behaviour.frame[behaviour.frame["split"] == "evaluation"]
    return {
        (r.cell_key, r.metric): int(r.n - (0 if pd.isna(r.n_missing) else r.n_missing))
        for r in rows.itertuples()
    }


def _matrix_lines(behaviours: list[Behaviour]) -> list[str]:
    matrix = method_matrix(behaviours)
    names = [b.name for b in behaviours]
    lines = []
    for direction, arrow in DIRECTIONS:
        lines += [
            f"### {direction} ({arrow}): Δ score from the unsteered model",
            "",
            "| method | " + " | ".join(md_cell(n) for n in names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for (method, shown), row in matrix.iterrows():
            if shown != arrow:
                continue
            cells = [md_cell(row.get(n, "–")) for n in names]
            lines.append(f"| {md_cell(method)} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _task_lines(behaviour: Behaviour) -> list[str]:
    sizes = _sizes(behaviour)
    metric = behaviour_metric(behaviour.name)
    lines = [f"### {md_cell(behaviour.name)}", ""]
    for direction, _ in DIRECTIONS:
        verdict = behaviour.ranking(direction)
        lines += [
            f"**{md_cell(verdict.task.name)}** (strengths chosen on {verdict.chosen_on}; "
            f"reported on the held-out items)",
            "",
            f"| rank | method | strength | {md_cell(metric)} [95 % CI] | n "
            "| Δ vs unsteered [95 % CI] | p (Holm) | MMLU Δ |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for _, row in verdict.ranking.iterrows():
            strength = "–" if row["is_unsteered"] or row["failed"] else f"{row['strength']:g}"
            value = None if row["failed"] else row.get(metric)
            interval = (
                f"{value:.2f} [{row[f'{metric}_ci_low']:.2f}, {row[f'{metric}_ci_high']:.2f}]"
                if value is not None
                else "–"
            )
            delta = (
                f"{row['delta']:+.2f} [{row['delta_ci_low']:+.2f}, {row['delta_ci_high']:+.2f}]"
                if row["delta"] is not None
                else "–"
            )
            name = md_cell(row["method"]) + (" *(reference)*" if row["is_unsteered"] else "")
            n = "–" if row["failed"] else sizes.get((row["cell_key"], metric), "–")
            lines.append(
                f"| {verdict.mark(row)} | {name} | {strength} | {interval} | {n} | {delta} | "
                f"{_fmt(row['delta_p_holm'], '.3g')} | {_fmt(row.get('mmlu_delta'))} |"
            )
        failing = verdict.ranking[verdict.ranking["failed"].astype(bool)]
        for _, row in failing.iterrows():
            lines.append(
                f"- {md_cell(row['method'])}: no strength qualifies ({md_cell(row['why'])})"
            )
        if verdict.power:
            lines += ["", f"Power: {md_cell(verdict.power)}"]
        lines.append("")
    return lines


def _entanglement_lines(table: pd.DataFrame, figure: str | None) -> list[str]:
    lines = ["## Entanglement", ""]
    if table.empty:
        return [*lines, "No other behaviour was measured at the chosen strengths.", ""]
    if figure:
        lines += [f"![entanglement]({figure}.png)", ""]
    side = table[table["steered"] != table["measured"]]
    decided = side[side["p_holm"] < 0.05].sort_values("delta", key=abs, ascending=False)
    lines += [
        f"Off-diagonal paired tests: {len(side)}; decided at 5 % after Holm's correction: "
        f"{len(decided)}; the others are undecided at these n (not evidence of no effect).",
        "",
    ]
    if decided.empty:
        return lines
    lines += [
        "| steered | method @ strength | measured | Δ score [95 % CI] | n | p (Holm) |",
        "|---|---|---|---|---|---|",
    ]
    for r in decided.head(SHOWN_ENTANGLEMENTS).itertuples():
        lines.append(
            f"| {md_cell(r.steered)} {r.direction} | {md_cell(r.method)} @ {r.strength:g} | "
            f"{md_cell(r.measured)} | {r.delta:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}] | "
            f"{r.n} | {r.p_holm:.3g} |"
        )
    return [*lines, ""]


def _provenance(behaviours: list[Behaviour]) -> list[str]:
    frame = pd.concat([b.frame for b in behaviours], ignore_index=True)
    cells = frame.drop_duplicates("cell_key")
    machine = ", ".join(
        sorted({f"{r.device} / {r.dtype}" for r in cells.itertuples() if isinstance(r.device, str)})
    )
    models = ", ".join(md_cell(m) for m in dict.fromkeys(frame["model"]))
    minutes = float(cells["seconds"].fillna(0).sum()) / 60
    return [
        f"Model: {models}. Computed on {md_cell(machine)}; {len(cells)} cell parts, "
        f"{minutes:.1f} min of cell time (fitting and loading not included).",
        "",
    ]


def build_behaviour_board(results: Path, out: Path) -> Path:
    """``out``/README.md with the matrices and each behaviour's rankings, and the figures."""
    behaviours = [load_behaviour(d) for d in behaviour_dirs(results)]
    out.mkdir(parents=True, exist_ok=True)
    table = entanglement(behaviours)
    figure = heatmap(table, out)
    curves = dose_response(behaviours, out)
    lines = [
        "# steerbench: behaviours board",
        "",
        "Generated by `steerbench leaderboard behaviours` from the behaviours run in "
        "`results/` beside this file; do not edit.",
        "Each CAA behaviour is scored by p(matching) / (p(A) + p(B)) on its held-out A/B items "
        "(TruthfulQA by MC2 on its held-out questions); "
        "each method's strength per direction is chosen on the behaviour's validation items "
        "(disjoint from the contrast pairs it was fitted on), within the config's capability "
        "constraints, and must beat the unsteered model there. Δ and its interval are the "
        "paired difference from the unsteered model on the same items (paired t-test); ranks "
        "come from every paired test between methods, Holm-corrected: methods share a rank "
        "when the test cannot tell them apart.",
        "",
        *_provenance(behaviours),
        "## Method × behaviour",
        "",
        *_matrix_lines(behaviours),
        "## Per behaviour",
        "",
        *[line for b in behaviours for line in _task_lines(b)],
        *_entanglement_lines(table, figure),
        "## Dose-response",
        "",
        "Every swept strength on the validation items: the behaviour's score against the "
        "MMLU change (the cost axis), one curve per method through the unsteered point.",
        "",
        f"![dose-response]({curves}.png)",
        "",
    ]
    atomic_write_text(out / "README.md", "\n".join(lines))
    return out
