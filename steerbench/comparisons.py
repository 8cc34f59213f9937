"""Paired comparisons between cells: is a difference between two methods real?

Every pair of cells of a model (the unsteered model included) is compared on the prompts
both answered, per evaluation set and per-item metric: the mean paired difference with a
seeded 95 % paired-bootstrap interval, and a test: McNemar's exact test for 0/1 outcomes
(the binomial test on the discordant pairs) and the Wilcoxon signed-rank test otherwise.
Only the evaluation split is compared (validation prompts chose the strengths).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd

from steerbench.metric import BOOTSTRAP_SAMPLES

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


def _numeric(column: pd.Series) -> bool:
    """A per-item column of numbers or booleans (missing values allowed), not labels."""
    values = column.dropna()
    return not values.empty and all(
        isinstance(v, (bool, int, float, np.bool_, np.integer, np.floating)) for v in values
    )


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes (1.0 with no discordance)."""
    from scipy.stats import binomtest

    only_a = int(((a == 1) & (b == 0)).sum())
    only_b = int(((a == 0) & (b == 1)).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def wilcoxon(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import wilcoxon as signed_rank

    if np.all(a == b):
        return 1.0
    return float(signed_rank(a, b).pvalue)


def paired_bootstrap(
    differences: np.ndarray, *, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES
) -> tuple[float, float]:
    """95 % percentile interval of the mean paired difference, resampling prompts."""
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, differences.size, (samples, differences.size))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def compare_cells(generations: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
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
                low, high = paired_bootstrap(x - y, seed=seed)
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
                        "n": int(len(both)),
                        "mean_a": float(x.mean()),
                        "mean_b": float(y.mean()),
                        "difference": float((x - y).mean()),
                        "ci_low": low,
                        "ci_high": high,
                        "test": "mcnemar-exact" if binary else "wilcoxon",
                        "p_value": mcnemar_exact(x, y) if binary else wilcoxon(x, y),
                    }
                )
    return pd.DataFrame(rows)


def write_comparisons(results: Path, *, seed: int = 0) -> Path | None:
    """``comparisons.parquet`` from the results directory's generations (atomically)."""
    import io

    from steerbench.io import atomic_write_bytes

    path = results / "generations.parquet"
    if not path.is_file():
        return None
    table = compare_cells(pd.read_parquet(path), seed=seed)
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    atomic_write_bytes(results / "comparisons.parquet", buffer.getvalue())
    return results / "comparisons.parquet"


def indistinguishable(
    comparisons: pd.DataFrame, metric: str, eval_set: str, cell_a: str, cell_b: str
) -> bool | None:
    """Whether two cells' paired difference on ``metric`` is not significant at 5 % (None:
    not compared, e.g. results submitted without generations)."""
    if comparisons is None or comparisons.empty:
        return None
    hit = comparisons[
        (comparisons["metric"] == metric)
        & (comparisons["eval_set"] == eval_set)
        & (
            ((comparisons["cell_a"] == cell_a) & (comparisons["cell_b"] == cell_b))
            | ((comparisons["cell_a"] == cell_b) & (comparisons["cell_b"] == cell_a))
        )
    ]
    if hit.empty or math.isnan(hit.iloc[0]["p_value"]):
        return None
    return bool(hit.iloc[0]["p_value"] >= ALPHA)
