"""Benchmark configs: YAML in, validated dataclasses out.

A config names the models, the methods (each with hyper-parameters and a strength sweep),
the discovery and evaluation prompt sets, the metrics and the generation settings.
Validation happens up front, before any model is loaded, with errors that name the bad
key and the allowed values.

The work is done in four modules, one step each; this one is where the rest of steerbench
imports configs from:

- ``config_schema``: the typed dataclasses and their ``Literal`` choices;
- ``config_yaml``: reading YAML files within bounds, and the shipped configs;
- ``config_checks``: checking a document's shape into the schema;
- ``config_loading``: ``load_config``/``parse_config``, resolving plugins and prompt sets.
"""

from __future__ import annotations

from steerbench.run.config_checks import check_document, check_references
from steerbench.run.config_loading import load_config, parse_config, resolve
from steerbench.run.config_schema import (
    BUILTIN_CONFIGS,
    CONSTRAINT_ROLES,
    GOALS,
    REQUIRED_KEYS,
    ROLES,
    SAFE_NAME,
    TOP_LEVEL_KEYS,
    BenchmarkConfig,
    Constraint,
    ConstraintRole,
    Dtype,
    Goal,
    MethodSpec,
    MetricSpec,
    Role,
    TaskSpec,
)
from steerbench.run.config_tasks import parse_tasks
from steerbench.run.config_yaml import (
    MAX_YAML_BYTES,
    MAX_YAML_NODES,
    configs_root,
    default_tasks_document,
    load_yaml,
)

__all__ = [
    "BUILTIN_CONFIGS",
    "CONSTRAINT_ROLES",
    "GOALS",
    "MAX_YAML_BYTES",
    "MAX_YAML_NODES",
    "REQUIRED_KEYS",
    "ROLES",
    "SAFE_NAME",
    "TOP_LEVEL_KEYS",
    "BenchmarkConfig",
    "Constraint",
    "ConstraintRole",
    "Dtype",
    "Goal",
    "MethodSpec",
    "MetricSpec",
    "Role",
    "TaskSpec",
    "check_document",
    "check_references",
    "configs_root",
    "default_tasks_document",
    "load_config",
    "load_yaml",
    "parse_config",
    "parse_tasks",
    "resolve",
]
