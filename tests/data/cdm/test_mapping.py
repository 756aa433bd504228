from pathlib import Path

import pytest

from fedcare.data.cdm import Schema, SiteMapping
from fedcare.data.cdm.mapping import normalize_code
from fedcare.errors import ConfigError

from .helpers import FIXTURE, fixture_mapping, write_yaml


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.from_yaml(FIXTURE / "schema.yaml")


def _mapping(tmp_path: Path, variables: dict) -> Path:
    base = {
        "age": {"column": "age"},
        "sex": {"column": "sex"},
        "glucose": {"column": "glucose"},
        "outcome": {"column": "outcome"},
    }
    return write_yaml(
        tmp_path / "sites" / "bern.yaml", {"site": "bern", "variables": {**base, **variables}}
    )


def test_fixture_mappings_resolve_units_and_recodes(schema: Schema) -> None:
    south = SiteMapping.from_yaml(fixture_mapping("south")).check(schema)
    assert south["glucose"].scale == pytest.approx(10 / 180.16)
    assert south["sex"].recode == {"M": 1, "F": 0}
    assert south["age"].missing == frozenset({"?"})
    north = SiteMapping.from_yaml(fixture_mapping("north")).check(schema)
    assert north["glucose"].scale == 1.0 and north["sbp"].missing == frozenset({"-9"})


def test_the_issue_example_error(tmp_path: Path, schema: Schema) -> None:
    path = _mapping(tmp_path, {"glucose": {"column": "glu", "unit": "mg/dl"}})
    mapping = SiteMapping.from_yaml(path)
    with pytest.raises(ConfigError) as info:
        mapping.check(schema)
    assert str(info.value).startswith(
        f"mapping {path}: variable 'glucose': unit 'mg/dl' has no conversion to 'mmol/L'"
    )


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        ({"weight": {"column": "w"}}, "variable 'weight': not in schema"),
        ({"glucose": None}, "variable 'glucose': required by schema"),
        ({"sex": {"column": "sex", "recode": {"M": 1, "F": 2}}}, "recode targets [2] are not"),
        ({"age": {"column": "age", "unit": "kg"}}, "'kg' has no conversion to 'years'"),
        ({"sbp": {"column": "sbp", "unit": "mmHg"}, "sex": {"column": "s", "unit": "kg"}},
         "variable 'sex': unit 'kg' given, but the schema has no unit"),
    ],
)  # fmt: skip
def test_a_mapping_that_does_not_fit_the_schema_is_named(
    tmp_path: Path, schema: Schema, variables: dict, problem: str
) -> None:
    clean = {k: v for k, v in variables.items() if v is not None}
    path = _mapping(tmp_path, clean)
    if "glucose" in variables and variables["glucose"] is None:
        data = SiteMapping.from_yaml(path).model_dump()
        data["variables"].pop("glucose")
        path = write_yaml(path, {k: v for k, v in data.items() if k != "path"})
    with pytest.raises(ConfigError) as info:
        SiteMapping.from_yaml(path).check(schema)
    assert f"mapping {path}: " in str(info.value) and problem in str(info.value)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"column": "a", "derived": "a + 1"}, "give exactly one of 'column' or 'derived'"),
        ({}, "give exactly one of 'column' or 'derived'"),
        ({"derived": "__import__('os').getcwd()"}, "is not allowed"),
        ({"derived": "age +"}, "is not valid"),
        ({"column": "a", "molar_mass": -1}, "molar_mass: Input should be greater than 0"),
    ],
)
def test_a_bad_variable_entry_names_file_and_variable(
    tmp_path: Path, spec: dict, problem: str
) -> None:
    path = _mapping(tmp_path, {"sbp": spec})
    with pytest.raises(ConfigError) as info:
        SiteMapping.from_yaml(path)
    assert str(info.value).startswith(f"mapping {path}: variable 'sbp'"), str(info.value)
    assert problem in str(info.value)


def test_codes_compare_as_normalized_text() -> None:
    assert normalize_code(1) == normalize_code("1.0") == normalize_code(" 1 ") == "1"
    assert normalize_code(-9.0) == "-9" and normalize_code("2.5") == "2.5"
    assert normalize_code("M") == "M" and normalize_code("") == ""
