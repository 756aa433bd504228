"""Summaries of per-site metrics: aggregates, cross-site matrices, the EXAM-study summary.

Pure functions over plain dicts of floats; every result is a new plain, JSON-able dict (``NaN``
may appear, as Python's ``json`` writes it). Inputs are never changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from fedcare.errors import ValidationError
from fedcare.records.tasks import LOWER_IS_BETTER

__all__ = ["cross_site_matrix", "exam_summary", "site_metrics_problem", "summarize_sites"]

T = TypeVar("T")


def _as_float(value: Any, where: str) -> float:
    """``value`` as a float; ``None`` (how strict JSON writes NaN) reads ``NaN``."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{where} must be a number, got {value!r}")
    return float(value)


def _finite(value: float) -> bool:
    return math.isfinite(value)


def _mean(values: Sequence[float]) -> float:
    """Mean of the finite values; ``NaN`` when there is none."""
    kept = [v for v in values if _finite(v)]
    return math.fsum(kept) / len(kept) if kept else float("nan")


def site_metrics_problem(
    site: str, values: Mapping[str, Any], *, max_rows: int | None = None
) -> str | None:
    """Why one site's evaluation metrics cannot be summarized, or ``None`` when they can.

    ``"n"`` (test rows) must be present, a whole number ``>= 0`` and, when the site declared
    its test rows (``max_rows``), no more than those; every other value must be a number or
    ``None`` (how strict JSON writes NaN; a metric undefined at the site). The round loop
    rejects a reply for which this gives a reason, for that site only.
    """
    if "n" not in values:
        return f"site {site!r} reported metrics without 'n' (row count): {sorted(values)}"
    for key, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"site {site!r} metric {key!r} is not a number: {value!r}"
    n = values["n"]
    if n is None or not (math.isfinite(n) and n >= 0 and float(n).is_integer()):
        return f"site {site!r} reported 'n' = {n!r}; expected a whole number >= 0"
    if max_rows is not None and n > max_rows:
        return f"site {site!r} reported 'n' = {n!r}, more than the {max_rows} test rows it declared"
    return None


def summarize_sites(per_site: Mapping[str, Mapping[str, float | None]]) -> dict[str, Any]:
    """Aggregate per-site metrics into a weighted and an unweighted mean.

    For each metric (every key other than ``"n"`` found at any site, in first-seen order):

    * ``weighted[m] = sum_s n_s * m_s / sum_s n_s`` and
    * ``unweighted[m] = mean_s m_s``,

    both over the sites where ``m_s`` is present and finite. Sites where it is ``NaN`` or
    ``None`` (e.g. AUROC at a site whose test rows hold one class) or missing are skipped and
    counted in ``skipped[m]``. A weighted mean whose kept sites all have ``n == 0`` is ``NaN``.

    Parameters
    ----------
    per_site:
        ``{site: {metric: value, ..., "n": rows}}``; every site needs ``"n" >= 0``.

    Returns
    -------
    dict
        ``{"weighted": {m: ..., "n": total}, "unweighted": {m: ..., "n": total},
        "skipped": {m: count}}`` where ``total`` is the sum of ``n`` over all sites.

    Raises
    ------
    ValidationError
        A site lacks ``"n"``, has a negative ``"n"``, or a value is not a number.
    """
    sizes: dict[str, float] = {}
    metrics: list[str] = []
    for site, values in per_site.items():
        if "n" not in values:
            raise ValidationError(f"site {site!r} has no 'n' (row count): {sorted(values)}")
        n = _as_float(values["n"], f"per_site[{site!r}]['n']")
        if not n >= 0:
            raise ValidationError(f"per_site[{site!r}]['n'] must be >= 0, got {n}")
        sizes[site] = n
        metrics.extend(k for k in values if k != "n" and k not in metrics)
    total = sum(sizes.values())
    total_n: float = int(total) if float(total).is_integer() else total
    weighted: dict[str, float] = {}
    unweighted: dict[str, float] = {}
    skipped: dict[str, int] = {}
    for m in metrics:
        kept = []
        for site, values in per_site.items():
            v = _as_float(values[m], f"per_site[{site!r}][{m!r}]") if m in values else math.nan
            if _finite(v):
                kept.append((sizes[site], v))
        skipped[m] = len(per_site) - len(kept)
        weight = math.fsum(n for n, _ in kept)
        weighted[m] = math.fsum(n * v for n, v in kept) / weight if weight > 0 else math.nan
        unweighted[m] = _mean([v for _, v in kept])
    weighted["n"] = total_n
    unweighted["n"] = total_n
    return {"weighted": weighted, "unweighted": unweighted, "skipped": skipped}


def cross_site_matrix(
    models: Mapping[str, T],
    sites: Sequence[str],
    evaluate: Callable[[T, str], Mapping[str, float | None]],
    metric: str,
) -> dict[str, Any]:
    """Evaluate every model on every site's test data.

    Parameters
    ----------
    models:
        ``{name: model}``, e.g. ``{"federated": ..., "local-a": ..., "pooled": ...}``; the
        order gives the rows.
    sites:
        Site ids; the order gives the columns.
    evaluate:
        ``evaluate(model, site) -> {metric: value, ...}`` on that site's test rows.
    metric:
        The metric placed in the matrix.

    Returns
    -------
    dict
        ``{"metric": metric, "models": [...], "sites": [...], "matrix": [[...]],
        "cells": {model: {site: {metric: value, ...}}}}``; ``matrix[i][j]`` is ``metric`` of
        model ``i`` on site ``j``, ``cells`` the full metric dicts (copied). A cell whose
        result lacks ``metric`` (e.g. the site failed to evaluate) is ``NaN``.

    Raises
    ------
    ValidationError
        No result at all holds ``metric`` (a misspelt name), or a value is not a number
        (names the model and site).
    """
    names = list(models)
    site_list = [str(s) for s in sites]
    matrix: list[list[float]] = []
    cells: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        row: list[float] = []
        cells[name] = {}
        for site in site_list:
            result = evaluate(models[name], site)
            where = f"model {name!r} on site {site!r}"
            cell = {k: _as_float(v, f"{where}: {k!r}") for k, v in result.items()}
            cells[name][site] = cell
            row.append(cell.get(metric, math.nan))
        matrix.append(row)
    seen = {k for by_site in cells.values() for cell in by_site.values() for k in cell}
    if names and site_list and metric not in seen:
        raise ValidationError(f"no model/site result holds {metric!r}; metrics: {sorted(seen)}")
    return {"metric": metric, "models": names, "sites": site_list, "matrix": matrix, "cells": cells}


def _relative(delta: float, base: float) -> float:
    return delta / base if _finite(delta) and _finite(base) and base != 0 else math.nan


def _read_matrix(cross_site: Mapping[str, Any]) -> tuple[list[str], dict[str, dict[str, float]]]:
    """``(sites, {model: {site: value}})`` from a :func:`cross_site_matrix` result."""
    try:
        models = [str(m) for m in cross_site["models"]]
        sites = [str(s) for s in cross_site["sites"]]
        rows = cross_site["matrix"]
    except (KeyError, TypeError) as exc:
        raise ValidationError(f"cross_site needs 'models', 'sites' and 'matrix': {exc}") from exc
    if len(rows) != len(models) or any(len(r) != len(sites) for r in rows):
        raise ValidationError(
            f"cross_site matrix must be {len(models)} x {len(sites)} (models x sites), got "
            f"{len(rows)} rows of lengths {[len(r) for r in rows]}"
        )
    values = {
        m: {s: _as_float(v, f"matrix[{m!r}][{s!r}]") for s, v in zip(sites, row, strict=True)}
        for m, row in zip(models, rows, strict=True)
    }
    return sites, values


def _own_site(fed: Mapping[str, float], local: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    per_site: dict[str, dict[str, float]] = {}
    for site, row in local.items():
        loc, f = row[site], fed[site]
        delta = f - loc if _finite(loc) and _finite(f) else math.nan
        per_site[site] = {
            "local": loc,
            "federated": f,
            "absolute": delta,
            "relative": _relative(delta, loc),
        }
    used = [s for s, v in per_site.items() if _finite(v["absolute"])]
    return {
        "per_site": per_site,
        "n_sites": len(used),
        "local": _mean([per_site[s]["local"] for s in used]),
        "federated": _mean([per_site[s]["federated"] for s in used]),
        "absolute": _mean([per_site[s]["absolute"] for s in used]),
        "relative": _mean([per_site[s]["relative"] for s in used]),
    }


def _generalizability(
    fed: Mapping[str, float], local: Mapping[str, Mapping[str, float]], sites: Sequence[str]
) -> dict[str, Any]:
    per_site: dict[str, dict[str, float]] = {}
    for site, row in local.items():
        others = [t for t in sites if t != site and _finite(row[t]) and _finite(fed[t])]
        per_site[site] = {
            "local_on_others": _mean([row[t] for t in others]),
            "federated_on_others": _mean([fed[t] for t in others]),
            "n_other_sites": len(others),
        }
    used = [s for s, v in per_site.items() if v["n_other_sites"] > 0]
    loc = _mean([per_site[s]["local_on_others"] for s in used])
    fed_all = _mean([fed[t] for t in sites])
    fed_same = _mean([per_site[s]["federated_on_others"] for s in used])
    return {
        "per_site": per_site,
        "n_sites": len(used),
        "local": loc,
        "federated_all_sites": fed_all,
        "federated_like_for_like": fed_same,
        "absolute": fed_all - loc,
        "relative": _relative(fed_all - loc, loc),
        "absolute_like_for_like": fed_same - loc,
        "relative_like_for_like": _relative(fed_same - loc, loc),
    }


def exam_summary(
    cross_site: Mapping[str, Any],
    federated: str = "federated",
    local_prefix: str = "local-",
    pooled: str = "pooled",
) -> dict[str, Any]:
    """The EXAM-study summary of a cross-site matrix (Dayan et al., Nat Med 27:1735, 2021).

    Let ``M[m][t]`` be the metric of model ``m`` on the test rows of site ``t``, ``F`` the
    federated model and ``L_s`` the local model of site ``s`` (the row named
    ``local_prefix + s``). Only sites that have a local model are summarized; ``NaN`` cells
    (e.g. AUROC at a one-class site) are left out of every mean, and "mean" is the plain mean.

    **Own-site improvement** (``"own_site"``): for each site ``s`` with finite ``M[L_s][s]``
    and ``M[F][s]``,

    * ``absolute_s = M[F][s] - M[L_s][s]`` and
    * ``relative_s = absolute_s / M[L_s][s]`` (a fraction; ``NaN`` when the base is 0);

    ``"absolute"`` and ``"relative"`` are the means of these over such sites, ``"local"`` and
    ``"federated"`` the means of ``M[L_s][s]`` and ``M[F][s]`` over the same sites.

    **Generalizability** (``"generalizability"``): for each site ``s``, ``O_s`` is the set of
    *other* sites ``t != s`` where both ``M[L_s][t]`` and ``M[F][t]`` are finite;

    * ``local_on_others_s = mean_{t in O_s} M[L_s][t]`` and
    * ``federated_on_others_s = mean_{t in O_s} M[F][t]``.

    Over the sites with non-empty ``O_s``: ``"local"`` is the mean of ``local_on_others_s``
    (how well a site's own model carries to other hospitals), ``"federated_like_for_like"`` the
    mean of ``federated_on_others_s`` (the federated model on exactly the same model/site
    pairs), and ``"federated_all_sites"`` is ``mean_t M[F][t]`` over all sites. Then
    ``"absolute" = federated_all_sites - local``, ``"relative" = absolute / local``, and
    ``"absolute_like_for_like"``, ``"relative_like_for_like"`` the same with
    ``federated_like_for_like``.

    If a model named ``pooled`` is present, ``"pooled"`` holds its mean over all sites.

    The differences are always ``federated - local``: for a metric where lower is better
    (``"lower_is_better"``: an error such as ``mae``, see
    :data:`fedcare.records.tasks.LOWER_IS_BETTER`) a negative difference is an improvement.

    Parameters
    ----------
    cross_site:
        A :func:`cross_site_matrix` result (``"cells"`` not needed); ``None`` cells read ``NaN``.
    federated, local_prefix, pooled:
        Row names of the federated model, the prefix of local models, the pooled model.

    Returns
    -------
    dict
        ``{"metric", "lower_is_better", "federated", "sites", "own_site": {"per_site": {s: {"local",
        "federated", "absolute", "relative"}}, "n_sites", "local", "federated", "absolute",
        "relative"}, "generalizability": {"per_site": {s: {"local_on_others",
        "federated_on_others", "n_other_sites"}}, "n_sites", "local", "federated_all_sites",
        "federated_like_for_like", "absolute", "relative", "absolute_like_for_like",
        "relative_like_for_like"}}`` plus ``"pooled": {"mean_all_sites"}`` when present.

    Raises
    ------
    ValidationError
        The matrix is malformed, has no ``federated`` row, or no local model of any site.
    """
    sites, values = _read_matrix(cross_site)
    if federated not in values:
        raise ValidationError(f"cross_site has no {federated!r} row; models: {list(values)}")
    local = {s: values[local_prefix + s] for s in sites if local_prefix + s in values}
    if not local:
        raise ValidationError(
            f"cross_site has no local model ({local_prefix!r} + site) for any site of {sites}"
        )
    fed = values[federated]
    metric = str(cross_site.get("metric", ""))
    out: dict[str, Any] = {
        "metric": metric,
        "lower_is_better": metric in LOWER_IS_BETTER,
        "federated": federated,
        "sites": list(local),
        "own_site": _own_site(fed, local),
        "generalizability": _generalizability(fed, local, sites),
    }
    if pooled in values:
        out["pooled"] = {"mean_all_sites": _mean([values[pooled][t] for t in sites])}
    return out
