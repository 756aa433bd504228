"""Leave-one-site-out external validation in simulation (``validation: leave_one_site_out``).

For each site ``s`` of the study, after the normal run:

* **federated**: the study's federated model trained on the other ``N - 1`` sites (same model,
  strategy, aggregation, privacy mode, rounds and seed, through :func:`train_on_grid` and the
  one round loop); ``s`` takes no part in it, not even in round 0's preprocessing statistics;
* **pooled**: one model trained on the ``N - 1`` sites' training rows put together (like the
  pooled baseline, only a simulation on public data may do this);
* **local**: ``s``'s own model, trained on its training rows alone (the local baseline when the
  study trained it, else trained here): internal validation, the comparison a hospital makes.

Each model is evaluated on ``s``'s test rows by the site code, as a coordinator's final
evaluation is, so ``s`` returns its clinical validation summary (site summary,
:mod:`fedcare.evaluation.validation`). ``results["leave_one_site_out"]``::

    {"sites": {s: {"federated": ENTRY, "pooled": ENTRY, "local": ENTRY}},
     "summary": {"federated": MODEL, "pooled": MODEL, "local": MODEL},
     "seconds": float}

    ENTRY = SITE SUMMARY + "roc"/"pr" (when the site sent a summary)
            + {"evaluation": {metric: value} (the study's metrics, as in results["final"]),
               "trained_on": [site ids], "failed": reason (only when the evaluation failed)}
    MODEL = {"measures": {name: {"mean", "min", "max", "k"}},   # over held-out sites
             "overall": OVERALL,   # clinical.combine_sites of the held-out site summaries
             "meta": {"auroc": META, "calibration_slope": META, ...}}

Measures are the site summary's metric values (falling back to the study's metrics of the
evaluation) and, from its calibration block, ``calibration_slope``, ``calibration_intercept``,
``ece`` and ``brier``; undefined values are left out (``k`` counts the sites used).

``OVERALL`` pools the held-out sites' counts, each site's test rows scored by the model that
did not see them (the pooled reading of leave-one-site-out). ``META`` is a DerSimonian–Laird
random-effects meta-analysis across held-out sites: ``OVERALL["meta"]`` when the clinical
module computes it, else :func:`dersimonian_laird` here (AUROC on the logit scale with Hanley &
McNeil's standard error from the site's class counts; the calibration slope with the site's
``slope_se``; ``se``, ``tau2`` and ``q`` stay on the analysis scale).

Privacy: every leave-one-site-out model is one more model trained on the sites' data. Under
differential privacy each would spend privacy budget that the study's ``privacy.epsilon`` does
not account for, so :func:`check_leave_one_site_out` refuses mode ``private`` and any
``privacy.dp``. Site middleware (``mods``, e.g. simulated attacks) applies to the normal run only.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import norm, t

from fedcare.data.base import FederatedDataset, SiteData
from fedcare.errors import ConfigError
from fedcare.evaluation.clinical import combine_sites, site_curves
from fedcare.records.study import StudyConfig
from fedcare.simulation.training import (
    Progress,
    TrainedModel,
    evaluate_model,
    grid_for,
    train_on_grid,
)

__all__ = [
    "LOSO_MODELS",
    "check_leave_one_site_out",
    "dersimonian_laird",
    "entry_measures",
    "hanley_mcneil_se",
    "leave_one_site_out",
    "loso_summary",
]

#: The models validated on each held-out site.
LOSO_MODELS = ("federated", "pooled", "local")

_CALIBRATION = {
    "calibration_slope": "slope",
    "calibration_intercept": "intercept",
    "ece": "ece",
    "brier": "brier",
}


def check_leave_one_site_out(study: StudyConfig, n_sites: int | None = None) -> None:
    """Refuse a leave-one-site-out study that cannot run (nothing when it does not ask).

    Raises
    ------
    ConfigError
        Mode ``private`` or any ``privacy.dp`` (the extra models' privacy spend is not
        accounted); with ``n_sites`` given, fewer than 2 sites or ``N - 1`` sites fewer than the
        study's ``min_sites``.
    """
    if not study.validation.leave_one_site_out:
        return
    if study.privacy.mode == "private" or study.privacy.dp is not None:
        raise ConfigError(
            "validation.leave_one_site_out is refused for privacy mode "
            f"{study.privacy.mode!r}{' with privacy.dp' if study.privacy.dp else ''}: it trains "
            "one more model per site on the same sites' data, and the privacy budget those "
            "models spend is not accounted in the study's epsilon; run it with mode open or "
            "secure, or validate on a held-out site in a study of its own"
        )
    if n_sites is None:
        return
    if n_sites < 2:
        raise ConfigError(
            f"validation.leave_one_site_out needs at least 2 sites, the dataset has {n_sites}"
        )
    if n_sites - 1 < study.min_sites:
        raise ConfigError(
            f"validation.leave_one_site_out trains on {n_sites - 1} of the {n_sites} sites, "
            f"fewer than the study's min_sites ({study.min_sites}); lower min_sites"
        )


def leave_one_site_out(
    study: StudyConfig,
    ds: FederatedDataset,
    *,
    trained: Mapping[str, TrainedModel] | None = None,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], dict[str, TrainedModel]]:
    """Validate ``study`` on each site of ``ds`` held out (see the module docstring).

    ``trained`` holds the normal run's models by label; a ``local-<site>`` model there is
    reused. Returns ``(results["leave_one_site_out"], the models trained here by label)``:
    ``loso-<site>`` (federated), ``loso-<site>-pooled`` and ``local-<site>`` for local models
    not in ``trained``.

    Raises
    ------
    ConfigError
        See :func:`check_leave_one_site_out`.
    """
    check_leave_one_site_out(study, len(ds.sites))
    start = time.perf_counter()
    trained = trained or {}
    names = ds.feature_names
    shape = ds.sites[0].train.input_shape
    new: dict[str, TrainedModel] = {}
    sites: dict[str, dict[str, Any]] = {}
    summaries: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in LOSO_MODELS}
    for held in ds.sites:
        others = tuple(s for s in ds.sites if s.site_id != held.site_id)
        others_ids = [s.site_id for s in others]
        pooled = dataclasses.replace(ds, sites=others).pooled()
        fed = train_on_grid(
            grid_for(list(others), feature_names=names),
            study,
            shape,
            label=f"loso-{held.site_id}",
            progress=progress,
        )
        pool = train_on_grid(
            grid_for([pooled], feature_names=names),
            study,
            shape,
            label=f"loso-{held.site_id}-pooled",
            baseline=True,
            progress=progress,
        )
        local = trained.get(f"local-{held.site_id}")
        if local is None:
            local = train_on_grid(
                grid_for([held], feature_names=names),
                study,
                shape,
                label=f"local-{held.site_id}",
                baseline=True,
                progress=progress,
            )
            new[local.label] = local
        new[fed.label], new[pool.label] = fed, pool
        models = {"federated": (fed, others_ids), "pooled": (pool, others_ids)}
        models["local"] = (local, [held.site_id])
        sites[held.site_id] = {}
        for kind, (model, on) in models.items():
            entry, summary = _held_out_entry(study, held, model, on, names)
            sites[held.site_id][kind] = entry
            if summary is not None:
                summaries[kind][held.site_id] = summary
    spec = study.validation.model_dump(mode="json")
    out = {
        "sites": sites,
        "summary": loso_summary(sites, summaries, spec),
        "seconds": time.perf_counter() - start,
    }
    return out, new


def _held_out_entry(
    study: StudyConfig,
    held: SiteData,
    model: TrainedModel,
    trained_on: Sequence[str],
    feature_names: Sequence[str],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``model`` evaluated on ``held``'s test rows by the site code (its final evaluation):
    the held-out entry and the site summary ``held`` returned (``None`` without one)."""
    summaries: dict[str, dict[str, Any]] = {}
    grid = grid_for([held], feature_names=feature_names)
    evaluated = evaluate_model(grid, study, model, summaries)
    summary = summaries.get(held.site_id)
    entry: dict[str, Any] = {**summary, **site_curves(summary)} if summary else {}
    entry["evaluation"] = dict(evaluated["per_site"].get(held.site_id, {}))
    entry["trained_on"] = list(trained_on)
    failed = evaluated["failed_sites"].get(held.site_id)
    if failed is not None:
        entry["failed"] = str(failed)
    return entry, summary


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def entry_measures(entry: Mapping[str, Any]) -> dict[str, float]:
    """The defined measures of one held-out entry (see the module docstring)."""
    out: dict[str, float] = {}
    for name, value in (entry.get("evaluation") or {}).items():
        if name != "n" and (v := _finite(value)) is not None:
            out[name] = v
    metrics = entry.get("metrics")
    if isinstance(metrics, Mapping):
        for name, block in metrics.items():
            if isinstance(block, Mapping) and (v := _finite(block.get("value"))) is not None:
                out[name] = v
    calibration = entry.get("calibration")
    if isinstance(calibration, Mapping):
        for name, key in _CALIBRATION.items():
            if (v := _finite(calibration.get(key))) is not None:
                out[name] = v
    return out


def loso_summary(
    sites: Mapping[str, Mapping[str, Mapping[str, Any]]],
    summaries: Mapping[str, Mapping[str, Mapping[str, Any]]],
    spec: Mapping[str, Any],
) -> dict[str, Any]:
    """Per model (``LOSO_MODELS``): each measure's mean, min and max over the held-out sites
    (``sites``, the held-out entries), the held-out site summaries (``summaries``, by model
    then site) combined by :func:`fedcare.evaluation.clinical.combine_sites` (``overall``:
    pooled counts of the held-out test rows, each scored by the model that did not see it) and
    the random-effects meta-analysis across held-out sites: the combined block's ``meta`` when
    the clinical module computes one, else :func:`dersimonian_laird` here (AUROC on the logit
    scale with Hanley–McNeil standard errors, calibration slope with the sites' ``slope_se``)."""
    confidence = float(spec.get("confidence", 0.95))
    out: dict[str, Any] = {}
    for kind in LOSO_MODELS:
        entries = [site[kind] for site in sites.values() if kind in site]
        values: dict[str, list[float]] = {}
        for entry in entries:
            for name, v in entry_measures(entry).items():
                values.setdefault(name, []).append(v)
        measures = {
            name: {"mean": float(np.mean(vs)), "min": min(vs), "max": max(vs), "k": len(vs)}
            for name, vs in values.items()
        }
        held = dict(sorted(summaries.get(kind, {}).items()))
        overall = combine_sites(held, spec) if held else {}
        meta = overall.get("meta")
        if not isinstance(meta, Mapping):
            meta = {
                "auroc": _meta_auroc(entries, confidence),
                "calibration_slope": _meta_slope(entries, confidence),
            }
        out[kind] = {"measures": measures, "overall": overall, "meta": dict(meta)}
    return out


def _meta_auroc(entries: Sequence[Mapping[str, Any]], confidence: float) -> dict[str, Any]:
    """AUROC pooled on the logit scale, Hanley–McNeil standard errors (delta method); an AUROC
    of 0 or 1 enters as ``(A m n + 1/2) / (m n + 1)`` (``m``, ``n`` the class counts), as the
    clinical module's meta-analysis does."""
    logits, variances = [], []
    for entry in entries:
        auc = entry_measures(entry).get("auroc")
        counts = _class_counts(entry)
        if auc is None or counts is None:
            continue
        if auc in (0.0, 1.0):  # a perfect (or inverted) site: moved off the boundary
            auc = (auc * counts[0] * counts[1] + 0.5) / (counts[0] * counts[1] + 1.0)
        se = hanley_mcneil_se(auc, *counts)
        if se is None:
            continue
        logits.append(math.log(auc / (1.0 - auc)))
        variances.append((se / (auc * (1.0 - auc))) ** 2)
    result = dersimonian_laird(logits, variances, confidence)
    for key in ("fixed", "random", "lo", "hi", "pi_lo", "pi_hi"):
        value = result[key]
        if value is not None:
            result[key] = 1.0 / (1.0 + math.exp(-float(value)))
    return {**result, "scale": "logit", "se_method": "hanley-mcneil"}


def _meta_slope(entries: Sequence[Mapping[str, Any]], confidence: float) -> dict[str, Any]:
    """Calibration slope pooled with the sites' ``slope_se``."""
    values, variances = [], []
    for entry in entries:
        calibration = entry.get("calibration")
        if not isinstance(calibration, Mapping):
            continue
        slope, se = _finite(calibration.get("slope")), _finite(calibration.get("slope_se"))
        if slope is not None and se is not None and se > 0:
            values.append(slope)
            variances.append(se * se)
    return {**dersimonian_laird(values, variances, confidence), "scale": "identity"}


def _class_counts(entry: Mapping[str, Any]) -> tuple[int, int] | None:
    """``(positives, negatives)`` of a binary site summary."""
    confusion = entry.get("confusion")
    if isinstance(confusion, Mapping) and all(k in confusion for k in ("tp", "fp", "tn", "fn")):
        pos = int(confusion["tp"]) + int(confusion["fn"])
        return pos, int(confusion["tn"]) + int(confusion["fp"])
    n, prevalence = entry.get("n"), _finite(entry.get("prevalence"))
    if isinstance(n, int) and prevalence is not None:
        pos = round(prevalence * n)
        return pos, n - pos
    return None


def hanley_mcneil_se(auc: float, n_pos: int, n_neg: int) -> float | None:
    """Hanley & McNeil's (1982) standard error of an AUROC (``None`` without both classes)."""
    if n_pos < 1 or n_neg < 1:
        return None
    q1, q2 = auc / (2.0 - auc), 2.0 * auc * auc / (1.0 + auc)
    var = (auc * (1.0 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (
        n_pos * n_neg
    )
    return math.sqrt(var) if var > 0 else None


def dersimonian_laird(
    values: Sequence[float], variances: Sequence[float], confidence: float = 0.95
) -> dict[str, Any]:
    """DerSimonian–Laird random-effects pooling of estimates ``values`` with ``variances``.

    Returns ``{"fixed", "random", "se", "lo", "hi", "tau2", "i2", "q", "pi_lo", "pi_hi", "k"}``:
    the inverse-variance mean, the random-effects mean (weights ``1 / (v + tau²)``) with its
    standard error and normal interval, the between-site variance
    ``tau² = max(0, (Q - (k - 1)) / (sum w - sum w² / sum w))``, ``I² = max(0, (Q - (k-1)) / Q)``,
    Cochran's ``Q`` and the prediction interval for a new site
    ``mu -/+ t_{k-2} sqrt(tau² + se²)`` (Higgins et al. 2009; ``k >= 3``). Pairs with a
    non-finite value or a non-positive variance are left out; ``None`` where undefined.
    """
    keep = [
        (float(y), float(v))
        for y, v in zip(values, variances, strict=True)
        if math.isfinite(y) and math.isfinite(v) and v > 0
    ]
    k = len(keep)
    keys = ("fixed", "random", "se", "lo", "hi", "tau2", "i2", "q", "pi_lo", "pi_hi")
    out: dict[str, Any] = {**dict.fromkeys(keys), "k": k}
    if k == 0:
        return out
    y, v = np.array([p[0] for p in keep]), np.array([p[1] for p in keep])
    z = float(norm.ppf(0.5 + confidence / 2.0))
    w = 1.0 / v
    fixed = float(np.sum(w * y) / np.sum(w))
    q = float(np.sum(w * (y - fixed) ** 2))
    c = float(np.sum(w) - np.sum(w * w) / np.sum(w))
    tau2 = max(0.0, (q - (k - 1)) / c) if k > 1 and c > 0 else 0.0
    ws = 1.0 / (v + tau2)
    mu = float(np.sum(ws * y) / np.sum(ws))
    se = math.sqrt(1.0 / float(np.sum(ws)))
    out.update(fixed=fixed, random=mu, se=se, lo=mu - z * se, hi=mu + z * se)
    if k > 1:
        out.update(tau2=tau2, q=q, i2=max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0)
    if k >= 3:
        half = float(t.ppf(0.5 + confidence / 2.0, k - 2)) * math.sqrt(tau2 + se * se)
        out.update(pi_lo=mu - half, pi_hi=mu + half)
    return out
