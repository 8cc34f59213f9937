"""Paired comparisons between cells: is a difference between two methods real?

Every pair of cells of a model (the unsteered model included) is compared on the prompts
both answered, per evaluation set and per-item metric, with a test and a 95 % interval of
the mean paired difference that always agree (the interval excludes 0 exactly when the
test rejects at 5 %):

- 0/1 outcomes: McNemar's score test (asymptotic, no continuity correction) and Tango's
  score interval for a difference of paired proportions, which inverts that same test.
  Fagerland, Lydersen & Laake (2013, 2014) recommend both: the exact conditional McNemar
  test is conservative at these n (a percentile bootstrap of 0/1 differences is too narrow).
- anything else: the paired t-test and its t interval (scipy's ``ttest_rel``), the same
  statistic for both.

Only the evaluation split is compared (validation prompts chose the strengths). Ranks are
built on these tests in ``steerbench.stats.ranking``, and what difference they can detect at all
in ``steerbench.stats.power``.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

IDENTITY_COLUMNS = {
    "schema_version",
    "cell_key",
    "model",
    "method",
    "strength",
    "split",
    "eval_set",
    "prompt_id",
    "category",
    "prompt",
    "response",
}
ALPHA = 0.05
Z = 1.959963984540054
"""The two-sided 95 % normal quantile."""


def _numeric(column: pd.Series) -> bool:
    """A per-item column of numbers or booleans (missing values allowed), not labels."""
    values = column.dropna()
    return not values.empty and all(
        isinstance(v, (bool, int, float, np.bool_, np.integer, np.floating)) for v in values
    )


def discordant(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(items where only ``a`` is 1, items where only ``b`` is 1)."""
    return int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact conditional McNemar p-value (1.0 with no discordance); reported for
    reference, the ranks use the score test that Tango's interval inverts."""
    from scipy.stats import binomtest

    only_a, only_b = discordant(a, b)
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def mcnemar_score(only_a: int, only_b: int) -> float:
    """Two-sided p-value of McNemar's score test, z = (b - c) / sqrt(b + c)."""
    from scipy.stats import norm

    if only_a + only_b == 0:
        return 1.0
    z = (only_a - only_b) / math.sqrt(only_a + only_b)
    return float(2 * norm.sf(abs(z)))


def _tango_statistic(delta: float, only_a: int, only_b: int, n: int) -> float:
    """Tango's (1998) score statistic for H0: p_a - p_b = delta (its restricted ML estimate
    of the discordant cell in closed form); at delta = 0 it is McNemar's z."""
    a, b = 2.0 * n, -only_a - only_b + (2.0 * n - only_a + only_b) * delta
    c = -only_b * delta * (1.0 - delta)
    q = (math.sqrt(max(b * b - 4.0 * a * c, 0.0)) - b) / (2.0 * a)
    variance = n * (2.0 * q + delta * (1.0 - delta))
    numerator = only_a - only_b - n * delta
    if variance <= 0.0:
        return 0.0 if numerator == 0 else math.copysign(math.inf, numerator)
    return numerator / math.sqrt(variance)


def tango_interval(only_a: int, only_b: int, n: int, *, z: float = Z) -> tuple[float, float]:
    """Tango's score interval of p_a - p_b from the discordant counts of ``n`` pairs: every
    delta that the score test does not reject. It is never a point (0 discordant pairs of
    40 give about [-0.088, 0.088]) and excludes 0 exactly when ``mcnemar_score`` < 5 %."""
    from scipy.optimize import brentq

    if n == 0:
        return math.nan, math.nan
    estimate = (only_a - only_b) / n
    edge = 1.0 - 1e-12

    def lower(d: float) -> float:
        return _tango_statistic(d, only_a, only_b, n) - z

    def upper(d: float) -> float:
        return _tango_statistic(d, only_a, only_b, n) + z

    low = -1.0 if lower(-edge) <= 0 else brentq(lower, -edge, estimate, xtol=1e-10)
    high = 1.0 if upper(edge) >= 0 else brentq(upper, estimate, edge, xtol=1e-10)
    return float(low), float(high)


def paired_t(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(p-value, interval low, interval high) of the paired t-test of mean(x - y)."""
    from scipy.stats import ttest_rel

    differences = x - y
    if np.all(differences == differences[0]):  # no spread: nothing to estimate it from
        d = float(differences[0])
        return (1.0 if d == 0 else 0.0), d, d
    result = ttest_rel(x, y)
    interval = result.confidence_interval(1 - ALPHA)
    return float(result.pvalue), float(interval.low), float(interval.high)


def compare_pair(x: np.ndarray, y: np.ndarray, binary: bool) -> dict:
    """The test and interval of one pair of paired per-item values (see the module)."""
    shared = {
        "discordant": int((x != y).sum()),
        "sd_difference": float(np.std(x - y, ddof=1)) if len(x) > 1 else math.nan,
    }
    if binary:
        only_a, only_b = discordant(x, y)
        low, high = tango_interval(only_a, only_b, len(x))
        p_value, p_exact, test = mcnemar_score(only_a, only_b), mcnemar_exact(x, y), "mcnemar-score"
    else:
        (p_value, low, high), p_exact, test = paired_t(x, y), math.nan, "paired-t"
    return {
        "test": test,
        "p_value": p_value,
        "p_exact": p_exact,
        "ci_low": low,
        "ci_high": high,
        **shared,
    }


def compare_cells(generations: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, evaluation set, metric, pair of cells); see the module docstring."""
    frame = generations
    if "split" in frame.columns:
        frame = frame[frame["split"] == "evaluation"]
    metrics = [c for c in frame.columns if c not in IDENTITY_COLUMNS and _numeric(frame[c])]
    rows = []
    for (model, eval_set), group in frame.groupby(["model", "eval_set"], sort=False):
        cells = group.drop_duplicates("cell_key")[["cell_key", "method", "strength"]]
        for metric in metrics:
            wide = group.pivot_table(
                index="prompt_id", columns="cell_key", values=metric, aggfunc="first"
            )
            if wide.empty:
                continue
            wide = wide.astype(float)
            binary = bool(np.isin(wide.to_numpy()[~np.isnan(wide.to_numpy())], (0, 1)).all())
            for a, b in itertools.combinations(cells.itertuples(index=False), 2):
                if a.cell_key not in wide or b.cell_key not in wide:
                    continue
                both = wide[[a.cell_key, b.cell_key]].dropna()
                if both.empty:
                    continue
                x, y = both[a.cell_key].to_numpy(), both[b.cell_key].to_numpy()
                rows.append(
                    {
                        "model": model,
                        "eval_set": eval_set,
                        "metric": metric,
                        "method_a": a.method,
                        "strength_a": a.strength,
                        "cell_a": a.cell_key,
                        "method_b": b.method,
                        "strength_b": b.strength,
                        "cell_b": b.cell_key,
                        "n": len(both),
                        "mean_a": float(x.mean()),
                        "mean_b": float(y.mean()),
                        "difference": float((x - y).mean()),
                        **compare_pair(x, y, binary),
                    }
                )
    return pd.DataFrame(rows)


def write_comparisons(results: Path) -> Path | None:
    """``comparisons.parquet`` from the results directory's generations (atomically)."""
    import io

    from steerbench.files import atomic_write_bytes

    path = results / "generations.parquet"
    if not path.is_file():
        return None
    table = compare_cells(pd.read_parquet(path))
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    atomic_write_bytes(results / "comparisons.parquet", buffer.getvalue())
    return results / "comparisons.parquet"


def pair(
    comparisons: pd.DataFrame | None, metric: str, eval_set: str | None, cell_a: str, cell_b: str
) -> dict[str, Any] | None:
    """The comparison of two cells on ``metric`` oriented as a - b (a dict), or None when
    they were not compared (e.g. results submitted without generations)."""
    if comparisons is None or comparisons.empty:
        return None
    same = (comparisons["metric"] == metric) & (comparisons["eval_set"] == eval_set)
    forward = same & (comparisons["cell_a"] == cell_a) & (comparisons["cell_b"] == cell_b)
    backward = same & (comparisons["cell_a"] == cell_b) & (comparisons["cell_b"] == cell_a)
    if forward.any():
        return comparisons[forward].iloc[0].to_dict()
    if backward.any():
        row = comparisons[backward].iloc[0].to_dict()
        low, high = row["ci_low"], row["ci_high"]
        return {**row, "difference": -row["difference"], "ci_low": -high, "ci_high": -low}
    return None
