"""A forged subgroup, information or importance part of a site summary is refused, naming it."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest

from fedcare.data.base import Dataset
from fedcare.evaluation.validation import site_validation, validation_problem
from fedcare.records.arrays import ArrayRecord
from fedcare.records.validation_spec import ValidationSpec


@pytest.fixture(scope="module")
def honest() -> dict[str, Any]:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, 3))
    sex = (rng.random(120) < 0.5).astype(float)
    X[:, 1] = sex
    y = (X[:, 0] + rng.normal(0, 1, 120) > 0).astype(float)
    params = ArrayRecord({"weight": np.array([1.0, 0.2, 0.0]), "bias": np.array(0.1)})
    p = 1 / (1 + np.exp(-(X @ params["weight"] + 0.1)))
    spec = ValidationSpec(bootstrap=20, subgroups=[{"feature": "sex"}], importance=True).model_dump(
        mode="json"
    )
    return site_validation(
        "binary",
        Dataset(X, y),
        p,
        raw_X=X,
        feature_names=["a", "sex", "c"],
        spec=spec,
        min_cell=5,
        rng=rng,
        predict=lambda rows: 1 / (1 + np.exp(-(rows @ params["weight"] + 0.1))),
        model={"kind": "logistic"},
        params=params,
    )


def test_an_honest_summary_with_every_part_passes(honest: dict[str, Any]) -> None:
    assert {"subgroups", "information", "importance"} <= set(honest)
    summary, reason = validation_problem("a", json.dumps(honest), max_rows=120)
    assert reason is None and summary == honest


def _level(s: dict[str, Any]) -> dict[str, Any]:
    levels = s["subgroups"]["groups"]["sex"]["levels"]
    return next(v for v in levels.values() if v.get("n") is not None)


@pytest.mark.parametrize(
    ("forge", "message"),
    [
        (lambda s: _level(s).update(n=10**6), "exceeds the site's 120 rows"),
        (lambda s: _level(s).update(tp=_level(s)["tp"] + 1, n=_level(s)["n"]), "tp+fp+tn+fn"),
        (lambda s: _level(s).update(auroc=1.5), "auroc"),
        (lambda s: _level(s).update(sum_p="x"), "sum_p"),
        (lambda s: s["subgroups"].update(groups={f"g{i}": {} for i in range(11)}), "11 groups"),
        (lambda s: s["information"].update(kind="svm"), "information.kind"),
        (lambda s: s["information"]["matrix"].pop(), "information.matrix must be 4 x 4"),
        (lambda s: s["information"]["matrix"][0].__setitem__(1, 99.0), "not symmetric"),
        (lambda s: s["importance"]["drops"].update(a=None, b="big"), "importance.drops['b']"),
        (lambda s: s.update(importance=[1]), "importance must be an object"),
    ],
)
def test_a_forged_part_is_refused_naming_it(
    honest: dict[str, Any], forge: Any, message: str
) -> None:
    forged = copy.deepcopy(honest)
    forge(forged)
    summary, reason = validation_problem("x", json.dumps(forged), max_rows=120)
    assert summary is None and reason is not None
    assert reason.startswith("site 'x' validation summary: ")
    assert message in reason


def test_a_site_without_a_subgroup_feature_says_so_and_still_reports() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(40, 2))
    y = (X[:, 0] > 0).astype(float)
    spec = ValidationSpec(bootstrap=10, subgroups=[{"feature": "sex"}]).model_dump(mode="json")
    summary = site_validation(
        "binary",
        Dataset(X, y),
        1 / (1 + np.exp(-X[:, 0])),
        raw_X=X,
        feature_names=["a", "b"],
        spec=spec,
        min_cell=5,
        rng=rng,
    )
    assert "subgroups" not in summary
    assert summary["notes"][0].startswith("subgroups not computed:")
    assert "sex" in summary["notes"][0]
    kept, reason = validation_problem("a", json.dumps(summary), max_rows=40)
    assert reason is None and kept is not None
