"""Ranks built on every pairwise test of a task, never on neighbours alone.

Within one task and model, every pair of ranked cells is compared on the evaluation
prompts (``steerbench.stats.comparisons``: McNemar's score test for 0/1 outcomes, the paired
t-test otherwise) and the p-values of that family are corrected together with Holm's
step-down method (statsmodels). A method's rank is 1 + the number of methods that are
significantly better than it after correction (the rule of LMSYS' Chatbot Arena and of
HELM-style "rank (upper bound)" tables), raised where needed so that a method is always
ranked below every method significantly better than it (the rare non-transitive case is
broken in favour of the better one). So two methods share a rank only if no corrected
test separates them, and ties cannot chain through neighbours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from steerbench.stats.comparisons import ALPHA, pair


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values (statsmodels' ``multipletests``), in the given order."""
    from statsmodels.stats.multitest import multipletests

    if not p_values:
        return []
    return [float(p) for p in multipletests(p_values, alpha=ALPHA, method="holm")[1]]


@dataclass(frozen=True)
class PairVerdict:
    """One corrected pairwise test, oriented as ``a`` - ``b``."""

    a: str
    b: str
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float
    n: int

    @property
    def significant(self) -> bool:
        return self.p_holm < ALPHA


@dataclass
class Ranking:
    """Ranks of cells (best first) and the corrected tests behind them."""

    ranks: dict[str, int]
    tests: dict[tuple[str, str], PairVerdict]
    untested: set[str] = field(default_factory=set)
    """Cells with at least one pair that has no paired test (no per-item results): they
    are never separated from the other cell of that pair."""

    def versus(self, a: str, b: str) -> PairVerdict | None:
        """The test of ``a`` against ``b``, oriented as a - b."""
        if (a, b) in self.tests:
            return self.tests[(a, b)]
        test = self.tests.get((b, a))
        if test is None:
            return None
        return PairVerdict(
            a, b, -test.difference, -test.ci_high, -test.ci_low, test.p_value, test.p_holm, test.n
        )


def rank_cells(
    cells: list[str],
    comparisons: pd.DataFrame | None,
    metric: str,
    eval_set: str | None,
    *,
    minimize: bool,
) -> Ranking:
    """Rank ``cells`` (ordered best first by their point estimate) on ``metric`` of
    ``eval_set``: see the module docstring."""
    found = []
    untested: set[str] = set()
    for i, a in enumerate(cells):
        for b in cells[i + 1 :]:
            row = pair(comparisons, metric, eval_set, a, b)
            if row is None or row.get("p_value") is None or math.isnan(row["p_value"]):
                untested |= {a, b}
                continue
            found.append((a, b, row))
    adjusted = holm([row["p_value"] for _, _, row in found])
    tests = {
        (a, b): PairVerdict(
            a,
            b,
            float(row["difference"]),
            float(row["ci_low"]),
            float(row["ci_high"]),
            float(row["p_value"]),
            p_holm,
            int(row["n"]),
        )
        for (a, b, row), p_holm in zip(found, adjusted)
    }
    sign = 1 if minimize else -1
    better: dict[str, set[str]] = {cell: set() for cell in cells}
    for (a, b), test in tests.items():
        if test.significant and test.difference != 0:
            winner, loser = (a, b) if sign * test.difference < 0 else (b, a)
            better[loser].add(winner)
    ranks = {cell: 1 + len(better[cell]) for cell in cells}
    for _ in cells:  # push each loser below its winners until nothing moves (acyclic: done)
        moved = False
        for loser, winners in better.items():
            floor = max((ranks[w] + 1 for w in winners), default=1)
            if ranks[loser] < floor:
                ranks[loser], moved = floor, True
        if not moved:
            break
    return Ranking(ranks, tests, untested)
