"""Fisher information, coefficient tables and permutation importance, checked against an
unpenalized scikit-learn fit with a hand-built Hessian, lifelines' Cox standard errors and a
finite-difference Hessian of the Breslow partial likelihood."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines import CoxPHFitter
from scipy.special import expit
from sklearn.linear_model import LogisticRegression as SkLogistic

from fedcare.errors import ConfigError, ValidationError
from fedcare.evaluation.explain import (
    coefficient_table,
    combine_importance,
    cox_information,
    site_importance,
    site_information,
    sum_information,
)
from fedcare.models.cox import CoxPH, cox_loss_and_eta_grad
from fedcare.models.logistic import LogisticRegression
from fedcare.records.arrays import ArrayRecord

NAMES = ["age", "chol", "sex"]


def _logistic_data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (rng.random(n) < expit(X @ np.array([1.0, -0.5, 0.2]) - 0.3)).astype(int)
    return X, y


def _fit_logistic(X: np.ndarray, y: np.ndarray) -> ArrayRecord:
    clf = SkLogistic(C=np.inf, tol=1e-12, max_iter=10_000).fit(X, y)
    return ArrayRecord({"weight": clf.coef_.ravel(), "bias": np.float64(clf.intercept_[0])})


def test_logistic_information_summed_over_sites_gives_the_mle_standard_errors() -> None:
    X, y = _logistic_data()
    params = _fit_logistic(X, y)
    sites = np.array_split(np.arange(len(y)), 3)
    infos = [
        site_information({"kind": "logistic"}, params, X[i], y[i], feature_names=NAMES)
        for i in sites
    ]
    assert all(
        info is not None and info["n"] == len(i) for info, i in zip(infos, sites, strict=True)
    )
    total = sum_information(infos)
    assert total is not None and total["sites"] == 3 and total["names"] == [*NAMES, "bias"]
    # the reference: the Hessian of the pooled log-likelihood, built by hand
    Xa = np.column_stack([X, np.ones(len(X))])
    p = expit(Xa @ np.append(params["weight"], params["bias"]))
    hessian = -(Xa.T * (p * (1 - p))) @ Xa
    expected_se = np.sqrt(np.diag(np.linalg.inv(-hessian)))
    table = coefficient_table(total, params, NAMES, {"kind": "logistic"})
    se = np.array([row["se"] for row in table["rows"]])
    np.testing.assert_allclose(se, expected_se, rtol=0, atol=1e-6)
    assert table["ratio_name"] == "odds ratio" and not table["singular"]
    age = table["rows"][0]
    assert age["name"] == "age" and age["coef"] == pytest.approx(params["weight"][0])
    assert age["lo"] == pytest.approx(age["coef"] - 1.959963984540054 * age["se"])
    assert age["ratio"] == pytest.approx(np.exp(age["coef"]))
    assert age["ratio_hi"] == pytest.approx(np.exp(age["hi"]))
    assert table["rows"][-1]["name"] == "bias" and table["rows"][-1]["ratio"] is None
    # the MLE: truly at the optimum (score ~ 0), so these are the usual Wald SEs
    assert np.abs(Xa.T @ (y - p)).max() < 1e-5


def test_adapter_and_sklearn_kind_give_the_same_information() -> None:
    X, y = _logistic_data(200)
    params = _fit_logistic(X, y)
    a = site_information(LogisticRegression(), params, X, y)
    b = site_information({"kind": "sklearn"}, params, X, y)
    assert a is not None and b is not None and a["names"] == ["x0", "x1", "x2", "bias"]
    np.testing.assert_allclose(a["matrix"], b["matrix"])


def test_information_is_none_for_other_models_and_withheld_for_tiny_sites() -> None:
    X, y = _logistic_data(20)
    params = _fit_logistic(X, y)
    assert site_information({"kind": "torch"}, params, X, y) is None
    assert site_information({"kind": "logistic"}, None, X, y) is None
    tiny = site_information({"kind": "logistic"}, params, X[:3], y[:3], min_cell=5)
    assert tiny is not None and tiny["matrix"] is None and "withheld" in tiny
    assert sum_information([tiny]) is None


def test_singular_information_gives_null_standard_errors_and_a_note() -> None:
    X, y = _logistic_data(200)
    X[:, 2] = X[:, 0]  # two identical columns: not identified
    params = _fit_logistic(X, y)
    info = site_information({"kind": "logistic"}, params, X, y)
    assert info is not None
    table = coefficient_table(info, params, NAMES, {"kind": "logistic"})
    assert table["singular"] and "singular" in table["note"]
    assert all(row["se"] is None and row["lo"] is None for row in table["rows"])
    assert table["rows"][0]["ratio"] == pytest.approx(np.exp(params["weight"][0]))


def test_coefficient_table_rejects_mismatches() -> None:
    X, y = _logistic_data(100)
    params = _fit_logistic(X, y)
    info = site_information({"kind": "logistic"}, params, X, y)
    assert info is not None
    with pytest.raises(ValidationError, match="kind 'logistic' for cox"):
        coefficient_table(info, params, NAMES, {"kind": "cox"})
    with pytest.raises(ConfigError, match="logistic or Cox"):
        coefficient_table(info, params, NAMES, {"kind": "torch"})
    with pytest.raises(ValidationError, match="2 feature names for 3 weights"):
        coefficient_table(info, params, NAMES[:2], {"kind": "logistic"})


def _survival(n: int, seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    time = rng.exponential(np.exp(-(X @ np.array([0.7, -0.4, 0.0]))))
    if ties:
        time = np.ceil(time * 4)
    event = (rng.random(n) < 0.75).astype(int)
    return X, event, time


def test_cox_information_equals_a_finite_difference_hessian_with_ties() -> None:
    X, event, time = _survival(150, 1, ties=True)
    assert len(np.unique(time)) < 60  # heavily tied
    w = np.array([0.3, -0.2, 0.1])

    def grad(v: np.ndarray) -> np.ndarray:  # gradient of the partial log-likelihood
        _, g = cox_loss_and_eta_grad(X @ v, event, time)
        return -event.sum() * (X.T @ g)

    h = 1e-5
    fd = np.column_stack([(grad(w + h * e) - grad(w - h * e)) / (2 * h) for e in np.eye(3)])
    np.testing.assert_allclose(cox_information(w, X, event, time), -fd, atol=1e-5, rtol=1e-6)


def test_cox_standard_errors_match_lifelines_summed_over_strata() -> None:
    X, event, time = _survival(400, 2, ties=False)
    site = np.repeat([0, 1, 2], [150, 130, 120])
    frame = {f"x{i}": X[:, i] for i in range(3)} | {"T": time, "E": event, "site": site}
    import pandas as pd

    cph = CoxPHFitter().fit(
        pd.DataFrame(frame), "T", "E", strata=["site"], fit_options={"precision": 1e-12}
    )
    params = ArrayRecord({"weight": cph.params_.to_numpy()})
    infos = [
        site_information(
            {"kind": "cox"}, params, X[site == s], event[site == s], time=time[site == s]
        )
        for s in range(3)
    ]
    total = sum_information(infos)
    assert total is not None and total["kind"] == "cox" and total["names"] == ["x0", "x1", "x2"]
    table = coefficient_table(total, params, ["x0", "x1", "x2"], CoxPH())
    se = np.array([row["se"] for row in table["rows"]])
    np.testing.assert_allclose(se, cph.standard_errors_.to_numpy(), rtol=1e-6)
    assert table["ratio_name"] == "hazard ratio"
    assert table["rows"][0]["ratio"] == pytest.approx(cph.hazard_ratios_.iloc[0])


def test_cox_information_needs_times() -> None:
    X, event, _ = _survival(30, 3, ties=False)
    with pytest.raises(ValidationError, match="survival times"):
        site_information({"kind": "cox"}, {"weight": np.zeros(3)}, X, event)


def test_permutation_importance_finds_the_signal_and_not_the_noise() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(400, 2))  # column 0 carries the signal, column 1 is noise
    y = (rng.random(400) < expit(3 * X[:, 0])).astype(int)
    params = ArrayRecord({"weight": np.array([3.0, 0.0]), "bias": np.float64(0.0)})
    model = LogisticRegression()
    result = site_importance(
        lambda m: model.predict(params, m),
        X,
        y,
        "binary",
        feature_names=["signal", "noise"],
        repeats=5,
        rng=rng,
    )
    assert result["metric"] == "auroc" and result["n"] == 400 and result["repeats"] == 5
    assert result["baseline"] > 0.85
    assert result["drops"]["signal"] > 0.3
    assert result["drops"]["noise"] == pytest.approx(0.0, abs=1e-12)  # weight 0: no effect
    other = {**result, "n": 100, "drops": {"signal": 0.1, "noise": 0.0}}
    combined = combine_importance({"A": result, "B": other})
    assert combined["sites"] == 2 and [r["feature"] for r in combined["rows"]] == [
        "signal",
        "noise",
    ]
    top = combined["rows"][0]
    mean = (400 * result["drops"]["signal"] + 100 * 0.1) / 500
    assert top["drop"] == pytest.approx(mean)
    sd = np.sqrt((400 * (result["drops"]["signal"] - mean) ** 2 + 100 * (0.1 - mean) ** 2) / 500)
    assert top["sd_between_sites"] == pytest.approx(sd)


def test_importance_for_an_error_metric_is_positive_when_it_matters() -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 2))
    y = 2 * X[:, 0]
    result = site_importance(
        lambda m: 2 * m[:, 0], X, y, "regression", feature_names=["a", "b"], repeats=3, rng=rng
    )
    assert result["metric"] == "mae" and result["lower_is_better"]
    assert result["baseline"] == 0.0 and result["drops"]["a"] > 1.0
    assert result["drops"]["b"] == 0.0


def test_importance_rejects_images_and_bad_arguments() -> None:
    rng = np.random.default_rng(6)
    images = np.zeros((4, 1, 2, 2))
    out = site_importance(
        lambda m: np.full(len(m), 0.5), images, np.array([0, 1, 0, 1]), "binary",
        feature_names=[], repeats=1, rng=rng,
    )  # fmt: skip
    assert "unsupported" in out
    with pytest.raises(ConfigError, match="repeats"):
        site_importance(
            lambda m: m[:, 0], np.zeros((3, 1)), np.zeros(3), "regression",
            feature_names=["a"], repeats=0, rng=rng,
        )  # fmt: skip
    with pytest.raises(ValidationError, match="1 feature names for 2 columns"):
        site_importance(
            lambda m: m[:, 0], np.zeros((3, 2)), np.zeros(3), "regression",
            feature_names=["a"], repeats=1, rng=rng,
        )  # fmt: skip
