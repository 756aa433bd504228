from pathlib import Path

import pytest

from fedcare.data.cdm import Schema
from fedcare.errors import ConfigError

from .helpers import FIXTURE, HEART, write_yaml


def _schema(tmp_path: Path, variables: dict, **extra: object) -> Path:
    return write_yaml(
        tmp_path / "study" / "schema.yaml", {"name": "s", **extra, "variables": variables}
    )


def test_example_schemas_load_with_roles_and_thresholds() -> None:
    heart = Schema.from_yaml(HEART / "schema.yaml")
    assert list(heart.variables)[:3] == ["age", "sex", "cp"]
    assert [v.name for v in heart.with_role("label")] == ["disease"]
    assert heart.variables["cp"].codes == (1, 2, 3, 4)
    assert heart.max_missing(heart.variables["chol"]) == 1.0
    assert heart.max_missing(heart.variables["age"]) == heart.checks.max_missing == 0.5
    fixture = Schema.from_yaml(FIXTURE / "schema.yaml")
    assert fixture.variables["glucose"].unit == "mmol/L"
    assert fixture.variables["glucose"].molar_mass == pytest.approx(180.16)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"type": "float", "range": [10, 1]}, "range [10.0, 1.0] has min > max"),
        ({"type": "category"}, "a category variable needs a non-empty 'codes' list"),
        ({"type": "float", "codes": [1, 2]}, "'codes' given for a float variable"),
        ({"type": "category", "codes": [1, "1"]}, "repeat a value"),
        ({"type": "float", "unit": "mg/dl"}, "unit 'mg/dl' is not a known unit"),
        ({"type": "text"}, "type: Input should be 'float', 'int', 'category', 'bool' or 'date'"),
        ({"type": "float", "role": "target"}, "role: Input should be"),
        ({"type": "float", "colour": "red"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_a_bad_variable_names_the_file_the_variable_and_the_problem(
    tmp_path: Path, spec: dict, problem: str
) -> None:
    path = _schema(tmp_path, {"age": {"type": "float"}, "glucose": spec})
    with pytest.raises(ConfigError) as info:
        Schema.from_yaml(path)
    message = str(info.value)
    assert message.startswith(f"schema {path}: variable 'glucose'"), message
    assert problem in message


def test_file_level_problems_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=f"schema {missing}: cannot read"):
        Schema.from_yaml(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("variables: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"schema {bad}: not valid YAML"):
        Schema.from_yaml(bad)
    two_labels = {"a": {"type": "bool", "role": "label"}, "b": {"type": "bool", "role": "label"}}
    with pytest.raises(ConfigError, match=r"more than one label variable: \['a', 'b'\]"):
        Schema.from_yaml(_schema(tmp_path, two_labels))
    with pytest.raises(ConfigError, match=r"checks\.max_missing"):
        Schema.from_yaml(_schema(tmp_path, {"a": {"type": "float"}}, checks={"max_missing": 2}))
