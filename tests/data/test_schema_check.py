"""Feature schemas: built from site data, compared column by column, reference by majority."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedcare.data.cdm import Schema, feature_names, feature_units
from fedcare.data.heart import HEART_FEATURES
from fedcare.data.schema_check import (
    feature_schema,
    reference_schema,
    schema_differences,
    schema_of_description,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "cdm" / "heart-disease"


def _mapped() -> dict:
    schema = Schema.from_yaml(EXAMPLES / "schema.yaml")
    names = feature_names(schema)
    return feature_schema((len(names),), "float64", names, feature_units(schema))


def test_mapped_heart_table_differs_from_builtin_naming_positions() -> None:
    builtin = feature_schema((13,), "float64", HEART_FEATURES)
    mapped = _mapped()
    assert mapped["input_shape"] == builtin["input_shape"] == [13]  # the shape alone agrees
    assert mapped["digest"] != builtin["digest"]
    diff = schema_differences(mapped, builtin)
    assert diff[0] == "column 1: 'sex_1' here vs 'sex' in the reference"
    assert "column 2: 'cp_2' here vs 'trestbps' in the reference" in diff
    assert len(diff) == 7 and diff[-1].startswith("and ")  # capped, with the count of the rest


def test_units_compared_where_both_give_one() -> None:
    here = feature_schema((2,), "float64", ["age", "chol"], {"age": "years", "chol": "mmol/L"})
    there = feature_schema((2,), "float64", ["age", "chol"], {"age": "years", "chol": "mg/dL"})
    bare = feature_schema((2,), "float64", ["age", "chol"])
    assert schema_differences(here, there) == [
        "column 1 ('chol'): unit 'mmol/L' here vs 'mg/dL' in the reference"
    ]
    assert schema_differences(here, bare) == []
    assert schema_differences(here, here) == []


def test_shape_dtype_and_no_data() -> None:
    ref = feature_schema((13,), "float64", HEART_FEATURES)
    assert schema_differences(feature_schema((14,), "float64"), ref) == [
        "input shape [14] here vs [13] in the reference"
    ]
    assert schema_differences(feature_schema((13,), "float32", HEART_FEATURES), ref) == [
        "dtype float32 here vs float64 in the reference"
    ]
    assert "no usable data" in schema_differences(None, ref)[0]


def test_description_without_schema_is_compared_by_shape() -> None:
    old = schema_of_description({"input_shape": [13], "num_train": 10})
    assert old is not None and schema_differences(old, _mapped()) == []
    assert schema_of_description({"data_check": {}}) is None
    with_schema = schema_of_description({"input_shape": [13], "schema": _mapped()})
    assert with_schema == _mapped()


def test_reference_is_the_majority_ties_to_the_first_site_id() -> None:
    a = feature_schema((13,), "float64", HEART_FEATURES)
    b = _mapped()
    assert reference_schema({"x": b, "y": a, "z": a})["digest"] == a["digest"]
    assert reference_schema({"m": b, "n": a})["digest"] == b["digest"]  # tie: 'm' sorts first
    assert reference_schema({"n": b, "m": a})["digest"] == a["digest"]


def test_non_tabular_features_have_no_columns() -> None:
    image = feature_schema((1, 28, 28), "float32", ["gray"])
    assert image["columns"] == [] and image["input_shape"] == [1, 28, 28]
    with pytest.raises(KeyError):
        schema_differences(image, {})


def test_site_config_describes_its_schema() -> None:
    from fedcare.site.config import DatasetEntry, SiteDataConfig

    entry = DatasetEntry(builtin="heart-disease", site="hungary", options={"protocol": "raw"})
    described = SiteDataConfig(datasets={"heart-disease": entry}).describe()["heart-disease"]
    schema = described["schema"]
    assert [c["name"] for c in schema["columns"]] == list(HEART_FEATURES)
    assert schema["input_shape"] == described["input_shape"] and schema["dtype"] == "float64"
    assert np.array(schema["input_shape"]).prod() == len(HEART_FEATURES)
