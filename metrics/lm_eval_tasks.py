"""Any lm-evaluation-harness task as a steerbench metric (``lm-eval`` in a config).

Run on the steered model of each cell (like ``mmlu``), through lm-eval's own task
definitions and scoring; the per-item values are the harness's per-sample ``acc`` (or the
configured metric), the aggregate their mean over all the listed tasks, and each task's
own aggregate is kept in the result's extra fields. ``steerbench_mmlu`` (the shipped MMLU
subset as a local task) is always available; other tasks need their data, so offline
they need a local copy. Needs ``pip install 'steerbench[lm-eval]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from steerbench.errors import SteerbenchError
from steerbench.metric import METRICS, Metric, MetricResult, Record
from steerbench.options import Positive


@METRICS.register("lm-eval")
class HarnessTasks(Metric):
    """Per-sample scores of lm-evaluation-harness tasks on the steered model."""

    description = "lm-evaluation-harness tasks on the steered model (default: steerbench_mmlu)"
    phase = "steered-model"
    higher_is_better = True
    value_range = (0.0, 1.0)

    @dataclass
    class Config(Metric.Config):
        tasks: list[str] = field(default_factory=lambda: ["steerbench_mmlu"])
        metric: str = "acc"
        """The per-sample field the tasks report (accuracy-like, in [0, 1])."""
        limit: Positive | None = None
        """At most this many documents per task (default: all)."""
        batch_size: Positive = 8

    def compute(
        self, records: Sequence[Record] = (), *, lm: Any = None, **context: Any
    ) -> MetricResult:
        if lm is None:
            raise SteerbenchError("the lm-eval metric needs a model; pass --model")
        from steerbench.integrations.lm_eval import evaluate
        from steerbench.model.levels import active_instructions, active_logits_processors

        if active_instructions() or active_logits_processors():
            # lm-eval builds its own prompts and decoding: a prompt- or decoding-level
            # method would not be applied, so report nothing rather than the unsteered model
            return self.result(
                [],
                skipped="the method acts on the prompt or decoding, which lm-eval builds itself",
            )

        output = evaluate(
            lm, self.config.tasks, limit=self.config.limit, batch_size=self.config.batch_size
        )
        values: list[float | None] = []
        per_task = {}
        for task in self.config.tasks:
            samples = output["samples"].get(task)
            if not samples or self.config.metric not in samples[0]:
                raise SteerbenchError(
                    f"lm-eval task {task!r} reports no per-sample {self.config.metric!r}; "
                    f"choose an accuracy-like metric of that task"
                )
            scores = [float(s[self.config.metric]) for s in samples]
            per_task[task] = {"value": sum(scores) / len(scores), "n": len(scores)}
            values += scores
        return self.result(values, tasks=per_task)
