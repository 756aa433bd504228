"""Subgroup performance at a site: counts per level of each declared subgroup, suppressed.

:func:`group_labels` turns the study's subgroup specs into one label per row (from the RAW
feature values, before imputation and scaling); :func:`subgroup_summary` counts, per level,
what the coordinator needs to compute performance and fairness gaps
(:func:`~fedcare.evaluation.subgroup_combine.combine_subgroups`, re-exported here).

What leaves the site (binary task), per subgroup and level::

    {"task": "binary", "min_cell": 5, "threshold": 0.5, "bins": 10,
     "groups": {"sex": {"feature": "sex", "levels": {
         "0": {"n": 40, "pos": 12, "tp": 8, "fp": 5, "tn": 23, "fn": 4,
               "sum_p": 13.1, "brier_sum": 6.2, "auroc": 0.81,
               "curve_n": [... bins ints ...], "curve_pos": [... bins ints ...]},
         "1": {"n": null, "suppressed": true}}}}}

``n`` rows of the level, ``pos`` positives, the confusion matrix at ``threshold``
(``p >= threshold`` is positive), ``sum_p`` the sum of predicted probabilities,
``brier_sum`` the sum of ``(p - y)^2``, ``auroc`` the level's AUROC (``null`` unless it has
at least ``min_cell`` positives and negatives), ``curve_n``/``curve_pos`` (only with
``curves=True``; ``"bins": 0`` without) the rows and positives per equal-width score bin
(sklearn's ``calibration_curve`` edge rule). Other tasks release
``{"n": .., "value": ..}`` per level, ``value`` being the task's headline metric
(:data:`~fedcare.records.tasks.HEADLINE_METRIC`, named in ``"metric"``) on the level's rows,
or ``{"unsupported": reason}``.

Disclosure: only counts, two sums and (other tasks) one metric per level leave. A level with
``0 < n < min_cell`` sends only ``{"n": null, "suppressed": true}``; any other count with
``0 < c < min_cell`` is ``null``; counts that would let a withheld one be derived by
subtraction are withheld too (:mod:`fedcare.evaluation._cell_protection`, assuming the site's
overall row count, positives, confusion matrix and histogram at the same ``bins`` are released
beside it), so a level may lose more cells than its small ones, or be withheld whole. A level
whose ``n`` is withheld is flagged ``suppressed`` whatever withheld it. Suppression happens
per site; the coordinator suppresses the summed cells again. What is NOT protected: a level's
key says that the level occurs at the site (a suppressed categorical value is named, hence
:data:`MAX_LEVELS`); relations between two different subgroups (rows counted in both ``sex``
and ``age`` cells) and with site histograms whose bins do not nest with these; reasoning
with inequalities (counts are >= 0); the sums ``sum_p`` and ``brier_sum`` of a level whose
``n`` is released are sent even when some of its counts are withheld. Pass the study's
calibration ``bins`` (at most :data:`MAX_BINS` are used): finer curves are mostly withheld.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedcare.data.base import Dataset
from fedcare.errors import ConfigError, ValidationError
from fedcare.evaluation._cell_protection import Cell, protect
from fedcare.evaluation.metrics import auroc, compute_metrics
from fedcare.evaluation.subgroup_combine import combine_subgroups, level_order, number_label
from fedcare.records.tasks import HEADLINE_METRIC, check_task

__all__ = [
    "MAX_BINS",
    "MAX_LEVELS",
    "combine_subgroups",
    "group_labels",
    "level_order",
    "subgroup_summary",
]

#: Most distinct values a categorical subgroup may have (more: declare ``bands``).
MAX_LEVELS = 50
#: Most score bins of a level's curve: finer bins are mostly withheld under ``min_cell``
#: anyway, and the suppression check grows with the number of cells.
MAX_BINS = 20
_MISSING = "missing"


def _band_labels(bands: Sequence[float]) -> list[str]:
    cuts = [number_label(b) for b in bands]
    middle = [f"{a}-{b}" for a, b in itertools.pairwise(cuts)]
    return [f"<{cuts[0]}", *middle, f">={cuts[-1]}"]


def _numeric(column: np.ndarray, feature: str) -> np.ndarray:
    try:
        return np.asarray(
            [np.nan if v is None else float(v) for v in column.tolist()], dtype=np.float64
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"subgroup on feature {feature!r}: bands need numeric values ({exc})"
        ) from None


def _banded(column: np.ndarray, bands: Any, feature: str) -> np.ndarray:
    if isinstance(bands, (str, bytes)) or not isinstance(bands, Sequence) or not bands:
        raise ConfigError(f"subgroup on feature {feature!r}: bands must be a non-empty list")
    cuts = np.asarray(bands, dtype=np.float64)
    if not np.all(np.isfinite(cuts)) or np.any(np.diff(cuts) <= 0):
        raise ConfigError(
            f"subgroup on feature {feature!r}: bands must be finite and increasing, got "
            f"{list(bands)}"
        )
    x = _numeric(column, feature)
    names = np.asarray(_band_labels(cuts.tolist()), dtype=object)
    index = np.searchsorted(cuts, np.where(np.isnan(x), 0.0, x), side="right")
    return np.where(np.isnan(x), _MISSING, names[index]).astype(object)


def _value_label(value: Any) -> str:
    if value is None:
        return _MISSING
    if isinstance(value, (float, np.floating, int, np.integer)) and not isinstance(value, bool):
        return _MISSING if math.isnan(float(value)) else number_label(float(value))
    return str(value)


def _categorical(column: np.ndarray, feature: str) -> np.ndarray:
    labels = np.asarray([_value_label(v) for v in column.tolist()], dtype=object)
    distinct = len(set(labels.tolist()))
    if distinct > MAX_LEVELS:
        raise ConfigError(
            f"subgroup on feature {feature!r} has {distinct} distinct values (at most "
            f"{MAX_LEVELS}); declare 'bands' for a numeric feature"
        )
    return labels


def group_labels(
    raw_X: np.ndarray, feature_names: Sequence[str], subgroup_specs: Sequence[Mapping[str, Any]]
) -> dict[str, np.ndarray]:
    """One label per row for each declared subgroup.

    Parameters
    ----------
    raw_X:
        ``(n, d)`` raw feature values (before imputation and scaling; NaN or None = missing).
    feature_names:
        The ``d`` column names.
    subgroup_specs:
        ``{"feature": name, "bands": [cuts] | None, "name": label | None}`` each. Bands
        ``[50, 60]`` give levels ``"<50"``, ``"50-60"`` (50 <= x < 60) and ``">=60"``; without
        bands each distinct value is a level: ``str`` of the value, whole numbers as ints
        (``1.0`` -> ``"1"``). Missing values are the level ``"missing"``.

    Returns
    -------
    dict[str, numpy.ndarray]
        Subgroup name (``name``, default the feature) -> object array of ``n`` labels.

    Raises
    ------
    ConfigError
        An unknown feature (the message lists the known ones), bad bands, a duplicate name, or
        a categorical feature with more than :data:`MAX_LEVELS` values.
    """
    X = np.asarray(raw_X)
    names = list(feature_names)
    if X.ndim != 2 or X.shape[1] != len(names):
        raise ConfigError(
            f"raw_X has shape {X.shape}, expected (n, {len(names)}) for {len(names)} features"
        )
    out: dict[str, np.ndarray] = {}
    for spec in subgroup_specs:
        feature = spec.get("feature")
        if feature not in names:
            raise ConfigError(
                f"subgroup feature {feature!r} is not a feature of the dataset; known features: "
                f"{names}"
            )
        label = str(spec.get("name") or feature)
        if label in out:
            raise ConfigError(f"subgroup name {label!r} is declared twice")
        column = X[:, names.index(str(feature))]
        bands = spec.get("bands")
        out[label] = _categorical(column, label) if bands is None else _banded(column, bands, label)
    return out


def _check_groups(groups: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    out = {}
    for name, labels in groups.items():
        arr = np.asarray(labels).astype(str)
        if arr.shape != (n,):
            raise ValidationError(f"subgroup {name!r} has {arr.shape} labels, expected ({n},)")
        out[str(name)] = arr
    return out


def _atom_grid(levels: int, k: int, threshold: float) -> np.ndarray:
    """Every (level, bin, label, decision) the bins and threshold allow, as rows."""
    edges = np.linspace(0.0, 1.0, k + 1)
    rows = []
    for b in range(k):
        decisions = []
        if b == 0 or edges[b] < threshold:  # bin b holds scores in (edges[b], edges[b + 1]]
            decisions.append(0)
        if b == k - 1 or edges[b + 1] >= threshold:
            decisions.append(1)
        rows += [(b, t, d) for t in (0, 1) for d in decisions]
    grid = np.array(rows, dtype=np.int64)
    return np.array([(lv, *row) for lv in range(levels) for row in grid], dtype=np.int64)


def _binary_cells(
    labels: np.ndarray, y: np.ndarray, pred: np.ndarray, bins: np.ndarray, k: int, threshold: float
) -> tuple[list[Cell], np.ndarray, list[np.ndarray], list[str]]:
    """Atoms (level, bin, y, decision) with their row counts, the cells over them (no curve
    cells when ``k == 0``: one bin) and the site-wide known cells."""
    curve = k > 0
    k = max(k, 1)
    levels, lev = np.unique(labels, return_inverse=True)
    atoms = _atom_grid(len(levels), k, threshold)
    index = {tuple(row): i for i, row in enumerate(atoms.tolist())}
    keys = np.stack([lev.ravel(), bins, y.astype(np.int64), pred.astype(np.int64)], axis=1)
    counts = np.zeros(len(atoms))
    for key, c in zip(*np.unique(keys, axis=0, return_counts=True), strict=True):
        counts[index[tuple(key.tolist())]] = c
    a_lev, a_bin, a_y, a_pred = atoms.T

    def vec(mask: np.ndarray) -> np.ndarray:
        return mask.astype(np.float64)

    cells: list[Cell] = []
    names: list[str] = []
    for i in range(len(levels)):
        on = a_lev == i
        parts = {
            "n": ("n", on),
            "pos": ("pos", on & (a_y == 1)),
            "tp": ("confusion", on & (a_y == 1) & (a_pred == 1)),
            "fp": ("confusion", on & (a_y == 0) & (a_pred == 1)),
            "tn": ("confusion", on & (a_y == 0) & (a_pred == 0)),
            "fn": ("confusion", on & (a_y == 1) & (a_pred == 0)),
        }
        for name, (family, mask) in parts.items():
            cells.append(Cell(i, family, vec(mask), name))
            names.append(name)
        for b in range(k if curve else 0):
            cells.append(Cell(i, "curve_n", vec(on & (a_bin == b)), f"curve_n/{b}"))
            names.append(f"curve_n/{b}")
        for b in range(k if curve else 0):
            mask = on & (a_bin == b) & (a_y == 1)
            cells.append(Cell(i, "curve_pos", vec(mask), f"curve_pos/{b}"))
            names.append(f"curve_pos/{b}")
    known = [vec(np.ones_like(a_y, dtype=bool)), vec(a_y == 1)]
    known += [vec((a_y == t) & (a_pred == d)) for t in (0, 1) for d in (0, 1)]
    known += [vec(a_bin == b) for b in range(k)] + [
        vec((a_bin == b) & (a_y == 1)) for b in range(k)
    ]
    return cells, counts, known, names


def _binary_group(
    labels: np.ndarray, y: np.ndarray, p: np.ndarray, threshold: float, k: int, min_cell: int
) -> dict[str, Any]:
    levels = np.unique(labels).tolist()
    pred = p >= threshold
    edges = np.linspace(0.0, 1.0, max(k, 1) + 1)
    bins = np.searchsorted(edges[1:-1], p)
    cells, counts, known, names = _binary_cells(labels, y, pred, bins, k, threshold)
    values = [round(float(c.member @ counts)) for c in cells]
    per = 6 + 2 * k
    small = [i for i in range(len(levels)) if 0 < values[i * per] < min_cell]
    hidden = protect(cells, counts, known, min_cell, whole_levels=small)
    out: dict[str, Any] = {}
    for i, level in enumerate(levels):
        block = slice(i * per, (i + 1) * per)
        shown = [None if h else v for h, v in zip(hidden[block], values[block], strict=True)]
        if shown[0] is None:
            out[level] = {"n": None, "suppressed": True}
            continue
        rows = labels == level
        cell: dict[str, Any] = dict(zip(names[:6], shown[:6], strict=True))
        cell["sum_p"] = float(np.sum(p[rows]))
        cell["brier_sum"] = float(np.sum((p[rows] - y[rows]) ** 2))
        pos = int(np.sum(y[rows]))
        both = min(pos, int(np.sum(rows)) - pos) >= max(min_cell, 1)
        cell["auroc"] = auroc(y[rows], p[rows]) if both else None
        if k:
            cell["curve_n"] = shown[6 : 6 + k]
            cell["curve_pos"] = shown[6 + k :]
        out[level] = cell
    return out


def _other_group(
    task: str, labels: np.ndarray, y: np.ndarray, scores: np.ndarray, time: Any, min_cell: int
) -> dict[str, Any]:
    levels = np.unique(labels).tolist()
    rows = [labels == level for level in levels]
    sizes = np.array([float(np.sum(r)) for r in rows])
    cells = [Cell(i, "n", np.eye(len(levels))[i], "n") for i in range(len(levels))]
    hidden = protect(cells, sizes, [np.ones(len(levels))], min_cell)
    metric = HEADLINE_METRIC[task]
    out: dict[str, Any] = {}
    for i, level in enumerate(levels):
        if hidden[i]:
            out[level] = {"n": None, "suppressed": True}
            continue
        t = None if time is None else np.asarray(time)[rows[i]]
        data = Dataset(X=np.zeros((int(sizes[i]), 1)), y=np.asarray(y)[rows[i]], time=t)
        value = compute_metrics(task, data, np.asarray(scores)[rows[i]])[metric]
        out[level] = {"n": int(sizes[i]), "value": None if math.isnan(value) else float(value)}
    return out


def _check_inputs(
    task: str, y: Any, scores: Any, threshold: float, bins: int, min_cell: int
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ConfigError(f"subgroup bins must be an integer >= 1, got {bins!r}")
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"subgroup threshold must lie in (0, 1), got {threshold!r}")
    if isinstance(min_cell, bool) or not isinstance(min_cell, int) or min_cell < 0:
        raise ConfigError(f"min_cell must be an integer >= 0, got {min_cell!r}")
    y_arr, s_arr = np.asarray(y), np.asarray(scores, dtype=np.float64)
    if len(s_arr) != len(y_arr):
        raise ValidationError(f"scores have {len(s_arr)} rows, y has {len(y_arr)}")
    if task == "binary":
        if s_arr.ndim != 1 or not np.all((s_arr >= 0) & (s_arr <= 1)):
            raise ValidationError("binary scores must be (n,) probabilities in [0, 1]")
        if not np.isin(y_arr, (0, 1)).all():
            raise ValidationError("binary y must hold only 0 and 1")
    return y_arr, s_arr


def subgroup_summary(
    task: str,
    y: Any,
    scores: Any,
    groups: Mapping[str, np.ndarray],
    *,
    threshold: float,
    bins: int,
    min_cell: int,
    time: Any = None,
    features: Mapping[str, str] | None = None,
    curves: bool = False,
) -> dict[str, Any]:
    """The site's subgroup table (shape in the module docstring), suppressed.

    Parameters
    ----------
    task:
        The task (:data:`~fedcare.records.tasks.TASKS`); binary gets the full table.
    y, scores:
        The site's test labels and the model's scores for them (``adapter.predict``).
    groups:
        Subgroup name -> ``(n,)`` labels (:func:`group_labels`).
    threshold:
        Decision threshold, ``p >= threshold`` predicts 1.
    bins:
        Equal-width score bins on ``[0, 1]`` for ``curve_n``/``curve_pos`` (with ``curves``);
        at most :data:`MAX_BINS` are used (the ``"bins"`` of the result says how many; 0
        without curves).
    min_cell:
        The site's minimum cell size; ``<= 1`` withholds nothing.
    time:
        Survival times (survival task only; without them the table is ``unsupported``).
    features:
        Subgroup name -> feature name for the ``"feature"`` entry (default: the name).
    curves:
        Also release each level's score histogram (``curve_n``/``curve_pos``), for a pooled
        binned AUROC per level. Off by default: at hospital-sized test sets most bins are under
        ``min_cell`` and their complementary suppression withholds confusion cells too (and
        takes seconds); each level's own ``auroc`` is released instead.

    Returns
    -------
    dict
        JSON-able, no NaN (undefined metrics are ``None``).

    Raises
    ------
    ConfigError
        Bad ``threshold``, ``bins`` or ``min_cell``.
    ValidationError
        Labels, scores and groups of different lengths, or binary inputs out of range.
    """
    task = check_task(task)
    y_arr, s_arr = _check_inputs(task, y, scores, threshold, bins, min_cell)
    labels = _check_groups(groups, len(y_arr))
    head: dict[str, Any] = {"task": task, "min_cell": min_cell}
    if task == "survival" and time is None:
        return {**head, "unsupported": "survival subgroups need the survival times"}
    bins = min(bins, MAX_BINS) if curves else 0
    out: dict[str, Any] = {}
    for name, lab in labels.items():
        if task == "binary":
            levels = _binary_group(lab, y_arr, s_arr, threshold, bins, min_cell)
        else:
            levels = _other_group(task, lab, y_arr, s_arr, time, min_cell)
        out[name] = {"feature": (features or {}).get(name, name), "levels": levels}
    if task == "binary":
        return {**head, "threshold": float(threshold), "bins": bins, "groups": out}
    return {**head, "metric": HEADLINE_METRIC[task], "groups": out}
