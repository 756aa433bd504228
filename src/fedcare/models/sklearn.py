"""Logistic regression trained by scikit-learn's ``SGDClassifier(loss="log_loss")``.

Params are ``{"weight": (d,), "bias": ()}`` float64, like
:class:`~fedcare.models.logistic.LogisticRegression`, so the two are interchangeable in a
study. Training is per-sample SGD with a constant learning rate ``spec.lr`` and
``alpha = spec.l2`` (scikit-learn's objective is ``mean loss + alpha/2 * ||w||^2`` with the
intercept unpenalized, the same as ours). Rows are visited in one permutation per epoch drawn
from ``rng`` (the same permutations the numpy loop draws with ``batch_size=1``); each epoch is
one ``partial_fit`` call with ``shuffle=False``, continuing from the given coefficients (set
as ``coef_`` and ``intercept_`` before the first call). ``random_state`` is drawn from ``rng``
so the estimator is fully determined by it.

``spec.batch_size`` is ignored (every sample is one step; ``num_steps`` counts them). The
estimator has no proximal term, SCAFFOLD correction, momentum or Adam: asking for any raises
:class:`~fedcare.errors.ModelError`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy.special import expit
from sklearn.linear_model import SGDClassifier

from fedcare.data.base import Dataset, TaskType
from fedcare.errors import ModelError
from fedcare.models._linear import LinearAdapter
from fedcare.models._validate import check_targets, unsupported_terms
from fedcare.models.base import FitResult, LocalTrainSpec
from fedcare.models.logistic import bce_from_logits
from fedcare.records.arrays import ArrayRecord

__all__ = ["SklearnLogistic"]

_NAME = "scikit-learn SGDClassifier"
_CLASSES = np.array([0, 1])


def _epoch_orders(n: int, spec: LocalTrainSpec, rng: np.random.Generator) -> list[np.ndarray]:
    """Row orders of each ``fit`` call: one permutation per epoch, cut at ``max_steps``."""
    if spec.max_steps is None:
        return [rng.permutation(n) for _ in range(spec.epochs)]
    full, rest = divmod(spec.max_steps, n)
    orders = [rng.permutation(n) for _ in range(full)]
    if rest:
        orders.append(rng.permutation(n)[:rest])
    return orders


class SklearnLogistic(LinearAdapter):
    """A :class:`~fedcare.models.base.ModelAdapter` around ``SGDClassifier(loss="log_loss")``.

    Parameters
    ----------
    init_scale:
        Standard deviation of normal initial weights; ``0`` (default) starts from zeros.
    """

    task: ClassVar[TaskType] = "binary"
    label = _NAME

    def fit(
        self,
        params: ArrayRecord,
        data: Dataset,
        spec: LocalTrainSpec,
        rng: np.random.Generator,
    ) -> FitResult:
        asked = unsupported_terms(spec)
        if asked:
            raise ModelError(
                f"{_NAME} cannot train with {', '.join(asked)}; use the numpy 'logistic' "
                "model (same params) for FedProx, SCAFFOLD, momentum or Adam"
            )
        X = self._check(params, data.X)
        check_targets(data, "binary", model=_NAME)
        y = np.asarray(data.y, dtype=np.int64)
        orders = _epoch_orders(len(data), spec, rng)
        clf = SGDClassifier(
            loss="log_loss",
            penalty="l2" if spec.l2 else None,
            alpha=spec.l2,
            learning_rate="constant",
            eta0=spec.lr,
            shuffle=False,
            random_state=int(rng.integers(2**31 - 1)),
        )
        # Warm start: partial_fit continues from coef_/intercept_ when they are set, and
        # `classes` lets a site (or an epoch) whose rows all have one label still train.
        clf.coef_ = np.asarray(params["weight"], dtype=np.float64).reshape(1, -1).copy()
        clf.intercept_ = np.asarray(params["bias"], dtype=np.float64).reshape(1).copy()
        for order in orders:
            clf.partial_fit(X[order], y[order], classes=_CLASSES)
        coef, intercept = clf.coef_, clf.intercept_
        new = ArrayRecord(
            {
                "weight": coef.reshape(-1).astype(params["weight"].dtype),
                "bias": np.asarray(intercept[0], dtype=params["bias"].dtype),
            },
            copy=False,
        )
        return FitResult(
            params=new,
            num_samples=len(data),
            num_steps=int(sum(len(o) for o in orders)),
            metrics={"train_loss": self.loss(new, data)},
        )

    def predict(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        Xf = self._check(params, X)
        return np.asarray(expit(Xf @ params["weight"] + params["bias"]), dtype=np.float64)

    def loss(self, params: ArrayRecord, data: Dataset) -> float:
        X = self._check(params, data.X)
        check_targets(data, "binary", model=_NAME)
        return bce_from_logits(X @ params["weight"] + params["bias"], data.y)
