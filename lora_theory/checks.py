"""One family of input checks: every public entry point validates through these, before computing.

Each helper raises a ``ValueError`` (or :class:`RegistryKeyError`, also a ``KeyError``) whose message
names the parameter, the bad value and what is allowed. Numpy scalars count as numbers.
"""

from __future__ import annotations

import math
import numbers


class RegistryKeyError(KeyError, ValueError):
    """An unknown registry key; both a ``KeyError`` (registry lookup) and a ``ValueError`` (bad input)."""

    def __str__(self) -> str:
        return str(self.args[0])


def lookup(registry: dict, key: object, param: str):
    """``registry[key]``, or a :class:`RegistryKeyError` naming ``param`` and the valid keys.

    >>> lookup({"a": 1}, "a", "init")
    1
    """
    try:
        return registry[key]
    except (KeyError, TypeError):
        raise RegistryKeyError(f"{param} must be one of {sorted(registry)}, got {key!r}") from None


def is_int(value: object) -> bool:
    """True for Python and numpy integers (never for ``bool``)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """True for Python and numpy real numbers (never for ``bool``)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(name: str, value: object, low: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer ≥ ``low``, else ValueError.

    >>> check_int("steps", 3)
    3
    """
    if not is_int(value) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_positive(name: str, value: object) -> float:
    """``value`` as a ``float`` if it is a finite number > 0, else ValueError."""
    if not is_real(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


def check_finite(name: str, value: object) -> float:
    """``value`` as a ``float`` if it is a finite number, else ValueError."""
    if not is_real(value) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def as_list(value, name: str) -> list:
    """A scalar or an iterable as a non-empty list; ValueError naming ``name`` when empty.

    >>> as_list(3, "widths"), as_list((1, 2), "seeds")
    ([3], [1, 2])
    """
    if value is None or isinstance(value, (str, numbers.Number)):
        values = [value]
    else:
        values = list(value)
    if not values:
        raise ValueError(f"{name} must not be empty")
    return values


def check_unique(name: str, values: list) -> None:
    """ValueError naming the repeated entries of ``values`` (a duplicate would duplicate rows and weight fits)."""
    seen, dup = set(), []
    for v in values:
        if v in seen and v not in dup:
            dup.append(v)
        seen.add(v)
    if dup:
        raise ValueError(f"{name} must not repeat values, got {dup} more than once")
