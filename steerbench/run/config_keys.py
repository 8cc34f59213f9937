"""The one-line errors and small checks every part of config checking shares."""

from __future__ import annotations

from typing import Any

from steerbench.errors import SteerbenchError
from steerbench.options import check_value, near_miss
from steerbench.run.config_schema import field_type


def fail(key: str, problem: str) -> SteerbenchError:
    """The one-line error about config key ``key``."""
    return SteerbenchError(f"config key {key!r}: {problem}")


def mapping(value: Any, key: str) -> dict:
    """``value`` if it is a mapping, else the error that says it must be one."""
    if not isinstance(value, dict):
        raise fail(key, f"must be a mapping, got {type(value).__name__}")
    return value


def typed(cls: type, name: str, value: Any, key: str) -> Any:
    """``value`` checked against the annotation of ``cls.name`` (a ``Literal``: its choices)."""
    return check_value(value, field_type(cls, name), f"config key {key!r}")


def known(value: Any, choices: list[str], key: str, what: str) -> None:
    """An error unless ``value`` is one of ``choices`` (a registry's names)."""
    if value not in choices:
        raise fail(key, f"unknown {what}{near_miss(value, choices)}; allowed: {', '.join(choices)}")


def first_repeat(values: list) -> Any:
    """The first value that occurs twice in ``values``, or None."""
    seen: list = []
    for value in values:
        if value in seen:
            return value
        seen.append(value)
    return None


def bad_limit(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, int) or value < 1
