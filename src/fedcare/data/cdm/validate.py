"""Check a harmonized table against the schema with a pandera ``DataFrameSchema``.

The pandera schema is built from the schema file: per variable a dtype (float for float, int and
bool; object for category; datetime for date), ``in_range`` for a declared range, ``isin`` for a
code list (and 0/1 for bool), an integer check for int, and for *required* variables a
``max_missing`` check on the fraction of missing values. Validation is lazy: every failure is
collected and turned into row-level :class:`~fedcare.data.cdm.harmonize.Problem` entries (an
out-of-range value, an unmapped code) or table-level failed checks (too many missing).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from fedcare.data.cdm.harmonize import Problem
from fedcare.data.cdm.schema import Schema, Variable

__all__ = ["TableCheck", "build_pandera_schema", "validate_table"]

_KIND = {
    "in_range": "out-of-range",
    "isin": "unmapped-code",
    "integer": "not-integer",
    "boolean": "not-boolean",
}


@dataclass(frozen=True)
class TableCheck:
    """A table-level check that failed (e.g. a required variable too often missing)."""

    variable: str
    check: str
    detail: str


def _checks(variable: Variable, max_missing: float) -> list[pa.Check]:
    checks: list[pa.Check] = []
    if variable.range is not None:
        low, high = variable.range
        checks.append(pa.Check.in_range(low, high, name="in_range"))
    if variable.type == "category":
        checks.append(pa.Check.isin(list(variable.codes or ()), name="isin"))
    if variable.type == "bool":
        checks.append(pa.Check(lambda s: s.isin([0.0, 1.0]), name="boolean"))
    if variable.type == "int":
        checks.append(pa.Check(lambda s: s % 1 == 0, name="integer"))
    if variable.required:
        checks.append(
            pa.Check(
                lambda s: bool(s.isna().mean() <= max_missing) if len(s) else True,
                ignore_na=False,
                name="max_missing",
                error=f"more than {max_missing:.0%} missing",
            )
        )
    return checks


def _dtype(variable: Variable) -> str | None:
    if variable.type == "category":
        return None
    if variable.type == "date":
        return "datetime64[ns]"
    return "float64"


def build_pandera_schema(schema: Schema, columns: list[str] | None = None) -> pa.DataFrameSchema:
    """The pandera schema of ``schema``'s variables (only ``columns`` when given)."""
    names = [n for n in schema.variables if columns is None or n in columns]
    return pa.DataFrameSchema(
        {
            name: pa.Column(
                _dtype(schema.variables[name]),
                checks=_checks(schema.variables[name], schema.max_missing(schema.variables[name])),
                nullable=True,
                required=True,
                name=name,
            )
            for name in names
        },
        strict=False,
        name=schema.name,
    )


def validate_table(frame: pd.DataFrame, schema: Schema) -> tuple[list[Problem], list[TableCheck]]:
    """Row-level problems and failed table-level checks of a harmonized ``frame``."""
    pandera_schema = build_pandera_schema(schema, [str(c) for c in frame.columns])
    try:
        pandera_schema.validate(frame, lazy=True)
    except SchemaErrors as err:
        return _collect(err.failure_cases)
    return [], []


def _collect(cases: pd.DataFrame) -> tuple[list[Problem], list[TableCheck]]:
    problems: list[Problem] = []
    failed: list[TableCheck] = []
    for case in cases.to_dict("records"):
        column, index = str(case["column"]), case["index"]
        check = str(case["check"]).split("(")[0]
        if pd.isna(index):
            name = "max_missing" if "missing" in str(case["check"]) else check
            failed.append(TableCheck(column, name, str(case["check"])))
        else:
            kind = _KIND.get(check, "type-error")
            value = str(case["failure_case"])
            problems.append(Problem(int(index), column, kind, value, str(case["check"])))
    return problems, failed
