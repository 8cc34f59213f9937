"""Typed validation of user-supplied settings (YAML configs, plugin options, artifacts'
hyper-parameters), before any model loads.

Each field of a settings dataclass is checked against its annotation with pydantic in
strict mode (no "3" for 3, no ``true`` for 1), and every float must be finite; errors are
one line that names the key, the value and the expected type.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from functools import cache
from typing import Annotated, Any, Literal

import annotated_types

from steerbench.errors import SteerbenchError


@cache
def _adapter(annotation: Any):
    import pydantic

    return pydantic.TypeAdapter(annotation)


def _type_name(annotation: Any) -> str:
    """``int``, ``int | None``, ``list[float]``: the type without its range (the message
    states the range)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else _type_name(a) for a in args)
    if origin is not None and args:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(map(_type_name, args))}]"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


Positive = Annotated[int, annotated_types.Ge(1)]
"""A count that must be at least 1 (sizes, batch sizes, token budgets)."""
NonNegative = Annotated[int, annotated_types.Ge(0)]
PositiveFloat = Annotated[float, annotated_types.Gt(0)]
Fraction = Annotated[float, annotated_types.Ge(0), annotated_types.Le(1)]
"""Option types with their meaningful range: a plugin's ``Config`` field annotated with one
of them (or any ``Annotated[..., annotated_types constraint]``) refuses values outside it
with one line, where 0 would otherwise give wrong numbers with exit status 0."""


def literal_choices(annotation: Any) -> tuple[Any, ...]:
    """The values a ``Literal[...]`` annotation allows, in declaration order; () otherwise."""
    return typing.get_args(annotation) if typing.get_origin(annotation) is Literal else ()


def check_value(value: Any, annotation: Any, key: str) -> Any:
    """``value`` validated against ``annotation`` (strict), all floats in it finite; a value
    outside a ``Literal`` is told the choices (and the closest one), not pydantic's text."""
    import pydantic

    try:
        checked = _adapter(annotation).validate_python(value, strict=True)
    except pydantic.ValidationError as err:
        choices = literal_choices(annotation)
        if choices:
            raise SteerbenchError(
                f"{key} = {value!r} is not one of {', '.join(map(str, choices))}"
                f"{near_miss(value, choices)}"
            ) from None
        raise SteerbenchError(
            f"{key} = {value!r} is not a valid {_type_name(annotation)} "
            f"({err.errors()[0]['msg'].lower()})"
        ) from None
    if not _all_finite(checked):
        raise SteerbenchError(f"{key} = {value!r} must be a finite number")
    return checked


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    return True


def near_miss(name: object, choices) -> str:
    """ " (did you mean 'x'?)" for the closest of ``choices`` to a misspelt ``name``."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_fields(
    cls: type, params: dict[str, Any], what: str, *, sort_allowed: bool = True
) -> dict[str, Any]:
    """``params`` for dataclass ``cls``, each checked against its field's annotation;
    ``what`` names them in errors (e.g. "hyper-parameter of method 'cna'"), which list the
    allowed names sorted or, with ``sort_allowed=False``, in declaration order."""
    hints = typing.get_type_hints(cls, include_extras=True)
    known = [f.name for f in dataclasses.fields(cls)]
    known = sorted(known) if sort_allowed else known
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise SteerbenchError(
            f"unknown {what}: {', '.join(unknown)}{near_miss(unknown[0], known)}; allowed: "
            f"{', '.join(known) or 'none'}"
        )
    return {
        name: check_value(value, hints[name], f"{what} {name}") for name, value in params.items()
    }
