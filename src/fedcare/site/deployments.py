"""A model the coordinator deploys to this site: checked, approved by the steward, kept.

The coordinator sends a deployment as a ``deploy`` task (:mod:`fedcare.inference.deployment_wire`).
:class:`SiteDeployments` answers it, in this order:

1. the coordinator's signature: its certificate must be issued by the federation CA of this
   site's kit, and its signature must cover this deployment, this site and the bundle hash
   (``signature-invalid`` otherwise);
2. the bundle: every file against the manifest, the manifest against the signed hash, the
   version it names (``bundle-invalid`` naming the file or the hash otherwise);
3. the steward's decision, kept in the approvals store as a plan's is (study
   ``deployment:<version>``, plan hash the bundle hash; sealed and audited the same way): none
   yet records it as pending (audited ``deployment-received``) and answers
   ``deployment-awaiting-approval``; a refusal answers ``deployment-refused`` with the
   steward's note. There is no automatic approval (not even ``--approve-all``);
4. approved: a model trained with local scaling gets this site's own training statistics
   frozen in (:func:`fedcare.inference.site_statistics.freeze_local_statistics`), the bundle
   goes into the site's model store (:class:`fedcare.inference.store.ModelStore`), audited
   ``model-taken``, and the answer says ``taken`` with both hashes.

Every refusal of a check is audited ``deployment-rejected`` with the problem. The agent says
Hello again when a deployment decision changes (:meth:`SiteDeployments.decisions`), and the
coordinator then offers the deployment again: nothing waits at the site in between.

A model's ``monitoring.json`` (aggregates only) is sent to the coordinator whenever it
changed, as round 1 of the model's deployment (:meth:`SiteDeployments.monitoring_due`),
audited ``monitoring-sent``, unless the site policy in force leaves ``monitoring`` out of its
``allowed_outputs``: then it stays at the site, audited ``monitoring-withheld`` (once per
summary), and is sent once the policy allows it again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from cryptography import x509

from fedcare.errors import FedcareError, ValidationError
from fedcare.inference.bundle import DESCRIPTION, load_bundle, verify_files, write_bundle
from fedcare.inference.deployment_wire import (
    AWAITING,
    DEPLOY_KIND,
    REFUSED,
    bundle_files_of,
    signed_message,
    verify_deployment_signature,
)
from fedcare.inference.store import ModelStore, bundle_version
from fedcare.records.messages import Reply, ReplyError, Task
from fedcare.site.config import SiteDataConfig
from fedcare.site.monitoring_upload import MonitoringUploads

__all__ = ["DEPLOYMENT_STUDY_PREFIX", "SiteDeployments", "deployment_study"]

DEPLOYMENT_STUDY_PREFIX = "deployment:"


def deployment_study(version: str) -> str:
    """The approvals-store "study" of a model version's deployment."""
    return DEPLOYMENT_STUDY_PREFIX + version


class SiteDeployments:
    """Answers ``deploy`` tasks for one site.

    Parameters
    ----------
    state_dir:
        The site's state folder (its model store is ``models/`` under it).
    kit_dir:
        The site's startup kit: its ``ca.pem`` is the federation CA the coordinator's
        signature must chain to.
    site_id:
        This site.
    governance:
        The agent's :class:`~fedcare.site.governance.SiteGovernance` (its approvals and audit
        log); None: every deployment is refused (no steward to approve it).
    data:
        The site's datasets (for freezing its own statistics).
    """

    def __init__(
        self,
        state_dir: Path,
        kit_dir: Path,
        site_id: str,
        governance: Any,
        data: SiteDataConfig | None = None,
    ) -> None:
        self.store = ModelStore.in_state_dir(state_dir)
        self.ca = x509.load_pem_x509_certificate((Path(kit_dir) / "ca.pem").read_bytes())
        self.site_id = site_id
        self.governance = governance
        self.data = data
        self.uploads = MonitoringUploads(self.store, site_id, governance)

    # what the agent asks -------------------------------------------------------------------
    def decisions(self) -> tuple[tuple[str, str, str], ...]:
        """The steward's deployment decisions (changes when one is made)."""
        if self.governance is None:
            return ()
        try:
            rows = self.governance.approvals.list()
        except FedcareError:
            return ()
        return tuple(
            (a.study, a.status, a.decided_text())
            for a in rows
            if a.study.startswith(DEPLOYMENT_STUDY_PREFIX) and a.status != "pending"
        )

    def handle(self, task: Task) -> Reply:
        """The answer to a ``deploy`` task (never raises for a bad deployment)."""
        try:
            files, facts = bundle_files_of(task)
            version = str(facts.get("version", ""))
            declared = str(facts.get("bundle_sha256", ""))
        except ValidationError as err:
            return self._rejected(task, "deployment-failed", str(err), "?")
        problem = self._signature_problem(task, facts, version, declared)
        if problem is not None:
            return self._rejected(task, "signature-invalid", problem, version)
        try:
            verify_files(files, f"of model {version}", expected_hash=declared)
            if bundle_version(files) != version:
                raise ValidationError(
                    f"the bundle is of model {bundle_version(files)!r}, not {version!r}"
                )
        except ValidationError as err:
            return self._rejected(task, "bundle-invalid", str(err), version)
        gov = self.governance
        if gov is None:
            return self._answer(
                task, REFUSED, "this site runs without a steward's approvals: it takes no model"
            )
        return self._decided(task, files, facts, version, declared)

    # monitoring -----------------------------------------------------------------------------
    def monitoring_due(self) -> list[Reply]:
        """The monitoring summaries to send now (:class:`MonitoringUploads`)."""
        return self.uploads.due()

    def monitoring_sent(self, reply: Reply, outcome: str) -> None:
        """Note that ``reply``'s summary was sent (:class:`MonitoringUploads`)."""
        self.uploads.sent(reply, outcome)

    # steps ---------------------------------------------------------------------------------
    def _signature_problem(
        self, task: Task, facts: Mapping[str, Any], version: str, declared: str
    ) -> str | None:
        if facts.get("id") != task.study_id or facts.get("site") != self.site_id:
            return (
                f"the deployment names {facts.get('id')!r} for site {facts.get('site')!r}, "
                f"but came as {task.study_id!r} for {self.site_id!r}"
            )
        message = signed_message(task.study_id, version, self.site_id, declared)
        try:
            verify_deployment_signature(
                self.ca,
                str(facts.get("signer_cert_pem", "")).encode(),
                message,
                str(facts.get("signature", "")),
            )
        except ValidationError as err:
            return str(err)
        return None

    def _decided(
        self, task: Task, files: dict[str, bytes], facts: Mapping[str, Any], version: str,
        declared: str,
    ) -> Reply:  # fmt: skip
        approvals = self.governance.approvals
        study = deployment_study(version)
        check = approvals.check(study, declared)
        if check.kind == "plan-not-approved":
            if check.approval is None:
                self._audit(
                    "deployment-received",
                    task,
                    version=version,
                    bundle_sha256=declared,
                    requested_by=facts.get("requested_by"),
                )
            approvals.record_pending(study, declared, summary=_summary(files, facts))
            return self._answer(
                task,
                AWAITING,
                f"model {version} waits for the steward of {self.site_id}: "
                f"`fedcare site approve-deployment {version}` or `refuse-deployment {version}`",
            )
        if check.kind in ("plan-refused", "approval-revoked"):
            note = check.approval.note if check.approval is not None else ""
            return self._answer(
                task,
                REFUSED,
                f"the steward of {self.site_id} refused model {version}"
                + (f": {note}" if note else ""),
            )
        if not check.ok:
            return self._answer(task, AWAITING, check.message)
        assert check.approval is not None
        return self._take(task, files, version, declared, check.approval.approval_id)

    def _take(
        self, task: Task, files: dict[str, bytes], version: str, declared: str, approval: str
    ) -> Reply:
        held = self.store.versions().get(version)
        if (
            held is not None
            and held.get("bundle_sha256") == declared
            and held.get("status") == "active"
        ):
            return self._taken(task, declared, str(held.get("stored_sha256")), approval)
        rows: list[np.ndarray] = []  # this site's training rows, read once when needed
        try:
            kept = self._frozen(files, rows)
            folder = self.store.take(
                kept, deployment_id=task.study_id, approved_by=approval, bundle_sha256=declared
            )
            stored = str(self.store.entry(version)["stored_sha256"])
        except (FedcareError, OSError) as err:
            return self._rejected(task, "deployment-failed", f"cannot keep the model: {err}",
                                  version)  # fmt: skip
        reference = self._reference(folder, version, rows)
        self._audit(
            "model-taken",
            task,
            version=version,
            bundle_sha256=declared,
            stored_sha256=stored,
            approved_by=approval,
            reference=reference,
        )
        return self._taken(task, declared, stored, approval)

    def _frozen(self, files: dict[str, bytes], rows: list[np.ndarray]) -> dict[str, bytes]:
        """``files``, with this site's training statistics frozen in when the model needs them
        (the rows read are kept in ``rows`` for the drift reference)."""
        prep = json.loads(files[DESCRIPTION]).get("preprocessing") or {}
        if prep.get("statistics") != "site":
            return files
        import tempfile

        from fedcare.inference.site_statistics import freeze_local_statistics

        with tempfile.TemporaryDirectory() as tmp:
            bundle = load_bundle(write_bundle(files, Path(tmp) / "b"))
        rows.append(self._train_rows(bundle.features))
        return freeze_local_statistics(bundle, rows[0], self.site_id)

    def _reference(self, folder: Path, version: str, rows: list[np.ndarray]) -> str:
        """Freeze this site's drift reference beside the kept model
        (:func:`fedcare.inference.monitor.write_reference`); what happened, for the audit."""
        from fedcare.inference.monitor import write_reference

        try:
            bundle = self.store.bundle(version)
            X = rows[0] if rows else self._train_rows(bundle.features)
            write_reference(folder, bundle, X)
        except (FedcareError, OSError, ValueError) as err:
            return f"not frozen: {err}"
        return f"frozen from {len(X)} training rows"

    def _train_rows(self, features: list[str]) -> np.ndarray:
        """This site's raw training rows with ``features`` in order (the dataset naming them)."""
        if self.data is None:
            raise ValidationError("the model scales with this site's statistics: no data here")
        for name, entry in self.data.datasets.items():
            prepared = entry.prepared()
            if prepared.data is None:
                continue
            columns = [str(c.get("name")) for c in (prepared.schema or {}).get("columns", [])]
            X = prepared.data.train.X
            if columns and all(f in columns for f in features):
                return np.asarray(X[:, [columns.index(f) for f in features]], dtype=float)
            if not columns and len(self.data.datasets) == 1 and X.shape[1] == len(features):
                return np.asarray(X, dtype=float)
            _ = name
        raise ValidationError(
            f"no dataset of this site has the model's features ({', '.join(features[:5])}...): "
            "its own training statistics cannot be frozen"
        )

    # answers -------------------------------------------------------------------------------
    def _taken(self, task: Task, declared: str, stored: str, approval: str) -> Reply:
        return Reply(
            study_id=task.study_id,
            round=0,
            site_id=self.site_id,
            kind=DEPLOY_KIND,  # type: ignore[arg-type]
            info={
                "status": "taken",
                "bundle_sha256": declared,
                "stored_sha256": stored,
                "approved_by": approval,
            },
        )

    def _answer(self, task: Task, kind: str, message: str) -> Reply:
        return Reply(
            study_id=task.study_id,
            round=0,
            site_id=self.site_id,
            kind=DEPLOY_KIND,  # type: ignore[arg-type]
            error=ReplyError(kind, message),
        )

    def _rejected(self, task: Task, kind: str, problem: str, version: str) -> Reply:
        self._audit("deployment-rejected", task, version=version, kind=kind, problem=problem)
        return self._answer(task, kind, problem)

    def _audit(self, event: str, task: Task | Reply, **data: Any) -> None:
        audit = getattr(self.governance, "audit", None)
        if audit is not None:
            audit.append(event, deployment_id=task.study_id, **data)


def _summary(files: Mapping[str, bytes], facts: Mapping[str, Any]) -> str:
    """What the steward sees (``label: value`` lines, as a plan's summary): the model, who
    asked and the bundle hash."""
    try:
        description = json.loads(files[DESCRIPTION])
    except (KeyError, ValueError):
        description = {}
    model = (description.get("model") or {}).get("kind", "?")
    source = description.get("source") or {}
    features = description.get("features") or []
    statistics = (description.get("preprocessing") or {}).get("statistics")
    lines = [
        f"deployment of model: {facts.get('version')} (trained by study {source.get('study_id')})",
        f"model: {model}, task {description.get('task')}, {len(features)} features, "
        f"threshold {description.get('threshold')}",
        f"features: {', '.join(map(str, features))}",
        "statistics: " + ("this site's own training statistics, frozen when taken"
                          if statistics == "site" else str(statistics)),
        f"asked by: {facts.get('requested_by')} at {facts.get('requested_at')}",
        f"bundle: {facts.get('bundle_sha256')} (signed by the coordinator)",
    ]  # fmt: skip
    return "\n".join(lines)
