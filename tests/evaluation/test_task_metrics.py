"""Every task's metrics against scikit-learn on the same predictions (issue 13, item 1).

scikit-learn is the reference here only; fedcare's metrics are pure numpy. Random data with
fixed seeds and several sizes; the numbers agree within ``TOL``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from fedcare.data.base import Dataset
from fedcare.errors import ValidationError
from fedcare.evaluation import task_metrics as tm
from fedcare.evaluation.metrics import compute_metrics
from fedcare.records.tasks import HEADLINE_METRIC, LOWER_IS_BETTER, METRICS_BY_TASK, TASKS

TOL = 1e-9
SIZES = [(7, 3), (50, 4), (400, 5), (1000, 2)]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _multiclass(seed: int, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])  # every class present
    rng.shuffle(y)
    logits = rng.normal(size=(n, k)) + 1.5 * (y[:, None] == np.arange(k))
    if seed % 2:  # ties in the scores, as rounded probabilities have
        logits = np.round(logits, 1)
    return y, _softmax(logits)


def _multilabel(seed: int, n: int, labels: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=(n, labels)) < 0.4).astype(int)
    y[0], y[1] = 1, 0  # every label has both values
    p = np.clip(0.35 * y + rng.uniform(size=(n, labels)) * 0.65, 0.0, 1.0)
    return y, np.round(p, 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("n", "k"), SIZES)
def test_multiclass_metrics_equal_sklearn(seed: int, n: int, k: int) -> None:
    y, p = _multiclass(seed, n, k)
    pred = np.argmax(p, axis=1)
    labels = list(range(k))
    if k > 2:
        ref_auc = skm.roc_auc_score(y, p, multi_class="ovr", average="macro", labels=labels)
    else:  # sklearn's binary path: AUROC of the class-1 column (equal to the ovr mean)
        ref_auc = skm.roc_auc_score(y, p[:, 1])
    assert tm.macro_auroc(y, p) == pytest.approx(ref_auc, abs=TOL)
    assert tm.macro_auroc_detail(y, p) == (pytest.approx(ref_auc, abs=TOL), 0)
    assert tm.multiclass_accuracy(y, p) == pytest.approx(skm.accuracy_score(y, pred), abs=TOL)
    assert tm.balanced_accuracy(y, p) == pytest.approx(
        skm.balanced_accuracy_score(y, pred), abs=TOL
    )
    assert tm.macro_f1(y, p) == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=TOL)
    assert tm.multiclass_log_loss(y, p) == pytest.approx(skm.log_loss(y, p, labels=labels), abs=TOL)
    out = compute_metrics("multiclass", Dataset(X=np.zeros((n, 1)), y=y.astype(float)), p)
    assert list(out) == [*METRICS_BY_TASK["multiclass"], "n"] and out["n"] == n
    assert out["macro_auroc"] == pytest.approx(ref_auc, abs=TOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("n", "labels"), SIZES)
def test_multilabel_metrics_equal_sklearn(seed: int, n: int, labels: int) -> None:
    y, p = _multilabel(seed, n, labels)
    pred = (p >= 0.5).astype(int)
    ref_auc = skm.roc_auc_score(y, p, average="macro")
    assert tm.macro_auroc(y, p, multilabel=True) == pytest.approx(ref_auc, abs=TOL)
    assert tm.multilabel_macro_f1(y, p) == pytest.approx(
        skm.f1_score(y, pred, average="macro", zero_division=0.0), abs=TOL
    )
    assert tm.subset_accuracy(y, p) == pytest.approx(skm.accuracy_score(y, pred), abs=TOL)
    assert tm.hamming_accuracy(y, p) == pytest.approx(1 - skm.hamming_loss(y, pred), abs=TOL)
    out = compute_metrics("multilabel", Dataset(X=np.zeros((n, 1)), y=y.astype(float)), p)
    assert list(out) == [*METRICS_BY_TASK["multilabel"], "n"]
    assert out["macro_auroc"] == pytest.approx(ref_auc, abs=TOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n", [2, 9, 300, 5000])
def test_regression_metrics_equal_sklearn(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.gamma(2.0, 3.0, size=n)
    pred = y + rng.normal(scale=2.0, size=n)
    assert tm.mae(y, pred) == pytest.approx(skm.mean_absolute_error(y, pred), abs=TOL)
    assert tm.rmse(y, pred) == pytest.approx(math.sqrt(skm.mean_squared_error(y, pred)), abs=TOL)
    assert tm.r2(y, pred) == pytest.approx(skm.r2_score(y, pred), abs=TOL)
    out = compute_metrics("regression", Dataset(X=np.zeros((n, 1)), y=y), pred)
    assert out == {
        "mae": tm.mae(y, pred),
        "rmse": tm.rmse(y, pred),
        "r2": tm.r2(y, pred),
        "n": n,
    }


def test_binary_and_survival_metrics_are_unchanged() -> None:
    # The expected dicts are literals computed by running main's code (a4f2d8b, before issue 13)
    # on these exact inputs: adding tasks must not change a single number of the old two.
    p = [0.865, 0.855, 0.811, 0.261, 0.077, 0.946, 0.614, 0.003, 0.91, 0.985, 0.286, 0.814]
    t = [1.74, 4.94, 8.36, 4.68, 5.66, 2.05, 8.33, 5.48, 3.23, 7.99, 9.81, 5.85]
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0], dtype=float)
    X = np.zeros((12, 1))
    assert compute_metrics("binary", Dataset(X, y), p) == {"accuracy": 0.5, "auroc": 0.5, "n": 12}
    assert compute_metrics("survival", Dataset(X, y, np.array(t)), p) == {
        "cindex": 0.5806451612903226,
        "n": 12,
    }
    one_class = compute_metrics("binary", Dataset(X, np.ones(12)), p)
    assert one_class["accuracy"] == 0.6666666666666666 and math.isnan(one_class["auroc"])
    assert list(one_class) == ["accuracy", "auroc", "n"]


def test_task_vocabulary_is_complete() -> None:
    assert TASKS == ("binary", "multiclass", "multilabel", "regression", "survival")
    assert set(METRICS_BY_TASK) == set(HEADLINE_METRIC) == set(TASKS)
    for task in TASKS:
        assert HEADLINE_METRIC[task] in METRICS_BY_TASK[task]
    assert {"mae", "rmse", "log_loss"} <= LOWER_IS_BETTER
    assert not LOWER_IS_BETTER & {"auroc", "macro_auroc", "cindex", "r2", "accuracy"}


# --- degenerate cases -------------------------------------------------------------------


def test_macro_auroc_skips_a_class_absent_from_the_site() -> None:
    y, p = _multiclass(3, 60, 4)
    keep = y != 2  # the site's test rows hold no class 2
    y, p = y[keep], p[keep]
    value, skipped = tm.macro_auroc_detail(y, p)
    per_class = [skm.roc_auc_score(y == c, p[:, c]) for c in (0, 1, 3)]
    assert skipped == 1
    assert value == pytest.approx(float(np.mean(per_class)), abs=TOL)
    # balanced accuracy: mean recall over the classes present (sklearn's rule; it warns that a
    # predicted class is absent from y)
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        ref = skm.balanced_accuracy_score(y, np.argmax(p, axis=1))
    assert tm.balanced_accuracy(y, p) == pytest.approx(ref, abs=TOL)


def test_macro_auroc_with_one_class_only_is_nan() -> None:
    p = _softmax(np.random.default_rng(0).normal(size=(5, 3)))
    value, skipped = tm.macro_auroc_detail(np.zeros(5), p)
    assert math.isnan(value) and skipped == 3


def test_multilabel_skips_a_label_with_one_value() -> None:
    y, p = _multilabel(4, 40, 3)
    y[:, 1] = 0  # no positive row for label 1
    value, skipped = tm.macro_auroc_detail(y, p, multilabel=True)
    assert skipped == 1
    ref = np.mean([skm.roc_auc_score(y[:, j], p[:, j]) for j in (0, 2)])
    assert value == pytest.approx(float(ref), abs=TOL)
    p[:, 1] = 0.1  # nor predicted: label 1 is left out of macro-F1 (sklearn would count 0)
    pred = (p >= 0.5).astype(int)
    assert tm.multilabel_macro_f1(y, p) == pytest.approx(
        skm.f1_score(y, pred, average="macro", labels=[0, 2]), abs=TOL
    )


def test_zero_rows_and_constant_targets_are_nan() -> None:
    empty = np.zeros((0, 3))
    for fn in (tm.multiclass_accuracy, tm.balanced_accuracy, tm.macro_f1, tm.macro_auroc):
        assert math.isnan(fn(np.zeros(0), empty))
    assert math.isnan(tm.multiclass_log_loss(np.zeros(0), empty))
    assert math.isnan(tm.subset_accuracy(empty, empty))
    assert math.isnan(tm.mae([], [])) and math.isnan(tm.rmse([], []))
    assert math.isnan(tm.r2([3.0, 3.0, 3.0], [1.0, 2.0, 3.0]))
    assert math.isnan(tm.r2([1.0], [1.0]))
    out = compute_metrics("regression", Dataset(np.zeros((0, 1)), np.zeros(0)), np.zeros(0))
    assert out["n"] == 0 and all(math.isnan(out[m]) for m in ("mae", "rmse", "r2"))


def test_log_loss_is_finite_for_a_confident_mistake() -> None:
    p = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert tm.multiclass_log_loss([1, 1], p) == pytest.approx(-math.log(1e-15) / 2)


# --- validation errors ------------------------------------------------------------------

P3 = np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]])


@pytest.mark.parametrize(
    ("y", "prob", "message"),
    [
        ([0, 1], np.array([0.2, 0.8]), r"prob must be 2-D \(rows, classes\), got shape \(2,\)"),
        ([0, 1, 2], P3, "prob has 2 rows, expected 3 to match y"),
        ([0, 3], P3, r"y must hold class indices 0..2, found \[3.0\]"),
        ([0, 1.5], P3, r"y must hold class indices 0..2, found \[1.5\]"),
        ([0, -1], P3, r"found \[-1.0\]"),
        ([[0], [1]], P3, r"y must be 1-D, got shape \(2, 1\)"),
        ([0, 1], P3 * 1.1, r"prob rows must sum to 1 \(within 1e-06\); 2 row\(s\) do not"),
        ([0, 1], np.array([[0.5, 0.5], [np.nan, 0.5]]), "prob holds 1 NaN or infinite"),
        ([0, 1], np.array([[1.5, -0.5], [0.5, 0.5]]), r"prob must be probabilities in \[0, 1\]"),
        ([0, 1], np.array([[1.0], [1.0]]), "prob needs at least 2 columns"),
    ],
)
def test_multiclass_validation_errors(y: object, prob: np.ndarray, message: str) -> None:
    for fn in (tm.macro_auroc, tm.multiclass_accuracy, tm.macro_f1, tm.multiclass_log_loss):
        with pytest.raises(ValidationError, match=message):
            fn(y, prob)


def test_rows_summing_to_one_within_tolerance_are_accepted() -> None:
    p = P3 + np.array([[5e-7, 0.0, 0.0], [0.0, 0.0, -5e-7]])
    assert tm.multiclass_accuracy([2, 0], p) == 1.0


@pytest.mark.parametrize(
    ("y", "prob", "message"),
    [
        (np.zeros((2, 3)), np.zeros((3, 3)), r"y has shape \(2, 3\), expected \(3, 3\)"),
        (np.full((2, 2), 2.0), np.zeros((2, 2)), r"y must hold only 0 and 1, found \[2.0\]"),
        (np.zeros((2, 2)), np.full((2, 2), np.inf), "prob holds 4 NaN or infinite"),
        (np.zeros((2, 2)), np.full((2, 2), 1.2), r"prob must be probabilities in \[0, 1\]"),
    ],
)
def test_multilabel_validation_errors(y: np.ndarray, prob: np.ndarray, message: str) -> None:
    for fn in (tm.multilabel_macro_f1, tm.subset_accuracy, tm.hamming_accuracy):
        with pytest.raises(ValidationError, match=message):
            fn(y, prob)
    with pytest.raises(ValidationError, match=message):
        tm.macro_auroc(y, prob, multilabel=True)


@pytest.mark.parametrize(
    ("y", "pred", "message"),
    [
        ([1.0, 2.0], [1.0, 2.0, 3.0], r"y has shape \(2,\), expected \(3,\) to match pred"),
        ([1.0, np.nan], [1.0, 2.0], "y holds 1 NaN or infinite value"),
        ([1.0, 2.0], [np.inf, 2.0], "pred holds 1 NaN or infinite value"),
        ([1.0, 2.0], [[1.0, 2.0]], r"pred must be 1-D, got shape \(1, 2\)"),
    ],
)
def test_regression_validation_errors(y: object, pred: object, message: str) -> None:
    for fn in (tm.mae, tm.rmse, tm.r2):
        with pytest.raises(ValidationError, match=message):
            fn(y, pred)


def test_compute_metrics_validates_every_task() -> None:
    X = np.zeros((2, 1))
    with pytest.raises(ValidationError, match=r"task must be one of \['binary', 'multiclass'"):
        compute_metrics("ordinal", Dataset(X, np.zeros(2)), np.zeros(2))
    with pytest.raises(ValidationError, match="prob rows must sum to 1"):
        compute_metrics("multiclass", Dataset(X, np.array([0.0, 1.0])), P3 * 1.1)
    with pytest.raises(ValidationError, match=r"scores have shape \(3,\), expected \(2,\)"):
        compute_metrics("regression", Dataset(X, np.zeros(2)), np.zeros(3))
    with pytest.raises(ValidationError, match="scores holds 1 NaN"):
        compute_metrics("regression", Dataset(X, np.zeros(2)), np.array([1.0, np.nan]))


def test_metrics_module_does_not_import_sklearn() -> None:
    import subprocess
    import sys

    code = "import sys, fedcare.evaluation.metrics; print('sklearn' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_dataset_holds_multilabel_targets() -> None:
    from fedcare.errors import DataError

    y = np.array([[0, 1], [1, 1], [0, 0]])
    assert Dataset(np.zeros((3, 1)), y).take(np.array([0, 2])).y.shape == (2, 2)
    with pytest.raises(DataError, match=r"y has shape \(2, 2\), expected \(3,\) or \(3, L\)"):
        Dataset(np.zeros((3, 1)), y[:2])
    with pytest.raises(DataError, match=r"y has shape \(3, 2, 1\)"):
        Dataset(np.zeros((3, 1)), y[:, :, None])
