"""Plugin registries (methods, metrics): built-ins by decorator, third parties by entry point.

Built-ins are the modules of a plugin folder (``steerbench.methods``, ``steerbench.metrics``):
every module there is imported, and its ``@registry.register("name")`` decorators fill the
registry, so adding a plugin is one new file and nothing else. Third-party packages
declare an entry point in the registry's group (``steerbench.methods`` /
``steerbench.metrics``) pointing at their class; ``pip install`` is all it takes.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from steerbench.errors import SteerbenchError

log = logging.getLogger(__name__)

T = TypeVar("T")
C = TypeVar("C")  # a plugin's Config dataclass


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    cls: type[T]
    source: str  # "builtin" or the distribution that provides it
    origin: str = ""  # where exactly, for error messages (module, or entry point)


class Registry(Generic[T]):
    """Name -> class lookup with lazy loading of built-ins and entry points."""

    def __init__(self, kind: str, package: str, group: str, base: type | None = None) -> None:
        self.kind = kind
        self.package = package
        self.group = group
        self.base = base  # every registered class must subclass it
        self._entries: dict[str, Entry[T]] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator for built-ins: ``@METHODS.register("cna")``."""

        def decorator(cls: type[T]) -> type[T]:
            self._add(Entry(name, cls, "builtin", f"built-in module {cls.__module__}"))
            return cls

        return decorator

    def _add(self, entry: Entry[T]) -> None:
        """Register one class: a second class under a taken name, or a class that is not
        a ``base``, is an error that names both sources (never a silent replacement)."""
        if self.base is not None and not (
            isinstance(entry.cls, type) and issubclass(entry.cls, self.base)
        ):
            raise SteerbenchError(
                f"{self.kind} {entry.name!r} from {entry.origin} is not a "
                f"{self.base.__name__} subclass; fix or uninstall that plugin"
            )
        existing = self._entries.get(entry.name)
        if existing is not None and existing.cls is not entry.cls:
            raise SteerbenchError(
                f"{self.kind} name {entry.name!r} is registered twice: by {existing.origin} "
                f"and by {entry.origin}; uninstall or rename one of them"
            )
        entry.cls.name = entry.name  # type: ignore[attr-defined]  # every plugin base declares it
        self._entries[entry.name] = entry

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self.package}.{module.name}")
        for point in entry_points(group=self.group):
            dist = point.dist.name if point.dist else "unknown distribution"
            origin = f"{dist} (entry point {point.name} = {point.value})"
            try:
                cls = point.load()
            except Exception as err:  # a broken plugin must not hide the others
                log.warning(
                    "could not load %s %r from %s: %s: %s (reinstall or remove %s)",
                    self.kind,
                    point.name,
                    origin,
                    type(err).__name__,
                    err,
                    dist,
                )
                continue
            self._add(Entry(point.name, cls, dist, origin))

    def entries(self) -> list[Entry[T]]:
        self._load()
        return sorted(self._entries.values(), key=lambda e: (e.source != "builtin", e.name))

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def get(self, name: str) -> type[T]:
        self._load()
        if name not in self._entries:
            raise SteerbenchError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}"
            )
        return self._entries[name].cls


def build_config(config_cls: type[C], params: dict[str, Any], what: str) -> C:
    """A plugin's ``Config`` dataclass from user parameters: every value checked against its
    field's type (strictly; floats finite) and the dataclass's own ``__post_init__``, with
    one-line errors that name the key (``what``: e.g. "hyper-parameter(s) for method 'cna'")."""
    from steerbench.options import check_fields

    if not isinstance(params, dict):
        raise SteerbenchError(f"{what} must be a mapping of names to values, got {params!r}")
    checked = check_fields(config_cls, params, what)
    try:
        return config_cls(**checked)
    except (TypeError, ValueError) as err:
        raise SteerbenchError(f"{what.split(' for ')[-1]}: {err}") from err
