"""Apply a site's mapping to its table: the harmonized table plus row-level problems.

No row is ever dropped: a value that cannot be read becomes missing (``NaN``) and a
:class:`Problem` names its row, variable and raw value; a category value with no code is kept
as it is, so that validation reports it as an unmapped code. Rows are numbered by position in
the source table (0-based); the harmonized frame keeps that numbering as its index.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fedcare.data.cdm.expr import columns_of, evaluate
from fedcare.data.cdm.mapping import ResolvedVariable, SiteMapping, normalize_code
from fedcare.data.cdm.schema import Schema
from fedcare.errors import ConfigError

__all__ = ["Harmonized", "Problem", "harmonize"]

EMPTY = "<empty>"


@dataclass(frozen=True)
class Problem:
    """One bad value: where it is and what is wrong with it."""

    row: int
    variable: str
    kind: str  # "type-error" | "unmapped-code" | "out-of-range" | "not-boolean"
    value: str
    detail: str = ""


@dataclass(frozen=True)
class Harmonized:
    """The harmonized table (schema variables, schema order) and what happened on the way."""

    frame: pd.DataFrame
    problems: tuple[Problem, ...]
    missing_codes: dict[str, dict[str, int]] = field(default_factory=dict)
    conversions: dict[str, str] = field(default_factory=dict)
    source_rows: int = 0


def _source(frame: pd.DataFrame, mapping: SiteMapping, name: str, column: str | int) -> pd.Series:
    if column not in frame.columns:
        shown = [str(c) for c in frame.columns][:30]
        raise ConfigError(
            f"mapping {mapping.path}: variable {name!r}: source column {column!r} is not in the "
            f"data (columns: {shown})"
        )
    return frame[column]


def _codes(raw: pd.Series) -> pd.Series:
    """Each value's normalized text; each distinct value is normalized once."""
    positions, uniques = pd.factorize(raw, use_na_sentinel=True)
    texts = [EMPTY if _is_na(v) or not str(v).strip() else normalize_code(v) for v in uniques]
    lookup = np.array([*texts, EMPTY], dtype=object)  # position -1 (NaN) -> EMPTY
    return pd.Series(lookup[positions], index=raw.index, dtype=object)


def _is_na(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def _to_number(
    codes: pd.Series, missing: pd.Series, name: str, problems: list[Problem], where: str = ""
) -> Any:
    numbers = pd.to_numeric(codes.where(~missing), errors="coerce").astype(float)
    bad = ~np.isfinite(numbers) & ~missing  # "inf" is not a measurement either
    for row, value in codes[bad].items():
        detail = f"{where}not a finite number"
        problems.append(Problem(int(row), name, "type-error", value, detail))
    return numbers.where(~bad)


def _column_values(
    codes: pd.Series, missing: pd.Series, rv: ResolvedVariable, problems: list[Problem]
) -> pd.Series:
    name, variable = rv.variable.name, rv.variable
    if rv.recode is not None:
        recode = rv.recode
        hit = codes.isin(list(recode)) & ~missing
        missing = missing | (hit & codes.map(lambda c: c in recode and recode[c] is None))
        codes = codes.map(lambda c: recode.get(c, c))
    if variable.type == "category":
        lookup = {normalize_code(c): c for c in variable.codes or ()}
        mapped = codes.map(lambda c: lookup.get(normalize_code(c), c))
        return mapped.astype(object).where(~missing, None)
    if variable.type == "date":
        dates = pd.to_datetime(codes.where(~missing), errors="coerce")
        for row, value in codes[dates.isna() & ~missing].items():
            problems.append(Problem(int(row), name, "type-error", str(value), "not a date"))
        return dates
    numbers = _to_number(codes.astype(str), missing, name, problems)
    return numbers * rv.scale + rv.offset


def _derived(
    frame: pd.DataFrame, mapping: SiteMapping, rv: ResolvedVariable, problems: list[Problem]
) -> pd.Series:
    assert rv.tree is not None
    columns: dict[str, pd.Series] = {}
    for column in sorted(columns_of(rv.tree)):
        codes = _codes(_source(frame, mapping, rv.variable.name, column))
        missing = codes.isin(rv.missing | {EMPTY})
        where = f"source column {column!r}: "
        columns[column] = _to_number(codes, missing, rv.variable.name, problems, where)
    return evaluate(rv.tree, columns) * rv.scale + rv.offset


def with_source_names(frame: pd.DataFrame, mapping: SiteMapping) -> pd.DataFrame:
    """``frame`` with the mapping's ``source_columns`` as column names (a headerless file)."""
    names = mapping.source_columns
    if names is None or set(names) <= set(map(str, frame.columns)):
        return frame
    if len(names) != frame.shape[1]:
        raise ConfigError(
            f"mapping {mapping.path}: source_columns names {len(names)} columns, the data has "
            f"{frame.shape[1]}"
        )
    return frame.set_axis(list(names), axis=1)


def harmonize(frame: pd.DataFrame, schema: Schema, mapping: SiteMapping) -> Harmonized:
    """Map ``frame`` (a site's raw table) to ``schema``'s variables; ``frame`` is not changed.

    Raises
    ------
    ConfigError
        If the mapping does not fit the schema, or names a source column the data lacks.
    """
    resolved = mapping.check(schema)
    source = with_source_names(frame, mapping).reset_index(drop=True)
    problems: list[Problem] = []
    out: dict[str, pd.Series] = {}
    missing_codes: dict[str, dict[str, int]] = {}
    conversions: dict[str, str] = {}
    for name, rv in resolved.items():
        if rv.tree is not None:
            out[name] = _derived(source, mapping, rv, problems)
        else:
            assert rv.mapping.column is not None
            codes = _codes(_source(source, mapping, name, rv.mapping.column))
            missing = codes.isin(rv.missing | {EMPTY})
            counts = Counter(codes[missing])
            missing_codes[name] = {str(k): int(v) for k, v in sorted(counts.items())}
            out[name] = _column_values(codes, missing, rv, problems)
        if rv.mapping.unit is not None and rv.mapping.unit != rv.variable.unit:
            conversions[name] = (
                f"{rv.mapping.unit} -> {rv.variable.unit} (x{rv.scale:.6g} {rv.offset:+.6g})"
            )
    harmonized = pd.DataFrame(out, index=source.index)
    problems.sort(key=lambda p: (p.row, p.variable))
    return Harmonized(harmonized, tuple(problems), missing_codes, conversions, len(source))
