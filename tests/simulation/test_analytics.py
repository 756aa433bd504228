"""Simulated analytics on mapped data: sites answer on their harmonized tables.

The fixture federation codes glucose in mmol/L at two sites and mg/dL at two, sex as 1/0,
M/F or male/female, and missing values as -9, ``?`` or empty. After harmonization, queries name
the schema's variables, and federated statistics equal the same statistics of the pooled
harmonized tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedcare.analytics.disclosure import AnalyticsPolicy
from fedcare.analytics.spec import AnalyticsSpec
from fedcare.data.base import FederatedDataset
from fedcare.data.cdm import Schema, SiteMapping, analysis_frame, build_federation, check_table
from fedcare.data.cdm.fixtures import FIXTURE_SITES, fixture_federation
from fedcare.data.cdm.sitedata import ANALYTICS_FRAMES
from fedcare.errors import RoundFailedError
from fedcare.simulation.analytics import simulate_analytics

from ..data.cdm.helpers import FIXTURE, fixture_mapping

EDGES = [2.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 12.0, 20.0]


@pytest.fixture(scope="module")
def mapped() -> tuple[FederatedDataset, pd.DataFrame]:
    """The fixture federation built from its raw tables, and the pooled harmonized table."""
    schema = Schema.from_yaml(FIXTURE / "schema.yaml")
    tables = fixture_federation(np.random.default_rng(11), rows_per_site=200)
    sites = {s: (tables[s], SiteMapping.from_yaml(fixture_mapping(s))) for s in FIXTURE_SITES}
    ds = build_federation(schema, sites, seed=0)
    pooled = pd.concat(
        [analysis_frame(check_table(t, schema, m)) for t, m in sites.values()], ignore_index=True
    )
    return ds, pooled


def _spec(*queries: dict[str, object]) -> AnalyticsSpec:
    return AnalyticsSpec.from_dict({"name": "harmonized", "queries": list(queries)})


def test_federated_glucose_equals_the_pooled_harmonized_value(
    mapped: tuple[FederatedDataset, pd.DataFrame],
) -> None:
    ds, pooled = mapped
    assert sorted(ds.extra[ANALYTICS_FRAMES]) == sorted(FIXTURE_SITES)  # type: ignore[arg-type]
    spec = _spec(
        {"type": "moments", "variables": ["glucose", "age"]},
        {"type": "histogram", "variable": "glucose", "edges": EDGES},
        {"type": "cohort", "filter": "sex == 1", "queries": [{"type": "count"}]},
    )
    policy = AnalyticsPolicy(min_cell=1, seeded_noise=True)
    result = simulate_analytics(spec, dataset=ds, policy=policy).to_dict()
    assert result["failures"] == {} and result["sites"] == sorted(FIXTURE_SITES)
    moments, hist, cohort = result["queries"]
    glucose = pd.to_numeric(pooled["glucose"]).dropna().to_numpy(dtype=float)
    # mmol/L everywhere: the mg/dL sites were converted (a raw mix would average near 60)
    assert 5.0 < glucose.mean() < 8.0
    assert moments["count"][0] == len(glucose)
    assert moments["mean"][0] == pytest.approx(glucose.mean(), abs=1e-9)
    assert moments["variance"][0] == pytest.approx(glucose.var(ddof=1), abs=1e-9)
    expected, _ = np.histogram(glucose, bins=EDGES)
    np.testing.assert_allclose(hist["counts"], expected, atol=1e-9)
    men = int((pd.to_numeric(pooled["sex"]) == 1).sum())  # M, male and 1 all became 1
    assert cohort["count"] == men


def test_a_variable_no_site_has_is_an_error_reply_naming_it(
    mapped: tuple[FederatedDataset, pd.DataFrame],
) -> None:
    ds, _ = mapped
    spec = _spec({"type": "count"}, {"type": "moments", "variables": ["chol"]})
    with pytest.raises(RoundFailedError, match="no site answered") as info:
        simulate_analytics(spec, dataset=ds, policy=AnalyticsPolicy(seeded_noise=True))
    message = str(info.value)
    for site in FIXTURE_SITES:
        assert f"{site} (round 1)" in message
    assert "unknown variable 'chol'" in message and "'glucose'" in message


def test_feature_column_names_do_not_reach_mapped_sites(
    mapped: tuple[FederatedDataset, pd.DataFrame],
) -> None:
    ds, pooled = mapped
    # built-in names (x0, sex_1, ...) are not variables of a harmonized table
    spec = _spec({"type": "moments", "variables": ["sex_1"]})
    with pytest.raises(RoundFailedError, match="unknown variable 'sex_1'"):
        simulate_analytics(spec, dataset=ds, policy=AnalyticsPolicy(seeded_noise=True))
    spec = _spec({"type": "moments", "variables": ["sex"]})
    got = simulate_analytics(spec, dataset=ds, policy=AnalyticsPolicy(seeded_noise=True))
    sex = pd.to_numeric(pooled["sex"]).dropna()
    assert got.queries[0]["mean"][0] == pytest.approx(sex.mean(), abs=1e-9)
