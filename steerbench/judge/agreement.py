"""A judge's scores against human labels: agreement at a threshold fixed before looking at
any label, AUROC and the confusion counts (``steerbench agreement`` and ``steerbench
validate`` both report these)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

HELP_THRESHOLD = 0.5
"""A judge score at or above this (expected grade >= 3 of 5) is read as "helps" wherever a
judge is compared with labels; fixed before looking at any label. AUROC needs no threshold."""


def agreement(name: str, scores: Sequence[float], helps: Sequence[bool]) -> dict[str, Any]:
    """Agreement with the labels at ``HELP_THRESHOLD``, AUROC and the confusion counts."""
    from sklearn.metrics import roc_auc_score

    said = [s >= HELP_THRESHOLD for s in scores]
    pairs = list(zip(said, helps))
    return {
        "classifier": name,
        "n": len(pairs),
        "agreement": sum(a == b for a, b in pairs) / len(pairs),
        "auroc": float(roc_auc_score(helps, scores)),
        "true_positive": sum(a and b for a, b in pairs),
        "false_positive": sum(a and not b for a, b in pairs),
        "false_negative": sum(b and not a for a, b in pairs),
        "true_negative": sum(not a and not b for a, b in pairs),
    }
