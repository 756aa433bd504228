"""Heart-disease severity (5 classes) with a scikit-learn linear classifier.

The entry point :func:`build` returns :class:`fedcare.models.SklearnModel` around a fresh
estimator per call; the package holds no training code. Two estimators:

* ``logistic`` (default): multinomial :class:`~sklearn.linear_model.LogisticRegression`
  (L-BFGS), continued each round from the global coefficients (``warm_start``) for at most
  ``max_iter`` iterations -- a few iterations per round act as FedAvg's local steps;
* ``sgd``: :class:`~sklearn.linear_model.SGDClassifier` on the log loss (one-vs-rest), one
  ``partial_fit`` per minibatch of the study's ``training``.

Severity classes are unbalanced (half the rows have no disease, few are grade 4), and the study
is judged on macro AUROC and balanced accuracy: ``class_weight: balanced`` weights each class by
the inverse of its frequency at the site.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any

from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier

from fedcare.errors import ModelError
from fedcare.models import SklearnModel

ESTIMATORS = ("logistic", "sgd")
CLASSES = 5


class FewStepLogistic(LogisticRegression):
    """LogisticRegression that does not warn when ``max_iter`` stops it: few iterations per
    round are intended (FedAvg averages the sites' partial solutions)."""

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> FewStepLogistic:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            super().fit(X, y, sample_weight=sample_weight)
        return self


def build(
    estimator: str = "logistic",
    C: float = 1.0,
    max_iter: int = 10,
    alpha: float = 1e-3,
    eta0: float = 0.01,
    class_weight: str | None = "balanced",
) -> SklearnModel:
    """The package's entry point: a 5-class :class:`~fedcare.models.SklearnModel`.

    Parameters
    ----------
    estimator:
        ``"logistic"`` or ``"sgd"`` (see the module docstring).
    C, max_iter:
        ``logistic``: inverse L2 strength, L-BFGS iterations per round.
    alpha, eta0:
        ``sgd``: L2 strength, constant learning rate.
    class_weight:
        ``"balanced"`` (``logistic`` only) or ``None``.
    """
    if estimator not in ESTIMATORS:
        raise ModelError(f"estimator must be one of {list(ESTIMATORS)}, got {estimator!r}")
    if class_weight not in ("balanced", None):
        raise ModelError(f"class_weight must be 'balanced' or null, got {class_weight!r}")
    if estimator == "logistic":
        make: Any = partial(FewStepLogistic, C=C, max_iter=max_iter, class_weight=class_weight)
    elif class_weight is not None:
        raise ModelError(
            "class_weight 'balanced' needs all of a site's rows at once, which "
            "SGDClassifier.partial_fit never sees; set class_weight: null with estimator: sgd"
        )
    else:
        make = partial(
            SGDClassifier, loss="log_loss", alpha=alpha, learning_rate="constant", eta0=eta0
        )
    return SklearnModel(make, "multiclass", classes=CLASSES, name=f"heart severity ({estimator})")
