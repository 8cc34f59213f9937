"""Checking a behaviour on items outside the shipped sets (``steerbench evaluate
--behaviour``): CAA's A/B score of any item file, with the model as it is steered now."""

from __future__ import annotations

from typing import Any

from steerbench.metric import MetricResult, get_metric

AB_METRIC = "ab"
"""The metric that reads A/B items (``metrics/behaviour_ab.py``)."""


def score_behaviour(loaded: Any, items: str, options: dict[str, Any]) -> MetricResult:
    """The A/B metric on ``items`` (a CAA behaviour or a JSON / JSONL file in its format),
    with ``options`` (``batch_size``, ``n``), read from ``loaded`` as steered now."""
    metric = get_metric(AB_METRIC, **{**options, "items": items})
    return metric.compute([], lm=loaded)
