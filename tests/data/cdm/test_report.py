import json

import numpy as np
import pandas as pd
import pytest

from fedcare.data.cdm import Schema, SiteMapping, build_pandera_schema, check_table
from fedcare.data.cdm.fixtures import fixture_federation

from .helpers import FIXTURE, fixture_mapping


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.from_yaml(FIXTURE / "schema.yaml")


def _south(n: int = 200) -> pd.DataFrame:
    return fixture_federation(np.random.default_rng(5), rows_per_site=n)["south"]


def _check(schema: Schema, table: pd.DataFrame, site: str = "south"):
    return check_table(table, schema, SiteMapping.from_yaml(fixture_mapping(site)))


def test_pandera_schema_mirrors_the_schema_file(schema: Schema) -> None:
    built = build_pandera_schema(schema)
    assert list(built.columns) == list(schema.variables)
    checks = {c.name for c in built.columns["glucose"].checks}
    assert checks == {"in_range", "max_missing"}
    assert {c.name for c in built.columns["sbp"].checks} == {"in_range"}  # optional
    assert {c.name for c in built.columns["sex"].checks} == {"isin", "max_missing"}


def test_report_counts_missing_out_of_range_unmapped_and_type_errors(schema: Schema) -> None:
    table = _south()
    table.loc[[10, 11], "sbp"] = "400"  # out of range
    table.loc[[12, 13, 14], "sex"] = "X"  # unmapped, with the planted "U" at row 3
    table.loc[15, "age"] = "sixty"  # type error
    result = _check(schema, table)
    report = result.report
    by = {v.name: v for v in report.variables}
    assert by["sbp"].out_of_range == 2 and by["sbp"].missing == int((table["sbp"] == "?").sum())
    assert by["sex"].unmapped_codes == {"X": 3, "U": 1}
    assert by["age"].type_errors == 1 and by["age"].missing == 1
    rows = {(p.row, p.variable, p.kind) for p in result.problems}
    assert {
        (10, "sbp", "out-of-range"),
        (3, "sex", "unmapped-code"),
        (15, "age", "type-error"),
    } <= rows
    assert report.rows == len(table) == len(result.frame)  # reported, not dropped
    assert report.passed, report.summary  # 4/200 invalid sex values: under max_invalid 5%
    counts = by["sex"].summary["counts"]
    assert sum(counts.values()) == len(table) - 4 and set(counts) == {"0", "1"}
    glucose = result.frame["glucose"].dropna()
    assert by["glucose"].summary["mean"] == pytest.approx(glucose.mean())
    assert by["glucose"].summary["q75"] == pytest.approx(glucose.quantile(0.75))


def test_required_checks_fail_with_every_reason(schema: Schema) -> None:
    table = _south()
    table.loc[: len(table) // 2, "glucose"] = "?"  # > 30% missing
    table.loc[:20, "sex"] = "X"  # 21 rows: > 5% unmapped
    report = _check(schema, table).report
    assert not report.passed
    assert "required variable 'glucose': more than 30% missing" in report.summary
    assert (
        "required variable 'sex': 21 of 200 values invalid (10.5% > max_invalid 5%)"
        in report.summary
    )
    small = _check(schema, _south(30)).report
    assert small.failures == ("30 rows, fewer than the schema's min_rows 50",)


def test_optional_variables_never_fail_the_check(schema: Schema) -> None:
    table = _south()
    table["sbp"] = "?"
    report = _check(schema, table).report
    assert report.passed and {v.name: v.missing for v in report.variables}["sbp"] == len(table)


def test_shareable_keeps_only_counts_and_suppresses_small_cells(schema: Schema) -> None:
    table = _south()
    table.loc[[10, 11], "sbp"] = "400"
    report = _check(schema, table).report
    shared = report.shareable()
    text = json.dumps(shared)
    assert "U" not in text.replace("unmapped", "")  # no raw code values leave the site
    sbp = shared["variables"]["sbp"]
    assert sbp["out_of_range"] == "<5" and sbp["type_errors"] == 0
    assert shared["variables"]["sex"]["unmapped"] == "<5"
    assert set(sbp) == {"n", "missing", "out_of_range", "unmapped", "type_errors", "mean", "sd"}
    assert "min" not in sbp and "max" not in sbp  # extremes are single patients' values
    assert shared["rows"] == 200 and shared["passed"] is True


def test_renderings(schema: Schema) -> None:
    report = _check(schema, _south()).report
    data = json.loads(report.to_json())
    assert data["passed"] and data["variables"]["sex"]["unmapped_codes"] == {"U": 1}
    assert data["problems"][0]["row"] == 3
    md = report.to_markdown()
    assert "| glucose | float | mmol/L |" in md and "row 3, sex: unmapped-code 'U'" in md
    assert "'?': " in md  # the missing codes seen
    assert report.to_html().startswith("<!doctype html>") and "glucose" in report.to_html()
