"""The benchmark config's schema: typed dataclasses, with every fixed choice a ``Literal``.

A config names the models, the methods (each with hyper-parameters and a strength sweep),
the discovery and evaluation prompt sets, the metrics and the generation settings. The
annotations here are what ``steerbench.run.config_checks`` checks a YAML document against
(strictly, through ``steerbench.options``), so each choice is written down once.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

BUILTIN_CONFIGS = (
    "behaviours",
    "behaviours-quick",
    "default",
    "full",
    "judge-pool",
    "quick",
    "scaling",
)
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._%+-]{0,99}")
"""Config names become directories and labels become file and table names."""

Role = Literal["target", "over_refusal"]
"""target: the behaviour steering acts on (refusal of harmful requests); over_refusal: sets
that should stay answered. The leaderboard reads sets by role, never by name."""
ConstraintRole = Literal["target", "over_refusal", "model"]
"""A constraint's sets: those of a role, or ``model`` for model-level metrics (MMLU)."""
TaskRole = Literal["target", "model"]
"""Where a task's primary metric is read: the target set, or the model (an A/B behaviour)."""
Goal = Literal["minimize", "maximize"]
"""The direction a task moves its primary metric."""
Evaluate = Literal["all", "chosen"]
"""``all``: every cell runs on validation and evaluation sets; ``chosen``: every cell runs on
the validation sets, and only each method's strength chosen there per task (plus the
unsteered model) on the evaluation sets: adding a strength costs a validation pass only."""
Dtype = Literal["auto", "bfloat16", "bf16", "float16", "fp16", "float32", "fp32"]
"""``auto`` or a name of ``steerbench.model.device.DTYPES`` (read case-insensitively)."""

ROLES: tuple[Role, ...] = typing.get_args(Role)
CONSTRAINT_ROLES: tuple[ConstraintRole, ...] = typing.get_args(ConstraintRole)
GOALS: tuple[Goal, ...] = typing.get_args(Goal)


@dataclass
class MethodSpec:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    strengths: list[float] | None = None  # None: the method's default sweep
    label: str | None = None  # how results name it (variants of one method); default: name

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclass
class MetricSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    sets: list[str] | None = None  # evaluation sets it applies to (None: all)


@dataclass
class Constraint:
    """A bound a strength must respect to count for a task: on ``metric`` of the sets of
    ``role`` (``target``, ``over_refusal``, or ``model`` for model-level metrics such as
    MMLU), as an absolute ``min``/``max`` or relative to the unsteered model
    (``max_drop``/``max_rise``)."""

    metric: str
    role: ConstraintRole = "target"
    min: float | None = None
    max: float | None = None
    max_drop: float | None = None
    max_rise: float | None = None


@dataclass
class TaskSpec:
    """A leaderboard task: the primary metric on the target set, its direction, and the
    constraints a method's strength must meet."""

    name: str
    metric: str
    goal: Goal
    constraints: list[Constraint] = field(default_factory=list)
    description: str = ""
    role: TaskRole = "target"


@dataclass
class BehavioursSpec:
    """The A/B behaviours a config benchmarks as tasks (``steerbench.run.behaviour_tasks``):
    each is fitted on its own contrast pairs, has its strengths chosen on its own validation
    items and is reported on its held-out items, with every other behaviour measured beside
    it (entanglement)."""

    names: list[str]
    discovery_n: int = 64
    """Contrast pairs each method is fitted on (of the behaviour's discovery split)."""
    validation_n: int = 30
    """Validation items (generate split, disjoint from discovery) that choose strengths."""
    evaluation_n: int | None = None
    """Held-out test items reported for the steered behaviour (None: all 50)."""
    side_n: int = 20
    """Held-out items of each other behaviour, measured at the chosen strengths."""
    constraints: list[Constraint] = field(default_factory=list)
    """What every behaviour task's strength must respect (e.g. an MMLU drop)."""


@dataclass
class BenchmarkConfig:
    name: str
    models: list[str]
    methods: list[MethodSpec]
    discovery: dict[str, str]
    evaluation: dict[str, str]
    metrics: list[MetricSpec]
    evaluation_limit: int | dict[str, int] | None = None
    validation: dict[str, str] = field(default_factory=dict)
    roles: dict[Role, str | list[str]] = field(default_factory=dict)
    tasks: list[TaskSpec] = field(default_factory=list)
    generation: dict[str, Any] = field(default_factory=dict)
    prompt_format: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"  # cpu, cuda, cuda:N, mps...: checked where the run starts
    dtype: Dtype = "auto"
    evaluate: Evaluate = "all"
    seed: int = 0
    split_seed: int = 0
    behaviours: BehavioursSpec | None = None
    behaviour: str | None = None
    """Set on each behaviour's own config (``behaviour_tasks.behaviour_configs``)."""
    discovery_limit: int | None = None
    """Discovery prompts per side (seeded draw, the same rows of both sides); None: all."""

    def limit_for(self, eval_set: str) -> int | None:
        """How many (category-stratified) prompts of ``eval_set`` are used; None: all."""
        if isinstance(self.evaluation_limit, dict):
            return self.evaluation_limit.get(eval_set)
        return self.evaluation_limit

    def role_of(self, eval_set: str) -> str | None:
        """The role an evaluation set plays (see ``ROLES``), from ``roles``; without
        ``roles``, the first evaluation set is the target and the others over-refusal."""
        if eval_set not in self.evaluation:
            return None
        if not self.roles:
            return "target" if eval_set == next(iter(self.evaluation)) else "over_refusal"
        for role, names in self.roles.items():
            if eval_set in ([names] if isinstance(names, str) else names):
                return role
        return None

    def to_dict(self) -> dict[str, Any]:
        """The config as a YAML document that ``parse_config`` reads back (resolved)."""
        document = dataclasses.asdict(self)
        document["methods"] = [
            {k: v for k, v in dataclasses.asdict(m).items() if v is not None} for m in self.methods
        ]
        document["metrics"] = {
            m.name: {**m.options, **({"sets": m.sets} if m.sets else {})} for m in self.metrics
        }
        for key in ("behaviours", "behaviour", "discovery_limit"):
            if document[key] is None:  # configs without behaviours read as they always did
                del document[key]
        document["tasks"] = {
            t.name: {
                "metric": t.metric,
                "goal": t.goal,
                "description": t.description,
                **({"role": t.role} if t.role != "target" else {}),
                "constraints": [
                    {k: v for k, v in dataclasses.asdict(c).items() if v is not None}
                    for c in t.constraints
                ],
            }
            for t in self.tasks
        }
        return document


TOP_LEVEL_KEYS = {f.name for f in dataclasses.fields(BenchmarkConfig)}
REQUIRED_KEYS = ("models", "methods", "discovery", "evaluation", "metrics")
BEHAVIOUR_DERIVED_KEYS = ("discovery", "tasks")
"""Keys a config with ``behaviours`` leaves out: each behaviour brings its own (and its
``evaluation`` sets are optional: the A/B items are read at the model level)."""


@functools.cache
def field_type(cls: type, name: str) -> Any:
    """The annotation of field ``name`` of schema class ``cls`` (resolved), to check against."""
    return typing.get_type_hints(cls, include_extras=True)[name]
