"""What difference a table can detect at all: its n and minimum detectable differences.

A leaderboard that says "no significant difference" must also say how large a difference
it could have seen. For each task the tables state, for the primary metric and for every
constraint, the smallest paired difference from the unsteered model that the test the
ranks use detects at 5 % (two-sided) with 80 % power, at the n of the table and at the
spread actually observed: the median share of prompts on which a swept cell (every method
and strength of the model) and the unsteered model disagree (0/1 outcomes, McNemar; never
less than the difference itself, which needs that many discordant pairs), or the median
standard deviation of their paired differences (means, paired t). Absolute constraints
(quality >= 0.9) are stated as the half-width of the 95 % interval of a cell measured at
the bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import median

import pandas as pd

from steerbench.metric import MODEL_LEVEL
from steerbench.stats.comparisons import ALPHA, Z

POWER = 0.80


def mdd_paired_proportions(n: int, discordance: float) -> float:
    """Smallest difference of paired proportions that McNemar's test detects at 5 % with
    80 % power, for ``n`` pairs of which a share ``discordance`` differ (Connor 1987:
    n = (z_a sqrt(psi) + z_b sqrt(psi - d^2))^2 / d^2, solved for d). A difference d needs
    at least a share d of discordant pairs, so psi is max(discordance, d)."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    if n <= 0 or not 0 < discordance <= 1:
        return math.nan
    z_power = norm.ppf(POWER)

    def gap(d: float) -> float:
        psi = max(discordance, d)
        spread = Z * math.sqrt(psi) + z_power * math.sqrt(max(psi - d * d, 0.0))
        return spread / d - math.sqrt(n)

    return float(brentq(gap, 1e-9, 1.0)) if gap(1.0) < 0 else 1.0


def mdd_paired_means(n: int, sd_difference: float) -> float:
    """Smallest mean paired difference the paired t-test detects at 5 % with 80 % power,
    for ``n`` pairs whose differences have standard deviation ``sd_difference``
    (statsmodels' ``TTestPower``)."""
    from statsmodels.stats.power import TTestPower

    if n < 2 or not sd_difference > 0:
        return math.nan
    effect = TTestPower().solve_power(nobs=n, alpha=ALPHA, power=POWER)
    return float(effect * sd_difference)


@dataclass(frozen=True)
class Detectable:
    """The minimum detectable difference of one metric on one set, and what it assumed."""

    metric: str
    eval_set: str
    n: int
    difference: float
    basis: str


def detectable(
    comparisons: pd.DataFrame | None,
    metric: str,
    eval_set: str,
    unsteered: str,
    cells: list[str],
) -> Detectable | None:
    """The minimum detectable difference from the unsteered model's cell (``unsteered``) on
    ``metric`` of ``eval_set``, at the median n and spread of its comparisons with ``cells``."""
    if comparisons is None or comparisons.empty:
        return None
    others = set(cells) - {unsteered}
    rows = comparisons[
        (comparisons["metric"] == metric)
        & (comparisons["eval_set"] == eval_set)
        & (
            ((comparisons["cell_a"] == unsteered) & comparisons["cell_b"].isin(others))
            | ((comparisons["cell_b"] == unsteered) & comparisons["cell_a"].isin(others))
        )
    ]
    if rows.empty:
        return None
    n = int(median(rows["n"]))
    if (rows["test"] == "mcnemar-score").all():
        share = float(median(rows["discordant"] / rows["n"]))
        share = max(share, 1.0 / n)  # no disagreement anywhere: assume one prompt in n
        difference = mdd_paired_proportions(n, share)
        basis = f"median discordance with the unsteered model {share:.2f}"
    else:
        sd = (
            float(median(rows["sd_difference"].dropna()))
            if rows["sd_difference"].notna().any()
            else 0.0
        )
        difference = mdd_paired_means(n, sd)
        basis = f"median SD of paired differences {sd:.3g}"
    return Detectable(metric, eval_set, n, difference, basis)


def at_bound_half_width(metric: str, bound: float, n: int) -> float:
    """Half-width of the 95 % interval of a cell of ``n`` items whose mean is ``bound``, as
    ``metric`` computes its intervals (NaN for metrics without a finite range)."""
    from steerbench.metric import METRICS, bounded_mean_interval, wilson_interval

    if metric not in METRICS.names() or n <= 0:
        return math.nan
    cls = METRICS.get(metric)
    low, high = cls.value_range
    if not (math.isfinite(low) and math.isfinite(high)):
        return math.nan
    if cls.kind == "rate":
        lo, hi = wilson_interval(round(bound * n), n)
    else:
        lo, hi = bounded_mean_interval([bound] * n, (low, high))
    return (hi - lo) / 2


def power_statement(
    comparisons: pd.DataFrame | None,
    task,
    roles: Mapping[str, str | None],
    target: str | None,
    unsteered: str | None,
    cells: list[str],
    sizes: dict[tuple[str, str], int],
) -> str:
    """One paragraph: the task's n and minimum detectable differences (see the module).
    ``unsteered``: the unsteered model's cell key; ``sizes``: (eval_set, metric) -> n of the
    unsteered cell, for absolute constraints."""
    if unsteered is None or target is None:
        return ""

    def relative(metric: str, eval_set: str, label: str) -> str:
        found = detectable(comparisons, metric, eval_set, unsteered, cells)
        if found is None or math.isnan(found.difference):
            return f"{label}: not measured (no paired per-item results)"
        return f"{label}: n = {found.n}, {found.difference:.2f} ({found.basis})"

    where = {"model": MODEL_LEVEL, "target": target}
    shown = task.metric if target == MODEL_LEVEL else f"{task.metric} ({target})"
    parts = [relative(task.metric, target, shown)]
    for constraint in task.constraints:
        sets = (
            [where[constraint.role]]
            if constraint.role in where
            else [name for name, role in roles.items() if role == constraint.role]
        )
        for eval_set in sets:
            label = constraint.metric + ("" if eval_set == MODEL_LEVEL else f" ({eval_set})")
            absolute = [b for b in (constraint.min, constraint.max) if b is not None]
            if absolute:
                n = sizes.get((eval_set, constraint.metric), 0)
                width = at_bound_half_width(constraint.metric, absolute[0], n)
                if not math.isnan(width):
                    parts.append(f"{label} at the bound {absolute[0]:g}: n = {n}, ±{width:.2f}")
            if constraint.max_drop is not None or constraint.max_rise is not None:
                parts.append(relative(constraint.metric, eval_set, label))
    return (
        "Minimum detectable differences from the unsteered model (paired, two-sided 5 %, "
        "80 % power; an absolute constraint: the 95 % interval's half-width at its bound): "
        + "; ".join(dict.fromkeys(parts))
        + "."
    )
