"""The wall time a config's run would take on this machine, projected from the bench's rates.

Two parts, kept apart so that each can change alone: ``run_shape`` counts a config's work per
phase from its plan (fits, prompts generated, each model-reading metric's calls and items),
and ``project`` multiplies counts by measured rates (``MeasuredRates``, from the bench's
figures by ``rates_from_figures``), pure arithmetic. A run that sweeps strengths on the
validation split and evaluates only the chosen strength changes the counts, not the rates.

Per phase: fitting = fits x discovery prompts per fit x fitting seconds per prompt (the
mean of CNA's and CAA's on the bench's discovery prompts; SAE training and fitting-free
methods are not told apart); generation = prompts generated x mean answer tokens / answer
tokens/s, both from the real-answer figure with the config's rows (unsteered answers: cells
whose steering lengthens answers take longer); each metric: its items over the run / its
items/s (a model-level metric such as MMLU reads its own items once per call, one call per
cell and split; a steering-contrast metric such as kl-benign reads nothing in the unsteered
cell), plus what its first call costs on top, once per model and prompt set. The judge's
items/s is measured on benign answers, nearly all of which its keyword gate passes, so on a
harmful set, mostly refused, its projection is an upper bound. Loading the model, the
metrics that read no model and the bookkeeping are left out (seconds on the default run).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from statistics import mean
from typing import Any

from steerbench.metric import (
    SPLIT_EVALUATION,
    SPLIT_VALIDATION,
    Metric,
    Record,
    get_metric,
    metric_calls,
)
from steerbench.run.config import BenchmarkConfig
from steerbench.run.plan import evaluation_sets, fit_groups, plan, validation_sets
from steerbench.run.prompt_sets import load_prompts


@dataclass(frozen=True)
class MetricLoad:
    """One metric's work over a run."""

    calls: int
    items: int | None
    """Items over the run; None: its own items, every call (a model-level metric)."""
    once_items: int = 0
    """Items whose first-call extra is paid once per run (per model and prompt set)."""


@dataclass(frozen=True)
class RunShape:
    """A run's work per phase, counted from its config's plan."""

    cells: int
    fits: int
    discovery_prompts: int
    """Per fit (positive + negative)."""
    generated_prompts: int
    """Over the run: every cell's evaluation and validation prompts."""
    metrics: dict[str, MetricLoad] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricRate:
    """One metric's measured speed."""

    items_per_second: float
    items_per_call: int
    """As measured: a model-level metric's own items."""
    once_seconds_per_item: float = 0.0
    """Its first call's extra seconds per item (a reference it keeps across calls)."""


@dataclass(frozen=True)
class MeasuredRates:
    fit_seconds_per_prompt: float
    answer_tokens_per_second: float
    mean_answer_tokens: float
    metrics: dict[str, MetricRate] = field(default_factory=dict)


def run_shape(config: BenchmarkConfig) -> RunShape:
    """The work of ``config``'s run, by its plan (``steerbench.run.plan``) and the calls the
    runner makes of each metric in a cell (``steerbench.metric.metric_calls``): whole cells
    (``evaluate: all``), or every cell's validation part and, at most, one evaluated
    strength per method and task (``evaluate: chosen``; ``evaluated_at_most``)."""
    from steerbench.run.estimate import evaluated_at_most

    cells = plan(config)
    steered = sum(cell.method is not None for cell in cells)
    sizes = {(SPLIT_EVALUATION, name): len(r) for name, r in evaluation_sets(config).items()}
    sizes |= {(SPLIT_VALIDATION, name): len(r) for name, r in validation_sets(config).items()}
    discovery = sum(
        len(load_prompts(config.discovery[side], split_seed=config.split_seed))
        for side in ("positive", "negative")
    )
    fits = sum(1 for group in fit_groups(cells) if group[0].method is not None)
    models = len(config.models)
    parts: list[tuple[tuple[str, ...], int, int]]  # (splits, cells, steered cells)
    if config.evaluate == "all":
        parts = [((SPLIT_EVALUATION, SPLIT_VALIDATION), len(cells), steered)]
    else:
        most = evaluated_at_most(config)
        parts = [
            ((SPLIT_VALIDATION,), len(cells), steered),
            ((SPLIT_EVALUATION,), most, most - models),
        ]
    metrics = {}
    for spec in config.metrics:
        metric = get_metric(spec.name, **spec.options)
        if metric.uses_model():
            loads = [
                metric_load(metric, spec.sets, sizes, n, n_steered, models, splits)
                for splits, n, n_steered in parts
            ]
            metrics[spec.name] = MetricLoad(
                sum(x.calls for x in loads),
                None if loads[0].items is None else sum(x.items or 0 for x in loads),
                sum(x.once_items for x in loads),
            )
    generated = sum(
        n * sum(size for (split, _), size in sizes.items() if split in splits)
        for splits, n, _ in parts
    )
    return RunShape(len(cells), fits, discovery, generated, metrics)


def metric_load(
    metric: Metric,
    sets: list[str] | None,
    sizes: dict[tuple[str, str], int],
    cells: int,
    steered: int,
    models: int,
    splits: tuple[str, ...] = (SPLIT_EVALUATION, SPLIT_VALIDATION),
) -> MetricLoad:
    """``metric``'s calls and items over ``cells`` cells (``steered`` of them steered, over
    ``models`` models) whose prompt sets have ``sizes`` items, as the runner calls it on
    ``splits``; a steering-contrast metric reads nothing in an unsteered cell (nothing to
    compare) and pays for its kept reference once per model and prompt set."""
    placeholders = {where: [Record("", "", "")] * n for where, n in sizes.items()}
    calls = [
        call
        for under in (True, False)
        for call in metric_calls(
            metric,
            placeholders,
            under_steering=under,
            lm=None,
            steering=nullcontext,
            sets=sets,
            splits=splits,
        )
    ]
    rule = metric.rule()
    scored = steered if rule.gets_steering else cells
    if rule.model_level:
        return MetricLoad(scored * len(calls), None)
    items = sum(len(call.records) for call in calls)
    once = models * items if rule.gets_steering else 0
    return MetricLoad(scored * len(calls), scored * items, once)


def project(rates: MeasuredRates, shape: RunShape) -> dict[str, Any]:
    """Minutes per phase and in all (see the module's docstring); a metric of ``shape``
    without a measured rate is listed under ``not_projected``."""
    fitting = shape.fits * shape.discovery_prompts * rates.fit_seconds_per_prompt
    generation = shape.generated_prompts * rates.mean_answer_tokens / rates.answer_tokens_per_second
    metrics, once, missing = {}, {}, []
    for name, load in shape.metrics.items():
        rate = rates.metrics.get(name)
        if rate is None or not rate.items_per_second:
            missing.append(name)
            continue
        items = load.items if load.items is not None else load.calls * rate.items_per_call
        metrics[name] = items / rate.items_per_second / 60
        once[name] = load.once_items * rate.once_seconds_per_item / 60
    total = (fitting + generation) / 60 + sum(metrics.values()) + sum(once.values())
    return {
        "fitting_min": fitting / 60,
        "generation_min": generation / 60,
        "metrics_min": metrics,
        "once_per_run_min": once,
        "total_min": total,
        "not_projected": missing,
        "shape": asdict(shape),
        "rates": asdict(rates),
    }


def project_run(rates: MeasuredRates, config: BenchmarkConfig) -> dict[str, Any]:
    """``project`` on ``config``'s plan, with its name."""
    return {"config": config.name, **project(rates, run_shape(config))}


def rates_from_figures(figures: dict[str, Any]) -> MeasuredRates:
    """The rates of ``run_bench``'s figures: fitting per discovery prompt (CNA's and CAA's
    mean), real answers by continuous batching with the config's rows (the last run), each
    timed metric (a negative first-call extra, timing noise, counts as none)."""
    answers = figures["answers"]
    run = answers[answers["runs"][-1]]
    fit = mean(figures[f"discovery_seconds_{m}"] for m in ("cna", "caa"))
    metrics = {
        name: MetricRate(
            m["items_per_second"],
            m["items"],
            max(0.0, m["first_call_extra_seconds"]) / max(1, m["items"]),
        )
        for name, m in figures["metrics"].items()
        if m["items_per_second"]
    }
    return MeasuredRates(
        fit / figures["discovery_prompts"],
        run["tokens_per_second"],
        run["tokens"] / answers["prompts"],
        metrics,
    )
