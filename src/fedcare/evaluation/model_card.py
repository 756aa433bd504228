"""Model cards: what produced a model, as strict JSON (pure functions, no I/O).

A card lists the study, the plan hash, the study config, the privacy mode and the ε spent per
site, the participating sites with the dataset fingerprints, row counts, approvals and plan
hashes their replies carried, the final metrics per site, the parent version, the fedcare
version, the model hash and the time it was made, and a TRIPOD+AI block (``tripod``: the
reporting items fedcare fills in and those the authors must write,
:mod:`fedcare.evaluation.tripod`).

*Participating* means: the site's fit reply was aggregated in at least one round, i.e. it is in
the round's ``fit["site_info"]`` (the loop notes every valid reply that reached aggregation)
and not in that round's ``rejected_sites`` measurement. A site that only failed, refused or was
rejected is listed under ``not_participating`` with its last reason, never among ``sites``. If a
site's fingerprint changed mid-study, every fingerprint it reported is listed (in order).

The model hash is SHA-256 over a canonical encoding of the parameters (name, dtype,
shape and little-endian bytes of each array, in record order), so the same parameters give
the same hash on every platform, independent of the transport codec.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from fedcare.errors import DataError
from fedcare.evaluation.tripod import tripod_section
from fedcare.records.arrays import ArrayRecord
from fedcare.records.invalid_rows import InvalidRows
from fedcare.records.pages import release_all

__all__ = [
    "CARD_VERSION",
    "OPEN_MODE_NOTE",
    "build_model_card",
    "canonical_json",
    "card_hash",
    "model_hash",
    "participants",
    "plan_hash",
]

CARD_VERSION = 1
OPEN_MODE_NOTE = (
    "privacy mode 'open': no differential privacy was applied, so no ε was spent; 0.0 here "
    "records the absence of DP accounting, not a privacy guarantee"
)
DP_NOTE = (
    "epsilon_spent: central DP (user-level: a whole site's data), composed over every round; "
    "local_epsilon_spent: the site's own DP-SGD (sample-level: one patient row), composed over "
    "the rounds it was aggregated in; null where that kind of DP did not run"
)
NO_ACCOUNTING_NOTE = "this fedcare version does not account ε for mode {mode!r}; values are null"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def model_hash(params: Mapping[str, np.ndarray]) -> str:
    """``"sha256:<hex>"`` over the canonical encoding of ``params`` (see module docstring)."""
    h = hashlib.sha256(b"fedcare-model/1")
    for name, value in params.items():
        arr = np.ascontiguousarray(value)
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        for part in (name.encode(), arr.dtype.str.encode(), json.dumps(arr.shape).encode()):
            h.update(len(part).to_bytes(8, "little") + part)
        h.update(arr.nbytes.to_bytes(8, "little"))
        if arr.size:  # the bytes in place: a large model is hashed, not copied
            h.update(memoryview(arr.reshape(-1)).cast("B"))  # type: ignore[arg-type]
            release_all(arr)  # a mapped checkpoint's pages leave the process once hashed
    return "sha256:" + h.hexdigest()


def _strict(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    """Sorted-key, compact, strict JSON (non-finite floats become null)."""
    return json.dumps(_strict(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def plan_hash(plan: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of the canonical JSON of a training plan."""
    return _digest(canonical_json(plan).encode())


def card_hash(card: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of the card's canonical JSON (what the audit log records)."""
    return _digest(canonical_json(card).encode())


def _add(values: list[str], value: str | None) -> None:
    if value and value not in values:
        values.append(value)


def _rejected(fit: Mapping[str, Any]) -> set[str]:
    rejected = fit.get("rejected_sites") or []
    return {str(s) for s in rejected}


def participants(
    history: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """``(sites, not_participating)`` from round records (``RoundRecord.to_dict()``).

    ``sites[site]`` has ``rounds``, ``dataset_fingerprints``, ``num_rows``, ``approval_ids``
    and ``plan_hashes`` (distinct values in order of first use), and ``invalid_rows`` (the
    last counts of rows it left out) when the study skips invalid rows; ``not_participating[site]``
    is the last reason a sampled site's reply was not aggregated.
    """
    sites: dict[str, dict[str, Any]] = {}
    reasons: dict[str, str] = {}
    for record in history:
        fit = record.get("fit") or {}
        rejected = _rejected(fit)
        reasons_now = {**dict(fit.get("failed_sites") or {}), **(fit.get("rejected_reasons") or {})}
        for site, info in sorted((fit.get("site_info") or {}).items()):
            if site in rejected:
                continue
            entry = sites.setdefault(
                site,
                {
                    "rounds": [],
                    "dataset_fingerprints": [],
                    "num_rows": [],
                    "approval_ids": [],
                    "plan_hashes": [],
                },
            )
            entry["rounds"].append(int(record.get("round", 0)))
            _add(entry["dataset_fingerprints"], info.get("dataset_fingerprint"))
            _add(entry["num_rows"], info.get("num_rows"))
            _add(entry["approval_ids"], info.get("approval_id"))
            _add(entry["plan_hashes"], info.get("plan_hash"))
            if info.get("invalid_rows"):  # the study's skip_invalid_rows: the last counts
                entry["invalid_rows"] = _invalid_rows(info["invalid_rows"])
        for site in fit.get("sampled_sites") or []:
            if site in reasons_now or site in rejected:
                reasons[site] = str(reasons_now.get(site, "rejected by aggregation"))
    entries = {s: {**e, "num_rows": [int(n) for n in e["num_rows"]]} for s, e in sites.items()}
    not_participating = {s: r for s, r in sorted(reasons.items()) if s not in sites}
    return dict(sorted(entries.items())), not_participating


def _invalid_rows(text: str) -> dict[str, Any] | None:
    """A reply's ``invalid_rows`` counts (None when they do not read as counts)."""
    try:
        return InvalidRows.from_info(text).to_dict()
    except DataError:
        return None


def _events(
    history: Sequence[Mapping[str, Any]], sites: Sequence[str]
) -> tuple[list[Any], dict[str, list[Any]]]:
    """The central DP events of every round, and each site's local DP-SGD events."""
    from fedcare.privacy.accounting import event_from_dict

    central: list[Any] = []
    local: dict[str, list[Any]] = {s: [] for s in sites}
    for record in history:
        fit = record.get("fit") or {}
        if isinstance(fit.get("dp_event"), Mapping):
            central.append(event_from_dict(fit["dp_event"], what="round dp_event"))
        rejected = _rejected(fit)
        for site, info in (fit.get("site_info") or {}).items():
            if site in local and site not in rejected and "dp_event" in info:
                event = json.loads(info["dp_event"])
                local[site].append(event_from_dict(event, what=f"site {site!r} dp_event"))
    return central, local


def _privacy(
    study: Mapping[str, Any], sites: Sequence[str], history: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Mode and ε per site: central DP composes every round's event (user-level, the same
    for every site); local DP-SGD composes the site's own events (sample-level)."""
    from fedcare.privacy.accounting import epsilon_of

    privacy = study.get("privacy")
    privacy = privacy if isinstance(privacy, Mapping) else {"mode": privacy}
    mode, dp = str(privacy.get("mode") or "open"), privacy.get("dp")
    central, local = _events(history, sites)
    if not isinstance(dp, Mapping) or not (central or any(local.values())):
        if mode == "open":
            return {
                "mode": mode,
                "epsilon_spent": dict.fromkeys(sites, 0.0),
                "note": OPEN_MODE_NOTE,
            }
        return {
            "mode": mode,
            "epsilon_spent": dict.fromkeys(sites),
            "note": NO_ACCOUNTING_NOTE.format(mode=mode),
        }
    delta, method = float(dp.get("delta", 1e-5)), str(dp.get("accountant", "rdp"))
    central_eps = epsilon_of(central, delta, method=method) if central else None
    return {
        "mode": mode,
        "delta": delta,
        "accountant": method,
        "epsilon_spent": dict.fromkeys(sites, central_eps),
        "local_epsilon_spent": {
            s: epsilon_of(ev, delta, method=method) if ev else None for s, ev in local.items()
        },
        "note": DP_NOTE,
    }


def _package(plan: Mapping[str, Any]) -> dict[str, Any] | None:
    """The study package that made the model (name, version, hash), from the plan's model spec;
    ``None`` for a built-in model kind."""
    model = plan.get("model")
    if not isinstance(model, Mapping) or model.get("kind") != "package":
        return None
    return {k: model.get(k) for k in ("name", "version", "package")}


def build_model_card(
    *,
    study: Mapping[str, Any],
    study_id: str,
    plan: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    final: Mapping[str, Any] | None,
    params: ArrayRecord,
    created: datetime,
    fedcare_version: str,
    version: str | None = None,
    parent: str | None = None,
    validation: Mapping[str, Any] | None = None,
    dataset: Mapping[str, Any] | None = None,
    feature_names: Sequence[str] = (),
    task: str | None = None,
) -> dict[str, Any]:
    """The model card of ``params`` (strict-JSON-serializable; inputs are not modified).

    Parameters
    ----------
    study:
        The study config as a dict (``StudyConfig.model_dump(mode="json")``).
    study_id:
        The study's id (simulation: the study name).
    plan:
        The training plan that travelled with every task: its ``plan_hash`` (the hash data
        stewards approve) if it carries one, else the SHA-256 of its canonical JSON.
    history:
        The study's round records, round 1 first.
    final:
        The final evaluation (``per_site``, ``weighted``, ``unweighted``), or ``None``.
    params:
        The final global parameters (hashed into ``model.hash``).
    created:
        When the model was registered (timezone-aware).
    fedcare_version, version, parent:
        This fedcare's version, the registry version id and the parent version id.
    validation, dataset, feature_names, task:
        The model's clinical validation (``results["validation"][label]``), the data source
        (``name``, ``description``, ``citation``), the predictors and the task, for the card's
        TRIPOD+AI block (:func:`fedcare.evaluation.tripod.tripod_section`; what is not given
        is left out of it or listed for the authors).
    """
    sites, not_participating = participants(history)
    final = final or {}
    card: dict[str, Any] = {
        "card_version": CARD_VERSION,
        "model": {
            "version": version,
            "hash": model_hash(params),
            "parent": parent,
            "num_params": params.num_params,
            "shapes": {k: list(v) for k, v in params.shapes.items()},
            "package": _package(plan),
        },
        "study": {"id": study_id, "name": study.get("name"), "seed": study.get("seed")},
        "plan_hash": str(plan.get("plan_hash") or plan_hash(plan)),
        "config": dict(study),
        "privacy": _privacy(study, list(sites), history),
        "sites": sites,
        "not_participating": not_participating,
        "metrics": {k: final.get(k, {}) for k in ("per_site", "weighted", "unweighted")},
        "rounds_completed": len(history),
        "fedcare_version": fedcare_version,
        "created": created.isoformat(timespec="seconds"),
    }
    card["tripod"] = tripod_section(
        study=study,
        sites=sites,
        validation=validation,
        dataset=dataset,
        feature_names=list(feature_names),
        task=task,
        created=card["created"],
    )
    result: dict[str, Any] = json.loads(canonical_json(card))
    return result
