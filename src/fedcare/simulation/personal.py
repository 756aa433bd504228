"""Simulation's personalization block: global vs personal vs local model at each site.

The personal models live in the simulated sites' runtimes (keyed by the federated run's study
id), so the final model is evaluated once more under that id with the study's plan, as a
deployed coordinator's final evaluation is; every other evaluation of the simulation (the
baselines, the cross-site matrix, a public hold-out set) runs without personalization
(:func:`without_personalization`): a hold-out "site" trains on its test rows, and fine-tuning
there would score a model on the rows it was tuned on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedcare.evaluation.personal import personalization_summary
from fedcare.grid import Grid
from fedcare.records.arrays import ArrayRecord
from fedcare.records.personalization_spec import PersonalizationSpec
from fedcare.records.study import StudyConfig
from fedcare.strategy.driver import round_config
from fedcare.strategy.loop import evaluate_on_sites

__all__ = ["personalization_results", "without_personalization"]


def without_personalization(study: StudyConfig) -> StudyConfig:
    """``study`` with personalization ``none`` (itself when it has none)."""
    if not study.personalization.active:
        return study
    return study.model_copy(update={"personalization": PersonalizationSpec()})


def personalization_results(
    grid: Grid,
    study: StudyConfig,
    params: ArrayRecord,
    arrays: Mapping[str, ArrayRecord],
    evaluated: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """``{"personalization": ...}`` (:func:`fedcare.evaluation.personal.personalization_summary`
    with the local baselines when trained), or ``{}`` when the study personalizes nothing.

    ``params`` and ``arrays`` are the federated model's (trained under the study id
    ``<name>/federated``, where the sites keep their personal models)."""
    if not study.personalization.active:
        return {}
    cfg = round_config(study, f"{study.name}/federated", arrays)
    per_site, failures = evaluate_on_sites(grid, cfg, study.rounds, params, arrays=arrays)
    local: dict[str, Any] | None = None
    if study.baselines.local:
        local = {}
        for label, result in evaluated.items():
            site = label.removeprefix("local-")
            if label.startswith("local-") and site in result.get("per_site", {}):
                local[site] = result["per_site"][site]
    block = personalization_summary(study.personalization.method, per_site, local=local)
    return {"personalization": {**block, "failed_sites": failures}}
