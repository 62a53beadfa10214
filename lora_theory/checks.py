"""One family of input checks: every public entry point validates through these, before computing.

Each helper raises a ``ValueError`` (or :class:`RegistryKeyError`, also a ``KeyError``) whose message
names the parameter, the bad value and what is allowed. Numpy scalars count as numbers.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path


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
    """ValueError naming the repeated entries of ``values`` (a duplicate would duplicate rows and weight
    fits)."""
    seen, dup = set(), []
    for v in values:
        if v in seen and v not in dup:
            dup.append(v)
        seen.add(v)
    if dup:
        raise ValueError(f"{name} must not repeat values, got {dup} more than once")


def check_bool(name: str, value: object, none_ok: bool = True) -> None:
    """TypeError unless ``value`` is True or False (or None when ``none_ok``)."""
    if not (isinstance(value, bool) or (none_ok and value is None)):
        raise TypeError(f"{name} must be True, False{' or None' if none_ok else ''}, got {value!r}")


def check_dir(name: str, value: object, none_ok: bool = True) -> Path | None:
    """``value`` as a ``Path`` if it can be (or is) a directory; nothing is created. TypeError when it is not
    a path; ValueError when it is empty, an existing file, or lies under a file.

    >>> check_dir("cache_dir", "runs/cache")
    PosixPath('runs/cache')
    """
    if value is None and none_ok:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a directory path (str or Path){' or None' if none_ok else ''}, "
                        f"got {value!r}")
    if str(value).strip() == "":
        raise ValueError(f"{name} must be a directory path{' or None' if none_ok else ''}, got {value!r}")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name} must be a directory, got the file {str(path)!r}")
    _check_ancestors(name, path)
    return path


def check_executor(value: object) -> None:
    """TypeError unless ``value`` is None or a ``concurrent.futures.Executor`` instance."""
    from concurrent.futures import Executor

    if value is not None and not isinstance(value, Executor):
        raise TypeError(f"executor must be a concurrent.futures.Executor instance (e.g. "
                        f"ProcessPoolExecutor(2), a Dask client.get_executor()) or None, got {value!r}")


def check_table(df: object, /, **columns) -> None:
    """TypeError unless ``df`` is a DataFrame; ValueError unless it holds the columns each keyword names (the
    keyword is the parameter that names them; ``df=[...]`` for columns the function itself needs).

    >>> import pandas as pd
    >>> check_table(pd.DataFrame({"width": [1]}), x="width")
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    for param, cols in columns.items():
        cols = [cols] if isinstance(cols, str) else list(cols)
        missing = [c for c in cols if c not in df.columns]
        if missing:
            what = "df must have the columns" if param == "df" else f"{param} must name columns of df, not"
            raise ValueError(f"{what} {missing}; df has {list(df.columns)}")


def _check_ancestors(name: str, path: Path) -> None:
    """The nearest existing ancestor of ``path`` must be a writable directory."""
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{name}: {str(path)!r} lies under the file {str(parent)!r}")
            if not os.access(parent, os.W_OK):
                raise ValueError(f"{name}: the folder {str(parent)!r} is not writable")
            return
