"""A config with ``behaviours`` as one benchmark config per behaviour.

Each behaviour is its own task pair (``increase-<behaviour>``, ``decrease-<behaviour>``,
its A/B score read at the model level), with its own contrast pairs to fit on (the
discovery split of its generate items, ``caa-<behaviour>-matching`` / ``-other``), its own
validation items that choose the strengths (the validation split of the same items) and
its held-out test items that are reported. Beside it, every other behaviour's A/B score and
the config's side-effect metrics (MMLU, TruthfulQA, KL on benign text) are measured at the
chosen strengths: the entanglement matrix. Each behaviour's config is an ordinary config,
so fitting, cells, resumption, the validation sweep and the leaderboard's ranking rules are
the same code as for refusal; its cells are keyed by the behaviour too
(``steerbench.run.plan.cell_key``) and it writes to ``<results>/<behaviour>/``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from steerbench.run.behaviours import contrast_set_name
from steerbench.run.config_schema import BenchmarkConfig, MetricSpec, TaskSpec

AB_PREFIX = "ab-"
"""A behaviour's metric is ``ab-<behaviour>`` (``metrics/behaviour_ab.py``)."""


def behaviour_metric(behaviour: str) -> str:
    return f"{AB_PREFIX}{behaviour}"


def behaviour_tasks(config: BenchmarkConfig, behaviour: str) -> list[TaskSpec]:
    """Steer the behaviour up and down, each within the config's behaviour constraints."""
    assert config.behaviours is not None
    metric = behaviour_metric(behaviour)
    return [
        TaskSpec(
            f"{direction}-{behaviour}",
            metric,
            goal,  # type: ignore[arg-type]
            list(config.behaviours.constraints),
            f"{direction} {behaviour} (p of the matching A/B answer)",
            role="model",
        )
        for direction, goal in (("increase", "maximize"), ("decrease", "minimize"))
    ]


def behaviour_metrics(config: BenchmarkConfig, behaviour: str) -> list[MetricSpec]:
    """Its own A/B score (reported items and validation items), every other behaviour's on
    ``side_n`` held-out items, then the config's own metrics."""
    spec = config.behaviours
    assert spec is not None
    own = {"validation_n": spec.validation_n, "split_seed": config.split_seed}
    if spec.evaluation_n is not None:
        own["n"] = spec.evaluation_n
    ab = [MetricSpec(behaviour_metric(behaviour), own)]
    ab += [
        MetricSpec(behaviour_metric(other), {"n": spec.side_n})
        for other in spec.names
        if other != behaviour
    ]
    return ab + [m for m in config.metrics if not m.name.startswith(AB_PREFIX)]


def behaviour_config(config: BenchmarkConfig, behaviour: str) -> BenchmarkConfig:
    """The ordinary config that benchmarks one of ``config``'s behaviours."""
    assert config.behaviours is not None
    return dataclasses.replace(
        config,
        name=f"{config.name}.{behaviour}",
        behaviours=None,
        behaviour=behaviour,
        discovery={
            "positive": f"{contrast_set_name(behaviour, 'matching')}:discovery",
            "negative": f"{contrast_set_name(behaviour, 'other')}:discovery",
        },
        discovery_limit=config.behaviours.discovery_n,
        metrics=behaviour_metrics(config, behaviour),
        tasks=behaviour_tasks(config, behaviour),
    )


def behaviour_configs(config: BenchmarkConfig) -> list[BenchmarkConfig]:
    """One config per behaviour (``config`` itself when it has none)."""
    if config.behaviours is None:
        return [config]
    return [behaviour_config(config, b) for b in config.behaviours.names]


def behaviour_results(results: Path, config: BenchmarkConfig) -> Path:
    """Where a behaviour's config writes: ``<results>/<behaviour>/`` (the parent's results
    directory holds one such folder per behaviour)."""
    return results / config.behaviour if config.behaviour else results
