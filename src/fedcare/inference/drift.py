"""Reference histograms of a site's training rows and the population stability index (PSI).

When a site takes a model it freezes, per input feature, the distribution of *its own* raw
training rows (:func:`freeze_reference`): decile edges and the share of rows in each bin for a
numeric feature; for a feature with few distinct values (binary, categorical codes: at most
``bins`` of them) each value is its own bin. The share of missing values is a bin of its own.
The reference stays at the site (``<version>/reference.json``).

Drift of new rows against it is the population stability index::

    PSI = sum_b (a_b - e_b) * ln(a_b / e_b)

over the reference's bins (plus ``other`` for a categorical value the training rows never had,
and ``missing``), ``e`` the reference shares, ``a`` the new rows' shares, each floored at
:data:`EPSILON` so that an empty bin counts without dividing by zero. Conventional bands:
below 0.1 ``stable``, 0.1 to 0.25 ``moderate``, above 0.25 ``major``.

Numeric bins are right-closed: ``(-inf, e_1], (e_1, e_2], ..., (e_k, inf)`` with ``e_i`` the
distinct interior decile edges of the training values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedcare.errors import ValidationError

__all__ = [
    "EPSILON",
    "MAJOR",
    "MODERATE",
    "bin_shares",
    "drift",
    "feature_reference",
    "freeze_reference",
    "psi",
    "psi_status",
    "sampling_psi",
]

#: The floor of a bin's share in the PSI (an empty bin).
EPSILON = 1e-4
#: PSI bands: ``< MODERATE`` stable, ``< MAJOR`` moderate, else major (the conventional cuts,
#: a PSI of exactly 0.1 or 0.25 falls in the higher band).
MODERATE, MAJOR = 0.1, 0.25
REFERENCE_VERSION = 1


def _column(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValidationError(f"a feature's values must be 1-D, got shape {arr.shape}")
    return arr


def feature_reference(values: Any, bins: int = 10) -> dict[str, Any]:
    """The reference histogram of one feature's raw training values (``NaN``: missing).

    Returns ``{"kind": "numeric", "edges", "shares", "missing", "n"}`` (decile edges),
    ``{"kind": "categorical", "values", "shares", "missing", "n"}`` (at most ``bins`` distinct
    values) or ``{"kind": "empty", "missing": 1.0, "n"}`` (no value at all). ``shares`` and
    ``missing`` are fractions of all ``n`` rows (they sum to 1).
    """
    if bins < 2:
        raise ValidationError(f"bins must be at least 2, got {bins}")
    arr = _column(values)
    n = arr.size
    if n == 0:
        raise ValidationError("a reference needs at least one training row")
    present = arr[~np.isnan(arr)]
    missing = float(1 - present.size / n)
    if present.size == 0:
        return {"kind": "empty", "missing": 1.0, "n": n}
    distinct = np.unique(present)
    if distinct.size <= bins:
        counts = np.array([np.sum(present == v) for v in distinct], dtype=np.float64)
        return {
            "kind": "categorical",
            "values": distinct.tolist(),
            "shares": (counts / n).tolist(),
            "missing": missing,
            "n": n,
        }
    quantiles = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])
    edges = np.unique(quantiles)
    shares = _numeric_counts(present, edges) / n
    return {
        "kind": "numeric",
        "edges": edges.tolist(),
        "shares": shares.tolist(),
        "missing": missing,
        "n": n,
    }


def _numeric_counts(present: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, present, side="left"), minlength=edges.size + 1)


def bin_shares(reference: Mapping[str, Any], values: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(expected, actual)``: the reference's shares and those of ``values`` over the same
    cells (the reference's bins, ``other`` for a categorical feature, then ``missing``)."""
    arr = _column(values)
    n = arr.size
    if n == 0:
        raise ValidationError("drift needs at least one row")
    missing = np.isnan(arr)
    present = arr[~missing]
    kind = reference.get("kind")
    if kind == "numeric":
        edges = np.asarray(reference["edges"], dtype=np.float64)
        counts = _numeric_counts(present, edges).astype(np.float64)
        expected = list(reference["shares"])
    elif kind == "categorical":
        known = np.asarray(reference["values"], dtype=np.float64)
        counts = np.array([np.sum(present == v) for v in known], dtype=np.float64)
        counts = np.append(counts, present.size - counts.sum())  # values never seen in training
        expected = [*reference["shares"], 0.0]
    elif kind == "empty":
        counts, expected = np.array([float(present.size)]), [0.0]
    else:
        raise ValidationError(f"unknown reference kind {kind!r}")
    actual = np.append(counts, float(missing.sum())) / n
    return np.array([*expected, float(reference["missing"])]), actual


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """The population stability index of two share vectors over the same cells (module
    docstring); each share is floored at :data:`EPSILON`."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), EPSILON)
    a = np.maximum(np.asarray(actual, dtype=np.float64), EPSILON)
    if e.shape != a.shape:
        raise ValidationError(f"PSI needs shares over the same cells, got {e.shape} and {a.shape}")
    return float(np.sum((a - e) * np.log(a / e)))


def psi_status(value: float) -> str:
    """``stable`` (< 0.1), ``moderate`` (< 0.25) or ``major``."""
    if not math.isfinite(value):
        raise ValidationError(f"PSI must be finite, got {value}")
    return "stable" if value < MODERATE else "moderate" if value < MAJOR else "major"


def sampling_psi(cells: int, n: int, n_reference: int) -> float:
    """The PSI expected from sampling alone (no drift): ``(cells - 1) * (1/n + 1/n_reference)``
    for ``n`` new rows against a reference of ``n_reference`` rows over ``cells`` non-empty
    cells (the two-sample chi-square approximation; 0.13 for 104 rows against 199 over
    deciles, so a small site's PSI is noisy)."""
    if n <= 0 or n_reference <= 0:
        raise ValidationError(f"row counts must be positive, got {n} and {n_reference}")
    return max(cells - 1, 0) * (1 / n + 1 / n_reference)


def drift(reference: Mapping[str, Any], values: Any) -> dict[str, Any]:
    """``{"psi", "status", "noise"}`` of ``values`` against one feature's ``reference``;
    ``noise``: :func:`sampling_psi`, the PSI expected without any drift."""
    arr = _column(values)
    expected, actual = bin_shares(reference, arr)
    value = psi(expected, actual)
    noise = sampling_psi(int(np.sum(expected > 0)), arr.size, int(reference["n"]))
    return {"psi": round(value, 6), "status": psi_status(value), "noise": round(noise, 6)}


def freeze_reference(
    train_X_raw: Any, feature_names: Sequence[str], bins: int = 10
) -> dict[str, Any]:
    """The reference of a site's raw training rows (``(n, features)``, ``NaN`` for missing):
    ``{"version", "n", "bins", "features": {name: feature_reference(...)}}``.

    Raises
    ------
    ValidationError
        Rows not 2-D, no row, or not as many names as columns.
    """
    X = np.asarray(train_X_raw, dtype=np.float64)
    if X.ndim != 2:
        raise ValidationError(f"training rows must be 2-D (n, features), got shape {X.shape}")
    if X.shape[1] != len(feature_names):
        raise ValidationError(
            f"training rows have {X.shape[1]} columns, {len(feature_names)} feature names given"
        )
    return {
        "version": REFERENCE_VERSION,
        "n": int(X.shape[0]),
        "bins": int(bins),
        "features": {
            str(name): feature_reference(X[:, j], bins) for j, name in enumerate(feature_names)
        },
    }
