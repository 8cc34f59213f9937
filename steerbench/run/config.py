"""Benchmark configs: YAML in, validated dataclasses out.

A config names the models, the methods (each with hyper-parameters and a strength sweep),
the discovery and evaluation prompt sets, the metrics and the generation settings.
Validation happens up front, before any model is loaded, with errors that name the bad
key and the allowed values.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from steerbench.errors import SteerbenchError
from steerbench.options import check_fields, check_value, near_miss

BUILTIN_CONFIGS = ("default", "quick", "scaling")
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._%+-]{0,99}")
"""Config names become directories and labels become file and table names."""


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
    role: str = "target"
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
    goal: str  # "minimize" or "maximize"
    constraints: list[Constraint] = field(default_factory=list)
    description: str = ""


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
    roles: dict[str, Any] = field(default_factory=dict)
    tasks: list[TaskSpec] = field(default_factory=list)
    generation: dict[str, Any] = field(default_factory=dict)
    prompt_format: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    split_seed: int = 0

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
        document["tasks"] = {
            t.name: {
                "metric": t.metric,
                "goal": t.goal,
                "description": t.description,
                "constraints": [
                    {k: v for k, v in dataclasses.asdict(c).items() if v is not None}
                    for c in t.constraints
                ],
            }
            for t in self.tasks
        }
        return document


TOP_LEVEL_KEYS = {f.name for f in dataclasses.fields(BenchmarkConfig)}
ROLES = ("target", "over_refusal")
CONSTRAINT_ROLES = (*ROLES, "model")
GOALS = ("minimize", "maximize")
"""target: the behaviour steering acts on (refusal of harmful requests); over_refusal: sets
that should stay answered. The leaderboard reads sets by role, never by name."""
REQUIRED_KEYS = ("models", "methods", "discovery", "evaluation", "metrics")


def configs_root() -> Path:
    """The shipped ``configs/`` folder (in an installed wheel or the source tree)."""
    package = Path(__file__).resolve().parents[1]  # steerbench/
    for candidate in (package / "configs", package.parent / "configs"):
        if (candidate / "default.yaml").is_file():
            return candidate
    raise SteerbenchError("steerbench's configs folder is missing; reinstall steerbench")


def _fail(key: str, problem: str) -> SteerbenchError:
    return SteerbenchError(f"config key {key!r}: {problem}")


def _mapping(value: Any, key: str) -> dict:
    if not isinstance(value, dict):
        raise _fail(key, f"must be a mapping, got {type(value).__name__}")
    return value


def parse_config(raw: Any, name: str) -> BenchmarkConfig:
    """Validate a loaded YAML document (see configs/default.yaml for the format)."""
    from steerbench.method import METHODS, get_method
    from steerbench.metric import METRICS, get_metric
    from steerbench.model.chat import PromptFormat
    from steerbench.model.generation import GenerationSettings
    from steerbench.run.prompt_sets import load_prompts

    raw = _mapping(raw, "<top level>")
    unknown = sorted(set(raw) - TOP_LEVEL_KEYS)
    if unknown:
        raise _fail(
            unknown[0],
            f"unknown key{near_miss(unknown[0], TOP_LEVEL_KEYS)}; allowed: "
            f"{', '.join(sorted(TOP_LEVEL_KEYS))}",
        )
    for key in REQUIRED_KEYS:
        if key not in raw:
            raise _fail(key, "is required")

    config_name = raw.get("name", name)
    if not isinstance(config_name, str) or not SAFE_NAME.fullmatch(config_name):
        where = "" if "name" in raw else " (taken from the file name; set `name:` instead)"
        raise _fail(
            "name",
            f"{config_name!r}{where} is not a plain name (letters, digits, '.', '_', '-', not "
            f"starting with '.'; it names the results directory results/<name>)",
        )
    scalars = {
        key: check_value(raw.get(key, default), kind, f"config key {key!r}")
        for key, kind, default in (
            ("device", str, "auto"),
            ("dtype", str, "auto"),
            ("seed", int, 0),
            ("split_seed", int, 0),
        )
    }
    for key in ("seed", "split_seed"):
        if not 0 <= scalars[key] < 2**32:
            raise _fail(key, f"must be an integer from 0 to 2**32 - 1, got {scalars[key]}")
    from steerbench.model.device import resolve_dtype

    if scalars["dtype"] != "auto":
        resolve_dtype(scalars["dtype"], None)  # an unknown dtype fails here, not at load

    models = raw["models"]
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise _fail("models", "must be a non-empty list of model names or paths")
    repeated = _first_repeat(models)
    if repeated is not None:
        raise _fail("models", f"{repeated!r} is listed twice; each model runs once")

    methods = []
    if not isinstance(raw["methods"], list) or not raw["methods"]:
        raise _fail("methods", "must be a non-empty list")
    for index, item in enumerate(raw["methods"]):
        key = f"methods[{index}]"
        item = {"name": item} if isinstance(item, str) else _mapping(item, key)
        extra = sorted(set(item) - {"name", "params", "strengths", "label"})
        if extra:
            raise _fail(f"{key}.{extra[0]}", "unknown key; allowed: name, label, params, strengths")
        if item.get("name") not in METHODS.names():
            raise _fail(
                f"{key}.name",
                f"unknown method {item.get('name')!r}{near_miss(item.get('name'), METHODS.names())}"
                f"; allowed: {', '.join(METHODS.names())}",
            )
        params = _mapping(item.get("params") or {}, f"{key}.params")
        spec = MethodSpec(item["name"], dict(params), item.get("strengths"), item.get("label"))
        if spec.display in {m.display for m in methods} | {"none"}:
            raise _fail(
                f"{key}.label",
                f"{spec.display!r} is used twice; give each variant of a method its own label",
            )
        if not isinstance(spec.params, dict) or (
            spec.label is not None and not SAFE_NAME.fullmatch(str(spec.label))
        ):
            raise _fail(
                key, "params must be a mapping and label a plain name (letters, digits, . _ -)"
            )
        method = get_method(spec.name, **spec.params)  # validates hyper-parameters
        if spec.strengths is not None:
            if not isinstance(spec.strengths, list) or not spec.strengths:
                raise _fail(f"{key}.strengths", "must be a non-empty list of numbers")
            spec.strengths = [
                float(check_value(s, float, f"{key}.strengths")) for s in spec.strengths
            ]
            for strength in spec.strengths:
                method.check_strength(strength)
            repeated = _first_repeat(spec.strengths)
            if repeated is not None:
                raise _fail(
                    f"{key}.strengths", f"{repeated:g} is listed twice; each strength runs once"
                )
        methods.append(spec)

    discovery = _mapping(raw["discovery"], "discovery")
    if set(discovery) != {"positive", "negative"}:
        raise _fail("discovery", "needs exactly the keys positive and negative")
    evaluation = _mapping(raw["evaluation"], "evaluation")
    if not evaluation:
        raise _fail("evaluation", "needs at least one named prompt set")
    validation = _mapping(raw.get("validation") or {}, "validation")
    if set(validation) - set(evaluation):
        raise _fail(
            "validation",
            f"names {sorted(set(validation) - set(evaluation))[0]!r}, which is no evaluation set; "
            f"a validation set chooses strengths for the evaluation set of the same name",
        )
    for key, spec in {
        **{f"discovery.{k}": v for k, v in discovery.items()},
        **{f"evaluation.{k}": v for k, v in evaluation.items()},
        **{f"validation.{k}": v for k, v in validation.items()},
    }.items():
        try:
            load_prompts(str(spec), split_seed=scalars["split_seed"])
        except SteerbenchError as err:
            raise _fail(key, str(err)) from err

    metrics = []
    metric_block = raw["metrics"]
    if isinstance(metric_block, list):
        metric_block = {m: {} for m in metric_block}
    for metric_name, options in _mapping(metric_block, "metrics").items():
        if metric_name not in METRICS.names():
            raise _fail(
                f"metrics.{metric_name}",
                f"unknown metric{near_miss(metric_name, METRICS.names())}; allowed: "
                f"{', '.join(METRICS.names())}",
            )
        options = dict(_mapping(options or {}, f"metrics.{metric_name}"))
        sets = options.pop("sets", None)
        if sets is not None and (
            not isinstance(sets, list)
            or not all(isinstance(name, str) for name in sets)
            or set(sets) - set(evaluation)
        ):
            raise _fail(
                f"metrics.{metric_name}.sets",
                f"must list evaluation sets among {', '.join(evaluation)}",
            )
        get_metric(metric_name, **options)  # validates options
        metrics.append(MetricSpec(metric_name, options, sets))

    generation = check_fields(
        GenerationSettings,
        _mapping(raw.get("generation") or {}, "generation"),
        "generation key",
        sort_allowed=False,  # max_new_tokens first: the one people mean
    )
    GenerationSettings(**generation)  # ranges (max_new_tokens >= 1, ...)
    prompt_format = check_fields(
        PromptFormat, _mapping(raw.get("prompt_format") or {}, "prompt_format"), "prompt_format key"
    )
    limit = raw.get("evaluation_limit")

    def bad_limit(value: Any) -> bool:
        return isinstance(value, bool) or not isinstance(value, int) or value < 1

    if isinstance(limit, dict):
        if set(limit) - set(evaluation) or any(bad_limit(v) for v in limit.values()):
            raise _fail(
                "evaluation_limit",
                f"a mapping must give evaluation sets ({', '.join(evaluation)}) positive integers",
            )
    elif limit is not None and bad_limit(limit):
        raise _fail(
            "evaluation_limit",
            f"must be a positive integer, a mapping of set names to them, or null; got {limit!r}",
        )
    roles = _mapping(raw.get("roles") or {}, "roles")
    for role, names in roles.items():
        if role not in ROLES:
            raise _fail(f"roles.{role}", f"unknown role; allowed: {', '.join(ROLES)}")
        listed = [names] if isinstance(names, str) else names
        if not isinstance(listed, list) or not listed or set(listed) - set(evaluation):
            raise _fail(
                f"roles.{role}",
                f"must name evaluation sets among {', '.join(evaluation)} (one or a list)",
            )
    tasks = parse_tasks(raw["tasks"] if "tasks" in raw else default_tasks_document())
    if "tasks" in raw:  # the shipped default tasks may name metrics a small config skips
        configured = {m.name for m in metrics}
        for task in tasks:
            for where, metric in [("metric", task.metric)] + [
                (f"constraints[{i}].metric", c.metric) for i, c in enumerate(task.constraints)
            ]:
                if metric not in configured:
                    raise _fail(
                        f"tasks.{task.name}.{where}",
                        f"{metric!r} is not among the config's metrics "
                        f"({', '.join(sorted(configured))}); add it under metrics: or fix the name",
                    )
    return BenchmarkConfig(
        name=config_name,
        models=models,
        methods=methods,
        discovery=discovery,
        evaluation=evaluation,
        metrics=metrics,
        evaluation_limit=limit,
        validation=validation,
        roles=roles,
        tasks=tasks,
        generation=generation,
        prompt_format=prompt_format,
        **scalars,
    )


def default_tasks_document() -> dict:
    """The tasks of the shipped default config: what a config without ``tasks`` gets."""
    raw = yaml.safe_load((configs_root() / "default.yaml").read_text(encoding="utf-8"))
    return raw["tasks"]


def parse_tasks(block: Any) -> list[TaskSpec]:
    """``tasks:`` of a config (see configs/default.yaml), validated."""
    from steerbench.metric import METRICS

    tasks = []
    for name, body in _mapping(block, "tasks").items():
        key = f"tasks.{name}"
        body = _mapping(body, key)
        extra = sorted(set(body) - {"metric", "goal", "constraints", "description"})
        if extra:
            raise _fail(
                f"{key}.{extra[0]}", "unknown key; allowed: metric, goal, constraints, description"
            )
        if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
            raise _fail(key, "a task name must be a plain name (letters, digits, . _ -)")
        if not isinstance(body.get("metric"), str):
            raise _fail(f"{key}.metric", "must name the primary metric (on the target set)")
        if body["metric"] not in METRICS.names():
            raise _fail(
                f"{key}.metric",
                f"unknown metric {body['metric']!r}{near_miss(body['metric'], METRICS.names())}; "
                f"allowed: {', '.join(METRICS.names())}",
            )
        if body.get("goal") not in GOALS:
            raise _fail(f"{key}.goal", f"must be one of {', '.join(GOALS)}")
        constraints = []
        for index, item in enumerate(body.get("constraints") or []):
            where = f"{key}.constraints[{index}]"
            item = _mapping(item, where)
            try:
                constraint = Constraint(**item)
            except TypeError:
                allowed = ", ".join(f.name for f in dataclasses.fields(Constraint))
                raise _fail(where, f"unknown key; allowed: {allowed}") from None
            if constraint.role not in CONSTRAINT_ROLES:
                raise _fail(f"{where}.role", f"must be one of {', '.join(CONSTRAINT_ROLES)}")
            bounds = [constraint.min, constraint.max, constraint.max_drop, constraint.max_rise]
            if not any(b is not None for b in bounds) or not all(
                b is None
                or (isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b))
                for b in bounds
            ):
                raise _fail(where, "needs a finite numeric min, max, max_drop or max_rise")
            if not isinstance(constraint.metric, str) or constraint.metric not in METRICS.names():
                raise _fail(
                    f"{where}.metric",
                    f"unknown metric {constraint.metric!r}"
                    f"{near_miss(constraint.metric, METRICS.names())}; allowed: "
                    f"{', '.join(METRICS.names())}",
                )
            constraints.append(constraint)
        tasks.append(
            TaskSpec(
                name, body["metric"], body["goal"], constraints, str(body.get("description", ""))
            )
        )
    return tasks


def load_config(spec: str) -> BenchmarkConfig:
    """A built-in config name (``BUILTIN_CONFIGS``) or a path to a YAML file."""
    path = configs_root() / f"{spec}.yaml" if spec in BUILTIN_CONFIGS else Path(spec)
    if not path.is_file():
        raise SteerbenchError(
            f"config {spec!r} not found; use a YAML file or one of {', '.join(BUILTIN_CONFIGS)}"
        )
    return parse_config(load_yaml(path), path.stem)


MAX_YAML_BYTES = 1_000_000
MAX_YAML_NODES = 100_000
"""Bounds on a YAML document steerbench reads: a config is a few kilobytes, and an alias
bomb (aliases of aliases, "billion laughs") would otherwise expand into billions of
values in everything that walks the config."""


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """How many nodes ``root`` stands for with every alias expanded (memoised on the
    shared nodes, so counting costs what the document's text does), stopping past
    ``limit``."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            children = []
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = list(node.value)
        if not children_done:
            stack.append((node, True))
            stack += [(child, False) for child in children if id(child) not in sizes]
            continue
        sizes[id(node)] = min(limit + 1, 1 + sum(sizes.get(id(c), 0) for c in children))
    return sizes[id(root)]


def load_yaml(path: Path) -> Any:
    """``yaml.safe_load`` of a file within the bounds above, or one line naming the bound or
    the syntax error's line. Aliases are counted on the composed node graph, which shares
    aliased nodes instead of expanding them."""
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise SteerbenchError(
                f"{path} is {size:,} bytes; a YAML file steerbench reads may have at most "
                f"{MAX_YAML_BYTES:,}"
            )
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is None:
            return None
        if _expanded_size(root, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise SteerbenchError(
                f"{path} expands (through its YAML aliases) to more than {MAX_YAML_NODES:,} "
                f"values; write the values out instead of aliasing aliases"
            )
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SteerbenchError(f"{path} is not valid YAML{where}; fix the syntax") from err
    except RecursionError:
        raise SteerbenchError(f"{path} is nested too deeply to be a config") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SteerbenchError(f"cannot read {path} as UTF-8 text: {err}") from err


def _first_repeat(values: list) -> Any:
    """The first value that occurs twice in ``values``, or None."""
    seen: list = []
    for value in values:
        if value in seen:
            return value
        seen.append(value)
    return None
