"""What a cell does between fitting and saving: generate on its prompt sets, then call each
metric as its phase says (``steerbench.metric.metric_calls``), timed per phase."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from functools import partial
from typing import Any

from steerbench.metric import Metric, Record, metric_calls
from steerbench.run.config import BenchmarkConfig, MetricSpec
from steerbench.run.prompt_sets import PromptRecord
from steerbench.run.results import Scored

RecordSets = dict[tuple[str, str], list[Record]]
"""A cell's generations by (split, set name)."""


class PhaseTimer:
    """Seconds a cell spends per phase (generation, each metric), for its log line."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, phase: str, fn: Callable[[], Any]) -> Any:
        begin = time.perf_counter()
        try:
            return fn()
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - begin

    def summary(self) -> str:
        return ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in self.seconds.items())


def generate_records(
    config: BenchmarkConfig,
    lm,
    prompt_sets: dict[tuple[str, str], list[PromptRecord]],
    *,
    progress: bool,
) -> RecordSets:
    """The cell's answers on every set in one call: continuous batching keeps its rows
    full across sets."""
    from steerbench.model.chat import PromptFormat
    from steerbench.model.generation import GenerationSettings, generate

    everything = [p for prompts in prompt_sets.values() for p in prompts]
    responses = iter(
        generate(
            lm.model,
            lm.tokenizer,
            [p.text for p in everything],
            GenerationSettings(**{"seed": config.seed, **config.generation}),
            PromptFormat(**config.prompt_format),
            progress=progress,
        )
    )
    return {
        where: [Record(p.id, p.text, next(responses), p.category) for p in prompts]
        for where, prompts in prompt_sets.items()
    }


def score_metrics(
    metrics: list[tuple[MetricSpec, Metric]],
    records: RecordSets,
    lm,
    steering: Callable[[], Any] | None,
    timer: PhaseTimer,
    *,
    under_steering: bool,
    splits: Collection[str],
) -> list[Scored]:
    """Every metric call on ``splits`` made inside the steering context
    (``under_steering``) or after it, in config order, timed under the metric's name."""
    scored = []
    for spec, metric in metrics:
        calls = metric_calls(
            metric,
            records,
            under_steering=under_steering,
            lm=lm,
            steering=steering,
            sets=spec.sets,
            splits=splits,
        )
        for call in calls:
            result = timer(spec.name, partial(metric.compute, call.records, **call.context))
            scored.append((call.split, call.eval_set, result))
    return scored
