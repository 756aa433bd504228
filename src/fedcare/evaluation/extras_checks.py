"""Checks of the subgroup, information, importance and notes parts of a site summary received from a
site (which the coordinator does not trust; :mod:`~fedcare.evaluation.clinical_checks` checks
the rest). :func:`extras_problem` names the first malformed field, or returns ``None``.

The shapes are those of :func:`fedcare.evaluation.subgroups.subgroup_summary`,
:func:`fedcare.evaluation.explain.site_information` and
:func:`fedcare.evaluation.explain.site_importance`. What is checked is what the combining code
relies on: types, whole non-negative counts within the site's rows, finite numbers, square
symmetric information matrices matching their parameter names, bounded sizes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["extras_problem"]

MAX_GROUPS = 10
MAX_LEVELS = 100
MAX_PARAMETERS = 2000
MAX_FEATURES = 10_000
_COUNTS = ("pos", "tp", "fp", "tn", "fn")
_SUMS = ("sum_p", "brier_sum")


class _Problem(Exception):
    pass


def extras_problem(summary: Mapping[str, Any]) -> str | None:
    """Why the ``subgroups``, ``information`` or ``importance`` part of ``summary`` is not
    acceptable, in one line naming the field, or ``None``."""
    n = summary.get("n")
    rows = n if isinstance(n, int) else 0
    try:
        if "subgroups" in summary:
            _subgroups(_mapping(summary["subgroups"], "subgroups"), rows)
        if "information" in summary:
            _information(_mapping(summary["information"], "information"))
        if "importance" in summary:
            _importance(_mapping(summary["importance"], "importance"), rows)
        if "notes" in summary:
            _notes(summary["notes"])
    except _Problem as problem:
        return str(problem)
    return None


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Problem(f"{where} must be an object, got {type(value).__name__}")
    return value


def _whole(value: Any, where: str, *, at_most: int | None = None, null: bool = True) -> None:
    if value is None and null:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Problem(f"{where} must be a whole number >= 0, got {value!r}")
    if at_most is not None and value > at_most:
        raise _Problem(f"{where} = {value} exceeds the site's {at_most} rows")


def _number(value: Any, where: str, *, low: float = -math.inf, high: float = math.inf) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Problem(f"{where} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise _Problem(f"{where} = {value!r} is outside [{low:g}, {high:g}]")


def _subgroups(part: Mapping[str, Any], rows: int) -> None:
    _whole(part.get("min_cell"), "subgroups.min_cell")
    groups = _mapping(part.get("groups", {}), "subgroups.groups")
    if len(groups) > MAX_GROUPS:
        raise _Problem(f"subgroups.groups has {len(groups)} groups, at most {MAX_GROUPS}")
    for name, group in groups.items():
        where = f"subgroups.groups[{name!r}]"
        levels = _mapping(_mapping(group, where).get("levels", {}), f"{where}.levels")
        if len(levels) > MAX_LEVELS:
            raise _Problem(f"{where} has {len(levels)} levels, at most {MAX_LEVELS}")
        total = 0
        for key, level in levels.items():
            at = f"{where}.levels[{key!r}]"
            cells = _mapping(level, at)
            _whole(cells.get("n"), f"{at}.n", at_most=rows)
            total += cells.get("n") or 0
            for count in _COUNTS:
                _whole(cells.get(count), f"{at}.{count}", at_most=rows)
            present = [cells.get(c) for c in ("tp", "fp", "tn", "fn")]
            if cells.get("n") is not None and None not in present:
                confusion = sum(int(c) for c in present if c is not None)
                if confusion != cells["n"]:
                    raise _Problem(f"{at}: tp+fp+tn+fn = {confusion}, n = {cells['n']}")
            for total_key in _SUMS:
                _number(cells.get(total_key), f"{at}.{total_key}", low=0.0, high=float(rows))
            _number(cells.get("auroc"), f"{at}.auroc", low=0.0, high=1.0)
            _number(cells.get("value"), f"{at}.value")
            for curve in ("curve_n", "curve_pos"):
                values = cells.get(curve, [])
                if not isinstance(values, list) or len(values) > 1000:
                    raise _Problem(f"{at}.{curve} must be a list of at most 1000 counts")
                for i, v in enumerate(values):
                    _whole(v, f"{at}.{curve}[{i}]", at_most=rows, null=True)
        if total > rows:
            raise _Problem(f"{where}: its levels count {total} rows, the site {rows}")


def _information(part: Mapping[str, Any]) -> None:
    if part.get("kind") not in ("logistic", "cox"):
        raise _Problem(f"information.kind must be 'logistic' or 'cox', got {part.get('kind')!r}")
    names = part.get("names")
    if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
        raise _Problem("information.names must be a list of strings")
    if len(names) > MAX_PARAMETERS:
        raise _Problem(f"information has {len(names)} parameters, at most {MAX_PARAMETERS}")
    _whole(part.get("n"), "information.n")
    matrix = part.get("matrix")
    if matrix is None:
        return
    k = len(names)
    if not isinstance(matrix, list) or len(matrix) != k:
        raise _Problem(f"information.matrix must be {k} x {k} (its names)")
    for i, row in enumerate(matrix):
        if not isinstance(row, list) or len(row) != k:
            raise _Problem(f"information.matrix row {i} must hold {k} numbers")
        for j, v in enumerate(row):
            _number(v, f"information.matrix[{i}][{j}]")
            if v is None:
                raise _Problem(f"information.matrix[{i}][{j}] is null")
    for i in range(k):
        for j in range(i):
            a, b = matrix[i][j], matrix[j][i]
            if abs(a - b) > 1e-6 * max(1.0, abs(a), abs(b)):
                raise _Problem(f"information.matrix is not symmetric at ({i}, {j})")


def _notes(notes: Any) -> None:
    if not isinstance(notes, list) or len(notes) > 20:
        raise _Problem("notes must be a list of at most 20 strings")
    for i, note in enumerate(notes):
        if not isinstance(note, str) or len(note) > 500:
            raise _Problem(f"notes[{i}] must be a string of at most 500 characters")


def _importance(part: Mapping[str, Any], rows: int) -> None:
    if not isinstance(part.get("metric"), str):
        raise _Problem("importance.metric must be a string")
    _whole(part.get("n"), "importance.n", at_most=rows)
    _whole(part.get("repeats"), "importance.repeats")
    _number(part.get("baseline"), "importance.baseline")
    drops = _mapping(part.get("drops", {}), "importance.drops")
    if len(drops) > MAX_FEATURES:
        raise _Problem(f"importance.drops has {len(drops)} features, at most {MAX_FEATURES}")
    for feature, drop in drops.items():
        _number(drop, f"importance.drops[{feature!r}]")
