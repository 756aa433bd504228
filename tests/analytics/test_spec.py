"""Query spec validation: errors name the field and the bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcare.analytics.spec import AnalyticsSpec, QuantilesQuery
from fedcare.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "analytics"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            {"type": "histogram", "variable": "age", "edges": [1, 1, 2]},
            r"queries\.0\.histogram\.edges: .*strictly increasing",
        ),
        (
            {"type": "quantiles", "variable": "a", "probabilities": [1.5], "lower": 0, "upper": 1},
            r"queries\.0\.quantiles\.probabilities: .*\[1\.5\]",
        ),
        (
            {"type": "quantiles", "variable": "a", "probabilities": [0.5], "lower": 2, "upper": 1},
            "strictly increasing",
        ),
        ({"type": "kaplan_meier"}, "grid mode needs 'grid'"),
        ({"type": "kaplan_meier", "mode": "exact", "grid": [1, 2]}, "exact mode takes no 'grid'"),
        ({"type": "correlation", "variables": ["a"]}, r"queries\.0\.correlation\.variables"),
        ({"type": "median", "variable": "a"}, r"queries\.0: .*tag 'median'"),
        ({"type": "count", "colour": "red"}, r"queries\.0\.count\.colour: Extra inputs"),
    ],
)
def test_invalid_queries_name_the_field(query: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AnalyticsSpec.from_dict({"queries": [query]}, source="q.yaml")


def test_gaussian_noise_needs_delta() -> None:
    with pytest.raises(ConfigError, match=r"noise: .*delta"):
        AnalyticsSpec.from_dict(
            {"queries": [{"type": "count"}], "noise": {"mechanism": "gaussian", "epsilon": 1}}
        )


def test_empty_and_non_mapping_specs() -> None:
    with pytest.raises(ConfigError, match="queries"):
        AnalyticsSpec.from_dict({"queries": []})
    with pytest.raises(ConfigError, match="expected a mapping"):
        AnalyticsSpec.from_dict([1, 2])


def test_quantile_error_bound() -> None:
    q = QuantilesQuery(
        type="quantiles", variable="a", probabilities=[0.5], lower=0, upper=160, rounds=2, points=15
    )
    assert q.error_bound == pytest.approx(160 / 256)


@pytest.mark.parametrize("name", ["heart-disease", "tcga-brca"])
def test_examples_validate(name: str) -> None:
    spec = AnalyticsSpec.from_yaml(EXAMPLES / f"{name}.yaml")
    assert spec.dataset == name
    assert AnalyticsSpec.from_dict(spec.model_dump(mode="json")) == spec  # JSON round trip


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read analytics file"):
        AnalyticsSpec.from_yaml(tmp_path / "missing.yaml")
