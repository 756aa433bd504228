import numpy as np
import pandas as pd
import pytest

from fedcare.data.cdm import Schema, SiteMapping, check_table, feature_names, to_site_data
from fedcare.data.cdm.fixtures import FIXTURE_SITES, fixture_federation
from fedcare.errors import ConfigError

from .helpers import FIXTURE, fixture_mapping


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.from_yaml(FIXTURE / "schema.yaml")


def _checked(schema: Schema, site: str, table: pd.DataFrame):
    return check_table(table, schema, SiteMapping.from_yaml(fixture_mapping(site)))


def test_every_site_gets_the_same_columns(schema: Schema) -> None:
    tables = fixture_federation(np.random.default_rng(1), rows_per_site=120)
    assert feature_names(schema) == ("age", "sex_1", "glucose", "sbp")
    for site in FIXTURE_SITES:
        data, info = to_site_data(
            _checked(schema, site, tables[site]), schema, site, test_fraction=0.25, seed=2
        )
        assert data.train.X.shape[1] == data.test.X.shape[1] == 4
        assert len(data.train) + len(data.test) == 120 and info["rows_without_label"] == 0
        assert len(data.test) == pytest.approx(30, abs=1)
        assert set(np.unique(data.train.X[:, 1][~np.isnan(data.train.X[:, 1])])) == {0.0, 1.0}
        assert set(np.unique(data.train.y)) == {0, 1}


def test_invalid_values_become_missing_and_unlabelled_rows_are_counted(schema: Schema) -> None:
    table = fixture_federation(np.random.default_rng(1), rows_per_site=100)["south"]
    table.loc[7, "sbp"] = "900"  # out of range
    table.loc[8, "outcome"] = "?"  # no label
    result = _checked(schema, "south", table)
    data, info = to_site_data(result, schema, "south", test_fraction=0.2, seed=0)
    assert info == {"rows": 100, "rows_without_label": 1}
    X = np.concatenate([data.train.X, data.test.X])
    assert not (X[:, 3] > 260).any()  # the 900 became NaN, like a missing value
    assert np.isnan(X[:, 1]).sum() == 1  # the planted unmapped sex code "U"
    again, _ = to_site_data(result, schema, "south", test_fraction=0.2, seed=0)
    np.testing.assert_array_equal(again.test.y, data.test.y)  # same seed, same split
    with pytest.raises(ConfigError, match="test_fraction must be in"):
        to_site_data(result, schema, "south", test_fraction=1.0, seed=0)


def test_survival_roles_give_time_and_event(tmp_path) -> None:
    from .helpers import write_yaml

    schema = Schema.from_yaml(
        write_yaml(
            tmp_path / "s.yaml",
            {
                "name": "surv",
                "variables": {
                    "age": {"type": "float", "unit": "years"},
                    "stage": {"type": "category", "codes": ["I", "II", "III"]},
                    "months": {"type": "float", "role": "time", "range": [0, 400]},
                    "dead": {"type": "bool", "role": "event"},
                },
            },
        )
    )
    mapping = SiteMapping.from_yaml(
        write_yaml(
            tmp_path / "m.yaml",
            {
                "variables": {
                    "age": {"column": "age_days", "unit": "days"},
                    "stage": {"column": "stage", "recode": {"1": "I", "2": "II", "3": "III"}},
                    "months": {"derived": "days / 30.4375"},
                    "dead": {"column": "vital", "recode": {"dead": 1, "alive": 0}},
                }
            },
        )
    )
    rng = np.random.default_rng(0)
    n = 40
    raw = pd.DataFrame(
        {
            "age_days": (rng.uniform(30, 80, n) * 365.25).round().astype(str),
            "stage": rng.choice(["1", "2", "3"], n),
            "days": rng.uniform(10, 3000, n).round().astype(str),
            "vital": rng.choice(["dead", "alive"], n),
        }
    )
    result = check_table(raw, schema, mapping)
    assert result.report.passed, result.report.summary
    data, _ = to_site_data(result, schema, "s", test_fraction=0.25, seed=0)
    assert feature_names(schema) == ("age", "stage_II", "stage_III")
    assert data.train.time is not None and data.train.X.shape[1] == 3
    all_time = np.concatenate([data.train.time, data.test.time])
    np.testing.assert_allclose(
        np.sort(all_time), np.sort(raw["days"].astype(float) / 30.4375), rtol=1e-12
    )
    assert np.concatenate([data.train.X, data.test.X])[:, 0].min() >= 30
