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
    "entry_measures",
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
    the random-effects meta-analysis across held-out sites (the combined block's ``meta``)."""
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
        out[kind] = {
            "measures": measures,
            "overall": overall,
            "meta": dict(meta) if isinstance(meta, Mapping) else {},
        }
    return out
