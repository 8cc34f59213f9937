"""The leaderboard: Markdown and a static HTML page generated from results Parquet files.

``build`` reads results directories (and everything submitted to ``leaderboard/results/``)
and, for each model and each task of the config (``tasks:``), picks every method's strength
on the validation split, ranks the methods on the evaluation split and marks the ties a
paired test cannot break (``steerbench.stats.comparisons``). It writes ``README.md`` (a summary of
ranks, then per model each task's ranking and the full sweep), ``index.html`` (one static
page: model and task switch, sortable tables, a scatter plot with tooltips, example
generations; all model text is HTML-escaped by Jinja2's autoescaping) and the plots as PNG
and SVG. Columns come from what the results hold, named by set: no metric is special-cased.
``submit`` validates a results file (schema and provenance) before adding it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from steerbench.errors import SteerbenchError
from steerbench.files import atomic_write_bytes, atomic_write_text, save_figure
from steerbench.metric import MODEL_LEVEL
from steerbench.publish.markdown import md_cell
from steerbench.run.results import read_results_file
from steerbench.stats.power import power_statement

log = logging.getLogger(__name__)


def _results_paths(sources: list[Path]) -> list[Path]:
    paths = []
    for source in sources:
        path = source / "results.parquet" if source.is_dir() else source
        if source.is_dir() and not path.is_file():
            paths += sorted(source.glob("*.parquet"))
            continue
        if not path.is_file():
            raise SteerbenchError(f"no results.parquet in {source}; run `steerbench run` first")
        paths.append(path)
    return paths


def load_results(sources: list[Path], submitted: list[Path] = ()) -> pd.DataFrame:
    """Every row of the official ``sources``, then of the ``submitted`` files in submission
    order, each file validated like the runner's own results. Official rows are never
    changed: a submitted file that reuses an official cell key is left out with a warning.
    Submitted rows are marked (``submission``: the file's name) and ranked on a board of
    their own (``board_labels``); between submissions the earlier one keeps a cell."""
    frames = [read_results_file(path).to_pandas() for path in _results_paths(sources)]
    official = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    official_keys = set(official["cell_key"]) if not official.empty else set()
    if not official.empty:
        official["submission"] = None
    for path in submitted:
        frame = read_results_file(path, submission=True).to_pandas()
        claimed = sorted(set(frame["cell_key"]) & official_keys)
        if claimed:
            log.warning(
                "%s reuses official cell key(s) %s; the submission is left out (official "
                "results cannot be changed)",
                path.name,
                ", ".join(claimed[:3]),
            )
            continue
        frames.append(frame.assign(submission=path.stem))
    if not frames:
        raise SteerbenchError("no results to build a leaderboard from")
    frame = pd.concat([f if "submission" in f else f.assign(submission=None) for f in frames])
    frame = frame.reset_index(drop=True)
    deduplicated = frame.drop_duplicates(
        subset=["cell_key", "split", "eval_set", "metric"], keep="first"
    )
    if len(deduplicated) < len(frame):
        log.warning(
            "%d result rows repeat a cell that an earlier file already has; the earlier "
            "(official first, then submissions in the order submitted) ones are kept",
            len(frame) - len(deduplicated),
        )
    return deduplicated.reset_index(drop=True)


@dataclass(frozen=True)
class Column:
    """One displayed number: ``key`` in the cell table, its header and format."""

    key: str
    header: str
    digits: int = 2
    signed: bool = False
    interval: bool = False


def _roles(frame: pd.DataFrame) -> dict[str, str]:
    """eval_set -> role, from the rows (version-1 files without roles: the first set is
    the target, the others over-refusal, as a config without ``roles`` says)."""
    roles: dict[str, str] = {}
    sets = [s for s in dict.fromkeys(frame["eval_set"]) if s != MODEL_LEVEL]
    for name in sets:
        known = frame.loc[(frame["eval_set"] == name) & frame["role"].notna(), "role"]
        roles[name] = known.iloc[0] if not known.empty else None
    if sets and not any(roles.values()):
        roles = {name: "target" if i == 0 else "over_refusal" for i, name in enumerate(sets)}
    return roles


def target_set(frame: pd.DataFrame) -> str | None:
    return next((s for s, role in _roles(frame).items() if role == "target"), None)


def _key(eval_set: str, metric: str, target: str | None) -> str:
    return metric if eval_set in (MODEL_LEVEL, target) else f"{metric}:{eval_set}"


def columns(frame: pd.DataFrame) -> list[Column]:
    """What the tables show, in order: the target set's metrics (with intervals), then each
    other set's, then model-level metrics with their change from the unsteered model;
    whatever metrics the results hold, named by set (no metric is special-cased here)."""
    evaluation = frame[frame["split"] == "evaluation"]
    target = target_set(evaluation)
    order = [target] + [s for s in _roles(evaluation) if s != target] + [MODEL_LEVEL]
    out = []
    for eval_set in order:
        metrics = dict.fromkeys(evaluation.loc[evaluation["eval_set"] == eval_set, "metric"])
        for metric in metrics:
            key = _key(eval_set, metric, target)
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


def cell_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: every evaluation-split number as a column (see ``columns``), and
    the target set's numbers on the validation split as ``validation:<metric>``. Its
    ``model`` column is the cell's board (``board_labels``)."""
    target = target_set(frame[frame["split"] == "evaluation"])
    boards = board_labels(frame)
    rows = []
    for key, cell in frame.groupby("cell_key", sort=False):
        first = cell.iloc[0]
        row = {
            "model": boards[key],
            "method": first["method"],
            "method_name": first["method_name"],
            "strength": None if pd.isna(first["strength"]) else float(first["strength"]),
            "is_unsteered": bool(first["is_unsteered"]),
            "cell_key": key,
            "seconds": float(first["seconds"]) if not pd.isna(first["seconds"]) else None,
        }
        for _, r in cell.iterrows():
            value = None if pd.isna(r["value"]) else float(r["value"])
            if r["split"] == "validation":
                if r["eval_set"] == target:
                    row[f"validation:{r['metric']}"] = value
                continue
            name = _key(r["eval_set"], r["metric"], target)
            row[name] = value
            row[f"{name}_ci_low"] = None if pd.isna(r["ci_low"]) else float(r["ci_low"])
            row[f"{name}_ci_high"] = None if pd.isna(r["ci_high"]) else float(r["ci_high"])
        rows.append(row)
    table = pd.DataFrame(rows)
    for model_level in frame.loc[frame["eval_set"] == MODEL_LEVEL, "metric"].unique():
        baseline = table[table["is_unsteered"]].groupby("model")[model_level].first()
        table[f"{model_level}_delta"] = table.apply(
            lambda r, m=model_level, base=baseline: (
                None
                if pd.isna(r.get(m)) or pd.isna(base.get(r["model"]))
                else r[m] - base[r["model"]]
            ),
            axis=1,
        )
    table["reference"] = table["is_unsteered"] | table["method_name"].map(_is_control)
    return table.astype(object).where(table.notna(), None)


def _is_control(name: str) -> bool:
    from steerbench.method import METHODS

    return name in METHODS.names() and bool(METHODS.get(name).is_control)


def _number(row, key: str) -> float | None:
    value = row.get(key) if hasattr(row, "get") else None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _constraint_keys(constraint, roles: dict[str, str]) -> list[str]:
    """The cell-table columns a constraint reads (every set of an over-refusal role)."""
    if constraint.role in ("model", "target"):
        return [constraint.metric]
    return [
        f"{constraint.metric}:{name}" for name, role in roles.items() if role == constraint.role
    ]


def constraint_failure(row, baseline, constraint, roles: dict[str, str]) -> str | None:
    """How a cell breaks a task constraint, with its numbers ("mmlu drops 0.12 > 0.05"),
    or None when it respects it. Target-set constraints read the validation split where
    the run measured it (the strength is chosen there); the others read the evaluation
    numbers. A number that is missing fails the constraint."""
    for key in _constraint_keys(constraint, roles):
        validation = f"validation:{constraint.metric}"
        if constraint.role == "target" and _number(row, validation) is not None:
            key = validation
        value, reference = _number(row, key), _number(baseline, key)
        label = key.replace("validation:", "validation ")
        if ":" in label:  # "refusal:benign" -> "refusal (benign)"
            label = "{} ({})".format(*label.split(":", 1))
        if value is None:
            return f"{label} not measured"
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
            if reference is None:
                return f"{label} of the unsteered model not measured"
            if sign * (value - reference) > bound + 1e-9:
                return f"{label} {verb} {abs(value - reference):.2f} > {bound:g}"
    return None


def meets(row, baseline, constraint, roles: dict[str, str]) -> bool:
    """Whether a cell respects a task constraint (see ``constraint_failure``)."""
    return constraint_failure(row, baseline, constraint, roles) is None


def why_no_strength(rows: pd.DataFrame, baseline, task, roles: dict[str, str]) -> str:
    """Why none of a method's strengths qualifies for a task, strength by strength and with
    the numbers: the first constraint it breaks, or that it does not move the primary
    metric the task's way from the unsteered model on the split that chooses."""
    key = f"validation:{task.metric}"
    key = key if key in rows.columns and rows[key].notna().any() else task.metric
    reference = _number(baseline, key)
    sign = 1 if task.goal == "minimize" else -1
    reasons = []
    for _, row in rows.sort_values("strength", na_position="first").iterrows():
        failure = next(
            (f for c in task.constraints if (f := constraint_failure(row, baseline, c, roles))),
            None,
        )
        value = _number(row, key)
        beaten = value is not None and reference is not None and sign * (value - reference) >= 0
        if failure is None and beaten:
            where = key.replace("validation:", "validation ")
            side = "below" if sign > 0 else "above"
            failure = f"{where} {value:.2f}, not {side} the unsteered {reference:.2f}"
        reasons.append(f"{strength_text(row)}: {failure or 'no number to choose by'}")
    return "; ".join(reasons)


def select_strength(rows: pd.DataFrame, baseline, task, roles: dict[str, str]):
    """A method's cell for a task: among its strengths that meet every constraint and move
    the primary metric the task's way from the unsteered model, the best primary metric on
    the validation split when the run has one (so the reported, evaluation number is not
    the one it was picked by), else on evaluation. Returns (row or None, the split that
    chose it)."""
    key = f"validation:{task.metric}"
    split = "validation" if key in rows.columns and rows[key].notna().any() else "evaluation"
    key = key if split == "validation" else task.metric
    pool = [
        r for _, r in rows.iterrows() if all(meets(r, baseline, c, roles) for c in task.constraints)
    ]
    pool = [r for r in pool if _number(r, key) is not None]
    sign = 1 if task.goal == "minimize" else -1
    reference = _number(baseline, key)
    if reference is not None:  # a strength must beat doing nothing, on the same split
        pool = [r for r in pool if sign * (_number(r, key) - reference) < 0]
    if not pool:
        return None, split
    return min(pool, key=lambda r: (sign * _number(r, key), abs(r["strength"] or 0))), split


def rank_task(
    table: pd.DataFrame,
    task,
    roles: dict[str, str],
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

    baseline = table[table["is_unsteered"]]
    baseline = baseline.iloc[0] if not baseline.empty else {}
    chosen, failing, split = [], [], "evaluation"
    for _, rows in table.groupby("method", sort=False):
        if rows["is_unsteered"].all():
            chosen.append(rows.iloc[0])
            continue
        row, split = select_strength(rows, baseline, task, roles)
        if row is not None:
            chosen.append(row)
        else:
            failing.append(rows.iloc[0].copy())
            failing[-1]["strength"] = None
            failing[-1]["why"] = why_no_strength(rows, baseline, task, roles)
    out = pd.DataFrame(chosen) if chosen else table.iloc[:0]
    sign = 1 if task.goal == "minimize" else -1
    out = out.assign(_key=sign * pd.to_numeric(out.get(task.metric), errors="coerce"))
    out = out.sort_values("_key", na_position="last", kind="stable").drop(columns="_key")
    keys = list(out["cell_key"]) if "cell_key" in out else []
    ranking = rank_cells(keys, comparisons, task.metric, target, minimize=task.goal == "minimize")
    reference = baseline.get("cell_key") if len(baseline) else None
    versus = [
        ranking.versus(key, reference) if reference and key != reference else None for key in keys
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


RANK_RULE = (
    "Ranks: every pair of ranked methods is compared on the same evaluation prompts "
    "(McNemar's score test for 0/1 outcomes, the paired t-test for means), the p-values of "
    "the task's pairs are corrected together (Holm), and a method's rank is 1 + the number "
    "of methods significantly better than it (never above one that is): methods share a "
    "rank only if no corrected test separates them. Δ vs unsteered: the paired difference "
    "with its 95 % interval (Tango's score interval for 0/1 outcomes, t otherwise; "
    "uncorrected) and its Holm-corrected p (* below 5 %)."
)
"""The rule the rankings use, stated in the leaderboard's text."""

INTERVALS = (
    "Wilson for rates, a Wilson-type score interval for means of bounded values, "
    "bootstrap for unbounded means"
)


def chosen_text(split: str) -> str:
    """Where a task's strengths were chosen, said plainly when it was not on validation."""
    if split == "validation":
        return "Strengths chosen on the validation split."
    return (
        "**No validation split in this run: strengths were chosen on the evaluation prompts "
        "themselves, so the numbers shown are optimistic.**"
    )


def _sizes(evaluation: pd.DataFrame, reference: str | None) -> dict[tuple[str, str], int]:
    """(eval_set, metric) -> how many items the unsteered cell scored."""
    rows = evaluation[evaluation["cell_key"] == reference]
    return {
        (r.eval_set, r.metric): int(r.n - (r.n_missing if not pd.isna(r.n_missing) else 0))
        for r in rows.itertuples()
    }


def _fmt(value, digits: int = 2, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


NO_STRENGTH = "no strength improves on the unsteered model within the constraints"
"""What a ranking shows for a method none of whose strengths qualifies for the task."""


def strength_text(row) -> str:
    """A cell's strength as the tables show it ("–" for the unsteered model)."""
    if row.get("is_unsteered") or row.get("strength") is None:
        return "–"
    return f"{row['strength']:g}"


def delta_text(row) -> str:
    """A ranked row's paired difference from the unsteered model: "d [low, high]"."""
    if row.get("delta") is None:
        return "–"
    low, high = row.get("delta_ci_low"), row.get("delta_ci_high")
    return f"{_fmt(row['delta'], 2, True)} [{_fmt(low, 2, True)}, {_fmt(high, 2, True)}]"


def p_text(row) -> str:
    """The Holm-corrected p of a row's difference from the unsteered model, "*" if < 5 %."""
    p = row.get("delta_p_holm")
    if p is None:
        return "–"
    return ("< 0.001" if p < 0.001 else f"{p:.3f}") + (" *" if row.get("delta_significant") else "")


def _markdown_rows(
    rows: pd.DataFrame, shown: list[Column], *, rank: bool = False, primary: str = ""
) -> list[str]:
    """Table rows; a ranking (``rank``) also shows each method's paired difference from
    the unsteered model on the ``primary`` metric and its Holm-corrected p."""
    head = ["rank"] if rank else []
    head += ["method", "strength"]
    if rank:
        head += [f"Δ {primary} vs unsteered [95% CI]", "p (Holm)"]
    head += [f"{c.header} [95% CI]" if c.interval else c.header for c in shown]
    lines = ["| " + " | ".join(md_cell(h) for h in head) + " |"]
    lines.append("|" + "|".join("---" if h == "method" else "---:" for h in head) + "|")
    for _, r in rows.iterrows():
        cells = [f"{r['rank']}{' ' + r['tie'] if r['tie'] else ''}"] if rank else []
        name = md_cell(r["method"]) + (" *(reference)*" if r.get("reference") else "")
        if r.get("failed"):
            blanks = len(shown) + (2 if rank else 0)
            why = f" ({md_cell(r['why'])})" if r.get("why") else ""
            cells += [name, NO_STRENGTH + why] + ["" for _ in range(blanks)]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        cells += [name, strength_text(r)]
        if rank:
            cells += [delta_text(r), p_text(r)]
        for c in shown:
            text = _fmt(r.get(c.key), c.digits, c.signed)
            if c.interval:
                low, high = r.get(f"{c.key}_ci_low"), r.get(f"{c.key}_ci_high")
                text += f" [{_fmt(low, c.digits)}, {_fmt(high, c.digits)}]"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def summary_table(results: Path) -> str:
    """The per-cell table as Markdown (printed at the end of ``steerbench run``)."""
    frame = load_results([results])
    table = cell_table(frame)
    return "\n".join(
        _markdown_rows(table.sort_values(["model", "method", "strength"]), columns(frame))
    )


def file_stem(name: str) -> str:
    """A file name for ``name`` that stays inside its folder and is unique to it: the name
    itself when it is already a plain file name, else its plain characters plus a hash of
    the whole name (so "a/b" and "a_b", or "." and "_", never share a file)."""
    import re

    plain = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:60].lstrip(".")
    if plain == name and plain:
        return plain
    return f"{plain or 'model'}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}"


def plot(table: pd.DataFrame, out: Path, task) -> list[str]:
    """Per model, the task's primary metric against each metric its constraints bound on
    the target set or the model (refusal vs quality and vs MMLU for the default tasks), one
    curve per method."""
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
        axes[0][0].legend(fontsize=8)
        fig.suptitle(model)
        fig.tight_layout()
        save_figure(fig, out / slug)
        plt.close(fig)
        names.append(slug)
    return names


def _generations(sources: list[Path]) -> pd.DataFrame:
    frames = []
    for source in sources:
        path = source / "generations.parquet" if source.is_dir() else None
        if path is not None and path.is_file():
            frames.append(pd.read_parquet(path))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not frame.empty and "split" not in frame.columns:
        frame["split"] = "evaluation"
    return frame


def examples(
    generations: pd.DataFrame, target: str | None, boards: dict[str, str], per_cell: int = 2
) -> list[dict]:
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


def tasks_for(sources: list[Path]) -> list:
    """The tasks of the first results directory whose resolved config declares them, else
    the shipped default config's (submitted files carry no config)."""
    from steerbench.run.config import default_tasks_document, load_yaml, parse_tasks

    for source in sources:
        path = source / "config.resolved.yaml" if source.is_dir() else None
        if path is not None and path.is_file():
            document = load_yaml(path) or {}
            if not isinstance(document, dict):
                raise SteerbenchError(f"{path} is not a config document; rerun the run")
            if document.get("tasks"):
                return parse_tasks(document["tasks"])
    return parse_tasks(default_tasks_document())


def pareto_points(rows: pd.DataFrame, target: str | None, task) -> dict:
    """The task's primary metric (target set) against the first model-level metric (MMLU
    for the default config), as SVG coordinates for the page's scatter plot; every point
    carries its method and strength."""
    primary = task.metric
    x_metric = next((k for k in rows.columns if k.endswith("_delta")), None)
    x_metric = x_metric.removesuffix("_delta") if x_metric else primary
    width, height, pad = 520, 320, 40
    points = []
    for _, r in rows.iterrows():
        x, y = _number(r, x_metric), _number(r, primary)
        if x is None or y is None:
            continue
        strength = "unsteered" if r["is_unsteered"] else f"{r['strength']:g}"
        points.append(
            {
                "cx": round(pad + x * (width - 2 * pad), 1),
                "cy": round(height - pad - y * (height - 2 * pad), 1),
                "method": r["method"],
                "strength": strength,
                "label": f"{r['method']} @ {strength}: {primary} {y:.2f}, {x_metric} {x:.2f}",
            }
        )
    return {
        "x_metric": x_metric,
        "y_metric": primary,
        "target": target,
        "points": points,
        "ticks": [
            {
                "value": f"{v:g}",
                "x": pad + v * (width - 2 * pad),
                "y": height - pad - v * (height - 2 * pad),
            }
            for v in (0.0, 0.25, 0.5, 0.75, 1.0)
        ],
        "width": width,
        "height": height,
        "pad": pad,
    }


README_START, README_END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"


def update_readme(readme: Path, section: list[str]) -> None:
    """Replace what lies between the leaderboard markers of a project README with
    ``section`` (generated tables, never edited by hand), atomically."""
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise SteerbenchError(
            f"{readme} has no {README_START} ... {README_END} markers; add them where the "
            f"tables should go"
        )
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    atomic_write_text(
        readme, head + README_START + "\n" + "\n".join(section) + "\n" + README_END + tail
    )


def build(sources: list[Path], out: Path, *, readme: Path | None = None) -> Path:
    """Write ``README.md``, ``index.html`` and the plots: per model, each task's ranking
    and the full sweep; a cross-model summary of ranks first. With ``readme``, the first
    model's task rankings also replace the tables between that file's leaderboard markers."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    from steerbench.stats.comparisons import compare_cells

    if out.exists() and not out.is_dir():
        raise SteerbenchError(f"--out {out} is a file; give the leaderboard's directory")
    if readme is not None and not readme.is_file():
        raise SteerbenchError(f"--readme {readme} does not exist; give the README to update")
    frame = load_results(sources, submissions(out))
    table = cell_table(frame)
    shown = columns(frame)
    evaluation = frame[frame["split"] == "evaluation"]
    target, roles = target_set(evaluation), _roles(evaluation)
    generations = _generations(sources)
    comparisons = compare_cells(generations) if not generations.empty else None
    tasks = tasks_for(sources)
    out.mkdir(parents=True, exist_ok=True)
    plots = plot(table, out, tasks[0])
    models = list(dict.fromkeys(table["model"]))

    sections, summary = [], {}
    for model in models:
        rows = table[table["model"] == model]
        for task in tasks:
            ranking, chosen_on = rank_task(rows, task, roles, target, comparisons)
            reference = rows.loc[rows["is_unsteered"].astype(bool), "cell_key"]
            reference = reference.iloc[0] if not reference.empty else None
            power = power_statement(  # at the spread every swept cell shows vs unsteered
                comparisons,
                task,
                roles,
                target,
                reference,
                list(rows["cell_key"]),
                _sizes(evaluation, reference),
            )
            sections.append(
                {
                    "model": model,
                    "task": task,
                    "ranking": ranking,
                    "chosen_on": chosen_text(chosen_on),
                    "power": power,
                }
            )
            for _, r in ranking.iterrows():
                mark = "–" if r["failed"] else f"{r['rank']}{' ' + r['tie'] if r['tie'] else ''}"
                summary.setdefault(r["method"], {})[(model, task.name)] = mark

    lines = [
        "# steerbench leaderboard",
        "",
        "Generated by `steerbench leaderboard build`; do not edit by hand. Every number is "
        f"measured on the evaluation split. Refusal ({md_cell(target)}) is the keyword refusal "
        "rate "
        "on held-out harmful prompts (degenerate outputs counted separately) with its 95 % "
        f"interval ({INTERVALS}); the other sets are over-refusal checks; Δ is against the "
        "unsteered model. Each task ranks every method at the strength with the best primary "
        "metric on the validation split (disjoint prompts) among those meeting the task's "
        f"constraints. {RANK_RULE} *(reference)*: the unsteered model and control methods.",
        "",
        "## Summary: rank per model and task",
        "",
    ]
    keys = [(m, t.name) for m in models for t in tasks]
    lines.append("| method | " + " | ".join(f"{md_cell(m)}: {t}" for m, t in keys) + " |")
    lines.append("|---|" + "---:|" * len(keys))
    for method, marks in summary.items():
        lines.append(f"| {md_cell(method)} | " + " | ".join(marks.get(k, "–") for k in keys) + " |")
    lines.append("")
    headline: list[str] = []
    for model in models:
        lines += [f"## {md_cell(model)}", ""]
        for section in sections:
            if section["model"] != model:
                continue
            task = section["task"]
            limits = "; ".join(_describe(c) for c in task.constraints) or "none"
            description = task.description.rstrip(".")
            lines += [
                f"### {md_cell(task.name)}: {task.goal} {md_cell(task.metric)} ({md_cell(target)})",
                "",
                f"{md_cell(description)}. Constraints: {md_cell(limits)}. {section['chosen_on']}",
                "",
            ]
            if section["power"]:
                lines += [md_cell(section["power"]), ""]
            table_lines = _markdown_rows(section["ranking"], shown, rank=True, primary=task.metric)
            lines += [*table_lines, ""]
            if model == models[0]:
                headline += [f"**{md_cell(task.name)}** ({md_cell(model)}):", ""]
                headline += [md_cell(section["power"]), ""] if section["power"] else []
                headline += [*table_lines, ""]
        lines += ["### Full sweep", ""]
        lines += _markdown_rows(
            table[table["model"] == model].sort_values(["method", "strength"]), shown
        )
        slug = plots[models.index(model)]
        lines += ["", f"![refusal vs quality and MMLU]({slug}.svg)", ""]
    atomic_write_text(out / "README.md", "\n".join(lines) + "\n")

    env = Environment(
        loader=PackageLoader("steerbench.publish", "templates"),
        autoescape=select_autoescape(["html"]),
    )
    html = env.get_template("leaderboard.html").render(
        models=models,
        tasks=tasks,
        target=target,
        summary=summary,
        summary_keys=keys,
        sections=[
            {**s, "rows": json.loads(s["ranking"].to_json(orient="records"))} for s in sections
        ],
        sweeps={
            m: json.loads(
                table[table["model"] == m]
                .sort_values(["method", "strength"])
                .to_json(orient="records")
            )
            for m in models
        },
        pareto={m: pareto_points(table[table["model"] == m], target, tasks[0]) for m in models},
        columns=shown,
        plots=dict(zip(models, plots)),
        examples=examples(generations, target, dict(zip(table["cell_key"], table["model"]))),
        fmt=_fmt,
        delta=delta_text,
        p_text=p_text,
        rank_rule=RANK_RULE,
        intervals=INTERVALS,
        describe=_describe,
        strength=strength_text,
        no_strength=NO_STRENGTH,
    )
    atomic_write_text(out / "index.html", html)
    if readme is not None:
        update_readme(readme, headline[:-1])
    return out


def _describe(constraint) -> str:
    where = {"target": "", "model": "", "over_refusal": " on every over-refusal set"}
    parts = []
    for bound, text in (
        (constraint.min, "≥ {:g}"),
        (constraint.max, "≤ {:g}"),
        (constraint.max_drop, "drops ≤ {:g}"),
        (constraint.max_rise, "rises ≤ {:g}"),
    ):
        if bound is not None:
            parts.append(text.format(bound))
    return f"{constraint.metric}{where[constraint.role]} " + " and ".join(parts)


PUBLISHED_FILES = (
    "results.parquet",
    "generations.parquet",
    "comparisons.parquet",
    "config.resolved.yaml",
    "splits.json",
)
"""What ``publish`` copies of a results directory: everything the tables are built from."""


def published_sources(leaderboard: Path) -> list[Path]:
    """The results directories published into ``<leaderboard>/results/`` (one folder per
    run; submitted files lie beside them as ``<hash>.parquet``)."""
    folder = leaderboard / "results"
    return sorted(p for p in folder.glob("*") if (p / "results.parquet").is_file())


def publish(results: Path, leaderboard: Path, name: str | None = None) -> Path:
    """Copy a results directory's tables into ``<leaderboard>/results/<name>/`` (default:
    the directory's name), so the published leaderboard is rebuilt from data in the repo;
    ``comparisons.parquet`` is recomputed from the generations with this release's tests."""
    import io

    from steerbench.stats.comparisons import compare_cells

    if not (results / "results.parquet").is_file():
        raise SteerbenchError(f"no results.parquet in {results}; run `steerbench run` first")
    if not (results / "generations.parquet").is_file():
        raise SteerbenchError(
            f"no generations.parquet in {results}: the published tables need the per-item "
            f"results for their paired tests; rerun `steerbench run --results {results}`"
        )
    read_results_file(results / "results.parquet")
    name = name or results.resolve().name
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        raise SteerbenchError(f"cannot publish under the name {name!r}; pass --name NAME")
    target = leaderboard / "results" / name
    target.mkdir(parents=True, exist_ok=True)
    for file in PUBLISHED_FILES:
        source = results / file
        if file == "comparisons.parquet":
            buffer = io.BytesIO()
            compare_cells(pd.read_parquet(results / "generations.parquet")).to_parquet(
                buffer, index=False
            )
            atomic_write_bytes(target / file, buffer.getvalue())
        elif source.is_file():
            atomic_write_bytes(target / file, source.read_bytes())
    return target


LEDGER = "SUBMISSIONS.json"
"""``<leaderboard>/results/SUBMISSIONS.json``: the submitted files in the order submitted."""


def submissions(leaderboard: Path) -> list[Path]:
    """The submitted files, in submission order (the ledger's), then any the ledger does not
    list (copied in by hand), by name."""
    folder = leaderboard / "results"
    if not folder.is_dir():
        return []
    present = {p.name: p for p in folder.glob("*.parquet")}
    ledger = folder / LEDGER
    ordered: list[str] = []
    if ledger.is_file():
        try:
            entries = json.loads(ledger.read_text(encoding="utf-8"))
            ordered = [e["file"] for e in entries if isinstance(e, dict) and "file" in e]
        except (ValueError, TypeError) as err:
            raise SteerbenchError(f"{ledger} is damaged ({err}); restore it from git") from err
    names = [n for n in dict.fromkeys(ordered) if n in present]
    names += sorted(set(present) - set(names))
    return [present[n] for n in names]


def submit(path: Path, leaderboard: Path) -> Path:
    """Validate a results.parquet and add it to ``leaderboard/results/``.

    The stored name is the hash of the file's bytes, derived here and never from anything
    inside the file, so a submission cannot choose where it lands, overwrite another
    submission, or be added twice; a file that reuses a cell key of the published results
    is refused; its place in the submission order is recorded in the ledger."""
    table = read_results_file(path, submission=True)
    official = {
        key
        for source in published_sources(leaderboard)
        for key in pd.read_parquet(source / "results.parquet", columns=["cell_key"])["cell_key"]
    }
    claimed = sorted(set(table.column("cell_key").to_pylist()) & official)
    if claimed:
        raise SteerbenchError(
            f"{path} reuses cell key {claimed[0]} of the published results; a submission can "
            f"add cells, never restate an official one"
        )
    data = path.read_bytes()
    target = leaderboard / "results" / f"{hashlib.sha256(data).hexdigest()[:20]}.parquet"
    if target.exists():
        raise SteerbenchError(f"{path} was already submitted (as {target}); nothing to do")
    atomic_write_bytes(target, data)
    ledger = leaderboard / "results" / LEDGER
    entries = [{"file": p.name} for p in submissions(leaderboard) if p != target]
    entries.append({"file": target.name})
    atomic_write_text(ledger, json.dumps(entries, indent=1) + "\n")
    return target
