import numpy as np
import pandas as pd
import pytest

from fedcare.data.cdm import Schema, SiteMapping, harmonize
from fedcare.data.cdm.fixtures import FIXTURE_SITES, GLUCOSE_MOLAR_MASS, fixture_federation
from fedcare.errors import ConfigError

from .helpers import FIXTURE, fixture_mapping, write_yaml


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.from_yaml(FIXTURE / "schema.yaml")


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return fixture_federation(np.random.default_rng(3), rows_per_site=200)


@pytest.mark.parametrize("site", list(FIXTURE_SITES))
def test_every_site_harmonizes_to_the_same_codes_and_units(
    schema: Schema, tables: dict[str, pd.DataFrame], site: str
) -> None:
    raw = tables[site]
    before = raw.copy()
    h = harmonize(raw, schema, SiteMapping.from_yaml(fixture_mapping(site)))
    pd.testing.assert_frame_equal(raw, before)  # the input is not changed
    assert list(h.frame.columns) == list(schema.variables) and len(h.frame) == len(raw)
    sexes = set(h.frame["sex"].dropna())
    assert sexes <= {0, 1, "U"} and {0, 1} <= sexes
    glucose = pd.to_numeric(raw["glucose"], errors="coerce")
    code = str(FIXTURE_SITES[site]["missing"])
    ok = glucose.notna() & (raw["glucose"] != code)
    expected = glucose[ok] * (10 / GLUCOSE_MOLAR_MASS if site in ("south", "east") else 1.0)
    np.testing.assert_allclose(h.frame.loc[ok, "glucose"], expected, rtol=1e-9)
    assert 3 < h.frame["glucose"].median() < 10  # mmol/L everywhere
    n_code = int((raw["glucose"] == code).sum())
    assert h.missing_codes["glucose"] == {("<empty>" if code == "" else code): n_code}
    assert h.frame["glucose"].isna().sum() == n_code + (site == "east")  # + "high"


def test_bad_values_are_reported_with_their_row_and_no_row_is_dropped(
    schema: Schema, tables: dict[str, pd.DataFrame]
) -> None:
    east = harmonize(tables["east"], schema, SiteMapping.from_yaml(fixture_mapping("east")))
    assert [(p.row, p.variable, p.kind, p.value) for p in east.problems] == [
        (5, "glucose", "type-error", "high")
    ]
    assert east.conversions["glucose"].startswith("mg/dL -> mmol/L (x0.0555")
    south = harmonize(tables["south"], schema, SiteMapping.from_yaml(fixture_mapping("south")))
    assert south.frame.loc[3, "sex"] == "U"  # kept as is: validation reports the unmapped code
    assert len(south.frame) == len(tables["south"]) == south.source_rows


def test_derived_variables_recode_to_missing_and_headerless_tables(
    tmp_path, schema: Schema
) -> None:
    raw = pd.DataFrame(
        [["50", "m", "99", "120", "2"], ["61", "x", "?", "130", "0"], ["70", "f", "7", "", "?"]]
    )
    mapping = SiteMapping.from_yaml(
        write_yaml(
            tmp_path / "m.yaml",
            {
                "missing": ["?", ""],
                "source_columns": ["age", "sex", "glu", "sbp", "num"],
                "variables": {
                    "age": {"derived": "age * 12", "unit": "months"},
                    "sex": {"column": "sex", "recode": {"m": 1, "f": 0, "x": None}},
                    "glucose": {"column": "glu", "unit": "mg/dL"},
                    "sbp": {"column": "sbp"},
                    "outcome": {"derived": "num > 0"},
                },
            },
        )
    )
    h = harmonize(raw, schema, mapping)
    np.testing.assert_allclose(h.frame["age"], [50, 61, 70])
    assert h.frame["sex"][[0, 2]].tolist() == [1, 0] and pd.isna(h.frame["sex"][1])
    np.testing.assert_allclose(h.frame["glucose"], [99 * 10 / 180.16, np.nan, 7 * 10 / 180.16])
    assert h.frame["outcome"].tolist()[:2] == [1.0, 0.0] and np.isnan(h.frame["outcome"][2])
    assert h.missing_codes["sbp"] == {"<empty>": 1} and h.missing_codes["glucose"] == {"?": 1}


def test_a_source_column_the_data_lacks_is_named(schema: Schema, tables) -> None:
    table = tables["north"].rename(columns={"sbp": "systolic"})
    with pytest.raises(
        ConfigError, match=r"north.yaml: variable 'sbp': source column 'sbp' is not"
    ):
        harmonize(table, schema, SiteMapping.from_yaml(fixture_mapping("north")))


def test_dates_ints_and_non_finite_numbers(tmp_path) -> None:
    schema = Schema.from_yaml(
        write_yaml(
            tmp_path / "s.yaml",
            {
                "name": "t",
                "variables": {
                    "admitted": {"type": "date", "role": "id-excluded"},
                    "visits": {"type": "int", "range": [0, 50]},
                    "lactate": {"type": "float"},
                    "died": {"type": "bool", "role": "label"},
                },
            },
        )
    )
    mapping = SiteMapping.from_yaml(
        write_yaml(
            tmp_path / "m.yaml",
            {
                "variables": {
                    "admitted": {"column": "adm"},
                    "visits": {"column": "v"},
                    "lactate": {"column": "lac"},
                    "died": {"column": "d"},
                }
            },
        )
    )
    raw = pd.DataFrame(
        {
            "adm": ["2024-01-03", "not a date", ""],
            "v": ["3", "2.5", "7"],
            "lac": ["1.5", "inf", "2"],
            "d": ["0", "1", "2"],
        }
    )
    from fedcare.data.cdm import check_table

    result = check_table(raw, schema, mapping)
    frame = result.frame
    assert frame["admitted"][0] == pd.Timestamp("2024-01-03") and frame["admitted"][1:].isna().all()
    assert np.isnan(frame["lactate"][1])
    kinds = {(p.row, p.variable, p.kind) for p in result.problems}
    assert kinds == {
        (1, "admitted", "type-error"),
        (1, "lactate", "type-error"),
        (1, "visits", "not-integer"),
        (2, "died", "not-boolean"),
    }
    json_text = result.report.to_json()  # strict JSON: no inf or NaN anywhere
    assert '"lactate"' in json_text
