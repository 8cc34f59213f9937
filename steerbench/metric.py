"""The ``Metric`` interface, results with bootstrap confidence intervals, and the registry.

Every method is judged by the same metrics, computed the same way. A metric takes a batch of
(prompt, response) records (and, where it needs one, the possibly-steered model) and returns
one value per item plus an aggregate with a 95 % interval: a Wilson score interval for rates
of binary outcomes (it never collapses to a point at 0/n or n/n, where a bootstrap does); for
means of values bounded in [a, b] the same score interval with the largest variance a mean-mu
variable in [a, b] can have, (mu - a)(b - mu) (the Bhatia-Davis bound), so that it too never
collapses (40 equal values cannot rule out rare failures); a seeded bootstrap for means of
unbounded values. A value of ``None`` means "could not be scored" (a malformed judge answer,
a degenerate response): it is counted and reported, never guessed.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from steerbench.intervals import (  # noqa: F401  (BOOTSTRAP_SAMPLES: read from here since 0.1)
    BOOTSTRAP_SAMPLES,
    bootstrap_ci,
    bounded_mean_interval,
    wilson_interval,
)
from steerbench.registry import Registry, build_config

# The ``eval_set`` of a model-level metric's rows (MMLU: it measures the steered model on its
# own questions, not on a prompt set). Stored in results files, so its value never changes.
MODEL_LEVEL = "*"
# The splits a cell scores: evaluation sets are reported, validation sets choose strengths.
SPLIT_EVALUATION = "evaluation"
SPLIT_VALIDATION = "validation"


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
    columns: dict[str, list] = field(default_factory=dict)
    """Per-item columns to store with the generations (as the metric declares them in
    ``item_columns``); empty: one column named after the metric holding ``values``."""

    def item_table(self) -> dict[str, list]:
        return self.columns or {self.metric: list(self.values)}

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


AGGREGATE_KINDS = ("rate", "mean")
"""``rate``: per-item values are 0/1 outcomes (Wilson interval); ``mean``: anything else (the
bounded-mean score interval when the metric's ``value_range`` is finite, else a bootstrap)."""


def make_result(
    metric: str,
    values: Sequence[float | None],
    *,
    seed: int = 0,
    kind: str = "mean",
    bounds: tuple[float, float] | None = None,
    **extra: Any,
) -> MetricResult:
    """Aggregate per-item values (``None``: not scored) into the mean and its 95 % interval
    (``bounds``: the metric's ``value_range``; finite bounds give means a score interval)."""
    scored = [v for v in values if v is not None]
    aggregate = float(np.mean(scored)) if scored else math.nan
    bounded = bounds is not None and all(math.isfinite(b) for b in bounds)
    if kind == "rate":
        if any(v not in (0, 1) for v in scored):
            raise ValueError(f"metric {metric!r} declares a rate but has non-binary values")
        low, high = wilson_interval(int(sum(scored)), len(scored))
    elif kind == "mean" and bounds is not None and bounded:
        low, high = bounded_mean_interval(scored, bounds)
    elif kind == "mean":
        low, high = bootstrap_ci(scored, seed=seed)
    else:
        raise ValueError(f"unknown aggregate kind {kind!r}; one of {AGGREGATE_KINDS}")
    return MetricResult(
        metric, list(values), aggregate, low, high, len(values), len(values) - len(scored), extra
    )


@dataclass
class AgreementTable:
    """How a metric agrees with a labelled set it ships (``steerbench agreement``): one row
    per classifier or judge, plus free-text notes (the items it got wrong...)."""

    title: str
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


Phase = Literal["records", "judge", "steered-model", "steering-contrast"]
"""When a metric runs in a cell and what it is given; ``PHASE_RULES`` holds each one's rule."""


@dataclass(frozen=True)
class PhaseRule:
    """How the runner calls the metrics of one phase (``metric_calls`` applies it)."""

    splits: tuple[str, ...]
    """The splits it may score (``Metric.scores_split`` decides per metric): validation sets
    choose strengths, so the judge, costly, scores only the reported split."""
    model_level: bool
    """Called once per split without records: it measures the model on its own items, its
    rows have ``eval_set`` ``MODEL_LEVEL`` and it stores no per-record columns."""
    under_steering: bool
    """Called inside the cell's steering context; the others run unsteered."""
    gets_steering: bool
    """Given ``steering``: a zero-argument callable that opens the cell's steering context
    (None for the unsteered model: there is nothing to compare)."""
    needs_model: bool
    """Needs a loaded model (the default of ``Metric.uses_model``); every call gets ``lm``."""


_EVALUATION, _BOTH = (SPLIT_EVALUATION,), (SPLIT_EVALUATION, SPLIT_VALIDATION)
PHASE_RULES: dict[str, PhaseRule] = {
    # phase: PhaseRule(splits, model_level, under_steering, gets_steering, needs_model), e.g.
    "records": PhaseRule(_BOTH, False, False, False, False),  # keyword refusal, quality
    "judge": PhaseRule(_EVALUATION, False, False, False, True),  # a local StrongREJECT judge
    "steered-model": PhaseRule(_BOTH, True, True, False, True),  # MMLU, lm-eval tasks
    "steering-contrast": PhaseRule(_BOTH, False, False, True, True),  # kl-benign
}
"""The phases: "records" scores the generated records alone; "judge" the records with a loaded
model as judge, unsteered; "steered-model" measures the model while it is steered, on its own
items; "steering-contrast" gets the records and the means to steer, to compare the model with
and without steering on the same text."""

LEGACY_SWITCHES = ("needs_model", "measures_steered_model", "uses_steering")
"""What a metric set before ``phase`` (0.1); see ``phase_of_switches``."""


def phase_of_switches(
    needs_model: bool, measures_steered_model: bool, uses_steering: bool
) -> Phase:
    """The phase a metric written for 0.1 meant by its switches (the 0.1 runner's order)."""
    if measures_steered_model:
        return "steered-model"
    if uses_steering:
        return "steering-contrast"
    return "judge" if needs_model else "records"


class Metric(ABC):
    """Base class of every metric; subclasses set ``description`` and ``phase`` (when it runs
    and what it is given, see ``PHASE_RULES``) and implement ``compute``.

    A plugin written for 0.1 that sets ``needs_model``, ``measures_steered_model`` or
    ``uses_steering`` instead gets the phase they meant (``phase_of_switches``, with a
    ``DeprecationWarning``); the three stay readable on every metric, derived from its phase."""

    name: ClassVar[str] = "?"
    description: ClassVar[str] = ""
    phase: ClassVar[Phase] = "records"
    needs_model: ClassVar[bool] = False
    measures_steered_model: ClassVar[bool] = False
    uses_steering: ClassVar[bool] = False
    higher_is_better: ClassVar[bool | None] = None
    kind: ClassVar[str] = "mean"
    """How per-item values aggregate: "rate" (0/1 outcomes) or "mean"; see ``make_result``."""
    value_range: ClassVar[tuple[float, float]] = (-math.inf, math.inf)
    """Where every per-item value and aggregate lies; results outside it are rejected."""
    item_columns: ClassVar[dict[str, str] | None] = None
    """The per-record columns it stores in generations.parquet, name -> type ("float",
    "bool", "string", "int"); None: one float column named after the metric. Metrics that
    measure the model (phase "steered-model") store none."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Derive a 0.1 plugin's phase from its switches; keep the switches in step."""
        super().__init_subclass__(**kwargs)
        legacy = [name for name in LEGACY_SWITCHES if name in vars(cls)]
        if legacy and "phase" not in vars(cls):
            cls.phase = phase_of_switches(
                cls.needs_model, cls.measures_steered_model, cls.uses_steering
            )
            warnings.warn(
                f"metric {cls.__qualname__} sets {', '.join(legacy)}; declare "
                f"phase = {cls.phase!r} instead",
                DeprecationWarning,
                stacklevel=2,
            )
        for before, now in (
            ("validate", "agreement"),
            ("validation_uses_models", "agreement_uses_models"),
        ):
            if before in vars(cls) and now not in vars(cls):  # 0.1's names of the two
                setattr(cls, now, vars(cls)[before])
                warnings.warn(
                    f"metric {cls.__qualname__}: rename {before} to {now}",
                    DeprecationWarning,
                    stacklevel=2,
                )
        if cls.phase not in PHASE_RULES:
            raise TypeError(
                f"metric {cls.__qualname__} has phase {cls.phase!r}; one of "
                f"{', '.join(PHASE_RULES)}"
            )
        rule = PHASE_RULES[cls.phase]
        cls.needs_model = rule.needs_model
        cls.measures_steered_model = rule.model_level
        cls.uses_steering = rule.gets_steering

    @classmethod
    def rule(cls) -> PhaseRule:
        """How the runner calls this metric: its phase's rule."""
        return PHASE_RULES[cls.phase]

    @classmethod
    def declared_columns(cls) -> dict[str, str]:
        if cls.rule().model_level:
            return {}
        return dict(cls.item_columns) if cls.item_columns is not None else {cls.name: "float"}

    def result(self, values: Sequence[float | None], **extra: Any) -> MetricResult:
        """``values`` aggregated as this metric declares them (its ``kind`` and
        ``value_range`` choose the interval; see ``make_result``)."""
        return make_result(
            self.name,
            values,
            seed=getattr(self.config, "seed", 0),
            kind=self.kind,
            bounds=self.value_range,
            **extra,
        )

    def uses_model(self) -> bool:
        """Whether this configuration needs a loaded model: its phase's answer, unless an
        option says otherwise (a judge phase metric that calls a remote judge needs none)."""
        return self.rule().needs_model

    @dataclass
    class Config:
        seed: int = 0

    config: Any
    """This metric's ``Config`` instance (a subclass may annotate ``config: Config``)."""

    def __init__(self, **params: Any) -> None:
        self.config = build_config(self.Config, params, f"option(s) for metric {self.name!r}")

    def options(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    agreement_uses_models: ClassVar[bool] = False
    """Whether ``agreement`` scores the labelled set with loaded models (LLM judges)."""

    def agreement(self, models: Sequence[Any] = ()) -> AgreementTable | None:
        """Agreement with the hand-labelled set this metric ships, or None if it ships none.
        ``models``: ``LoadedModel`` judges, for metrics that set ``agreement_uses_models``."""
        return None

    @classmethod
    def ships_labels(cls) -> bool:
        return cls.agreement is not Metric.agreement

    def preflight(self) -> None:
        """Check, before any model is loaded, what can fail late and cheaply be found now
        (an unreachable judge server...); raise ``SteerbenchError`` with one line."""
        return None

    def scores_split(self, split: str) -> bool:
        """Whether the runner calls it on ``split`` (one of its phase's): every metric scores
        evaluation, record metrics validation too; a model-reading one opts in where choosing
        a strength needs it (kl-benign; MMLU with ``validation_n`` items of its own, disjoint
        from those it reports, so no reported item chooses)."""
        return split == SPLIT_EVALUATION or self.phase == "records"

    def items_read(self, split: str) -> int | None:
        """How many items of its own a model-reading metric reads on ``split`` (MMLU's
        questions, A/B items), for the dry run's cost; None: it reads records or nothing."""
        return None

    def floor_inputs(self, records: Sequence[Record], lm: Any) -> list[list[int]] | None:
        """Token ids of the sequences one plain forward pass over which is this metric's cost
        floor per call (its own input read once: MMLU's questions, the judge's grading messages
        of the items it judges, kl-benign's prompt + reference answer); None: it reads no model.
        ``steerbench bench`` times the metric in units of a batched forward pass over these."""
        return None

    @abstractmethod
    def compute(self, records: Sequence[Record], *, lm: Any = None, **context: Any) -> MetricResult:
        """Score ``records`` (``lm``: the ``LoadedModel``, or None where none is loaded;
        ``steering`` in ``context`` for phase "steering-contrast" metrics)."""


@dataclass(frozen=True)
class MetricCall:
    """One call of a metric in a cell: where its result rows go and what it is given."""

    split: str
    eval_set: str
    records: Sequence[Record]
    context: dict[str, Any]
    """The keyword arguments of ``compute``: ``lm``, and ``steering`` where the phase gets it."""


def metric_calls(
    metric: Metric,
    records: Mapping[tuple[str, str], Sequence[Record]],
    *,
    under_steering: bool,
    lm: Any,
    steering: Callable[[], Any] | None,
    sets: Collection[str] | None = None,
    splits: Collection[str] | None = None,
) -> list[MetricCall]:
    """The calls the runner makes of ``metric`` in one cell, by its phase's rule: those made
    inside the steering context (``under_steering``) or those after it. ``records``: the
    cell's generations by (split, set name); ``sets``: the evaluation sets its config limits
    it to (None: all); ``steering``: opens the cell's steering, None for the unsteered model."""
    rule = metric.rule()
    if rule.under_steering != under_steering:
        return []
    wanted = [s for s in rule.splits if metric.scores_split(s) and (splits is None or s in splits)]
    context: dict[str, Any] = {"lm": lm}
    if rule.gets_steering:
        context["steering"] = steering
    if rule.model_level:
        return [  # on validation told so: it must read its own validation items
            MetricCall(
                split,
                MODEL_LEVEL,
                [],
                {**context, "split": split} if split != _EVALUATION[0] else context,
            )
            for split in wanted
        ]
    return [
        MetricCall(split, name, given, context)
        for (split, name), given in records.items()
        if split in wanted and not (sets and name not in sets)
    ]


METRICS: Registry[Metric] = Registry(
    "metric", "steerbench.metrics", "steerbench.metrics", base=Metric
)


def get_metric(name: str, **params: Any) -> Metric:
    return METRICS.get(name)(**params)
