"""Any scikit-learn linear estimator (``coef_`` and ``intercept_``) as a fedcare model.

Params are ``{"coef": ..., "intercept": ...}`` float64: ``coef`` ``(K, d)`` and ``intercept``
``(K,)`` for classifiers (``K = 1`` for binary, the number of classes for multiclass),
``coef`` ``(d,)`` and ``intercept`` ``(1,)`` for regression. Every site holds the same shapes:
a multiclass model is told its ``classes`` up front, so a site whose rows lack a class still
returns a ``(K, d)`` coef.

``fit`` starts from the global params:

* estimators with ``partial_fit`` (``SGDClassifier``, ``SGDRegressor``, ``Perceptron``,
  ``PassiveAggressive*``): ``coef_`` and ``intercept_`` are set, then one ``partial_fit`` call
  per minibatch: per epoch one permutation of the rows drawn from ``rng``, cut in
  ``spec.batch_size`` rows (all rows when ``None``); ``spec.max_steps`` counts calls;
* estimators with a ``warm_start`` parameter (``LogisticRegression``): ``warm_start=True``,
  ``coef_`` and ``intercept_`` set, one ``fit`` (the estimator's own ``max_iter`` rules). A
  site whose rows lack some classes fits the rows of the classes it has and keeps the others;
  a site with a single class returns the params unchanged (``num_steps`` 0);
* estimators whose ``fit`` takes ``coef_init``/``intercept_init``: one ``fit`` with them;
* other estimators (closed-form ``Ridge``, ``LinearRegression``): a :class:`ModelError`,
  unless ``refit=True`` says fitting from scratch each round is intended (the global params
  then do not enter; FedAvg averages the local solutions).

The estimator's own hyper-parameters rule its training (learning rate, ``alpha``, ``C``,
``max_iter``): ``spec.lr`` and ``spec.l2`` are not applied. No estimator honours a FedProx term,
a SCAFFOLD correction, DP-SGD, momentum or Adam: asking for any raises :class:`ModelError`
naming them. ``random_state`` (when the estimator has one) is drawn from ``rng``, so the
result is determined by it.

``predict`` uses the estimator's ``predict_proba`` (binary: the column of class 1; multiclass:
every column), else the sigmoid/softmax of ``decision_function``; regression its ``predict``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from scipy.special import expit, softmax

from fedcare.data.base import Dataset, TaskType
from fedcare.errors import ModelError
from fedcare.models._outputs import check_predictions, prediction_loss
from fedcare.models._validate import (
    check_features,
    check_params,
    check_targets,
    unsupported_terms,
)
from fedcare.models.base import FitResult, LocalTrainSpec, ModelAdapter
from fedcare.records.arrays import ArrayRecord

__all__ = ["SklearnModel"]

_TASKS = ("binary", "multiclass", "regression")


def _batches(n: int, spec: LocalTrainSpec, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Row indices of each ``partial_fit`` call (see the module docstring)."""
    size = n if spec.batch_size is None else min(spec.batch_size, n)
    total = spec.max_steps if spec.max_steps is not None else spec.epochs * -(-n // size)
    done = 0
    while done < total:
        perm = rng.permutation(n)
        for start in range(0, n, size):
            if done == total:
                return
            yield perm[start : start + size]
            done += 1


class SklearnModel(ModelAdapter):
    """A :class:`~fedcare.models.base.ModelAdapter` around a scikit-learn linear estimator.

    Parameters
    ----------
    make_estimator:
        A fresh, unfitted estimator per call: a zero-argument callable (a class, a
        module-level function or ``functools.partial``), or an estimator instance (cloned).
    task:
        ``"binary"``, ``"multiclass"`` or ``"regression"``.
    classes:
        Multiclass only (required): the number of classes ``K``, or the class labels
        ``0 .. K-1`` (``Dataset.y`` holds class indices).
    refit:
        Allow an estimator that cannot start from given params to fit from scratch.
    init_scale:
        Standard deviation of normal initial coefficients; ``0`` (default) starts from zeros.
    name:
        Used in messages; default the estimator's class name.

    Raises
    ------
    ModelError
        For an unsupported task, missing or malformed ``classes``, or an estimator without
        ``fit``.
    """

    def __init__(
        self,
        make_estimator: Callable[[], Any] | Any,
        task: TaskType,
        *,
        classes: int | Sequence[int] | None = None,
        refit: bool = False,
        init_scale: float = 0.0,
        name: str | None = None,
    ) -> None:
        self.make_estimator = make_estimator
        probe = self._estimator()
        self.name = name or type(probe).__name__
        if task not in _TASKS:
            raise ModelError(
                f"{self.name}: SklearnModel supports tasks {list(_TASKS)}, not {task!r}"
            )
        setattr(self, "task", task)  # noqa: B010 (the task belongs to the instance here)
        self.classes = self._classes(task, classes)
        if not hasattr(probe, "fit"):
            raise ModelError(f"{self.name}: the estimator has no fit method")
        if not init_scale >= 0:
            raise ModelError(f"{self.name}: init_scale must be >= 0, got {init_scale}")
        self.refit, self.init_scale = bool(refit), float(init_scale)

    def _classes(self, task: str, classes: int | Sequence[int] | None) -> np.ndarray | None:
        if task == "binary":
            return np.array([0, 1])
        if task == "regression":
            return None
        if classes is None:
            raise ModelError(
                f"{self.name}: a multiclass SklearnModel needs classes= (the number of classes "
                "or the list 0..K-1), so that every site has the same coef shape"
            )
        labels = np.arange(classes) if isinstance(classes, int) else np.asarray(classes)
        if (
            labels.ndim != 1
            or len(labels) < 3
            or not np.array_equal(labels, np.arange(len(labels)))
        ):
            raise ModelError(
                f"{self.name}: classes must be K >= 3 or the list 0..K-1, got {classes!r} "
                "(two classes is the binary task)"
            )
        return labels

    def __repr__(self) -> str:
        return f"SklearnModel(name={self.name!r}, task={self.task!r})"

    def _estimator(self) -> Any:
        if hasattr(self.make_estimator, "get_params") and not isinstance(self.make_estimator, type):
            from sklearn.base import clone

            return clone(self.make_estimator)
        if not callable(self.make_estimator):
            raise ModelError("make_estimator must be an estimator or a callable returning one")
        return self.make_estimator()

    # Params <-> estimator ---------------------------------------------------------------------
    def _shapes(self, d: int) -> dict[str, tuple[int, ...]]:
        if self.classes is None:
            return {"coef": (d,), "intercept": (1,)}
        k = 1 if self.task == "binary" else len(self.classes)
        return {"coef": (k, d), "intercept": (k,)}

    def init_params(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> ArrayRecord:
        if len(input_shape) != 1:
            raise ModelError(f"{self.name}: needs tabular rows (d,), got input shape {input_shape}")
        shapes = self._shapes(int(input_shape[0]))
        coef = rng.normal(0.0, self.init_scale, size=shapes["coef"]) if self.init_scale else None
        return ArrayRecord(
            {
                "coef": np.zeros(shapes["coef"]) if coef is None else coef,
                "intercept": np.zeros(shapes["intercept"]),
            }
        )

    def _check(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        X = check_features(X, model=self.name).astype(np.float64, copy=False)
        if X.ndim != 2:
            raise ModelError(f"{self.name}: X must have shape (n, d), got {X.shape}")
        check_params(params, self._shapes(X.shape[1]), model=self.name)
        return X

    def _with_params(
        self, params: ArrayRecord, X: np.ndarray, rows: np.ndarray | None = None
    ) -> Any:
        """An estimator holding ``params`` (only the class ``rows`` given), as if fitted."""
        est = self._estimator()
        coef = np.array(params["coef"], dtype=np.float64)
        intercept = np.array(params["intercept"], dtype=np.float64)
        if rows is not None:
            coef, intercept = coef[rows], intercept[rows]
        if self.classes is None:
            intercept = intercept.reshape(1)
        est.coef_, est.intercept_ = coef, intercept
        est.n_features_in_ = X.shape[1]
        if self.classes is not None:
            est.classes_ = self.classes if rows is None else self.classes[rows]
        return est

    def _export(self, coef: np.ndarray, intercept: np.ndarray, d: int) -> ArrayRecord:
        shapes = self._shapes(d)
        return ArrayRecord(
            {
                "coef": np.asarray(coef, dtype=np.float64).reshape(shapes["coef"]),
                "intercept": np.asarray(intercept, dtype=np.float64).reshape(shapes["intercept"]),
            }
        )

    # Training ---------------------------------------------------------------------------------
    def fit(
        self,
        params: ArrayRecord,
        data: Dataset,
        spec: LocalTrainSpec,
        rng: np.random.Generator,
    ) -> FitResult:
        X = self._check(params, data.X)
        check_targets(data, self.task, model=self.name)
        asked = unsupported_terms(spec)
        if asked:
            raise ModelError(
                f"{self.name}: a scikit-learn estimator cannot honour {', '.join(asked)}; "
                "use a torch or numpy model for it"
            )
        y = np.asarray(data.y, dtype=np.float64 if self.classes is None else np.int64)
        if self.classes is not None and y.size and y.max() >= len(self.classes):
            raise ModelError(
                f"{self.name}: label {int(y.max())} is not among classes 0..{len(self.classes) - 1}"
            )
        probe = self._estimator()
        seed = int(rng.integers(2**31 - 1))
        if hasattr(probe, "partial_fit"):
            new, steps = self._partial_fit(params, X, y, spec, rng, seed)
        else:
            new, steps = self._warm_fit(params, X, y, seed)
        if not new.all_finite():
            raise ModelError(f"{self.name}: training diverged (non-finite coefficients)")
        return FitResult(
            params=new,
            num_samples=len(data),
            num_steps=steps,
            metrics={"train_loss": self.loss(new, data)},
        )

    def _seeded(self, est: Any, seed: int) -> Any:
        if "random_state" in est.get_params():
            est.set_params(random_state=seed)
        return est

    def _partial_fit(
        self,
        params: ArrayRecord,
        X: np.ndarray,
        y: np.ndarray,
        spec: LocalTrainSpec,
        rng: np.random.Generator,
        seed: int,
    ) -> tuple[ArrayRecord, int]:
        est = self._seeded(self._with_params(params, X), seed)
        if self.classes is not None:
            del est.classes_  # partial_fit's first call sets it from `classes`
        steps = 0
        for idx in _batches(len(X), spec, rng):
            if self.classes is None:
                est.partial_fit(X[idx], y[idx])
            else:
                est.partial_fit(X[idx], y[idx], classes=self.classes)
            steps += 1
        return self._export(est.coef_, est.intercept_, X.shape[1]), steps

    def _warm_fit(
        self, params: ArrayRecord, X: np.ndarray, y: np.ndarray, seed: int
    ) -> tuple[ArrayRecord, int]:
        probe = self._estimator()
        warm = "warm_start" in probe.get_params()
        coef_init = "coef_init" in inspect.signature(probe.fit).parameters
        if not (warm or coef_init or self.refit):
            raise ModelError(
                f"{self.name}: the estimator has neither partial_fit, warm_start nor coef_init, "
                "so it cannot continue from the global params; pass refit=True to fit it from "
                "scratch every round (closed-form estimators such as Ridge)"
            )
        if self.classes is None:
            est = self._seeded(self._with_params(params, X), seed)
            if warm:
                est.set_params(warm_start=True)
            kwargs = {"coef_init": est.coef_, "intercept_init": est.intercept_} if coef_init else {}
            est.fit(X, y, **kwargs)
            return self._export(est.coef_, est.intercept_, X.shape[1]), 1
        return self._warm_fit_classes(params, X, y, seed, warm, coef_init)

    def _warm_fit_classes(
        self,
        params: ArrayRecord,
        X: np.ndarray,
        y: np.ndarray,
        seed: int,
        warm: bool,
        coef_init: bool,
    ) -> tuple[ArrayRecord, int]:
        """Fit the classes present in ``y``; the other rows of the params stay as they were."""
        assert self.classes is not None
        present = np.unique(y)
        if len(present) < 2:
            return ArrayRecord(params), 0
        coef = np.array(params["coef"], dtype=np.float64)
        intercept = np.array(params["intercept"], dtype=np.float64)
        if self.task == "binary" or len(present) == len(self.classes):
            start_coef, start_int, rows = coef, intercept, None
        elif len(present) == 2:  # a binary fit: w = w_b - w_a around the pair's centre
            a, b = present
            start_coef, start_int = coef[[b]] - coef[[a]], intercept[[b]] - intercept[[a]]
            rows = present
        else:
            start_coef, start_int, rows = coef[present], intercept[present], present
        est = self._seeded(self._estimator(), seed)
        est.coef_, est.intercept_ = start_coef.copy(), start_int.copy()
        if warm:
            est.set_params(warm_start=True)
        kwargs = {"coef_init": start_coef, "intercept_init": start_int} if coef_init else {}
        est.fit(X, y, **kwargs)
        if rows is None:
            return self._export(est.coef_, est.intercept_, X.shape[1]), 1
        if len(present) == 2 and len(self.classes) > 2:
            a, b = present
            centre, centre_int = (coef[a] + coef[b]) / 2, (intercept[a] + intercept[b]) / 2
            coef[a], coef[b] = centre - est.coef_[0] / 2, centre + est.coef_[0] / 2
            intercept[a], intercept[b] = (
                centre_int - est.intercept_[0] / 2,
                centre_int + est.intercept_[0] / 2,
            )
        else:
            coef[rows], intercept[rows] = est.coef_, est.intercept_
        return self._export(coef, intercept, X.shape[1]), 1

    # Evaluation -------------------------------------------------------------------------------
    def predict(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        X = self._check(params, X)
        est = self._with_params(params, X)
        if self.task == "regression":
            out = est.predict(X)
        elif hasattr(est, "predict_proba"):  # SGDClassifier: only for probabilistic losses
            proba = np.asarray(est.predict_proba(X), dtype=np.float64)
            out = proba[:, 1] if self.task == "binary" else proba
        else:
            z = np.asarray(est.decision_function(X), dtype=np.float64)
            out = expit(z.reshape(-1)) if self.task == "binary" else softmax(z, axis=1)
        return check_predictions(self.task, out, len(X), model=self.name)

    def loss(self, params: ArrayRecord, data: Dataset) -> float:
        check_targets(data, self.task, model=self.name)
        return prediction_loss(self.task, self.predict(params, data.X), data)
