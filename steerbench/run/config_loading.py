"""From a config file to a checked ``BenchmarkConfig``: read the YAML (``config_yaml``),
check the document's shape into the typed schema (``config_checks``), and resolve it:
build each method and metric through its registry (which checks its hyper-parameters and
strengths) and read each prompt set, so that a config that cannot run fails here, before
any model is loaded. Last come the references to evaluation sets (``check_references``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerbench.errors import SteerbenchError
from steerbench.method import get_method
from steerbench.metric import get_metric
from steerbench.run.config_checks import check_document, check_references
from steerbench.run.config_keys import fail
from steerbench.run.config_schema import BUILTIN_CONFIGS, BenchmarkConfig
from steerbench.run.config_yaml import configs_root, load_yaml
from steerbench.run.prompt_sets import load_prompts


def load_config(spec: str) -> BenchmarkConfig:
    """A built-in config name (``BUILTIN_CONFIGS``) or a path to a YAML file."""
    path = configs_root() / f"{spec}.yaml" if spec in BUILTIN_CONFIGS else Path(spec)
    if not path.is_file():
        raise SteerbenchError(
            f"config {spec!r} not found; use a YAML file or one of {', '.join(BUILTIN_CONFIGS)}"
        )
    return parse_config(load_yaml(path), path.stem)


def parse_config(raw: Any, name: str) -> BenchmarkConfig:
    """Validate a loaded YAML document (see configs/default.yaml for the format); ``name``
    names the config when the document has no ``name:`` (a file's stem)."""
    from steerbench.run.behaviour_tasks import behaviour_configs

    config = check_document(raw, name)
    for part in behaviour_configs(config):  # each behaviour's own discovery and metrics
        resolve(part)
        check_references(part)
    return config


def resolve(config: BenchmarkConfig) -> None:
    """Build every method and metric (their own checks of their settings) and read every
    prompt set the config names; the first problem is a one-line ``SteerbenchError``."""
    for spec in config.methods:
        method = get_method(spec.name, **spec.params)  # validates hyper-parameters
        for strength in spec.strengths or method.default_strengths:  # the sweep that runs
            method.check_strength(strength)
    for key, prompt_spec in _prompt_set_specs(config).items():
        try:
            load_prompts(str(prompt_spec), split_seed=config.split_seed)
        except SteerbenchError as err:
            raise fail(key, str(err)) from err
    for metric in config.metrics:
        get_metric(metric.name, **metric.options)  # validates options


def _prompt_set_specs(config: BenchmarkConfig) -> dict[str, str]:
    """Each prompt set the config names, by its config key (``evaluation.harmful``)."""
    return {
        **{f"discovery.{k}": v for k, v in config.discovery.items()},
        **{f"evaluation.{k}": v for k, v in config.evaluation.items()},
        **{f"validation.{k}": v for k, v in config.validation.items()},
    }
