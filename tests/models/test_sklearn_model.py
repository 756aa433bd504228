"""SklearnModel: scikit-learn linear estimators as federated models."""

from __future__ import annotations

import pickle
from functools import partial

import numpy as np
import pytest
from sklearn.linear_model import (
    LogisticRegression,
    Ridge,
    SGDClassifier,
    SGDRegressor,
)

from fedcare.data.base import Dataset
from fedcare.errors import ModelError
from fedcare.evaluation.metrics import compute_metrics
from fedcare.models.base import LocalTrainSpec
from fedcare.models.sklearn_model import SklearnModel
from tests.models.conftest import make_multiclass, make_regression

LOGREG = partial(LogisticRegression, max_iter=200)
SGD_LOG = partial(SGDClassifier, loss="log_loss", alpha=1e-3)


@pytest.mark.parametrize("make", [LOGREG, SGD_LOG], ids=["logreg", "sgd"])
def test_multiclass_estimators_learn(make: partial[object]) -> None:
    train, test = make_multiclass(seed=0), make_multiclass(seed=1)
    model = SklearnModel(make, "multiclass", classes=4)
    p = model.init_params((5,), np.random.default_rng(0))
    assert p["coef"].shape == (4, 5) and p["intercept"].shape == (4,)
    out = model.fit(p, train, LocalTrainSpec(epochs=3, batch_size=40), np.random.default_rng(0))
    assert out.num_steps == (1 if make is LOGREG else 18)
    assert out.metrics["train_loss"] < 0.7 * model.loss(p, train)
    pred = model.predict(out.params, test.X)
    np.testing.assert_allclose(pred.sum(axis=1), 1.0)
    assert compute_metrics("multiclass", test, pred)["macro_auroc"] > 0.85


@pytest.mark.parametrize("make", [LOGREG, SGD_LOG], ids=["logreg", "sgd"])
def test_a_site_missing_classes_returns_the_full_coef_shape(make: partial[object]) -> None:
    data = make_multiclass()
    model = SklearnModel(make, "multiclass", classes=4)
    start = model.fit(
        model.init_params((5,), np.random.default_rng(0)),
        data,
        LocalTrainSpec(),
        np.random.default_rng(0),
    ).params
    for kept in ([0, 1, 3], [1, 3]):
        site = data.take(np.flatnonzero(np.isin(data.y, kept)))
        out = model.fit(start, site, LocalTrainSpec(), np.random.default_rng(1)).params
        assert out["coef"].shape == (4, 5) and out["intercept"].shape == (4,)
        assert out != start
        if make is LOGREG:  # the rows of classes the site lacks are left as they were
            np.testing.assert_array_equal(out["coef"][2], start["coef"][2])
    alone = data.take(np.flatnonzero(data.y == 2))
    same = model.fit(start, alone, LocalTrainSpec(), np.random.default_rng(1))
    if make is LOGREG:
        assert same.params == start and same.num_steps == 0


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_warm_start_continues_from_the_global_params() -> None:
    data = make_multiclass()
    model = SklearnModel(partial(LogisticRegression, max_iter=1), "multiclass", classes=4)
    p = model.init_params((5,), np.random.default_rng(0))
    rng = np.random.default_rng
    once = model.fit(p, data, LocalTrainSpec(), rng(0)).params
    twice = model.fit(once, data, LocalTrainSpec(), rng(0)).params
    assert model.loss(twice, data) < model.loss(once, data) < model.loss(p, data)


def test_binary_and_regression_estimators() -> None:
    data = make_multiclass()
    binary = Dataset(X=data.X, y=(data.y >= 2).astype(np.int64))
    hinge = SklearnModel(SGDClassifier(loss="hinge"), "binary")  # no predict_proba: sigmoid
    out = hinge.fit(
        hinge.init_params((5,), np.random.default_rng(0)),
        binary,
        LocalTrainSpec(),
        np.random.default_rng(0),
    )
    prob = hinge.predict(out.params, binary.X)
    assert out.params["coef"].shape == (1, 5) and np.all((prob >= 0) & (prob <= 1))
    assert compute_metrics("binary", binary, prob)["auroc"] > 0.85
    reg = make_regression()
    sgd = SklearnModel(partial(SGDRegressor, eta0=0.01), "regression")
    p = sgd.init_params((5,), np.random.default_rng(0))
    fitted = sgd.fit(p, reg, LocalTrainSpec(epochs=5), np.random.default_rng(0))
    assert fitted.params["coef"].shape == (5,) and fitted.params["intercept"].shape == (1,)
    assert compute_metrics("regression", reg, sgd.predict(fitted.params, reg.X))["r2"] > 0.9
    assert (
        fitted.params == sgd.fit(p, reg, LocalTrainSpec(epochs=5), np.random.default_rng(0)).params
    )
    ridge = SklearnModel(Ridge, "regression", refit=True)
    got = ridge.fit(p, reg, LocalTrainSpec(), np.random.default_rng(0)).params
    direct = Ridge().fit(reg.X, reg.y)
    np.testing.assert_allclose(got["coef"], direct.coef_)
    np.testing.assert_allclose(ridge.predict(got, reg.X), direct.predict(reg.X))
    clone = pickle.loads(pickle.dumps(sgd))
    np.testing.assert_array_equal(
        clone.predict(fitted.params, reg.X), sgd.predict(fitted.params, reg.X)
    )


def test_errors_name_what_is_wrong() -> None:
    reg, multi = make_regression(n=40), make_multiclass(n=40)
    rng = np.random.default_rng(0)
    ridge = SklearnModel(Ridge, "regression")
    p = ridge.init_params((5,), rng)
    with pytest.raises(
        ModelError, match="Ridge: the estimator has neither partial_fit, warm_start nor coef_init"
    ):
        ridge.fit(p, reg, LocalTrainSpec(), rng)
    sgd = SklearnModel(SGDRegressor, "regression")
    with pytest.raises(
        ModelError, match=r"cannot honour a FedProx proximal term \(prox_mu=0.1\), a SCAFFOLD"
    ):
        sgd.fit(p, reg, LocalTrainSpec(prox_mu=0.1, correction=p.zeros_like()), rng)
    with pytest.raises(ModelError, match="a multiclass SklearnModel needs classes="):
        SklearnModel(LogisticRegression, "multiclass")
    with pytest.raises(ModelError, match=r"classes must be K >= 3 or the list 0\.\.K-1, got 2"):
        SklearnModel(LogisticRegression, "multiclass", classes=2)
    with pytest.raises(
        ModelError, match=r"supports tasks \['binary', 'multiclass', 'regression'\], not 'survival'"
    ):
        SklearnModel(LogisticRegression, "survival")
    three = SklearnModel(LOGREG, "multiclass", classes=3)
    with pytest.raises(ModelError, match=r"label 3 is not among classes 0..2"):
        three.fit(three.init_params((5,), rng), multi, LocalTrainSpec(), rng)
    with pytest.raises(
        ModelError, match=r"params array 'coef' has shape \(3, 5\), expected \(4, 5\)"
    ):
        SklearnModel(LOGREG, "multiclass", classes=4).predict(three.init_params((5,), rng), multi.X)


def test_a_converged_warm_fit_equals_the_estimator_fitted_directly() -> None:
    data = make_multiclass()
    make = partial(LogisticRegression, C=0.5, max_iter=1000, tol=1e-10)
    model = SklearnModel(make, "multiclass", classes=4)
    p = model.init_params((5,), np.random.default_rng(0))
    got = model.fit(p, data, LocalTrainSpec(), np.random.default_rng(0)).params
    direct = make().fit(data.X, data.y)
    np.testing.assert_allclose(got["coef"], direct.coef_, atol=1e-5)
    np.testing.assert_allclose(got["intercept"], direct.intercept_, atol=1e-5)
    np.testing.assert_allclose(model.predict(got, data.X), direct.predict_proba(data.X), atol=1e-6)
