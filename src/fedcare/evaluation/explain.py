"""Explainability from aggregates: coefficients with CIs for linear models, and federated
permutation importance for any model.

Coefficients. Each site computes :func:`site_information`, the observed Fisher information
(the negative Hessian of the log-likelihood) at the final params, summed over its test rows::

    {"kind": "logistic" | "cox", "names": [..features.., "bias"], "matrix": [[...]], "n": 40}

Logistic (binary; kinds ``logistic`` and ``sklearn``, params ``weight (d,)`` and ``bias ()``,
``p = sigmoid(x @ weight + bias)``): ``sum_i p_i (1 - p_i) [x_i, 1][x_i, 1]^T``. Cox (params
``weight (d,)``, no bias): the information of the site's own Breslow partial likelihood
(stratified by site): ``sum_t d_t [S2/S0 - (S1/S0)(S1/S0)^T]`` over distinct event times, with
``S0, S1, S2`` the sums of ``exp(eta)``, ``exp(eta) x``, ``exp(eta) x x^T`` over the risk set.
Log-likelihoods of independent sites add, so the federation's information is the sum of the
sites' (:func:`sum_information`) and :func:`coefficient_table` inverts it for Wald standard
errors and CIs, odds or hazard ratios.

It reveals a weighted sum of squares and cross-products of the site's features (weights
``p(1-p)``, or risk-set terms for Cox): the same kind of aggregate as a moments query; with
fewer rows than parameters it could pin down individual rows, so a site with
``0 < n < min_cell`` (or ``n <= `` the number of parameters) sends ``"matrix": null`` and a
``"withheld"`` reason.

Importance (:func:`site_importance`): each site permutes one column of its own preprocessed
test matrix at a time (``repeats`` times) and sends, per feature, the mean drop of the task's
headline metric::

    {"metric": "auroc", "baseline": 0.81, "drops": {"age": 0.04, ...}, "n": 40, "repeats": 5,
     "lower_is_better": false}

(a drop is ``baseline - permuted`` for metrics where higher is better and
``permuted - baseline`` for errors, so a positive drop always means the feature matters). It
reveals the site's metric and how it changes, nothing row-level. :func:`combine_importance`
averages the drops over sites weighted by ``n`` and gives the between-site SD::

    {"metric": "auroc", "sites": 4,
     "rows": [{"feature": "age", "drop": 0.03, "sd_between_sites": 0.01, "sites": 4}, ...]}

(rows sorted by drop, largest first; ``sd_between_sites`` is the n-weighted SD of the sites'
drops around the weighted mean, ``null`` with one site).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import expit
from scipy.stats import norm

from fedcare.errors import ConfigError, ValidationError
from fedcare.evaluation.importance import combine_importance, site_importance
from fedcare.models.base import ModelAdapter
from fedcare.models.cox import CoxPH
from fedcare.models.logistic import LogisticRegression
from fedcare.models.sklearn import SklearnLogistic

__all__ = [
    "coefficient_table",
    "combine_importance",
    "cox_information",
    "linear_kind",
    "site_importance",
    "site_information",
    "sum_information",
]

_KINDS = {"logistic": "logistic", "sklearn": "logistic", "cox": "cox"}


def linear_kind(model: Mapping[str, Any] | ModelAdapter) -> str | None:
    """``"logistic"`` or ``"cox"`` for the built-in linear models, else ``None``."""
    if isinstance(model, (LogisticRegression, SklearnLogistic)):
        return "logistic"
    if isinstance(model, CoxPH):
        return "cox"
    if isinstance(model, Mapping):
        return _KINDS.get(str(model.get("kind")))
    return None


def _features(X: Any, weight: np.ndarray) -> np.ndarray:
    arr = np.asarray(X, dtype=np.float64)
    Xf = arr.reshape(len(arr), -1)
    if Xf.shape[1] != weight.shape[0]:
        raise ValidationError(f"X has {Xf.shape[1]} columns for {weight.shape[0]} weights")
    if not np.all(np.isfinite(Xf)):
        raise ValidationError(
            "X holds NaN or infinite values; pass the preprocessed matrix the model sees"
        )
    return Xf


def _logistic_information(params: Mapping[str, Any], X: np.ndarray) -> np.ndarray:
    w = np.asarray(params["weight"], dtype=np.float64).ravel()
    Xf = _features(X, w)
    p = expit(Xf @ w + float(np.asarray(params["bias"])))
    Xa = np.column_stack([Xf, np.ones(len(Xf))])
    return np.asarray((Xa * (p * (1.0 - p))[:, None]).T @ Xa)


def cox_information(weight: np.ndarray, X: np.ndarray, event: Any, time: Any) -> np.ndarray:
    """Observed information of the Breslow partial likelihood at ``weight`` (``(d, d)``)."""
    Xf = _features(X, np.asarray(weight, dtype=np.float64).ravel())
    t = np.asarray(time, dtype=np.float64)
    d = np.asarray(event, dtype=np.float64)
    order = np.argsort(-t, kind="stable")
    Xs, ts, ds = Xf[order], t[order], d[order]
    eta = Xs @ np.asarray(weight, dtype=np.float64).ravel()
    r = np.exp(eta - eta.max())
    last = np.searchsorted(-ts, -ts, side="right") - 1  # last row tied with each row
    s0 = np.cumsum(r)[last]
    s1 = np.cumsum(r[:, None] * Xs, axis=0)[last]
    # distinct event times: the first row of each tie group with events
    first = np.searchsorted(-ts, -ts, side="left")
    deaths = np.bincount(first, weights=ds, minlength=len(ts))
    times = np.flatnonzero(deaths > 0)
    if times.size == 0:
        return np.zeros((Xf.shape[1], Xf.shape[1]))
    dt, s0t, mean = deaths[times], s0[times], s1[times] / s0[times][:, None]
    # sum_t d_t S2(t)/S0(t) = sum_j r_j x_j x_j^T c_j with c_j = sum_{t <= t_j} d_t / S0(t)
    share = np.zeros(len(ts))
    share[times] = dt / s0t
    c = np.cumsum(share[::-1])[::-1][first]  # events at times <= t_j
    first_term = (Xs * (r * c)[:, None]).T @ Xs
    return np.asarray(first_term - (mean * dt[:, None]).T @ mean)


def site_information(
    model: Mapping[str, Any] | ModelAdapter,
    params: Mapping[str, Any] | None,
    X: Any,
    y: Any,
    *,
    time: Any = None,
    feature_names: Sequence[str] | None = None,
    min_cell: int = 0,
) -> dict[str, Any] | None:
    """The observed Fisher information of the site's test rows at ``params``.

    Parameters
    ----------
    model:
        The study's ``model:`` mapping (or the adapter).
    params:
        The final params (``weight``, and ``bias`` for logistic).
    X, y:
        The preprocessed test rows and their labels (Cox: event indicators).
    time:
        Survival times (Cox).
    feature_names:
        Names of the ``d`` columns (default ``x0 .. x{d-1}``).
    min_cell:
        A site with ``0 < n < min_cell`` withholds the matrix.

    Returns
    -------
    dict or None
        See the module docstring; ``None`` for models other than logistic and Cox.

    Raises
    ------
    ValidationError
        ``X`` does not fit the params, or Cox without times.
    """
    kind = linear_kind(model)
    if kind is None or params is None:
        return None
    weight = np.asarray(params["weight"], dtype=np.float64).ravel()
    names = [f"x{i}" for i in range(weight.size)] if feature_names is None else list(feature_names)
    if len(names) != weight.size:
        raise ValidationError(f"{len(names)} feature names for {weight.size} weights")
    n = len(np.asarray(X))
    out: dict[str, Any] = {"kind": kind, "names": names + (["bias"] if kind == "logistic" else [])}
    out["n"] = n
    if 0 < n < min_cell or n <= len(out["names"]):
        return {**out, "matrix": None, "withheld": f"{n} rows: too few to release"}
    if kind == "logistic":
        matrix = _logistic_information(params, X)
    else:
        if time is None:
            raise ValidationError("the Cox information needs survival times")
        matrix = cox_information(weight, X, y, time)
    return {**out, "matrix": matrix.tolist()}


def sum_information(infos: Iterable[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """The sum of the sites' information (sites without a matrix skipped).

    Raises
    ------
    ValidationError
        Sites disagree on the kind or the parameter names, or a matrix has the wrong shape.
    """
    total: np.ndarray | None = None
    head: dict[str, Any] = {}
    sites = 0
    for info in infos:
        if not info or info.get("matrix") is None:
            continue
        this = {"kind": info["kind"], "names": list(info["names"])}
        if head and this != head:
            raise ValidationError(f"site information disagrees: {this} vs {head}")
        head = this
        m = np.asarray(info["matrix"], dtype=np.float64)
        k = len(this["names"])
        if m.shape != (k, k) or not np.all(np.isfinite(m)):
            raise ValidationError(f"information matrix of shape {m.shape}, expected ({k}, {k})")
        total = m if total is None else total + m
        sites += 1
    if total is None:
        return None
    return {**head, "matrix": total.tolist(), "sites": sites}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _exp(value: float | None) -> float | None:
    if value is None or value > 700:
        return None
    return math.exp(value)


def coefficient_table(
    information_sum: Mapping[str, Any],
    params: Mapping[str, Any],
    feature_names: Sequence[str],
    model: Mapping[str, Any] | ModelAdapter,
    *,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Coefficients, Wald standard errors and CIs, odds or hazard ratios.

    Parameters
    ----------
    information_sum:
        :func:`sum_information` of the sites (``{"kind", "names", "matrix"}``).
    params:
        The final params the information was computed at.
    feature_names:
        Names of the ``d`` weights.
    model:
        The study's model mapping (or adapter): logistic or Cox.
    confidence:
        Level of the CIs, in (0, 1).

    Returns
    -------
    dict
        ``{"kind", "ratio_name", "scale_note", "confidence", "singular", "note", "rows":
        [{"name", "coef", "se", "z", "p", "lo", "hi", "ratio", "ratio_lo", "ratio_hi"}]}``;
        with a singular (or not positive definite) information every ``se`` and what depends
        on it is ``null`` and ``note`` says why. The intercept has no ratio (``null``).

    Raises
    ------
    ConfigError
        The model is not linear, or ``confidence`` is outside (0, 1).
    ValidationError
        The information does not match the model kind or the number of parameters.
    """
    kind = linear_kind(model)
    if kind is None:
        raise ConfigError(f"coefficients need a logistic or Cox model, got {model!r}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence!r}")
    if information_sum.get("kind") != kind:
        raise ValidationError(f"information of kind {information_sum.get('kind')!r} for {kind}")
    coef = np.asarray(params["weight"], dtype=np.float64).ravel()
    names = list(feature_names)
    if len(names) != coef.size:
        raise ValidationError(f"{len(names)} feature names for {coef.size} weights")
    if kind == "logistic":
        coef, names = np.append(coef, float(np.asarray(params["bias"]))), [*names, "bias"]
    info = np.asarray(information_sum["matrix"], dtype=np.float64)
    if info.shape != (coef.size, coef.size):
        raise ValidationError(f"information of shape {info.shape} for {coef.size} parameters")
    se, note = _standard_errors(info)
    z = float(norm.ppf(0.5 + confidence / 2.0))
    rows = []
    for i, name in enumerate(names):
        b, s = float(coef[i]), (None if se is None else float(se[i]))
        lo, hi = (None, None) if s is None else (b - z * s, b + z * s)
        wald = None if s is None or s == 0 else b / s
        ratio = name != "bias"
        rows.append({
            "name": name, "coef": b, "se": s, "lo": lo, "hi": hi,
            "z": wald, "p": None if wald is None else _finite(float(2 * norm.sf(abs(wald)))),
            "ratio": _exp(b) if ratio else None,
            "ratio_lo": _exp(lo) if ratio else None,
            "ratio_hi": _exp(hi) if ratio else None,
        })  # fmt: skip
    return {
        "kind": kind,
        "ratio_name": "odds ratio" if kind == "logistic" else "hazard ratio",
        "scale_note": "per 1 unit of the preprocessed feature the model sees (1 SD when the "
        "study standardizes it)",
        "confidence": confidence,
        "singular": se is None,
        "note": note,
        "rows": rows,
    }


def _standard_errors(info: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    sym = (info + info.T) / 2.0
    eig = np.linalg.eigvalsh(sym) if sym.size else np.zeros(0)
    if eig.size and (eig[0] <= 1e-10 * max(1.0, float(eig[-1])) or not np.isfinite(eig).all()):
        return None, (
            "the summed information matrix is singular or not positive definite (smallest "
            f"eigenvalue {eig[0]:.3g}): a coefficient is not identified by the test rows, so "
            "standard errors are undefined"
        )
    return np.sqrt(np.diag(np.linalg.inv(sym))), None
