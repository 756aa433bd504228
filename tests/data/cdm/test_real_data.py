"""The example schemas and mappings applied to the real heart-disease and eICU files."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcare.data.cdm import Schema, SiteMapping, check_table, feature_names, read_table
from fedcare.data.cdm.io import read_source
from fedcare.data.heart import HEART_FEATURES, HEART_SITES, load_heart_disease

from ...conftest import require_mirror
from .helpers import EICU, HEART

_KEPT = ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak"]
_NUMERIC = ["age", "trestbps", "chol", "fbs", "thalach", "exang", "oldpeak"]


@pytest.fixture(scope="module")
def heart_checks() -> dict[str, tuple[pd.DataFrame, object]]:
    mirror = require_mirror()
    schema = Schema.from_yaml(HEART / "schema.yaml")
    out = {}
    for site, name in HEART_SITES.items():
        mapping = SiteMapping.from_yaml(HEART / "sites" / f"{site}.yaml")
        raw = read_table(mirror / "heart_disease" / name, mapping)
        out[site] = (raw, check_table(raw, schema, mapping))
    return out


def test_heart_mappings_give_the_builtin_raw_missingness_on_flamby_rows(heart_checks) -> None:
    builtin = load_heart_disease(protocol="raw")
    for site, (raw, result) in heart_checks.items():
        assert result.report.passed, (site, result.report.summary)
        # The built-in loader keeps FLamby's rows: no "?" in the 10 kept columns or the label.
        flamby = (raw[[*_KEPT, "num"]] != "?").all(axis=1).to_numpy()
        ours = result.frame[flamby]
        data = builtin.site(site)
        X = np.concatenate([data.train.X, data.test.X])
        assert len(ours) == len(X), site
        for name in _NUMERIC:
            theirs = X[:, HEART_FEATURES.index(name)]
            assert ours[name].isna().sum() == np.isnan(theirs).sum(), (site, name)
            np.testing.assert_allclose(
                np.sort(ours[name].dropna().to_numpy(float)), np.sort(theirs[~np.isnan(theirs)])
            )
        for level in (2, 3, 4):
            assert (ours["cp"] == level).sum() == X[:, HEART_FEATURES.index(f"cp_{level}")].sum()
        y = np.concatenate([data.train.y, data.test.y])
        assert ours["disease"].sum() == y.sum()


def test_heart_intended_difference_rows_with_question_marks_are_kept_as_missing(
    heart_checks,
) -> None:
    # FLamby drops every row with a "?" (920 -> 740); the mapping keeps all rows and reports
    # each "?" as a missing value, so a study decides (impute or refuse) with the counts shown.
    rows = {site: len(result.frame) for site, (_raw, result) in heart_checks.items()}
    assert rows == {"cleveland": 303, "hungary": 294, "switzerland": 123, "va": 200}
    swiss = {v.name: v for v in heart_checks["switzerland"][1].report.variables}
    assert swiss["chol"].missing == 123 and swiss["chol"].missing_codes == {"0": 123}
    va = {v.name: v for v in heart_checks["va"][1].report.variables}
    assert va["chol"].missing_codes == {"0": 49, "?": 7}
    hungary = {v.name: v for v in heart_checks["hungary"][1].report.variables}
    assert hungary["chol"].missing_codes == {"?": 23}
    dropped = sum(
        int((~(raw[[*_KEPT, "num"]] != "?").all(axis=1)).sum()) for raw, _ in heart_checks.values()
    )
    assert sum(rows.values()) - dropped == 740


def test_heart_features_match_the_builtin_encoding() -> None:
    names = feature_names(Schema.from_yaml(HEART / "schema.yaml"))
    assert len(names) == len(HEART_FEATURES) == 13
    assert set(names) - set(HEART_FEATURES) == {"sex_1"}  # the built-in loader calls it "sex"


def test_heart_through_the_csv_loader_spec() -> None:
    mirror = require_mirror()
    mapping = SiteMapping.from_yaml(HEART / "sites" / "switzerland.yaml")
    source = {"kind": "csv", "path": str(mirror / "heart_disease" / HEART_SITES["switzerland"])}
    raw = read_source(source, mapping)
    result = check_table(raw, Schema.from_yaml(HEART / "schema.yaml"), mapping)
    assert len(result.frame) == 123 and result.frame["chol"].isna().all()


@pytest.fixture(scope="module")
def eicu_table() -> pd.DataFrame:
    mirror = require_mirror() / "eicu_demo"
    read = {"dtype": str, "keep_default_na": False}
    patient = pd.read_csv(mirror / "patient.csv.gz", **read)
    aps = pd.read_csv(mirror / "apacheApsVar.csv.gz", **read)
    return patient.merge(aps, on="patientunitstayid", how="left")


def _check_eicu(table: pd.DataFrame, mapping: Path):
    return check_table(
        table, Schema.from_yaml(EICU / "schema.yaml"), SiteMapping.from_yaml(mapping)
    )


def test_eicu_lab_units_are_converted_and_reported(eicu_table: pd.DataFrame) -> None:
    result = _check_eicu(eicu_table, EICU / "mapping.yaml")
    report = result.report
    assert report.passed, report.summary
    raw = pd.to_numeric(eicu_table["glucose"], errors="coerce")
    measured = raw.notna() & (raw != -1)
    np.testing.assert_allclose(result.frame.loc[measured, "glucose"], raw[measured] / 18.016)
    creat = pd.to_numeric(eicu_table["creatinine"], errors="coerce")
    ok = creat.notna() & (creat != -1)
    np.testing.assert_allclose(result.frame.loc[ok, "creatinine"], creat[ok] * 88.4017, rtol=1e-5)
    by = {v.name: v for v in report.variables}
    assert by["glucose"].conversion.startswith("mg/dL -> mmol/L")
    assert by["creatinine"].conversion.startswith("mg/dL -> µmol/L (x88.40")
    assert by["glucose"].missing_codes["-1"] == int((raw == -1).sum())
    assert by["age"].summary["max"] == 90.0  # "> 89" recoded
    height = pd.to_numeric(eicu_table["admissionheight"], errors="coerce")
    assert by["height"].out_of_range == int(((height < 100) | (height > 250)).sum()) > 0


def test_eicu_in_us_units_harmonizes_to_the_same_table(eicu_table: pd.DataFrame) -> None:
    us = eicu_table.copy()
    for source, target, convert in (
        ("temperature", "temp_f", lambda c: np.where(c == -1, -1, c * 9 / 5 + 32)),
        ("admissionheight", "height_in", lambda c: c / 2.54),
        ("admissionweight", "weight_lb", lambda c: c / 0.45359237),
    ):
        us[target] = convert(pd.to_numeric(us[source], errors="coerce"))
    us = us.drop(columns=["temperature", "admissionheight", "admissionweight"])
    metric = _check_eicu(eicu_table, EICU / "mapping.yaml")
    imperial = _check_eicu(us, EICU / "mapping-us-units.yaml")
    for name in ("temperature", "height", "weight", "glucose"):
        np.testing.assert_allclose(
            imperial.frame[name].to_numpy(float), metric.frame[name].to_numpy(float), rtol=1e-9
        )
    conv = {v.name: v.conversion for v in imperial.report.variables}
    assert conv["temperature"].startswith("°F -> °C") and conv["weight"].startswith("lb -> kg")


@pytest.mark.slow
def test_heart_federation_from_the_mappings_trains_like_the_builtin_one(heart_checks) -> None:
    from fedcare.data.cdm import build_federation
    from fedcare.records.study import StudyConfig
    from fedcare.simulation.run import run_simulation

    schema = Schema.from_yaml(HEART / "schema.yaml")
    sites = {
        site: (raw, SiteMapping.from_yaml(HEART / "sites" / f"{site}.yaml"))
        for site, (raw, _result) in heart_checks.items()
    }
    fed = build_federation(schema, sites, test_fraction=0.34, seed=43)
    assert [len(s.train) + len(s.test) for s in fed.sites] == [303, 294, 123, 200]
    study = StudyConfig.from_yaml(HEART.parents[1] / "heart-disease.yaml").with_overrides(
        baselines={"local": False, "pooled": False, "cross_site": False}
    )
    final = run_simulation(study, dataset=fed)["final"]["unweighted"]
    # all 920 rows (FLamby keeps 740), "?" imputed by the study's preprocessing
    assert final["accuracy"] >= 0.74 and final["auroc"] >= 0.82, final
