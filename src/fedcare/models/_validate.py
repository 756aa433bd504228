"""Checks every adapter runs on what it is given: parameters, features, labels, times.

Each check raises :class:`~fedcare.errors.ModelError` with a message that names the model, the
array and what was wrong with it, so a site's error reply says what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedcare.data.base import Dataset, TaskType
from fedcare.errors import ModelError

if TYPE_CHECKING:
    from fedcare.models.base import LocalTrainSpec

__all__ = [
    "check_correction",
    "check_features",
    "check_params",
    "check_targets",
    "is_bias",
    "unsupported_terms",
]


def is_bias(name: str) -> bool:
    """True for arrays the L2 penalty skips: ``bias``, ``fc.bias``, ``layer/bias``."""
    return name.replace("/", ".").rsplit(".", 1)[-1] == "bias"


def check_params(
    params: Mapping[str, np.ndarray],
    expected: Mapping[str, tuple[int, ...]],
    *,
    model: str,
) -> None:
    """Check names, shapes, dtypes and finiteness of ``params`` against ``expected``.

    Parameters
    ----------
    params:
        The parameters received.
    expected:
        ``name -> shape`` the model needs.
    model:
        The model's name, used in messages.

    Raises
    ------
    ModelError
        Naming the missing, unexpected or malformed array.
    """
    if not isinstance(params, Mapping):
        raise ModelError(f"{model} params must be an ArrayRecord, got {type(params).__name__}")
    missing = [k for k in expected if k not in params]
    extra = [k for k in params if k not in expected]
    if missing or extra:
        raise ModelError(
            f"{model} params have missing arrays {missing} and unexpected arrays {extra}; "
            f"expected {dict(expected)}"
        )
    for name, shape in expected.items():
        arr = np.asarray(params[name])
        if arr.shape != tuple(shape):
            raise ModelError(
                f"{model} params array {name!r} has shape {arr.shape}, expected {tuple(shape)}"
            )
        if not np.issubdtype(arr.dtype, np.floating):
            raise ModelError(
                f"{model} params array {name!r} has dtype {arr.dtype}, expected a float dtype"
            )
        if not np.isfinite(arr).all():
            raise ModelError(f"{model} params array {name!r} contains NaN or inf values")


def check_correction(
    params: Mapping[str, np.ndarray], correction: Mapping[str, np.ndarray]
) -> None:
    """Check that a SCAFFOLD correction has the structure of ``params`` and is finite."""
    check_params(
        correction,
        {k: tuple(np.shape(v)) for k, v in params.items()},
        model="SCAFFOLD correction (spec.correction)",
    )


def check_features(X: np.ndarray, *, model: str, min_ndim: int = 2) -> np.ndarray:
    """Return ``X`` as a float array after checking it is non-empty, numeric and finite.

    Raises
    ------
    ModelError
        If ``X`` is empty, has too few axes, is not numeric or has NaN/inf (naming how many
        rows are affected: features must be imputed and standardized before they reach a model).
    """
    arr = np.asarray(X)
    if arr.ndim < min_ndim:
        raise ModelError(f"{model}: X must have at least {min_ndim} axes, got shape {arr.shape}")
    if len(arr) == 0:
        raise ModelError(f"{model}: X has no rows")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ModelError(f"{model}: X has dtype {arr.dtype}, expected a numeric dtype")
    finite = np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
    if not finite.all():
        nan = bool(np.isnan(arr).any())
        raise ModelError(
            f"{model}: X contains {'NaN' if nan else 'inf'} values in {int((~finite).sum())} of "
            f"{len(arr)} rows; impute and standardize features before training or prediction"
        )
    return arr


def check_targets(data: Dataset, task: TaskType, *, model: str) -> None:
    """Check labels (and survival times) for ``task``.

    ``binary`` and ``survival``: ``y`` ``(n,)`` 0/1 (survival also needs finite ``time``);
    ``multiclass``: ``y`` ``(n,)`` whole numbers ``>= 0`` (class indices); ``multilabel``:
    ``y`` ``(n, L)`` 0/1; ``regression``: ``y`` ``(n,)`` finite numbers.

    Raises
    ------
    ModelError
        Naming the task and what is wrong with ``y`` or ``time``.
    """
    y = np.asarray(data.y)
    if task == "multilabel":
        if y.ndim != 2:
            raise ModelError(f"{model}: multilabel y must have shape (n, L), got {y.shape}")
    elif y.ndim != 1:
        raise ModelError(f"{model}: {task} y must have shape (n,), got {y.shape}")
    if task == "regression":
        if not np.issubdtype(y.dtype, np.number) or not np.isfinite(y.astype(float)).all():
            raise ModelError(f"{model}: regression target y must be finite numbers")
        return
    if task == "multiclass":
        numeric = np.issubdtype(y.dtype, np.number) and np.isfinite(y.astype(float)).all()
        if not numeric or (y < 0).any() or (y != np.round(y)).any():
            bad = np.unique(y)[:5] if numeric else y[:5]
            raise ModelError(
                f"{model}: multiclass label y must be class indices 0..K-1, found {bad.tolist()}"
            )
        return
    if not np.isin(y, (0, 1)).all():
        what = "event indicator y" if task == "survival" else "label y"
        bad = np.unique(y[~np.isin(y, (0, 1))])[:5]
        raise ModelError(f"{model}: {what} must be 0 or 1, found {bad.tolist()}")
    if task == "survival":
        if data.time is None:
            raise ModelError(f"{model}: survival data needs `time`, got None")
        if not np.isfinite(np.asarray(data.time, dtype=np.float64)).all():
            raise ModelError(f"{model}: survival `time` contains NaN or inf values")


def unsupported_terms(spec: LocalTrainSpec) -> list[str]:
    """What ``spec`` asks that a plain-SGD estimator (scikit-learn's) cannot honour, in words
    for an error message: FedProx, SCAFFOLD, DP-SGD, Adam, momentum."""
    asked = []
    if spec.prox_mu:
        asked.append(f"a FedProx proximal term (prox_mu={spec.prox_mu})")
    if spec.correction is not None:
        asked.append("a SCAFFOLD correction")
    if spec.dp is not None:
        asked.append("DP-SGD")
    if spec.optimizer != "sgd":
        asked.append(f"optimizer {spec.optimizer!r}")
    if spec.momentum:
        asked.append(f"momentum={spec.momentum}")
    return asked
