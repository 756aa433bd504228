"""Metrics checked against scikit-learn and lifelines, with ties, censoring and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifelines.utils import concordance_index
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from fedcare.data.base import Dataset
from fedcare.errors import ValidationError
from fedcare.evaluation.metrics import (
    accuracy,
    auroc,
    binary_log_loss,
    cindex,
    compute_metrics,
)


def _binary(rng: np.random.Generator, n: int, levels: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Labels and coarse (heavily tied) probabilities that carry some signal."""
    y = rng.integers(0, 2, n)
    prob = np.clip(np.round((0.3 * y + rng.random(n)) / 1.3 * levels) / levels, 0, 1)
    return y, prob


def _survival(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events, integer times (many ties) and rounded risks (many ties)."""
    risk = np.round(rng.normal(size=n), 1)
    time = np.ceil(rng.exponential(np.exp(-risk)) * 5)
    event = (rng.random(n) < 0.7).astype(int)
    return event, time, risk


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_and_auroc_match_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y, prob = _binary(rng, 300)
    assert accuracy(y, prob) == pytest.approx(accuracy_score(y, prob >= 0.5))
    assert accuracy(y, prob, threshold=0.3) == pytest.approx(accuracy_score(y, prob >= 0.3))
    assert auroc(y, prob) == pytest.approx(roc_auc_score(y, prob), abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(-3, 3)), min_size=2, max_size=40).filter(
        lambda rows: len({label for label, _ in rows}) == 2
    )
)
def test_auroc_property_matches_sklearn(rows: list[tuple[bool, int]]) -> None:
    y = np.array([int(label) for label, _ in rows])
    score = np.array([float(s) for _, s in rows])
    value = auroc(y, score)
    assert value == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert auroc(y, -score) == pytest.approx(1 - value, abs=1e-12)
    assert auroc(y, np.exp(score)) == pytest.approx(value, abs=1e-12)  # rank-based


def test_auroc_is_nan_for_one_class_or_no_rows() -> None:
    assert math.isnan(auroc([1, 1, 1], [0.2, 0.4, 0.9]))
    assert math.isnan(auroc([0, 0], [0.2, 0.4]))
    assert math.isnan(auroc([], []))
    assert math.isnan(accuracy([], []))


@pytest.mark.parametrize("seed", range(5))
def test_cindex_matches_lifelines_with_ties_and_censoring(seed: int) -> None:
    rng = np.random.default_rng(seed)
    event, time, risk = _survival(rng, 400)
    expected = concordance_index(time, -risk, event)
    assert cindex(event, time, risk) == pytest.approx(expected, abs=1e-12)


def test_cindex_matches_lifelines_across_row_blocks() -> None:
    rng = np.random.default_rng(7)
    event, time, risk = _survival(rng, 3000)  # more events than one block of 1024
    assert cindex(event, time, risk) == pytest.approx(
        concordance_index(time, -risk, event), abs=1e-12
    )


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(1, 4), st.integers(-2, 2)), min_size=2, max_size=30
    )
)
def test_cindex_property_matches_lifelines(rows: list[tuple[bool, int, int]]) -> None:
    event = np.array([int(e) for e, _, _ in rows])
    time = np.array([float(t) for _, t, _ in rows])
    risk = np.array([float(r) for _, _, r in rows])
    value = cindex(event, time, risk)
    try:
        expected = concordance_index(time, -risk, event)
    except ZeroDivisionError:  # lifelines: no admissible pair
        assert math.isnan(value)
        return
    assert value == pytest.approx(expected, abs=1e-12)


def test_cindex_by_hand() -> None:
    event = [1, 1, 1, 0, 1, 0]
    time = [1.0, 2.0, 3.0, 0.5, 3.0, 2.0]
    risk = [0.9, 0.1, 0.9, 0.0, 0.0, 0.5]
    # Comparable (earlier event first): (0,1) (0,2) (0,4) (0,5) (1,2) (1,4), and (1,5) since
    # row 5 is censored at row 1's event time. Not comparable: (2,4), two events at t=3, and
    # anything with row 3, censored first. Concordant: (0,1) (0,4) (0,5) (1,4); tied: (0,2).
    assert cindex(event, time, risk) == pytest.approx((4 + 0.5) / 7)
    assert concordance_index(time, -np.array(risk), event) == pytest.approx((4 + 0.5) / 7)


def test_cindex_is_nan_without_comparable_pairs() -> None:
    assert math.isnan(cindex([0, 0, 0], [1.0, 2.0, 3.0], [0.1, 0.2, 0.3]))
    assert math.isnan(cindex([1, 1], [2.0, 2.0], [0.1, 0.2]))
    assert math.isnan(cindex([], [], []))


def test_binary_log_loss_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    prob = rng.random(200)
    prob[:3] = [0.0, 1.0, 0.5]
    assert binary_log_loss(y, prob) == pytest.approx(log_loss(y, np.clip(prob, 1e-15, 1 - 1e-15)))


def test_compute_metrics_binary_and_survival() -> None:
    rng = np.random.default_rng(0)
    y, prob = _binary(rng, 50)
    data = Dataset(X=np.zeros((50, 2)), y=y)
    out = compute_metrics("binary", data, prob)
    assert out == {"accuracy": accuracy(y, prob), "auroc": auroc(y, prob), "n": 50}

    event, time, risk = _survival(rng, 60)
    sdata = Dataset(X=np.zeros((60, 1)), y=event, time=time)
    assert compute_metrics("survival", sdata, risk) == {
        "cindex": cindex(event, time, risk),
        "n": 60,
    }


def test_compute_metrics_single_class_site_gives_nan_not_an_error() -> None:
    data = Dataset(X=np.zeros((3, 1)), y=np.ones(3))
    out = compute_metrics("binary", data, np.array([0.2, 0.7, 0.9]))
    assert math.isnan(out["auroc"]) and out["accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("task", "scores", "message"),
    [
        ("binary", np.array([0.1, 0.2]), "shape"),
        ("binary", np.array([[0.1], [0.2], [0.3]]), "shape"),
        ("binary", np.array([0.1, np.nan, 0.3]), "NaN"),
        ("binary", np.array([0.1, 1.5, 0.3]), r"\[0, 1\]"),
        ("survival", np.array([0.1, 0.2, 0.3]), "time"),
        ("ordinal", np.array([0.1, 0.2, 0.3]), "task must be one of"),
    ],
)
def test_compute_metrics_rejects_bad_input(task: str, scores: np.ndarray, message: str) -> None:
    data = Dataset(X=np.zeros((3, 1)), y=np.array([0, 1, 1]))
    with pytest.raises(ValidationError, match=message):
        compute_metrics(task, data, scores)  # type: ignore[arg-type]


def test_labels_must_be_binary() -> None:
    with pytest.raises(ValidationError, match="only 0 and 1"):
        auroc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValidationError, match="shape"):
        cindex([1, 0], [1.0, 2.0, 3.0], [0.1, 0.2, 0.3])


def test_inputs_are_not_mutated() -> None:
    rng = np.random.default_rng(1)
    event, time, risk = _survival(rng, 100)
    copies = [a.copy() for a in (event, time, risk)]
    cindex(event, time, risk)
    auroc(event, risk)
    binary_log_loss(event, np.clip(risk, 0, 1))
    for before, after in zip(copies, (event, time, risk), strict=True):
        np.testing.assert_array_equal(before, after)
