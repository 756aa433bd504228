"""Sending a registered model to sites: ``fedcare models deploy VERSION --site A --site B``.

:func:`request_deployment` records one deployment per named site (refusing an unknown site or
version before anything is stored) and audits ``deployment-requested``. Delivery uses the site
channel every task uses (:mod:`fedcare.coordinator.servicer`): a site's PullTask gets its
oldest ``requested`` deployment when no study task waits for it, so an outbound-only site gets
it when it next polls, and a site offline gets it when it connects.
:class:`DeploymentChannel` builds what is sent (the bundle of ``models export``, its hash
signed with the coordinator kit's key: :mod:`fedcare.inference.deployment_wire`) and records
what the site answers (``pending``, ``taken`` with the hash it keeps, ``refused`` or
``failed`` with the reason), audited ``deployment-taken`` / ``deployment-refused`` /
``deployment-failed``. A site sends its monitoring summary of a model it took as a reply of
round 1 to the same deployment; :func:`check_monitoring` validates it before it is kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fedcare.coordinator.registry_view import export_files
from fedcare.coordinator.store import CoordinatorStore
from fedcare.coordinator.store_deployments import DeploymentInfo
from fedcare.errors import ConflictError, FedcareError, NotFoundError, ValidationError
from fedcare.inference.bundle import MANIFEST
from fedcare.inference.deployment_wire import (
    AWAITING,
    REFUSED,
    deployment_task,
    sign_deployment,
    signed_message,
)
from fedcare.records.messages import Reply
from fedcare.transport.codec import encode_task

__all__ = [
    "MONITORING_KEYS",
    "MONITORING_MAX_BYTES",
    "DeploymentChannel",
    "bundle_hash",
    "check_monitoring",
    "request_deployment",
]

#: The largest monitoring summary a site may send (its JSON), and its known top-level keys.
MONITORING_MAX_BYTES = 256 * 1024
MONITORING_KEYS = frozenset(
    {
        "version",
        "model",
        "bundle_sha256",
        "site",
        "time",
        "min_cell",
        "period",
        "predictions",
        "outcomes",
        "performance",
        "drift",
        "alerts",
    }
)
#: The largest deployment reply read from a site (an answer, or a monitoring summary).
REPLY_MAX_BYTES = MONITORING_MAX_BYTES + 64 * 1024


def bundle_hash(files: Mapping[str, bytes]) -> str:
    """The ``bundle_sha256`` of an export's manifest."""
    return str(json.loads(files[MANIFEST])["bundle_sha256"])


def request_deployment(
    store: CoordinatorStore,
    version: str,
    sites: Sequence[str],
    who: str,
    *,
    audit: Any = None,
) -> list[DeploymentInfo]:
    """Ask each of ``sites`` to take model ``version``; returns one deployment per site.

    Asking again while a site's deployment is open (or taken with the same bundle) returns it
    unchanged. ``who`` names the person (or ``coordinator-host``) for the audit trail.

    Raises
    ------
    NotFoundError
        The version, or one of the sites, is unknown (names them); nothing is stored.
    ConflictError
        No site named, or a site is not active.
    """
    if not sites:
        raise ConflictError("name at least one site to deploy to (--site)")
    store.get_model(version)  # NotFoundError naming it
    known = {s.id: s for s in store.list_sites()}
    unknown = [s for s in dict.fromkeys(sites) if s not in known]
    if unknown:
        raise NotFoundError(
            f"unknown site(s) {', '.join(map(repr, unknown))}: this coordinator knows "
            f"{', '.join(sorted(known)) or 'no site yet'} (a site is known once it connected)"
        )
    inactive = [s for s in dict.fromkeys(sites) if known[s].status != "active"]
    if inactive:
        raise ConflictError(
            "cannot deploy to "
            + ", ".join(f"{s!r} ({known[s].status})" for s in inactive)
            + ": only active sites take models"
        )
    digest = bundle_hash(export_files(store, version))
    out = []
    for site in dict.fromkeys(sites):
        info, created = store.create_deployment(
            version, site, bundle_sha256=digest, requested_by=who
        )
        if created and audit is not None:
            audit.person_action(
                "deployment-requested",
                who,
                deployment_id=info.id,
                version=version,
                site=site,
                bundle_sha256=digest,
            )
        out.append(info)
    return out


def _check_value(value: Any, path: str, depth: int = 0) -> None:
    if depth > 8:
        raise ValidationError(f"monitoring summary: {path} is nested too deeply")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        if isinstance(value, str) and len(value) > 4000:
            raise ValidationError(f"monitoring summary: {path} is a string over 4000 characters")
        return
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValidationError(f"monitoring summary: {path} is not a finite number")
        if path.endswith((".n", ".runs", ".matched", ".unmatched_labels")) and value < 0:
            raise ValidationError(f"monitoring summary: count {path} is negative ({value})")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(item, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_value(item, f"{path}.{key}", depth + 1)
        return
    raise ValidationError(f"monitoring summary: {path} has type {type(value).__name__}")


def check_monitoring(data: bytes, *, version: str, site: str) -> dict[str, Any]:
    """The monitoring summary in ``data`` (JSON) if it is one ``site`` may send for ``version``.

    Checked generically (the content is the monitoring module's): a JSON object of at most
    :data:`MONITORING_MAX_BYTES`, only :data:`MONITORING_KEYS` at the top, finite numbers,
    non-negative counts, ``model`` and ``site`` (when given) naming this version and site.

    Raises
    ------
    ValidationError
        Naming what is wrong.
    """
    if len(data) > MONITORING_MAX_BYTES:
        raise ValidationError(
            f"monitoring summary has {len(data)} bytes, above the limit {MONITORING_MAX_BYTES}"
        )
    try:
        summary = json.loads(data)
    except ValueError as err:
        raise ValidationError(f"monitoring summary is not JSON: {err}") from None
    if not isinstance(summary, dict):
        raise ValidationError("monitoring summary must be a JSON object")
    unknown = sorted(set(summary) - MONITORING_KEYS)
    if unknown:
        raise ValidationError(f"monitoring summary has unknown key(s) {unknown}")
    for key, name in (("model", version), ("site", site)):
        if key in summary and summary[key] != name:
            raise ValidationError(f"monitoring summary names {key} {summary[key]!r}, not {name!r}")
    _check_value(summary, "summary")
    return summary


class DeploymentChannel:
    """What the servicer needs for deployments: the signed payload, and recording answers.

    ``kit_dir``: the coordinator's startup kit (its ``key.pem`` signs, its ``cert.pem`` goes
    with the signature). ``audit``: a :class:`~fedcare.coordinator.audit_trail.CoordinatorAudit`
    or None.
    """

    def __init__(self, store: CoordinatorStore, kit_dir: Path, audit: Any = None) -> None:
        from fedcare.audit._format import load_private_key

        self.store = store
        self._key = load_private_key(Path(kit_dir) / "key.pem")
        self._cert_pem = (Path(kit_dir) / "cert.pem").read_text(encoding="ascii")
        self.audit = audit

    def payload(self, info: DeploymentInfo) -> bytes:
        """The encoded ``deploy`` task of ``info``.

        Raises
        ------
        FedcareError
            If the version's bundle cannot be built, or its hash is not the one requested
            (the registry changed since).
        """
        files = export_files(self.store, info.version)
        digest = bundle_hash(files)
        if digest != info.bundle_sha256:
            raise FedcareError(
                f"model {info.version}'s bundle now has hash {digest}, the deployment was "
                f"requested for {info.bundle_sha256}"
            )
        message = signed_message(info.id, info.version, info.site_id, digest)
        facts = {
            "id": info.id,
            "version": info.version,
            "site": info.site_id,
            "bundle_sha256": digest,
            "requested_by": info.requested_by,
            "requested_at": info.requested_at.isoformat(),
            "signature": sign_deployment(self._key, message),
            "signer_cert_pem": self._cert_pem,
        }
        return encode_task(deployment_task(info.site_id, files, facts))

    def fail(self, info: DeploymentInfo, reason: str) -> None:
        """Mark ``info`` failed at the coordinator (it could not be sent)."""
        try:
            self.store.answer_deployment(info.id, info.site_id, "failed", reason=reason)
        except (ConflictError, NotFoundError):
            return
        self._audit("deployment-failed", info, reason=reason)

    def record(self, site_id: str, reply: Reply) -> DeploymentInfo:
        """Record ``site_id``'s ``reply`` to its deployment (round 0: the answer; round 1: a
        monitoring summary).

        Raises
        ------
        NotFoundError, ConflictError, ValidationError
            No such deployment for this site, already answered, or a malformed answer.
        """
        if reply.round not in (0, 1):
            raise ValidationError(
                f"a deployment reply is round 0 (the answer) or 1 (monitoring), not {reply.round}"
            )
        if reply.round == 1:
            info = self.store.get_deployment(reply.study_id)
            if info.site_id != site_id:
                raise NotFoundError(f"no deployment {reply.study_id!r} for site {site_id!r}")
            data = reply.arrays.get("monitoring.json")
            if data is None:
                raise ValidationError("a monitoring reply carries no monitoring.json")
            summary = check_monitoring(bytes(data.tobytes()), version=info.version, site=site_id)
            kept = self.store.record_monitoring(info.version, site_id, summary)
            self._audit("deployment-monitoring", kept, alerts=len(summary.get("alerts") or []))
            return kept
        if reply.error is None:
            stored = reply.info.get("stored_sha256")
            info = self.store.answer_deployment(
                reply.study_id,
                site_id,
                "taken",
                stored_sha256=stored,
                approved_by=reply.info.get("approved_by"),
            )
            self._audit(
                "deployment-taken",
                info,
                bundle_sha256=reply.info.get("bundle_sha256"),
                stored_sha256=stored,
                approved_by=info.approved_by,
            )
            return info
        kind, message = reply.error.kind, reply.error.message
        status = "pending" if kind == AWAITING else "refused" if kind == REFUSED else "failed"
        info = self.store.answer_deployment(
            reply.study_id, site_id, status, reason=f"{kind}: {message}"
        )
        if status != "pending":
            self._audit(f"deployment-{status}", info, reason=f"{kind}: {message}")
        return info

    def _audit(self, event: str, info: DeploymentInfo, **data: Any) -> None:
        log = getattr(self.audit, "log", None)
        if log is not None:
            log.append(
                event,
                deployment_id=info.id,
                version=info.version,
                site=info.site_id,
                **{k: v for k, v in data.items() if v is not None},
            )


def deployment_rows(infos: Iterable[DeploymentInfo]) -> list[dict[str, Any]]:
    """The JSON shape of deployments (API, ``models deployments --json``)."""
    return [i.to_dict() for i in infos]
