"""Turn configs and round records into strict JSON that both SQLite and PostgreSQL accept.

PostgreSQL's ``json`` type rejects ``NaN`` and ``Infinity``, and the standard library writes
them by default; a round's evaluation can legitimately hold a NaN (AUROC on a site with one
class). :func:`to_json` therefore stores non-finite floats as ``null``, unwraps numpy scalars
and small arrays, turns tuples into lists, and refuses anything else, naming where it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fedcare.errors import ValidationError

__all__ = ["to_json"]


def to_json(value: Any, what: str) -> Any:
    """A copy of ``value`` made only of dicts, lists, str, int, finite float, bool and None.

    Parameters
    ----------
    value:
        The value to convert (never mutated).
    what:
        What the value is, for error messages (``"round record"``).

    Returns
    -------
    Any
        The converted copy; non-finite floats become ``None``.

    Raises
    ------
    ValidationError
        If a mapping key is not a string or a value has no JSON form; names the path.
    """
    return _convert(value, what)


def _convert(value: Any, path: str) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"{path}: key {key!r} must be a string")
            out[key] = _convert(item, f"{path}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [_convert(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy scalar or array
        return _convert(value.tolist(), path)
    raise ValidationError(f"{path} = {value!r} ({type(value).__name__}) cannot be stored as JSON")
