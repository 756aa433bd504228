"""What a study package's code returns, checked outside it, before anything leaves the site.

Every check raises :class:`PackageOutputRefused` (a ValidationError) whose message names the
package, the array or metric, and what was wrong. See
:class:`fedcare.models.package_runner.SandboxedPackage` for where each applies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedcare.errors import ModelError, ValidationError

__all__ = [
    "ALWAYS_ALLOWED_METRICS",
    "MAX_METRIC",
    "PackageOutputRefused",
    "Template",
    "check_loss",
    "check_metrics",
    "check_num_steps",
    "check_params",
    "check_scores",
    "check_task_params",
    "refuse_dp_sgd",
    "template_of",
]

#: The largest metric magnitude a package may report.
MAX_METRIC = 1e9
#: Metrics every package may report besides its manifest's: the training loss, under the
#: names fedcare's own adapters (torch, scikit-learn, numpy) give it.
ALWAYS_ALLOWED_METRICS = ("loss", "train_loss")
#: name -> (shape, dtype): the parameters a study's model has, fixed by its ``init_params``.
Template = dict[str, tuple[tuple[int, ...], str]]


class PackageOutputRefused(ValidationError):
    """A study package returned something the site does not let leave; the reply's code."""

    code = "package-output-refused"


def template_of(params: Mapping[str, np.ndarray], where: str) -> Template:
    """The template ``init_params`` fixes: finite float arrays, their names, shapes, dtypes."""
    for name, arr in params.items():
        if arr.dtype.kind != "f":
            raise PackageOutputRefused(
                f"{where}: init_params array {name!r} has dtype {arr.dtype}; parameters must "
                "be floating point"
            )
        if not np.isfinite(arr).all():
            raise PackageOutputRefused(f"{where}: init_params array {name!r} has NaN or inf")
    if not params:
        raise PackageOutputRefused(f"{where}: init_params returned no arrays")
    return {name: (tuple(arr.shape), arr.dtype.str) for name, arr in params.items()}


def check_params(
    params: Mapping[str, np.ndarray],
    template: Template,
    where: str,
    *,
    also: Mapping[str, str] | None = None,
) -> None:
    """``params`` are exactly the template's arrays (no more, no fewer), same shapes and
    dtypes (or the dtype ``also`` names for that array), all finite."""
    extra = [name for name in params if name not in template]
    missing = [name for name in template if name not in params]
    if extra or missing:
        raise PackageOutputRefused(
            f"{where}: returned params with unexpected arrays {extra} and missing arrays "
            f"{missing}; only the arrays init_params fixed at the study's start may leave: "
            f"{sorted(template)}"
        )
    for name, (shape, dtype) in template.items():
        arr = params[name]
        dtypes = {dtype, (also or {}).get(name, dtype)}
        if tuple(arr.shape) != shape or arr.dtype.str not in dtypes:
            raise PackageOutputRefused(
                f"{where}: returned params array {name!r} as {arr.dtype.str}{list(arr.shape)}, "
                f"the study's template fixed {dtype}{list(shape)}"
            )
        if not np.isfinite(arr).all():
            raise PackageOutputRefused(f"{where}: returned params array {name!r} has NaN or inf")


def _finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def check_metrics(metrics: Any, allowed: frozenset[str], where: str) -> dict[str, float]:
    """Metrics are a mapping of declared names (or ``loss``, ``train_loss``) to finite numbers with
    ``|value| <= MAX_METRIC``."""
    if not isinstance(metrics, dict):
        raise PackageOutputRefused(f"{where}: fit's metrics are not a mapping")
    checked: dict[str, float] = {}
    for name, value in metrics.items():
        if name not in allowed:
            raise PackageOutputRefused(
                f"{where}: metric {name!r} is not declared in its manifest's outputs.metrics "
                f"(allowed: {sorted(allowed)})"
            )
        number = _finite_number(value)
        if number is None:
            raise PackageOutputRefused(
                f"{where}: metric {name!r} is {value!r:.40}, not a finite number"
            )
        if abs(number) > MAX_METRIC:
            raise PackageOutputRefused(
                f"{where}: metric {name!r} is {number:g}, beyond the allowed magnitude "
                f"{MAX_METRIC:g}"
            )
        checked[name] = number
    return checked


def check_num_steps(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PackageOutputRefused(f"{where}: num_steps is {value!r:.40}, not a positive integer")
    return value


def check_scores(scores: np.ndarray, n: int, task: str, where: str) -> np.ndarray:
    """Predictions for ``n`` rows in the task's shape: ``(n,)``, or ``(n, K)`` for multiclass
    and multilabel; finite."""
    wide = task in ("multiclass", "multilabel")
    good = scores.ndim == 2 and scores.shape[0] == n and scores.shape[1] >= 1
    if not (good if wide else scores.shape == (n,)):
        want = f"({n}, K)" if wide else f"({n},)"
        raise PackageOutputRefused(
            f"{where}: predict returned shape {scores.shape} for {n} rows; a {task} model "
            f"returns {want}"
        )
    if scores.dtype.kind not in "fiu" or not np.isfinite(scores).all():
        raise PackageOutputRefused(f"{where}: predict returned NaN, inf or non-numbers")
    return np.asarray(scores, dtype=np.float64)


def check_loss(value: Any, where: str) -> float:
    number = _finite_number(value)
    if number is None:
        raise PackageOutputRefused(f"{where}: loss is {value!r:.40}, not a finite number")
    return number


def refuse_dp_sgd(dp: object, where: str) -> None:
    """ModelError when a package is asked to train with DP-SGD (``dp``: the spec's settings):
    it would run inside the package's own code."""
    if dp is not None:
        raise ModelError(
            f"{where}: DP-SGD (the study's 'dp' settings) is not available for study "
            "packages: it would run inside the package's own code; use privacy mode "
            "'private' (noise added by the site) instead"
        )


def check_task_params(params: Mapping[str, np.ndarray], template: Template, where: str) -> None:
    """The params a fit task carries are shaped as the template the package's init fixed."""
    given = {name: tuple(arr.shape) for name, arr in params.items()}
    if given != {name: shape for name, (shape, _) in template.items()}:
        raise ValidationError(  # the coordinator's params and the template must agree
            f"{where} fit: the task's params {given} differ from the template its "
            f"init_params fixed {template}"
        )
