"""The fixture federation: harmonized data trains a clearly better federated model than raw."""

import numpy as np
import pandas as pd
import pytest

from fedcare.data.base import Dataset, FederatedDataset, SiteData
from fedcare.data.cdm import Schema, SiteMapping, build_federation
from fedcare.data.cdm.fixtures import FIXTURE_SITES, fixture_federation
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation

from .helpers import FIXTURE, fixture_mapping

TEST_FRACTION, SPLIT_SEED = 0.3, 11


def test_same_seed_same_tables_and_sites_code_differently() -> None:
    a = fixture_federation(np.random.default_rng(9), rows_per_site=50)
    b = fixture_federation(np.random.default_rng(9), rows_per_site=50)
    for site in FIXTURE_SITES:
        pd.testing.assert_frame_equal(a[site], b[site])
    assert set(a["north"]["sex"]) == {"0", "1"} and set(a["east"]["sex"]) == {"male", "female"}
    assert (a["north"]["glucose"] == "-9").any() and (a["east"]["glucose"] == "").any()
    south = pd.to_numeric(a["south"]["glucose"], errors="coerce")
    assert south.median() > 60  # mg/dL, where north reports mmol/L
    assert pd.to_numeric(a["north"]["glucose"], errors="coerce").median() < 15


def _naive(table: pd.DataFrame, site: str, harmonized: SiteData) -> SiteData:
    """What training on the raw export does: every column read as a number as it is."""
    X = table[["age", "sex", "glucose", "sbp"]].apply(pd.to_numeric, errors="coerce")
    y = table["outcome"].astype(int).to_numpy()
    rows = np.arange(len(table))
    rng = np.random.default_rng(SPLIT_SEED)  # the same stratified split as to_site_data
    test = np.sort(
        np.concatenate(
            [rng.permutation(rows[y == v])[: round(TEST_FRACTION * (y == v).sum())] for v in (0, 1)]
        )
    )
    data = Dataset(X=X.to_numpy(float), y=y)
    split = SiteData(site, data.take(np.setdiff1d(rows, test)), data.take(test))
    np.testing.assert_array_equal(split.test.y, harmonized.test.y)
    return split


def _mappings() -> dict[str, SiteMapping]:
    return {site: SiteMapping.from_yaml(fixture_mapping(site)) for site in FIXTURE_SITES}


def test_a_site_that_fails_its_check_is_refused_with_the_reason() -> None:
    schema = Schema.from_yaml(FIXTURE / "schema.yaml")
    tables = fixture_federation(np.random.default_rng(0), rows_per_site=100)
    tables["west"].loc[:60, "sex"] = "?"  # not west's missing code (-9): an unmapped code
    mappings = _mappings()
    fed = build_federation(schema, {s: (tables[s], mappings[s]) for s in FIXTURE_SITES})
    assert fed.site_ids == ["north", "south", "east"]
    reason = "required variable 'sex': 61 of 100 values invalid (61.0% > max_invalid 5%)"
    assert reason in fed.extra["refused_sites"]["west"]
    assert fed.extra["data_checks"]["west"]["passed"] is False
    assert fed.feature_names == ("age", "sex_1", "glucose", "sbp")


@pytest.mark.slow
def test_federated_training_on_harmonized_data_beats_raw() -> None:
    schema = Schema.from_yaml(FIXTURE / "schema.yaml")
    tables = fixture_federation(np.random.default_rng(0), rows_per_site=300)
    mappings = _mappings()
    fed = build_federation(
        schema,
        {site: (tables[site], mappings[site]) for site in FIXTURE_SITES},
        test_fraction=TEST_FRACTION,
        seed=SPLIT_SEED,
    )
    assert not fed.extra["refused_sites"]
    harmonized = list(fed.sites)
    raw = [_naive(tables[s.site_id], s.site_id, s) for s in harmonized]
    study = StudyConfig.model_validate(
        {
            "name": "fixture-harmonization",
            "dataset": {"name": "fixture"},
            "model": {"kind": "logistic"},
            "preprocessing": {"impute": "mean", "scale": "global"},
            "training": {"epochs": 1, "lr": 0.05, "batch_size": 16},
            "rounds": 20,
            "min_sites": 2,
            "seed": 0,
        }
    )
    scores = {}
    for name, sites in (("harmonized", harmonized), ("raw", raw)):
        ds = FederatedDataset(name=name, task="binary", sites=tuple(sites))
        scores[name] = run_simulation(study, dataset=ds)["final"]["unweighted"]
    h, r = scores["harmonized"], scores["raw"]
    message = (
        f"AUROC harmonized {h['auroc']:.3f} vs raw {r['auroc']:.3f}; "
        f"accuracy {h['accuracy']:.3f} vs {r['accuracy']:.3f}"
    )
    assert h["auroc"] >= r["auroc"] + 0.08, message
    assert h["accuracy"] >= r["accuracy"] + 0.08, message
    assert h["auroc"] >= 0.8, message
