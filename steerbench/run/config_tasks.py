"""Checking what a config asks the leaderboard to decide: its ``tasks`` (a primary metric,
a goal, constraints) and its ``behaviours`` (each one a pair of tasks, see
``steerbench.run.behaviour_tasks``)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from steerbench.metric import METRICS
from steerbench.run.config_keys import bad_limit, fail, first_repeat, known, mapping, typed
from steerbench.run.config_schema import SAFE_NAME, BehavioursSpec, Constraint, TaskSpec

TASK_KEYS = ("metric", "goal", "constraints", "description", "role")
BEHAVIOURS_KEYS = tuple(f.name for f in dataclasses.fields(BehavioursSpec))


def behaviour_scalars(raw: dict) -> dict[str, Any]:
    """``behaviour`` and ``discovery_limit``: what a behaviour's own config
    (``steerbench.run.behaviour_tasks``) adds, read back from its results directory."""
    from steerbench.run.behaviour_tasks import TASK_BEHAVIOURS

    behaviour, limit = raw.get("behaviour"), raw.get("discovery_limit")
    if behaviour is not None:
        known(behaviour, list(TASK_BEHAVIOURS), "behaviour", f"behaviour {behaviour!r}")
    if limit is not None and bad_limit(limit):
        raise fail("discovery_limit", f"must be a positive integer or null, got {limit!r}")
    return {"behaviour": behaviour, "discovery_limit": limit}


def parse_behaviours(block: Any) -> BehavioursSpec:
    """``behaviours:`` (see configs/behaviours.yaml): shipped CAA behaviours and their sizes."""
    from steerbench.run.behaviour_tasks import TASK_BEHAVIOURS

    block = mapping(block, "behaviours")
    extra = sorted(set(block) - set(BEHAVIOURS_KEYS))
    if extra:
        raise fail(f"behaviours.{extra[0]}", f"unknown key; allowed: {', '.join(BEHAVIOURS_KEYS)}")
    names = block.get("names")
    if not isinstance(names, list) or not names:
        raise fail("behaviours.names", f"must list behaviours among {', '.join(TASK_BEHAVIOURS)}")
    for index, name in enumerate(names):
        known(name, list(TASK_BEHAVIOURS), f"behaviours.names[{index}]", f"behaviour {name!r}")
    if first_repeat(names) is not None:
        raise fail("behaviours.names", f"{first_repeat(names)!r} is listed twice")
    sizes: dict[str, Any] = {}
    for key in ("discovery_n", "validation_n", "evaluation_n", "side_n"):
        value = block.get(key, getattr(BehavioursSpec, key))
        if key == "evaluation_n" and value is None:
            sizes[key] = None
            continue
        if bad_limit(value):
            raise fail(f"behaviours.{key}", f"must be a positive integer, got {value!r}")
        sizes[key] = value
    constraints = [
        parse_constraint(item, f"behaviours.constraints[{index}]")
        for index, item in enumerate(block.get("constraints") or [])
    ]
    return BehavioursSpec(names=list(names), constraints=constraints, **sizes)


def check_task_metrics(tasks: list[TaskSpec], configured: set[str]) -> None:
    """Each metric a task reads must be among the config's metrics."""
    for task in tasks:
        for where, metric in [("metric", task.metric)] + [
            (f"constraints[{i}].metric", c.metric) for i, c in enumerate(task.constraints)
        ]:
            if metric not in configured:
                raise fail(
                    f"tasks.{task.name}.{where}",
                    f"{metric!r} is not among the config's metrics "
                    f"({', '.join(sorted(configured))}); add it under metrics: or fix the name",
                )


def parse_tasks(block: Any) -> list[TaskSpec]:
    """``tasks:`` of a config (see configs/default.yaml), checked."""
    tasks = []
    for name, body in mapping(block, "tasks").items():
        key = f"tasks.{name}"
        body = mapping(body, key)
        extra = sorted(set(body) - set(TASK_KEYS))
        if extra:
            raise fail(f"{key}.{extra[0]}", f"unknown key; allowed: {', '.join(TASK_KEYS)}")
        if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
            raise fail(key, "a task name must be a plain name (letters, digits, . _ -)")
        if not isinstance(body.get("metric"), str):
            raise fail(f"{key}.metric", "must name the primary metric (on the target set)")
        known(body["metric"], METRICS.names(), f"{key}.metric", f"metric {body['metric']!r}")
        goal = typed(TaskSpec, "goal", body.get("goal"), f"{key}.goal")
        role = typed(TaskSpec, "role", body.get("role", "target"), f"{key}.role")
        constraints = [
            parse_constraint(item, f"{key}.constraints[{index}]")
            for index, item in enumerate(body.get("constraints") or [])
        ]
        tasks.append(
            TaskSpec(
                name, body["metric"], goal, constraints, str(body.get("description", "")), role
            )
        )
    return tasks


def parse_constraint(item: Any, where: str) -> Constraint:
    try:
        constraint = Constraint(**mapping(item, where))
    except TypeError:
        allowed = ", ".join(f.name for f in dataclasses.fields(Constraint))
        raise fail(where, f"unknown key; allowed: {allowed}") from None
    typed(Constraint, "role", constraint.role, f"{where}.role")
    bounds = [constraint.min, constraint.max, constraint.max_drop, constraint.max_rise]
    if not any(b is not None for b in bounds) or not all(
        b is None or (isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b))
        for b in bounds
    ):
        raise fail(where, "needs a finite numeric min, max, max_drop or max_rise")
    known(constraint.metric, METRICS.names(), f"{where}.metric", f"metric {constraint.metric!r}")
    return constraint


def check_behaviour_constraints(behaviours: BehavioursSpec, configured: set[str]) -> None:
    """Each metric the behaviours' constraints read is among the config's metrics or is a
    behaviour's own score."""
    from steerbench.run.behaviour_tasks import behaviour_metric

    measured = configured | {behaviour_metric(name) for name in behaviours.names}
    for index, constraint in enumerate(behaviours.constraints):
        if constraint.metric not in measured:
            raise fail(
                f"behaviours.constraints[{index}].metric",
                f"{constraint.metric!r} is not measured (metrics: "
                f"{', '.join(sorted(configured)) or 'none'}); add it under metrics:",
            )
