"""How the leaderboard's numbers and rules read, in words both renderers share: the
Markdown tables and the HTML page print the same text for the same row (plain text here;
each renderer escapes it its own way)."""

from __future__ import annotations

import math
from typing import Any

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

NO_STRENGTH = "no strength improves on the unsteered model within the constraints"
"""What a ranking shows for a method none of whose strengths qualifies for the task."""


def chosen_text(split: str) -> str:
    """Where a task's strengths were chosen, said plainly when it was not on validation."""
    if split == "validation":
        return "Strengths chosen on the validation split."
    return (
        "**No validation split in this run: strengths were chosen on the evaluation prompts "
        "themselves, so the numbers shown are optimistic.**"
    )


def fmt(value: Any, digits: int = 2, signed: bool = False) -> str:
    """A number with ``digits`` decimals (and its sign when ``signed``); "–" when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


VALIDATION_MARK = "(val.)"
VALIDATION_NOTE = (
    f"{VALIDATION_MARK}: measured on the validation split only (the run evaluated only the "
    "strengths its tasks chose there; these choose, they are not reported results)."
)


def sweep_number(row: Any, key: str, digits: int = 2, signed: bool = False) -> str:
    """A full-sweep cell: the evaluation number, or, for a strength that was not evaluated,
    its validation number marked as such."""
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        validation = row.get(f"validation:{key}")
        if validation is not None and not (
            isinstance(validation, float) and math.isnan(validation)
        ):
            return f"{fmt(validation, digits, signed)} {VALIDATION_MARK}"
    return fmt(value, digits, signed)


def delta_text(row: Any) -> str:
    """A ranked row's paired difference from the unsteered model: "d [low, high]"."""
    if row.get("delta") is None:
        return "–"
    low, high = row.get("delta_ci_low"), row.get("delta_ci_high")
    return f"{fmt(row['delta'], 2, True)} [{fmt(low, 2, True)}, {fmt(high, 2, True)}]"


def p_text(row: Any) -> str:
    """The Holm-corrected p of a row's difference from the unsteered model, "*" if < 5 %."""
    p = row.get("delta_p_holm")
    if p is None:
        return "–"
    return ("< 0.001" if p < 0.001 else f"{p:.3f}") + (" *" if row.get("delta_significant") else "")


def describe_constraint(constraint: Any) -> str:
    """A task constraint in words: "mmlu drops ≤ 0.05", "refusal on every over-refusal set
    ≤ 0.2"."""
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
