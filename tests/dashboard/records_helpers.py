"""Real records in a coordinator store for the records tests: registered models (with a
parent), an analytics job with its result, privacy ledger rows and a site's refusal."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np

from fedcare.analytics.spec import AnalyticsSpec
from fedcare.coordinator.analytics_jobs import RESULT_KIND, analytics_study_config
from fedcare.coordinator.store import CoordinatorStore
from fedcare.coordinator.store_ledger import PrivacySpend
from fedcare.evaluation.model_card import build_model_card
from fedcare.privacy.accounting.analysis import DpEvent
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import ReplyError
from fedcare.transport.codec import encode_arrays

LEAD = "study-lead-person"
HISTORY = [
    {
        "round": 1,
        "fit": {
            "sampled_sites": ["hungary", "va"],
            "failed_sites": {"va": "timeout: too slow"},
            "site_info": {
                "hungary": {"dataset_fingerprint": "sha256:" + "1" * 64, "num_rows": "12"}
            },
        },
    }
]
EVENT = DpEvent(1.1).to_dict()


def sites(store: CoordinatorStore) -> None:
    """Register the sites ``hungary`` (describing its dataset) and ``va``."""
    known = {s.id for s in store.list_sites()}
    for site in ("hungary", "va"):
        if site not in known:
            store.register_site(site, f"serial-{site}")
    schema = {
        "input_shape": [3],
        "dtype": "float64",
        "columns": [{"name": n, "unit": None} for n in ("age", "sex", "chol")],
        "digest": "sha256:" + "2" * 64,
    }
    described = {"input_shape": [3], "schema": schema, "task": "binary", "num_train": 200,
                 "num_test": 50}  # fmt: skip
    store.touch_site("hungary", version="9.9", datasets={"heart-disease": described})


def register(
    store: CoordinatorStore, name: str, owner: str | None, parent: str | None = None
) -> tuple[str, str]:
    """A completed study of ``owner`` with its registered model; ``(study id, version)``."""
    sites(store)
    study_id = store.create_study(name, {"name": name, "rounds": 1}, 1, owner=owner)
    store.set_study_status(study_id, "running")
    params = ArrayRecord({"w": np.arange(3.0) + len(name), "layer/b": np.ones(1)})
    card = build_model_card(
        study={"name": name, "privacy": "open"},
        study_id=study_id,
        plan={},
        history=HISTORY,
        final=None,
        params=params,
        created=datetime.now(timezone.utc),
        fedcare_version="test",
        parent=parent,
    )
    model = store.register_model(
        study_id,
        1,
        params=encode_arrays(params),
        model_hash=card["model"]["hash"],
        card=card,
        parent=parent,
    )
    store.set_study_status(study_id, "completed")
    return study_id, model.version


def analytics_job(store: CoordinatorStore, owner: str | None, result: bool = True) -> str:
    """An analytics job of ``owner`` (with its stored result when ``result``)."""
    spec = AnalyticsSpec.from_dict(
        {"name": "ages", "dataset": "heart-disease", "queries": [{"type": "count"}]}
    )
    job = store.create_study("ages", analytics_study_config(spec), 0, owner=owner)
    if result:
        store.set_study_status(job, "running")
        empty = encode_arrays(ArrayRecord())
        answer: dict[str, Any] = {"name": "ages", "queries": [{"type": "count", "count": 42.0}]}
        store.record_round(
            job, 1, params=empty, state=empty, record={"kind": RESULT_KIND, "result": answer},
            duration_s=0.1,
        )  # fmt: skip
    return job


def private_rounds(store: CoordinatorStore, owner: str | None, name: str) -> str:
    """A running study whose two rounds spent privacy budget at hungary (and va in round 1)."""
    sites(store)
    study_id = store.create_study(name, {"name": name, "rounds": 3}, 1, owner=owner)
    store.set_study_status(study_id, "running")
    for rnd, spenders in ((1, ("hungary", "va")), (2, ("hungary",))):
        store.record_round(
            study_id,
            rnd,
            params=b"p%d" % rnd,
            state=b"s%d" % rnd,
            record={"round": rnd, "fit": {}},
            duration_s=0.1,
            privacy=[PrivacySpend(s, "heart-disease", (EVENT,)) for s in spenders],
        )
    return study_id


def refusal(store: CoordinatorStore, study_id: str, site: str, message: str) -> None:
    """``site`` refuses round 1 of the running study ``study_id`` (a policy refusal)."""
    (task,) = store.create_tasks(study_id, 1, 0, [(site, "fit", None, None)])
    delivered = store.next_task_for(site)
    assert delivered is not None and delivered.id == task
    store.store_reply(task, site, error=ReplyError("policy-refused", message))
