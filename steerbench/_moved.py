"""Import paths of the previous release's flat layout, kept working.

0.2 moved most modules into one sub-package per floor (see CHANGELOG.md). Plugins and
notebooks written against 0.1 import e.g. ``steerbench.levels`` or ``steerbench.data``; an
import of an old path returns the module at its new path (the same module object, so
monkeypatching either name patches both) with a ``DeprecationWarning`` naming the new one.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

MOVED: dict[str, str] = {
    "steerbench.adapter": "steerbench.model.adapter",
    "steerbench.analysis": "steerbench.studies.circuits",
    "steerbench.bench": "steerbench.studies.bench",
    "steerbench.capture": "steerbench.model.capture",
    "steerbench.cli_options": "steerbench.cli.options",
    "steerbench.commands": "steerbench.cli.commands",
    "steerbench.commands.harness": "steerbench.cli.commands.lm_eval",
    "steerbench.commands.sae": "steerbench.cli.commands.sae_train",
    "steerbench.comparisons": "steerbench.stats.comparisons",
    "steerbench.config": "steerbench.run.config",
    "steerbench.data": "steerbench.run.prompt_sets",
    "steerbench.device": "steerbench.model.device",
    "steerbench.executors": "steerbench.run.executors",
    "steerbench.generation": "steerbench.model.generation",
    "steerbench.harness": "steerbench.integrations.lm_eval",
    "steerbench.io": "steerbench.files",
    "steerbench.leaderboard": "steerbench.publish.leaderboard",
    "steerbench.levels": "steerbench.model.levels",
    "steerbench.markdown": "steerbench.publish.markdown",
    "steerbench.methods.sae": "steerbench.methods.sae_features",
    "steerbench.metrics.harness": "steerbench.metrics.lm_eval_tasks",
    "steerbench.models": "steerbench.model.loading",
    "steerbench.power": "steerbench.stats.power",
    "steerbench.prompts": "steerbench.model.chat",
    "steerbench.ranking": "steerbench.stats.ranking",
    "steerbench.reproduce": "steerbench.studies.reproduce",
    "steerbench.results": "steerbench.run.results",
    "steerbench.runner": "steerbench.run.runner",
    "steerbench.sae": "steerbench.integrations.sae_training",
    "steerbench.tracking": "steerbench.run.tracking",
    "steerbench.validation": "steerbench.options",
}


def new_path(old: str) -> str | None:
    """Where the module once at ``old`` lives now (also for modules inside a moved package)."""
    for prefix in sorted(MOVED, key=len, reverse=True):
        if old == prefix or old.startswith(prefix + "."):
            return MOVED[prefix] + old[len(prefix) :]
    return None


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path and loads it as the module at its new path."""

    def __init__(self) -> None:
        self._own_specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if new_path(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = new_path(spec.name)
        assert new is not None  # find_spec only answers for moved paths
        warnings.warn(
            f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2
        )
        module = importlib.import_module(new)
        self._own_specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the old path's spec on the module; give it back its own.
        old = module.__spec__.name if module.__spec__ else module.__name__
        module.__spec__ = self._own_specs.pop(old, module.__spec__)


def install() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
