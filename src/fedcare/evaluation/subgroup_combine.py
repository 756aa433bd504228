"""Subgroup performance and fairness gaps across sites, from the sites' subgroup tables.

:func:`combine_subgroups` sums each level's counts over the sites that released them and
returns, per subgroup::

    {"feature": "sex", "order": ["0", "1"],
     "levels": {"0": {"n": 120, "sites": 4, "sites_suppressed": 0, "sites_partial": 1,
                      "pos": 40, "tp": 30, "fp": 12, "tn": 60, "fn": 10,
                      "confusion_sites": 3, "positive_sites": 3, "negative_sites": 3,
                      "curve_n": [...], "curve_pos": [...],
                      "metrics": {"prevalence", "selection_rate", "tpr", "fpr", "ppv", "npv",
                                  "accuracy", "auroc", "brier", "mean_p",
                                  "calibration_in_the_large"}},
                "1": {"n": null, "suppressed": true, "sites": 0, "sites_suppressed": 2}},
     "gaps": {"equalized_odds_difference", "true_positive_rate_difference",
              "false_positive_rate_difference", "demographic_parity_difference",
              "calibration_difference", "auroc_difference", "accuracy_difference"},
     "compared": ["0"]}

(``compared``: the levels whose metrics enter the gaps, i.e. not suppressed).

Counts of a family are summed over the sites that released all of it: ``n`` over sites that
released the level's ``n``; ``pos`` over those that released ``pos``; ``tp`` and ``fn`` over
the ``positive_sites`` that released both (so ``tpr`` is defined), ``fp`` and ``tn`` over the
``negative_sites`` that released both (``fpr``); ``confusion_sites`` is their number when
the two sets are the same sites, else ``null``, and only then are ``selection_rate``,
``accuracy``, ``ppv`` and ``npv`` given; the curve over sites with every bin
(``sites_partial`` counts sites that released ``n`` but withheld something). A combined count with
``0 < c < min_cell`` is ``null`` again, a level whose summed ``n`` is small keeps only the flag,
and a rate whose counts are withheld is ``null``. Within each partition whose total is
known (the confusion matrix, ``tp + fn``, ``fp + tn``, the bins) released parts are withheld
too while the withheld ones would sum to a small count (complementary suppression; relations
across levels are not checked here: the sites' own tables already protect them).

Metrics: ``tpr = tp/(tp+fn)``, ``fpr = fp/(fp+tn)``, ``selection_rate = (tp+fp)/total``,
``ppv``, ``npv``, ``accuracy``; ``auroc`` from the pooled binned curve when every site sent
its whole curve (the Mann-Whitney statistic of the bin index: pairs in one bin count 1/2),
else the sites' level AUROCs weighted by their pairs ``pos * (n - pos)`` (the AUROC over
within-site pairs); ``brier = sum brier_sum / n``;
``calibration_in_the_large = mean_p - prevalence`` (over the sites that released ``pos``).
Gaps follow fairlearn's ``between_groups`` definitions: the difference between the largest and
the smallest value over the levels where the metric is defined
(``demographic_parity_difference``: selection rate; ``equalized_odds_difference``: the larger of
the TPR and FPR differences, ``agg="worst_case"``); ``null`` with fewer than two such levels.
Unlike fairlearn, a level without positives has an undefined TPR (fairlearn counts it 0) and is
left out. Other tasks: per level ``n`` and ``value`` (the n-weighted mean over sites of the
headline metric) and the gap ``"<metric>_difference"``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from fedcare.errors import ValidationError

__all__ = ["combine_subgroups", "level_order", "number_label"]

_CONFUSION = ("tp", "fp", "tn", "fn")
_BAND = re.compile(r"^(-?[0-9.eE+]+)-(-?[0-9.eE+]+)$")


def number_label(value: float) -> str:
    """``value`` as a level label: whole numbers as ints (``50.0`` -> ``"50"``)."""
    v = float(value)
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


def _sort_key(label: str) -> tuple[int, float, int, str]:
    if label == "missing":
        return (2, 0.0, 0, label)
    try:
        return (0, float(label), 1, label)
    except ValueError:
        pass
    match = _BAND.match(label)
    try:
        if label.startswith("<"):
            return (0, float(label[1:]), 0, label)
        if label.startswith(">="):
            return (0, float(label[2:]), 1, label)
        if match:
            return (0, float(match.group(1)), 1, label)
    except ValueError:
        pass
    return (1, 0.0, 0, label)


def level_order(levels: Iterable[str]) -> list[str]:
    """Levels in reading order: bands and numbers by value, other labels by name, then
    ``"missing"``."""
    return sorted(set(levels), key=_sort_key)


def _ratio(num: int | None, den: int | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return num / den


def _binned_auroc(n: list[int], pos: list[int]) -> float | None:
    neg = [a - b for a, b in zip(n, pos, strict=True)]
    total_pos, total_neg = sum(pos), sum(neg)
    if total_pos == 0 or total_neg == 0:
        return None
    below, wins = 0, 0.0
    for p_k, n_k in zip(pos, neg, strict=True):
        wins += p_k * (below + 0.5 * n_k)
        below += n_k
    return wins / (total_pos * total_neg)


def _shown(count: int | None, min_cell: int) -> int | None:
    return None if count is None or 0 < count < min_cell else count


def _family(cells: list[Mapping[str, Any]], keys: tuple[str, ...]) -> list[Mapping[str, Any]]:
    return [c for c in cells if all(c.get(k) is not None for k in keys)]


def _curve_sites(cells: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [
        c
        for c in cells
        if isinstance(c.get("curve_n"), list)
        and isinstance(c.get("curve_pos"), list)
        and all(v is not None for v in [*c["curve_n"], *c["curve_pos"]])
    ]


def _binary_metrics(
    cells: list[Mapping[str, Any]], out: Mapping[str, Any]
) -> dict[str, float | None]:
    tp, fp, tn, fn = (out[k] for k in _CONFUSION)
    same = out["confusion_sites"] is not None  # tp/fn and fp/tn from the same sites
    full = None if None in (tp, fp, tn, fn) or not same else tp + fp + tn + fn
    with_pos = _family(cells, ("pos", "n", "sum_p"))
    n_pos = sum(int(c["n"]) for c in with_pos)
    prevalence = _ratio(out["pos"], n_pos) if with_pos else None
    mean_p = sum(float(c["sum_p"]) for c in with_pos) / n_pos if n_pos else None
    with_n = _family(cells, ("n", "brier_sum"))
    n_all = sum(int(c["n"]) for c in with_n)
    curve = _curve_sites(cells)
    return {
        "prevalence": prevalence,
        "selection_rate": None if full is None else _ratio(tp + fp, full),
        "tpr": None if tp is None or fn is None else _ratio(tp, tp + fn),
        "fpr": None if fp is None or tn is None else _ratio(fp, fp + tn),
        "ppv": None if full is None else _ratio(tp, tp + fp),
        "npv": None if full is None else _ratio(tn, tn + fn),
        "accuracy": None if full is None else _ratio(tp + tn, full),
        "auroc": _level_auroc(cells, curve),
        "brier": sum(float(c["brier_sum"]) for c in with_n) / n_all if n_all else None,
        "mean_p": mean_p,
        "calibration_in_the_large": (
            None if prevalence is None or mean_p is None else mean_p - prevalence
        ),
    }


def _level_auroc(cells: list[Mapping[str, Any]], curve: list[Mapping[str, Any]]) -> float | None:
    """Pooled binned AUROC when every site sent its curve, else the sites' AUROCs weighted by
    their pairs (``pos * (n - pos)``: the AUROC of the within-site pairs)."""
    if curve and len(curve) == len(_family(cells, ("n",))):
        return _binned_auroc(
            [sum(v) for v in zip(*[c["curve_n"] for c in curve], strict=True)],
            [sum(v) for v in zip(*[c["curve_pos"] for c in curve], strict=True)],
        )
    pairs = [
        (float(c["pos"]) * (float(c["n"]) - float(c["pos"])), float(c["auroc"]))
        for c in _family(cells, ("n", "pos", "auroc"))
    ]
    weight = sum(w for w, _ in pairs)
    return sum(w * a for w, a in pairs) / weight if weight > 0 else None


def _binary_level(cells: list[Mapping[str, Any]], suppressed: int, min_cell: int) -> dict[str, Any]:
    with_n = _family(cells, ("n",))
    n = sum(int(c["n"]) for c in with_n)
    head = {"sites": len(with_n), "sites_suppressed": suppressed}
    if not with_n or 0 < n < min_cell:
        return {"n": None, "suppressed": True, **head}
    positives, negatives = _family(cells, ("tp", "fn")), _family(cells, ("fp", "tn"))
    partial = [c for c in with_n if not _family([c], ("pos", *_CONFUSION)) or not _curve_sites([c])]
    out: dict[str, Any] = {"n": n, **head, "sites_partial": len(partial)}
    with_pos = _family(cells, ("pos",))
    exact: dict[str, int] = {"pos": sum(int(c["pos"]) for c in with_pos)} if with_pos else {}
    for family, keys in ((positives, ("tp", "fn")), (negatives, ("fp", "tn"))):
        if family:
            exact.update({key: sum(int(c[key]) for c in family) for key in keys})
    both = {id(c) for c in positives} == {id(c) for c in negatives}
    curve = _curve_sites(cells)
    for key in ("curve_n", "curve_pos"):
        sums = [sum(v) for v in zip(*[c[key] for c in curve], strict=True)] if curve else []
        exact.update({f"{key}/{i}": int(v) for i, v in enumerate(sums)})
    hidden = _withheld(exact, min_cell)
    for key in ("pos", *_CONFUSION):
        out[key] = None if key not in exact or key in hidden else exact[key]
    out["confusion_sites"] = len(positives) if both and positives else None
    out["positive_sites"], out["negative_sites"] = len(positives), len(negatives)
    for key in ("curve_n", "curve_pos"):
        names = [k for k in exact if k.startswith(f"{key}/")]
        out[key] = [None if k in hidden else exact[k] for k in names]
    out["metrics"] = _binary_metrics(cells, out)
    return out


def _withheld(exact: Mapping[str, int], min_cell: int) -> set[str]:
    """Summed cells to withhold: the small ones, then, in each partition whose total is
    known (the confusion matrix, ``tp + fn``, ``fp + tn``, the bins), the smallest released
    non-zero part while the withheld parts sum to ``0 < s < min_cell``."""
    hidden = {k for k, v in exact.items() if 0 < v < min_cell}
    bins = [[k for k in exact if k.startswith(f"{key}/")] for key in ("curve_n", "curve_pos")]
    parts = [list(_CONFUSION), ["tp", "fn"], ["fp", "tn"], ["tp", "fp"], ["tn", "fn"], *bins]
    partitions = [p for p in parts if p and all(k in exact for k in p)]
    changed = True
    while changed:
        changed = False
        for partition in partitions:
            rest = sum(exact[k] for k in partition if k in hidden)
            shown = [k for k in partition if k not in hidden and exact[k] > 0]
            if 0 < rest < min_cell and shown:
                hidden.add(min(shown, key=lambda k: exact[k]))
                changed = True
    return hidden


def _other_level(cells: list[Mapping[str, Any]], suppressed: int, min_cell: int) -> dict[str, Any]:
    with_n = _family(cells, ("n",))
    n = sum(int(c["n"]) for c in with_n)
    head = {"sites": len(with_n), "sites_suppressed": suppressed}
    if not with_n or 0 < n < min_cell:
        return {"n": None, "suppressed": True, **head}
    valued = _family(with_n, ("value",))
    weight = sum(int(c["n"]) for c in valued)
    value = sum(int(c["n"]) * float(c["value"]) for c in valued) / weight if weight else None
    return {"n": n, **head, "value": value, "value_sites": len(valued)}


def _range(values: Iterable[float | None]) -> float | None:
    defined = [v for v in values if v is not None and math.isfinite(v)]
    return max(defined) - min(defined) if len(defined) >= 2 else None


def _binary_gaps(levels: Mapping[str, Mapping[str, Any]]) -> dict[str, float | None]:
    metrics = [lv["metrics"] for lv in levels.values() if "metrics" in lv]

    def gap(name: str) -> float | None:
        return _range(m[name] for m in metrics)

    tpr, fpr = gap("tpr"), gap("fpr")
    return {
        "equalized_odds_difference": None if tpr is None or fpr is None else max(tpr, fpr),
        "true_positive_rate_difference": tpr,
        "false_positive_rate_difference": fpr,
        "demographic_parity_difference": gap("selection_rate"),
        "calibration_difference": gap("calibration_in_the_large"),
        "auroc_difference": gap("auroc"),
        "accuracy_difference": gap("accuracy"),
    }


def _site_tables(per_site: Mapping[str, Mapping[str, Any]]) -> tuple[str, dict[str, Any]]:
    tables = {s: t for s, t in per_site.items() if t and "unsupported" not in t}
    tasks = {str(t.get("task")) for t in tables.values()}
    if len(tasks) > 1:
        raise ValidationError(f"sites report subgroups for different tasks: {sorted(tasks)}")
    return (tasks.pop() if tasks else "binary"), tables


def combine_subgroups(
    per_site: Mapping[str, Mapping[str, Any]], *, min_cell: int
) -> dict[str, Any]:
    """Subgroup metrics and fairness gaps over all sites (shape in the module docstring).

    Parameters
    ----------
    per_site:
        Site -> its ``subgroups`` table (:func:`~fedcare.evaluation.subgroups.subgroup_summary`).
    min_cell:
        Combined counts with ``0 < c < min_cell`` are withheld again.

    Returns
    -------
    dict
        ``{"task", "min_cell", "sites": [...], "groups": {name: {...}}}`` plus ``"threshold"``
        and ``"bins"`` (binary) or ``"metric"`` (other tasks); ``"unsupported"`` sites are
        listed in ``"sites_unsupported"``.

    Raises
    ------
    ValidationError
        Sites that report different tasks, thresholds or curve bins (sites without curves,
        ``bins`` 0, combine with any).
    """
    task, tables = _site_tables(per_site)
    for key in ("threshold", "bins", "metric"):
        seen = {repr(t.get(key)) for t in tables.values() if key != "bins" or t.get(key)}
        if len(seen) > 1:
            raise ValidationError(f"sites report subgroups with different {key}: {sorted(seen)}")
    groups: dict[str, dict[str, Any]] = {}
    names = sorted({g for t in tables.values() for g in t.get("groups", {})})
    for name in names:
        site_groups = [t["groups"][name] for t in tables.values() if name in t.get("groups", {})]
        order = level_order(lv for g in site_groups for lv in g.get("levels", {}))
        levels: dict[str, Any] = {}
        for level in order:
            cells = [g["levels"][level] for g in site_groups if level in g.get("levels", {})]
            suppressed = sum(1 for c in cells if c.get("suppressed"))
            released = [c for c in cells if not c.get("suppressed")]
            levels[level] = (
                _binary_level(released, suppressed, min_cell)
                if task == "binary"
                else _other_level(released, suppressed, min_cell)
            )
        entry: dict[str, Any] = {
            "feature": site_groups[0].get("feature", name),
            "order": order,
            "levels": levels,
        }
        if task == "binary":
            entry["gaps"] = _binary_gaps(levels)
            entry["compared"] = [lv for lv in order if "metrics" in levels[lv]]
        else:
            metric = next(iter(tables.values())).get("metric", "value")
            entry["gaps"] = {
                f"{metric}_difference": _range(lv.get("value") for lv in levels.values())
            }
        groups[name] = entry
    first: Mapping[str, Any] = next(iter(tables.values()), {})
    out: dict[str, Any] = {"task": task, "min_cell": min_cell, "sites": sorted(tables)}
    out.update({k: first[k] for k in ("threshold", "metric") if k in first})
    if task == "binary":  # sites without curves send bins 0
        out["bins"] = max((int(t.get("bins") or 0) for t in tables.values()), default=0)
    out["sites_unsupported"] = sorted(set(per_site) - set(tables))
    out["groups"] = groups
    return out
