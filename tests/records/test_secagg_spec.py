"""``privacy.secagg`` in a study file (fedcare.records.secagg_spec)."""

from __future__ import annotations

from typing import Any

import pytest

from fedcare.errors import ConfigError
from fedcare.records.secagg_spec import SecAggSpec, majority
from fedcare.records.study import StudyConfig

BASE: dict[str, Any] = {
    "name": "secagg-spec",
    "dataset": {"name": "heart-disease"},
    "model": {"kind": "logistic"},
}


def _study(privacy: dict[str, Any]) -> StudyConfig:
    return StudyConfig.from_dict({**BASE, "privacy": privacy})


def test_unset_is_none_and_set_values_become_layer_options() -> None:
    assert _study({"mode": "secure"}).privacy.secagg is None
    spec = _study({"mode": "secure", "secagg": {"neighbours": 20, "threshold": 12}}).privacy.secagg
    assert spec == SecAggSpec(neighbours=20, threshold=12)
    assert spec.options() == {"degree": 20, "threshold": 12}
    assert SecAggSpec(neighbours=10).options() == {"degree": 10}
    assert [majority(h) for h in (3, 4, 21)] == [2, 3, 11]


@pytest.mark.parametrize(
    ("secagg", "match"),
    [
        ({"neighbours": 20, "threshold": 10}, r"threshold=10 is not a strict majority of the 21"),
        ({"neighbours": 20, "threshold": 22}, r"threshold=22 exceeds the 21 holders"),
        ({"neighbours": 1}, r"neighbours"),
        ({"threshold": 1}, r"threshold"),
        ({"degree": 4}, r"degree"),
    ],
)
def test_settings_that_break_secagg_are_refused_naming_them(
    secagg: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        _study({"mode": "secure", "secagg": secagg})


def test_secagg_settings_need_a_masking_mode() -> None:
    with pytest.raises(ConfigError, match="privacy mode 'open' does not use"):
        _study({"mode": "open", "secagg": {"neighbours": 4}})
