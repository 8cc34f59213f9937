"""The ``Metric`` interface, results with bootstrap confidence intervals, and the registry.

Every method is judged by the same metrics, computed the same way. A metric takes a batch
of (prompt, response) records (and, where it needs one, the possibly-steered model) and
returns one value per item plus an aggregate with a seeded 95 % bootstrap CI. A value of
``None`` means "could not be scored" (a malformed judge answer, a degenerate response):
it is counted and reported, never guessed.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from steerbench.registry import Registry, build_config

BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class Record:
    """One evaluated item: the prompt, the model's response and where it came from."""

    id: str
    prompt: str
    response: str
    category: str | None = None


@dataclass
class MetricResult:
    """Per-item values and their aggregate (mean of the scored items) with a 95 % CI."""

    metric: str
    values: list[float | None]
    aggregate: float
    ci_low: float
    ci_high: float
    n: int
    n_missing: int
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": self.aggregate,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n": self.n,
            "n_missing": self.n_missing,
            **self.extra,
        }


def bootstrap_ci(
    values: Sequence[float],
    *,
    seed: int = 0,
    samples: int = BOOTSTRAP_SAMPLES,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean, seeded so that reruns give the same bounds."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return math.nan, math.nan
    if data.size == 1 or np.all(data == data[0]):
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(samples, data.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def make_result(
    metric: str, values: list[float | None], *, seed: int = 0, **extra: Any
) -> MetricResult:
    scored = [v for v in values if v is not None]
    aggregate = float(np.mean(scored)) if scored else math.nan
    low, high = bootstrap_ci(scored, seed=seed)
    return MetricResult(
        metric, values, aggregate, low, high, len(values), len(values) - len(scored), extra
    )


class Metric(ABC):
    """Base class of every metric; subclasses set ``description`` and implement ``compute``.

    ``needs_model`` metrics receive the loaded model as ``lm``. Those that also set
    ``measures_steered_model`` (MMLU) are called while the model is steered, to measure the
    steered model's capability; the others (a local LLM judge) are called unsteered.
    """

    name: ClassVar[str] = "?"
    description: ClassVar[str] = ""
    needs_model: ClassVar[bool] = False
    measures_steered_model: ClassVar[bool] = False
    higher_is_better: ClassVar[bool | None] = None
    value_range: ClassVar[tuple[float, float]] = (-math.inf, math.inf)
    """Where every per-item value and aggregate lies; results outside it are rejected."""

    @dataclass
    class Config:
        seed: int = 0

    def __init__(self, **params: Any) -> None:
        self.config = build_config(self.Config, params, f"option(s) for metric {self.name!r}")

    def options(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    @abstractmethod
    def compute(self, records: Sequence[Record], *, lm: Any = None) -> MetricResult:
        """Score ``records`` (``lm``: a ``LoadedModel`` for metrics that need one)."""


METRICS: Registry[Metric] = Registry(
    "metric", "steerbench.metrics", "steerbench.metrics", base=Metric
)


def get_metric(name: str, **params: Any) -> Metric:
    return METRICS.get(name)(**params)
