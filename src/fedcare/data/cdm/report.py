"""The site's data-check report, and what of it may leave the site.

:func:`check_table` harmonizes a raw table, validates it and builds a :class:`SiteReport`: per
variable the missingness (and which missing codes), out-of-range values, unmapped codes with
their counts, type errors and a distribution summary, plus the verdict of the required checks.
The full report stays at the site (it holds raw values such as unmapped codes and extremes);
:meth:`SiteReport.shareable` keeps only aggregate counts, with small cells (1 to 4) suppressed,
for the coordinator.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fedcare.data.cdm.harmonize import Harmonized, Problem, harmonize
from fedcare.data.cdm.invalid_rows import InvalidRows, unreadable_counts
from fedcare.data.cdm.mapping import SiteMapping
from fedcare.data.cdm.schema import Schema, Variable
from fedcare.data.cdm.validate import TableCheck, validate_table

__all__ = ["SMALL_CELL", "CheckResult", "SiteReport", "VariableReport", "check_table"]

#: Counts from 1 to SMALL_CELL - 1 are suppressed in what leaves the site.
SMALL_CELL = 5


@dataclass(frozen=True)
class VariableReport:
    name: str
    type: str
    role: str
    required: bool
    unit: str | None
    n: int
    missing: int
    missing_codes: dict[str, int]
    out_of_range: int
    unmapped_codes: dict[str, int]
    type_errors: int
    other_invalid: int
    conversion: str | None
    summary: dict[str, Any]

    @property
    def invalid(self) -> int:
        return (
            self.out_of_range
            + sum(self.unmapped_codes.values())
            + self.type_errors
            + (self.other_invalid)
        )


@dataclass(frozen=True)
class SiteReport:
    """A site's data check: per-variable findings and the required checks' verdict."""

    schema: str
    site: str
    rows: int
    variables: tuple[VariableReport, ...]
    failures: tuple[str, ...]
    problems: tuple[Problem, ...] = field(default=(), repr=False)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def summary(self) -> str:
        """One line: the verdict and, when failed, every reason."""
        if self.passed:
            return f"data check passed: {self.rows} rows, {len(self.variables)} variables"
        return "data check failed: " + "; ".join(self.failures)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "site": self.site,
            "rows": self.rows,
            "passed": self.passed,
            "failures": list(self.failures),
            "variables": {v.name: {**v.__dict__, "invalid": v.invalid} for v in self.variables},
            "problems": [p.__dict__ for p in self.problems],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str, allow_nan=False)

    def shareable(self) -> dict[str, Any]:
        """Aggregate counts only (no raw values, no extremes); counts 1-4 become ``"<5"``."""
        return {
            "schema": self.schema,
            "site": self.site,
            "rows": _cell(self.rows),
            "passed": self.passed,
            "failures": list(self.failures),
            "variables": {v.name: _share(v) for v in self.variables},
        }

    def to_markdown(self) -> str:
        lines = [
            f"# Data check: {self.site or 'site'} against schema {self.schema}",
            "",
            f"**{self.summary}**",
            "",
            "| variable | type | unit | missing (codes) | out of range | unmapped | type errors "
            "| summary |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for v in self.variables:
            unmapped = ", ".join(f"{k}: {c}" for k, c in v.unmapped_codes.items()) or "0"
            lines.append(
                f"| {v.name} | {v.type} | {v.unit or ''} | {v.missing}/{v.n}{_codes(v)} "
                f"| {v.out_of_range} "
                f"| {unmapped} | {v.type_errors} | {_fmt_summary(v.summary)} |"
            )
        if self.problems:
            lines += ["", f"{len(self.problems)} bad values (first 20):", ""]
            lines += [
                f"- row {p.row}, {p.variable}: {p.kind} {p.value!r} {p.detail}"
                for p in self.problems[:20]
            ]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        body = html.escape(self.to_markdown())
        return (
            "<!doctype html><meta charset='utf-8'><title>fedcare data check</title>"
            f"<pre>{body}</pre>"
        )


@dataclass(frozen=True)
class CheckResult:
    """The harmonized table with its report."""

    harmonized: Harmonized
    report: SiteReport
    problems: tuple[Problem, ...]

    @property
    def frame(self) -> pd.DataFrame:
        return self.harmonized.frame


def _cell(count: int) -> int | str:
    return "<5" if 0 < count < SMALL_CELL else count


def _share(v: VariableReport) -> dict[str, Any]:
    out: dict[str, Any] = {
        "n": _cell(v.n),
        "missing": _cell(v.missing),
        "out_of_range": _cell(v.out_of_range),
        "unmapped": _cell(sum(v.unmapped_codes.values())),
        "type_errors": _cell(v.type_errors),
    }
    if "counts" in v.summary:
        out["counts"] = {k: _cell(c) for k, c in v.summary["counts"].items()}
    elif v.n - v.missing >= SMALL_CELL and "mean" in v.summary:
        out["mean"], out["sd"] = v.summary["mean"], v.summary["sd"]
    return out


def _codes(v: VariableReport) -> str:
    shown = ", ".join(f"{code!r}: {n}" for code, n in v.missing_codes.items())
    return f" ({shown})" if shown else ""


def _fmt_summary(summary: dict[str, Any]) -> str:
    if "counts" in summary:
        return ", ".join(f"{k}: {c}" for k, c in summary["counts"].items())
    return ", ".join(f"{k} {val:.4g}" for k, val in summary.items() if isinstance(val, float))


def _summary(values: pd.Series, variable: Variable, invalid: pd.Series) -> dict[str, Any]:
    valid = values[values.notna() & ~invalid]
    if variable.type == "category":
        counts = Counter(str(c) for c in valid)
        return {"counts": {str(c): counts.get(str(c), 0) for c in variable.codes or ()}}
    if variable.type == "date" or valid.empty:
        return {}
    x = valid.to_numpy(dtype=float)
    q = np.quantile(x, [0.0, 0.25, 0.5, 0.75, 1.0])
    sd = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    return {
        "mean": float(x.mean()),
        "sd": sd,
        "min": float(q[0]),
        "q25": float(q[1]),
        "median": float(q[2]),
        "q75": float(q[3]),
        "max": float(q[4]),
    }


def _variable_report(h: Harmonized, variable: Variable, problems: list[Problem]) -> VariableReport:
    values = h.frame[variable.name]
    mine = [p for p in problems if p.variable == variable.name]
    kinds = Counter(p.kind for p in mine)
    invalid_rows = {p.row for p in mine if p.kind != "type-error"}
    invalid = pd.Series(values.index.isin(list(invalid_rows)), index=values.index)
    unmapped = Counter(p.value for p in mine if p.kind == "unmapped-code")
    return VariableReport(
        name=variable.name,
        type=variable.type,
        role=variable.role,
        required=variable.required,
        unit=variable.unit,
        n=len(values),
        missing=int(values.isna().sum()),
        missing_codes=h.missing_codes.get(variable.name, {}),
        out_of_range=kinds["out-of-range"],
        unmapped_codes=dict(unmapped.most_common()),
        type_errors=kinds["type-error"],
        other_invalid=kinds["not-integer"] + kinds["not-boolean"],
        conversion=h.conversions.get(variable.name),
        summary=_summary(values, variable, invalid),
    )


def _failures(
    schema: Schema, reports: list[VariableReport], failed: list[TableCheck], rows: int
) -> list[str]:
    out: list[str] = []
    if rows < schema.checks.min_rows:
        out.append(f"{rows} rows, fewer than the schema's min_rows {schema.checks.min_rows}")
    for check in failed:
        if schema.variables[check.variable].required:
            out.append(f"required variable {check.variable!r}: {check.detail}")
    for v in reports:
        if v.required and rows and v.invalid / rows > schema.checks.max_invalid:
            out.append(
                f"required variable {v.name!r}: {v.invalid} of {rows} values invalid "
                f"({v.invalid / rows:.1%} > max_invalid {schema.checks.max_invalid:.0%})"
            )
    for name, variable in schema.variables.items():
        if variable.required and all(v.name != name for v in reports):
            out.append(f"required variable {name!r} is not mapped")
    return out


def check_table(frame: pd.DataFrame, schema: Schema, mapping: SiteMapping) -> CheckResult:
    """Harmonize ``frame`` with ``mapping``, validate it against ``schema``, and report.

    Rows the loader could not read (``frame.attrs["unreadable_rows"]``) fail the check,
    counted.

    Raises
    ------
    ConfigError
        If the schema and mapping do not fit together or the data lacks a mapped column.
    """
    h = harmonize(frame, schema, mapping)
    row_problems, failed = validate_table(h.frame, schema)
    problems = sorted([*h.problems, *row_problems], key=lambda p: (p.row, p.variable))
    reports = [_variable_report(h, schema.variables[c], problems) for c in h.frame.columns]
    failures = _failures(schema, reports, failed, h.source_rows)
    unreadable = unreadable_counts(frame)  # lines the loader could not read: never silent
    if unreadable:
        lost = InvalidRows.of(h.source_rows + sum(unreadable.values()), unreadable, skipped=False)
        failures.insert(
            0, f"{lost.count} of {lost.rows} rows could not be read ({lost.reasons_text()})"
        )
    report = SiteReport(
        schema=schema.name,
        site=mapping.site,
        rows=h.source_rows,
        variables=tuple(reports),
        failures=tuple(failures),
        problems=tuple(problems),
    )
    return CheckResult(h, report, tuple(problems))
