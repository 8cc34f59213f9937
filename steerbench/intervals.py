"""The 95 % intervals metrics report with their aggregates (see ``steerbench.metric``):
Wilson score intervals for rates, the bounded-mean score interval for means of values in a
known range, a seeded bootstrap for the rest; each one never collapses where it should not."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BOOTSTRAP_SAMPLES = 2000


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


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial rate (scipy's), NaN for n = 0."""
    from scipy.stats import binomtest

    if n == 0:
        return math.nan, math.nan
    test = binomtest(int(successes), int(n))
    interval = test.proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def bounded_mean_interval(
    values: Sequence[float], bounds: tuple[float, float], *, confidence: float = 0.95
) -> tuple[float, float]:
    """Score interval of the mean of values in ``bounds`` = [a, b]: Wilson's interval of the
    mean rescaled to [0, 1] (statsmodels), whose variance mu (1 - mu) is the largest any
    [0, 1] variable of mean mu has (Bhatia-Davis), so the interval is conservative, agrees
    with Wilson's on 0/1 data and is never a point, even when every value is equal."""
    from statsmodels.stats.proportion import proportion_confint

    data = np.asarray(values, dtype=np.float64)
    low, high = bounds
    if data.size == 0:
        return math.nan, math.nan
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"bounded_mean_interval needs finite bounds a < b, got {bounds!r}")
    share = float(np.clip((data.mean() - low) / (high - low), 0.0, 1.0))
    lo, hi = proportion_confint(share * data.size, data.size, 1 - confidence, method="wilson")
    lo, hi = min(float(lo), share), max(float(hi), share)  # rounding at 0/n and n/n
    return low + lo * (high - low), low + hi * (high - low)
