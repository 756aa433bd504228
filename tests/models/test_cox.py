"""Linear Cox model: Breslow ties, gradients, agreement with lifelines, validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedcare.data.base import Dataset
from fedcare.errors import ModelError
from fedcare.models.base import LocalTrainSpec
from fedcare.models.cox import CoxPH, cox_loss_and_eta_grad, risk_set_bounds
from fedcare.records.arrays import ArrayRecord

from .conftest import make_survival

MODEL = CoxPH()


def naive_breslow(eta: np.ndarray, event: np.ndarray, time: np.ndarray) -> float:
    """The definition, one event at a time: risk set {j: t_j >= t_i}."""
    total = 0.0
    for i in np.flatnonzero(event):
        total += eta[i] - np.log(np.sum(np.exp(eta[time >= time[i]])))
    return -total / event.sum()


def test_data_has_ties(survival_data: Dataset) -> None:
    assert survival_data.time is not None
    assert len(np.unique(survival_data.time)) < len(survival_data) / 2


def test_loss_matches_the_definition_with_ties(survival_data: Dataset) -> None:
    eta = np.random.default_rng(0).normal(size=len(survival_data))
    assert survival_data.time is not None
    loss, _ = cox_loss_and_eta_grad(eta, survival_data.y, survival_data.time)
    assert loss == pytest.approx(naive_breslow(eta, survival_data.y, survival_data.time), rel=1e-12)


def test_risk_set_bounds_group_tied_times() -> None:
    first, last = risk_set_bounds(np.array([5.0, 3.0, 3.0, 3.0, 1.0]))
    assert first.tolist() == [0, 1, 1, 1, 4]
    assert last.tolist() == [0, 3, 3, 3, 4]


def test_gradient_matches_finite_differences(survival_data: Dataset) -> None:
    d = survival_data.X.shape[1]
    p = ArrayRecord({"weight": np.random.default_rng(1).normal(size=d)})
    base = LocalTrainSpec(max_steps=1, lr=1.0)
    moved = MODEL.fit(p, survival_data, base, np.random.default_rng(0)).params
    analytic = p["weight"] - moved["weight"]  # one full-batch step of lr 1 is the gradient
    eps, numeric = 1e-6, np.empty(d)
    for i in range(d):
        step = np.zeros(d)
        step[i] = eps
        up = MODEL.loss(ArrayRecord({"weight": p["weight"] + step}), survival_data)
        down = MODEL.loss(ArrayRecord({"weight": p["weight"] - step}), survival_data)
        numeric[i] = (up - down) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_no_events_gives_zero_loss_and_gradient() -> None:
    loss, grad = cox_loss_and_eta_grad(np.array([1.0, 2.0, 3.0]), np.zeros(3), np.ones(3))
    assert loss == 0.0 and grad.tolist() == [0.0, 0.0, 0.0]
    data = Dataset(X=np.ones((3, 2)), y=np.zeros(3), time=np.arange(1.0, 4.0))
    start = ArrayRecord({"weight": np.array([0.5, -0.5])})
    result = MODEL.fit(start, data, LocalTrainSpec(epochs=3), np.random.default_rng(0))
    assert result.params == start and result.metrics["train_loss"] == 0.0


def test_loss_is_stable_for_large_risk_scores() -> None:
    eta = np.array([800.0, -800.0, 790.0, 0.0])
    event, time = np.array([1.0, 1.0, 0.0, 1.0]), np.array([1.0, 4.0, 2.0, 3.0])
    loss, grad = cox_loss_and_eta_grad(eta, event, time)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert loss == pytest.approx(naive_breslow(eta.astype(np.longdouble), event, time), rel=1e-9)


@pytest.mark.parametrize("penalizer", [0.0, 0.05])
def test_matches_lifelines(penalizer: float) -> None:
    # lifelines maximizes ll - n * penalizer / 2 * ||b||^2 on features it standardizes (ddof=1)
    # itself; on unit-sd features without ties (Efron = Breslow) that is our loss with
    # l2 = penalizer * n / events.
    lifelines = pytest.importorskip("lifelines")
    data = make_survival(n=200, d=4, seed=5, ties=False)
    X = (data.X - data.X.mean(0)) / data.X.std(0, ddof=1)
    frame = pd.DataFrame(X, columns=list("abcd")).assign(T=data.time, E=data.y)
    fitter = lifelines.CoxPHFitter(penalizer=penalizer, l1_ratio=0.0)
    fitter.fit(frame, "T", "E", fit_options={"precision": 1e-10})
    spec = LocalTrainSpec(max_steps=400, lr=1.0, l2=penalizer * len(X) / data.y.sum())
    start = MODEL.init_params((4,), np.random.default_rng(0))
    result = MODEL.fit(start, data.with_features(X), spec, np.random.default_rng(0))
    np.testing.assert_allclose(result.params["weight"], fitter.params_.to_numpy(), atol=1e-6)


def test_predict_is_the_linear_predictor(survival_data: Dataset) -> None:
    w = np.array([0.3, -0.2, 0.1, 0.0])
    scores = MODEL.predict(ArrayRecord({"weight": w}), survival_data.X)
    np.testing.assert_allclose(scores, survival_data.X @ w)
    assert scores.dtype == np.float64


def test_minibatch_training_learns_and_is_deterministic(survival_data: Dataset) -> None:
    start = MODEL.init_params((4,), np.random.default_rng(0))
    spec = LocalTrainSpec(epochs=20, batch_size=16, lr=0.2)
    runs = [MODEL.fit(start, survival_data, spec, np.random.default_rng(s)) for s in (1, 1, 2)]
    assert runs[0].params == runs[1].params and runs[0].params != runs[2].params
    assert runs[0].num_steps == 100
    assert runs[0].metrics["train_loss"] < MODEL.loss(start, survival_data)
    assert runs[0].params["weight"][0] > 0.3  # the true coefficient is 0.8


def test_fit_does_not_mutate_inputs(survival_data: Dataset) -> None:
    assert survival_data.time is not None
    X, y, t = survival_data.X.copy(), survival_data.y.copy(), survival_data.time.copy()
    start = ArrayRecord({"weight": np.ones(4)})
    MODEL.fit(
        start,
        survival_data,
        LocalTrainSpec(epochs=2, batch_size=8, prox_mu=0.1),
        np.random.default_rng(0),
    )
    assert start == ArrayRecord({"weight": np.ones(4)})
    for before, after in ((X, survival_data.X), (y, survival_data.y), (t, survival_data.time)):
        np.testing.assert_array_equal(before, after)


def test_validation_messages(survival_data: Dataset) -> None:
    good = ArrayRecord({"weight": np.zeros(4)})
    no_time = Dataset(X=survival_data.X, y=survival_data.y)
    with pytest.raises(ModelError, match="survival data needs `time`"):
        MODEL.fit(good, no_time, LocalTrainSpec(), np.random.default_rng(0))
    with pytest.raises(ModelError, match=r"Cox model params array 'weight' has shape \(3,\)"):
        MODEL.predict(ArrayRecord({"weight": np.zeros(3)}), survival_data.X)
    with pytest.raises(ModelError, match="'weight' contains NaN"):
        MODEL.loss(ArrayRecord({"weight": np.full(4, np.nan)}), survival_data)
    X = survival_data.X.copy()
    X[0, 0] = np.nan
    with pytest.raises(ModelError, match="X contains NaN values in 1 of 80 rows"):
        MODEL.fit(good, survival_data.with_features(X), LocalTrainSpec(), np.random.default_rng(0))
