"""Random-effects meta-analysis of one estimate per site (pure numpy and scipy).

:func:`dersimonian_laird` pools site estimates ``y_i`` with variances ``v_i``: the fixed
(inverse-variance) mean, Cochran's ``Q``, the between-site variance
``tau² = max(0, (Q - (k - 1)) / (sum w - sum w² / sum w))``, the random-effects mean with
weights ``1 / (v_i + tau²)`` and its normal interval, ``I² = max(0, (Q - (k - 1)) / Q)`` and
the prediction interval for a new site ``mu -/+ t_{k-2} sqrt(tau² + se²)`` (Higgins, Thompson &
Spiegelhalter 2009; needs ``k >= 3``). :func:`meta_logit` runs it on the logit scale (AUROC,
C-index) and maps the estimates and bounds back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import norm, t

__all__ = ["dersimonian_laird", "hanley_mcneil_se", "logit_se", "meta_logit"]

Result = dict[str, float | int | None]


def _empty(k: int) -> Result:
    keys = ("fixed", "random", "se", "lo", "hi", "tau2", "i2", "q", "pi_lo", "pi_hi")
    return {**dict.fromkeys(keys), "k": k}


def dersimonian_laird(
    values: Sequence[float], variances: Sequence[float], confidence: float = 0.95
) -> Result:
    """DerSimonian–Laird random-effects pooling (see the module docstring).

    Returns ``{"fixed", "random", "se", "lo", "hi", "tau2", "i2", "q", "pi_lo", "pi_hi", "k"}``
    (``se``, ``lo``, ``hi`` of the random-effects mean). Sites with a missing, non-finite or
    non-positive variance are left out; ``k`` counts the sites used. With ``k == 1`` only the
    fixed estimate, equal to the random one, and its interval are given (``tau2``, ``i2``,
    ``q`` and the prediction interval ``None``); with ``k == 0`` everything is ``None``.
    """
    pairs = [
        (float(y), float(v))
        for y, v in zip(values, variances, strict=True)
        if math.isfinite(y) and math.isfinite(v) and v > 0
    ]
    k = len(pairs)
    if k == 0:
        return _empty(0)
    y = np.array([p[0] for p in pairs])
    v = np.array([p[1] for p in pairs])
    z = float(norm.ppf(0.5 + confidence / 2.0))
    w = 1.0 / v
    fixed = float(np.sum(w * y) / np.sum(w))
    if k == 1:
        se = math.sqrt(float(v[0]))
        return {
            **_empty(1),
            "fixed": fixed,
            "random": fixed,
            "se": se,
            "lo": fixed - z * se,
            "hi": fixed + z * se,
        }
    q = float(np.sum(w * (y - fixed) ** 2))
    c = float(np.sum(w) - np.sum(w**2) / np.sum(w))
    tau2 = max(0.0, (q - (k - 1)) / c) if c > 0 else 0.0
    ws = 1.0 / (v + tau2)
    mu = float(np.sum(ws * y) / np.sum(ws))
    se = math.sqrt(1.0 / float(np.sum(ws)))
    out: Result = {
        "fixed": fixed,
        "random": mu,
        "se": se,
        "lo": mu - z * se,
        "hi": mu + z * se,
        "tau2": tau2,
        "i2": max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0,
        "q": q,
        "pi_lo": None,
        "pi_hi": None,
        "k": k,
    }
    if k >= 3:
        half = float(t.ppf(0.5 + confidence / 2.0, k - 2)) * math.sqrt(tau2 + se * se)
        out["pi_lo"], out["pi_hi"] = mu - half, mu + half
    return out


def _logit(x: float) -> float:
    return math.log(x / (1.0 - x))


def _expit(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def meta_logit(
    values: Sequence[float], logit_ses: Sequence[float], confidence: float = 0.95
) -> Result:
    """:func:`dersimonian_laird` of estimates in ``(0, 1)`` (AUROC, C-index) on the logit
    scale: site ``i`` enters as ``logit(y_i)`` with standard error ``logit_ses[i]`` (on the
    logit scale; :func:`logit_se` converts one). The means and bounds are mapped back to
    ``(0, 1)``; ``tau2``, ``q`` and ``se`` stay on the logit scale. Estimates of exactly 0 or 1
    and non-positive standard errors are left out."""
    ys, vs = [], []
    for y, s in zip(values, logit_ses, strict=True):
        if 0.0 < y < 1.0 and math.isfinite(s) and s > 0:
            ys.append(_logit(y))
            vs.append(s * s)
    out = dersimonian_laird(ys, vs, confidence)
    back: Callable[[float], float] = _expit
    for key in ("fixed", "random", "lo", "hi", "pi_lo", "pi_hi"):
        value = out[key]
        if value is not None:
            out[key] = back(float(value))
    return out


def logit_se(value: float, se: float) -> float:
    """The delta-method standard error of ``logit(value)`` from that of ``value``."""
    return se / (value * (1.0 - value))


def hanley_mcneil_se(auc: float, n_pos: int, n_neg: int) -> float | None:
    """Hanley & McNeil's (1982) standard error of an AUROC from ``n_pos`` positives and
    ``n_neg`` negatives (``None`` without both classes)."""
    if n_pos < 1 or n_neg < 1:
        return None
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    var = (auc * (1.0 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (
        n_pos * n_neg
    )
    return math.sqrt(var) if var > 0 else None
