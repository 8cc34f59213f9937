"""Checking a config document's shape into the typed schema (``config_schema``).

Every key is checked up front, before any model is loaded, with one-line errors that name
the bad key and the allowed values. ``check_document`` checks each section (names of
methods and metrics against the registries); building the plugins and reading the prompt
files comes next (``config_loading.resolve``), and ``check_references`` last: the
evaluation sets that metrics, limits and roles name, once those sets are known to load.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from steerbench.method import METHODS, UNSTEERED
from steerbench.metric import METRICS
from steerbench.model.chat import PromptFormat
from steerbench.model.generation import GenerationSettings
from steerbench.options import check_fields, check_value, near_miss
from steerbench.run.config_keys import bad_limit, fail, first_repeat, known, mapping, typed
from steerbench.run.config_schema import (
    BEHAVIOUR_DERIVED_KEYS,
    REQUIRED_KEYS,
    ROLES,
    SAFE_NAME,
    TOP_LEVEL_KEYS,
    BehavioursSpec,
    BenchmarkConfig,
    MethodSpec,
    MetricSpec,
)
from steerbench.run.config_tasks import (
    behaviour_scalars,
    check_behaviour_constraints,
    check_task_metrics,
    parse_behaviours,
    parse_tasks,
)
from steerbench.run.config_yaml import default_tasks_document

METHOD_KEYS = ("name", "label", "params", "strengths")


def check_document(raw: Any, name: str) -> BenchmarkConfig:
    """A loaded YAML document (see configs/default.yaml for the format) as the typed
    config, its plugins not built yet and its references to evaluation sets (a metric's
    ``sets``, ``evaluation_limit``, ``roles``) not checked yet (see ``check_references``);
    ``name`` is the file's stem, used without ``name:``."""
    raw = mapping(raw, "<top level>")
    _check_keys(raw)
    config_name = _config_name(raw, name)
    scalars = _scalars(raw)
    models = _models(raw["models"])
    methods = _methods(raw["methods"])
    behaviours = parse_behaviours(raw["behaviours"]) if "behaviours" in raw else None
    discovery, evaluation, validation = _prompt_sets(raw, behaviours, bool(raw.get("behaviour")))
    metrics = _metrics(raw["metrics"])
    generation = check_fields(
        GenerationSettings,
        mapping(raw.get("generation") or {}, "generation"),
        "generation key",
        sort_allowed=False,  # max_new_tokens first: the one people mean
    )
    GenerationSettings(**generation)  # ranges (max_new_tokens >= 1, ...)
    prompt_format = check_fields(
        PromptFormat, mapping(raw.get("prompt_format") or {}, "prompt_format"), "prompt_format key"
    )
    tasks = (
        []
        if behaviours
        else parse_tasks(raw["tasks"] if "tasks" in raw else default_tasks_document())
    )
    if "tasks" in raw:  # the shipped default tasks may name metrics a small config skips
        check_task_metrics(tasks, {m.name for m in metrics})
    if behaviours:  # what every behaviour's tasks are constrained by must be measured
        check_behaviour_constraints(behaviours, {m.name for m in metrics})
    return BenchmarkConfig(
        name=config_name,
        models=models,
        methods=methods,
        discovery=discovery,
        evaluation=evaluation,
        metrics=metrics,
        evaluation_limit=raw.get("evaluation_limit"),
        validation=validation,
        roles=raw.get("roles") or {},
        tasks=tasks,
        generation=generation,
        prompt_format=prompt_format,
        behaviours=behaviours,
        **behaviour_scalars(raw),
        **scalars,
    )


def _check_keys(raw: dict) -> None:
    unknown = sorted(set(raw) - TOP_LEVEL_KEYS)
    if unknown:
        raise fail(
            unknown[0],
            f"unknown key{near_miss(unknown[0], TOP_LEVEL_KEYS)}; allowed: "
            f"{', '.join(sorted(TOP_LEVEL_KEYS))}",
        )
    for key in REQUIRED_KEYS:
        optional = (*BEHAVIOUR_DERIVED_KEYS, "evaluation") if "behaviours" in raw else ()
        if key not in raw and key not in optional:
            raise fail(key, "is required")
    for key in BEHAVIOUR_DERIVED_KEYS:
        if "behaviours" in raw and key in raw:
            raise fail(key, "comes from each behaviour in a config with behaviours; remove it")


def _config_name(raw: dict, name: str) -> str:
    config_name = raw.get("name", name)
    if not isinstance(config_name, str) or not SAFE_NAME.fullmatch(config_name):
        where = "" if "name" in raw else " (taken from the file name; set `name:` instead)"
        raise fail(
            "name",
            f"{config_name!r}{where} is not a plain name (letters, digits, '.', '_', '-', not "
            f"starting with '.'; it names the results directory results/<name>)",
        )
    return config_name


def _scalars(raw: dict) -> dict[str, Any]:
    """device, dtype (case-insensitive, as on the command line), evaluate, seed, split_seed."""
    defaults = {f.name: f.default for f in dataclasses.fields(BenchmarkConfig)}
    scalars = {}
    for key in ("device", "dtype", "evaluate", "seed", "split_seed"):
        value = raw.get(key, defaults[key])
        if key == "dtype" and isinstance(value, str):
            value = value.lower()
        scalars[key] = typed(BenchmarkConfig, key, value, key)
    for key in ("seed", "split_seed"):
        if not 0 <= scalars[key] < 2**32:
            raise fail(key, f"must be an integer from 0 to 2**32 - 1, got {scalars[key]}")
    return scalars


def _models(models: Any) -> list[str]:
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise fail("models", "must be a non-empty list of model names or paths")
    repeated = first_repeat(models)
    if repeated is not None:
        raise fail("models", f"{repeated!r} is listed twice; each model runs once")
    return models


def _methods(block: Any) -> list[MethodSpec]:
    if not isinstance(block, list) or not block:
        raise fail("methods", "must be a non-empty list")
    methods: list[MethodSpec] = []
    for index, item in enumerate(block):
        spec = _method(item, f"methods[{index}]")
        if spec.display in {m.display for m in methods} | {UNSTEERED}:
            raise fail(
                f"methods[{index}].label",
                f"{spec.display!r} is used twice; give each variant of a method its own label",
            )
        methods.append(spec)
    return methods


def _method(item: Any, key: str) -> MethodSpec:
    item = {"name": item} if isinstance(item, str) else mapping(item, key)
    extra = sorted(set(item) - set(METHOD_KEYS))
    if extra:
        raise fail(f"{key}.{extra[0]}", f"unknown key; allowed: {', '.join(METHOD_KEYS)}")
    name = item.get("name")
    known(name, METHODS.names(), f"{key}.name", f"method {name!r}")
    params = mapping(item.get("params") or {}, f"{key}.params")
    label = item.get("label")
    if label is not None and not SAFE_NAME.fullmatch(str(label)):
        raise fail(key, "params must be a mapping and label a plain name (letters, digits, . _ -)")
    return MethodSpec(name, dict(params), _strengths(item.get("strengths"), key), label)


def _strengths(strengths: Any, key: str) -> list[float] | None:
    """A sweep of finite numbers, each once (its domain is the method's: checked when the
    method is built); None leaves the method's default sweep."""
    if strengths is None:
        return None
    if not isinstance(strengths, list) or not strengths:
        raise fail(f"{key}.strengths", "must be a non-empty list of numbers")
    checked = [float(check_value(s, float, f"{key}.strengths")) for s in strengths]
    repeated = first_repeat(checked)
    if repeated is not None:
        raise fail(f"{key}.strengths", f"{repeated:g} is listed twice; each strength runs once")
    return checked


def _prompt_sets(
    raw: dict, behaviours: BehavioursSpec | None, of_behaviour: bool
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """discovery, evaluation and validation: names of prompt sets (read when resolving).
    A config with behaviours has no discovery of its own (each behaviour brings its pairs),
    and it and each behaviour's own config need no evaluation set (A/B items are read at
    the model level)."""
    discovery = mapping(raw.get("discovery", {}), "discovery")
    if behaviours is None and set(discovery) != {"positive", "negative"}:
        raise fail("discovery", "needs exactly the keys positive and negative")
    evaluation = mapping(raw.get("evaluation", {}), "evaluation")
    if not evaluation and behaviours is None and not of_behaviour:
        raise fail("evaluation", "needs at least one named prompt set")
    validation = mapping(raw.get("validation") or {}, "validation")
    if set(validation) - set(evaluation):
        raise fail(
            "validation",
            f"names {sorted(set(validation) - set(evaluation))[0]!r}, which is no evaluation set; "
            f"a validation set chooses strengths for the evaluation set of the same name",
        )
    return discovery, evaluation, validation


def _metrics(block: Any) -> list[MetricSpec]:
    if isinstance(block, list):
        block = {m: {} for m in block}
    metrics = []
    for metric_name, options in mapping(block, "metrics").items():
        known(metric_name, METRICS.names(), f"metrics.{metric_name}", "metric")
        options = dict(mapping(options or {}, f"metrics.{metric_name}"))
        sets = options.pop("sets", None)  # see check_references
        metrics.append(MetricSpec(metric_name, options, sets))
    return metrics


def check_references(config: BenchmarkConfig) -> None:
    """The evaluation sets a metric's ``sets``, ``evaluation_limit`` and ``roles`` name
    exist (checked after the sets themselves have been read: a set that fails to load is
    the error to report first)."""
    evaluation = config.evaluation
    for metric in config.metrics:
        sets = metric.sets
        if sets is not None and (
            not isinstance(sets, list)
            or not all(isinstance(name, str) for name in sets)
            or set(sets) - set(evaluation)
        ):
            raise fail(
                f"metrics.{metric.name}.sets",
                f"must list evaluation sets among {', '.join(evaluation)}",
            )
    _evaluation_limit(config.evaluation_limit, evaluation)
    _roles(mapping(config.roles, "roles"), evaluation)


def _evaluation_limit(limit: Any, evaluation: dict[str, str]) -> None:
    if isinstance(limit, dict):
        if set(limit) - set(evaluation) or any(bad_limit(v) for v in limit.values()):
            raise fail(
                "evaluation_limit",
                f"a mapping must give evaluation sets ({', '.join(evaluation)}) positive integers",
            )
    elif limit is not None and bad_limit(limit):
        raise fail(
            "evaluation_limit",
            f"must be a positive integer, a mapping of set names to them, or null; got {limit!r}",
        )


def _roles(roles: dict, evaluation: dict[str, str]) -> None:
    for role, names in roles.items():
        if role not in ROLES:
            raise fail(f"roles.{role}", f"unknown role; allowed: {', '.join(ROLES)}")
        listed = [names] if isinstance(names, str) else names
        if not isinstance(listed, list) or not listed or set(listed) - set(evaluation):
            raise fail(
                f"roles.{role}",
                f"must name evaluation sets among {', '.join(evaluation)} (one or a list)",
            )
