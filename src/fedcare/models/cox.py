"""Linear Cox proportional hazards in numpy: risk score ``eta = x @ weight``.

The loss is the negative Breslow partial log-likelihood divided by the number of events::

    L(w) = -(1/E) * sum_{i: event} [eta_i - log sum_{j: t_j >= t_i} exp(eta_j)]

(0 when a batch has no events). Rows are sorted by time, descending; the risk-set sums are
then a cumulative log-sum-exp (``np.logaddexp.accumulate``) read at the last row of each group
of tied times, so every row tied at ``t`` shares the risk set ``{j: t_j >= t}`` (Breslow).
The gradient with respect to ``eta_k`` is ``-(1/E) [d_k - exp(eta_k) * sum_{i: event,
t_i <= t_k} 1 / S_i]``, also computed in log space.

lifelines' ``CoxPHFitter(penalizer=p, l1_ratio=0)`` maximizes ``ll - n * p / 2 * ||b||^2`` on
features it standardizes itself, so on features with unit sample standard deviation
(``ddof=1``) and no tied times (where its Efron method equals Breslow) it matches this model
with ``spec.l2 = p * n / E``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from fedcare.data.base import Dataset, TaskType
from fedcare.errors import ModelError
from fedcare.models._linear import LinearAdapter
from fedcare.models._validate import check_targets
from fedcare.models.base import FitResult, LocalTrainSpec
from fedcare.records.arrays import ArrayRecord

__all__ = ["CoxPH", "cox_loss_and_eta_grad", "risk_set_bounds"]


def risk_set_bounds(time_desc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last position of each row's group of tied times.

    Parameters
    ----------
    time_desc:
        Survival times sorted in descending order.

    Returns
    -------
    tuple of numpy.ndarray
        ``(first, last)`` integer positions: rows ``first[i]..last[i]`` share row ``i``'s time,
        so rows ``0..last[i]`` are its risk set and rows ``first[i]..`` have times ``<= t_i``.
    """
    neg = -np.asarray(time_desc, dtype=np.float64)
    first = np.searchsorted(neg, neg, side="left")
    last = np.searchsorted(neg, neg, side="right") - 1
    return first, last


def cox_loss_and_eta_grad(
    eta: np.ndarray, event: np.ndarray, time: np.ndarray
) -> tuple[float, np.ndarray]:
    """Breslow negative partial log-likelihood per event and its gradient in ``eta``.

    Parameters
    ----------
    eta:
        Linear predictors (risk scores), shape ``(n,)``.
    event:
        1 for an observed event, 0 for a censored row.
    time:
        Event or censoring times.

    Returns
    -------
    tuple
        ``(loss, dloss/deta)`` with the gradient in the rows' original order; ``(0.0, 0)``
        when there is no event.
    """
    eta = np.asarray(eta, dtype=np.float64)
    events = float(np.sum(event))
    if events == 0:
        return 0.0, np.zeros_like(eta)
    order = np.argsort(-np.asarray(time, dtype=np.float64), kind="stable")
    eta_s = eta[order]
    d = np.asarray(event, dtype=np.float64)[order]
    first, last = risk_set_bounds(np.asarray(time)[order])
    log_risk = np.logaddexp.accumulate(eta_s)[last]
    loss = -float(np.sum(d * (eta_s - log_risk))) / events
    inv_risk = np.where(d > 0, -log_risk, -np.inf)
    log_share = np.logaddexp.accumulate(inv_risk[::-1])[::-1][first]
    grad_s = -(d - np.exp(eta_s + log_share)) / events
    grad = np.empty_like(grad_s)
    grad[order] = grad_s
    return loss, grad


def _cox_loss_and_grad(
    params: Mapping[str, np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    time: np.ndarray | None,
) -> tuple[float, dict[str, np.ndarray]]:
    if time is None:
        raise ModelError("the Cox model needs survival times")
    loss, g_eta = cox_loss_and_eta_grad(X @ params["weight"], y, time)
    return loss, {"weight": X.T @ g_eta}


class CoxPH(LinearAdapter):
    """Linear Cox proportional hazards trained by the shared local SGD loop.

    Parameters
    ----------
    init_scale:
        Standard deviation of normal initial weights; ``0`` (default) starts from zeros and
        draws nothing from ``rng``.

    Notes
    -----
    Params are ``{"weight": (d,)}`` float64 (no intercept: it cancels in the partial
    likelihood). :meth:`predict` returns the linear predictor: higher means earlier events.
    """

    task: ClassVar[TaskType] = "survival"
    label = "Cox model"
    has_bias = False  # an intercept cancels in the partial likelihood

    def fit(
        self, params: ArrayRecord, data: Dataset, spec: LocalTrainSpec, rng: np.random.Generator
    ) -> FitResult:
        return self._fit_sgd(params, data, spec, rng, _cox_loss_and_grad)

    def predict(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        Xf = self._check(params, X)
        return np.asarray(Xf @ params["weight"], dtype=np.float64)

    def loss(self, params: ArrayRecord, data: Dataset) -> float:
        X = self._check(params, data.X)
        check_targets(data, "survival", model=self.label)
        assert data.time is not None  # checked above
        return cox_loss_and_eta_grad(X @ params["weight"], data.y, data.time)[0]
