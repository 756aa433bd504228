"""The privacy part of a simulation's results: epsilon per round and membership attacks.

``results["privacy"]`` (when the study has ``privacy.dp``): the study's and each site's
epsilon after every round and at the end (:func:`fedcare.privacy.summary.privacy_summary`),
and ``budget``, the study's ``privacy.epsilon`` (None: none declared) that the simulation's
budget guard enforced (:mod:`fedcare.privacy.guard`);
each round of ``results["history"]`` then also has ``fit.epsilon``, which the HTML report's
rounds table shows.
``results["membership_inference"]`` (when ``privacy.membership_inference`` is true): both
attacks of :mod:`fedcare.evaluation.membership` against the federated model at every site,
run on that site's rows as the site itself would, reporting only AUROCs. The shadow models are
trained like the target's local training over all rounds (``epochs x rounds``), without DP:
the attacker mimics the task, not the defence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from fedcare.data.base import Dataset, SiteData
from fedcare.evaluation.membership import membership_audit
from fedcare.models.registry import build_model
from fedcare.models.task_config import spec_from_config
from fedcare.privacy.summary import privacy_summary
from fedcare.records.arrays import ArrayRecord
from fedcare.records.study import StudyConfig
from fedcare.site.preprocess import Preprocessor

__all__ = ["membership_results", "privacy_results"]


def privacy_results(
    study: StudyConfig,
    sites: Sequence[SiteData],
    params: ArrayRecord,
    arrays: dict[str, ArrayRecord],
    history: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """The ``privacy`` and ``membership_inference`` entries the study asks for ({} if none)."""
    out: dict[str, Any] = {}
    dp = study.privacy.dp
    if dp is not None:
        summary = privacy_summary(history, delta=dp.delta, accountant=dp.accountant)
        out["privacy"] = {**summary, "budget": study.privacy.epsilon}
        out["history"] = _with_round_epsilon(history, summary["per_round"])
    if study.privacy.membership_inference:
        out["membership_inference"] = membership_results(study, sites, params, arrays)
    return out


def _with_round_epsilon(
    history: Sequence[dict[str, Any]], per_round: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A copy of ``history`` whose fit entries carry ``epsilon`` spent so far (RDP): the
    study's under central DP, else the largest site's, so the report's rounds table shows it."""
    out = []
    for rec, eps in zip(history, per_round, strict=True):
        value = eps["study_epsilon"]
        if value is None:
            value = max(eps["site_epsilon"].values(), default=None)
        out.append({**rec, "fit": {**rec.get("fit", {}), "epsilon": value}})
    return out


def membership_results(
    study: StudyConfig,
    sites: Sequence[SiteData],
    params: ArrayRecord,
    arrays: dict[str, ArrayRecord],
    *,
    num_shadows: int = 4,
) -> dict[str, Any]:
    """Attack AUROCs per site and their means over sites (binary tasks)."""
    adapter = build_model(study.model)
    base = spec_from_config(study.training.as_config())
    spec = replace(
        base,
        epochs=base.epochs * study.rounds,
        max_steps=None if base.max_steps is None else base.max_steps * study.rounds,
    )
    init = adapter.init_params(sites[0].train.input_shape, np.random.default_rng([study.seed, 0]))
    per_site: dict[str, dict[str, float]] = {}
    for i, site in enumerate(sites):
        prep = Preprocessor.for_task(study.plan()["preprocessing"], arrays, site.train)
        train, test = prep.apply(site.train), prep.apply(site.test)

        def shadow_train(rows: Dataset, rng: np.random.Generator) -> ArrayRecord:
            return adapter.fit(init, rows, spec, rng).params

        rng = np.random.default_rng([study.seed, 7, i])
        result = membership_audit(
            adapter, params, train, test, shadow_train, rng, num_shadows=num_shadows
        )
        per_site[site.site_id] = result.to_dict()
    keys = ("loss_threshold_auroc", "shadow_auroc")
    means = {k: float(np.nanmean([m[k] for m in per_site.values()])) for k in keys}
    return {"per_site": per_site, **means}
