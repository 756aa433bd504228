"""A study's results (the same shape ``fedcare simulate`` writes) from the coordinator's state."""

from __future__ import annotations

from typing import Any

from fedcare.coordinator.analytics_jobs import analytics_job_result
from fedcare.coordinator.jsonsafe import to_json
from fedcare.coordinator.privacy_guard import ledger_summary
from fedcare.coordinator.store import CoordinatorStore
from fedcare.evaluation.analytics_report import render_analytics_report
from fedcare.evaluation.personal import personalization_summary
from fedcare.evaluation.report import render_report
from fedcare.evaluation.validation import combine_validation
from fedcare.records.study import StudyConfig
from fedcare.records.tasks import METRICS_BY_TASK

__all__ = ["study_report", "study_results"]


def study_results(store: CoordinatorStore, study_id: str) -> dict[str, Any]:
    """The results dict of a study run by the coordinator (no baselines: sites train once).

    With the registered model's card under ``model_card`` once the study completed.
    """
    from fedcare._version import __version__

    info = store.get_study(study_id)
    study = StudyConfig.from_dict(info.config, source=f"study {study_id}")
    rounds = [r for r in store.list_rounds(study_id) if r.round > 0]
    history = [dict(r.record) for r in rounds]
    evaluated = [h["evaluate"] for h in history if h.get("evaluate")]
    sites = sorted({s for h in evaluated for s in h.get("per_site", {})})
    described = {s.id: (s.datasets or {}).get(study.dataset.name, {}) for s in store.list_sites()}
    task = next((d.get("task") for d in described.values() if d.get("task")), "binary")
    models = store.list_models(study_id)
    card = {"model_card": models[-1].card} if models else {}
    final = evaluated[-1] if evaluated else {"per_site": {}, "weighted": {}, "unweighted": {}}
    validation = _validation(store, study, final, models[-1].version if models else None)
    return {
        "fedcare_version": __version__,
        "study": {
            **study.model_dump(mode="json"),
            "strategy": study.strategy.name,
            "dataset": study.dataset.name,
            "id": study_id,
            "status": info.status,
            "reason": info.reason,
            "deployment": "networked",
        },
        "task": task,
        "metrics": list(METRICS_BY_TASK.get(task, METRICS_BY_TASK["binary"])),
        "sites": sites,
        "site_sizes": {
            s: {
                "train": described.get(s, {}).get("num_train"),
                "test": described.get(s, {}).get("num_test"),
            }
            for s in sites
        },
        "history": history,
        "final": {k: v for k, v in final.items() if k != "validation"},
        **({"validation": {"federated": validation}} if validation else {}),
        **_personalization(study, final),
        "timing": {"total_s": sum(r.duration_s for r in rounds)},
        # epsilon per site (mirror ledger) and per study: fedcare.coordinator.privacy_guard
        "privacy_ledger": ledger_summary(store.site_epsilon(study_id), study, history),
        **card,
    }


def _personalization(study: StudyConfig, final: dict[str, Any]) -> dict[str, Any]:
    """Global vs personal model on each site's test rows (the last round's evaluation)."""
    method = study.personalization.method
    if method == "none" or not final.get("per_site"):
        return {}
    return {"personalization": personalization_summary(method, final["per_site"])}


def _validation(
    store: CoordinatorStore, study: StudyConfig, final: dict[str, Any], version: str | None
) -> dict[str, Any]:
    """The final model's clinical validation from the summaries its sites sent (the last
    round's evaluation), with coefficient intervals once the model is registered."""
    summaries = final.get("validation")
    if not isinstance(summaries, dict) or not summaries:
        return {}
    params = store.model_arrays(version) if version is not None else None
    names: list[str] = []
    for site in store.list_sites():
        schema = ((site.datasets or {}).get(study.dataset.name) or {}).get("schema") or {}
        names = [str(c.get("name")) for c in schema.get("columns") or [] if isinstance(c, dict)]
        if names:
            break
    return combine_validation(
        summaries,
        study.validation.model_dump(mode="json"),
        params=params,
        model=study.model,
        feature_names=names,
    )


def study_report(
    store: CoordinatorStore, study_id: str, *, html: bool = True
) -> tuple[dict[str, Any], str]:
    """``(results, report HTML)`` of a study or an analytics job, as ``fedcare study report``
    writes them to results.json and report.html (the HTTP API serves them); the results as
    strict JSON (NaN as null); the HTML is ``""`` unless ``html``.

    Raises
    ------
    ConflictError
        For an analytics job without a result yet.
    """
    analytics = analytics_job_result(store, study_id)
    if analytics is not None:
        page = render_analytics_report(analytics) if html else ""
        return to_json(analytics, "the analytics result"), page
    results = study_results(store, study_id)
    return to_json(results, "the study's results"), render_report(results) if html else ""
