"""Sending the monitoring summaries of the models this site took, as its policy allows.

Each active model in the site's model store has a ``monitoring.json`` (aggregates only,
written by :mod:`fedcare.inference.feedback`). Whenever it changed since it was last sent,
the agent sends it to the coordinator as round 1 of the model's deployment
(:meth:`MonitoringUploads.due`), audited ``monitoring-sent``.

The site policy decides whether it leaves at all: a policy in force whose ``allowed_outputs``
leaves out ``monitoring`` (or no valid policy in force) keeps every summary at the site,
audited ``monitoring-withheld`` once per summary; once the policy allows it again, the
summary is sent.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from fedcare.errors import FedcareError
from fedcare.inference.deployment_wire import DEPLOY_KIND
from fedcare.inference.store import ModelStore
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply

__all__ = ["MONITORING_FILE", "MONITORING_SENT_FILE", "WITHHELD", "MonitoringUploads"]

#: A model's monitoring summary, and the record of what was last sent (or withheld) of each.
MONITORING_FILE, MONITORING_SENT_FILE = "monitoring.json", "monitoring-sent.json"
#: The outcome recorded for a summary the site policy kept at the site.
WITHHELD = "withheld"


class MonitoringUploads:
    """What of a site's monitoring summaries goes to the coordinator, and when.

    ``governance``: the agent's :class:`~fedcare.site.governance.SiteGovernance` (its policy
    and audit log), or None (no policy: every summary is sent, nothing audited).
    """

    def __init__(self, store: ModelStore, site_id: str, governance: Any) -> None:
        self.store = store
        self.site_id = site_id
        self.governance = governance

    def due(self) -> list[Reply]:
        """A reply per active model whose ``monitoring.json`` changed since it was last sent
        (round 1 of its deployment; the summary as bytes, checked by the coordinator). A
        summary the policy withholds is recorded and audited instead."""
        try:
            versions = self.store.versions()
        except FedcareError:
            return []
        sent, withheld = self._sent(), self.withheld()
        due = []
        for version, entry in sorted(versions.items()):
            path = self.store.root / version / MONITORING_FILE
            if entry.get("status") != "active" or not path.is_file():
                continue
            data = path.read_bytes()
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            deployment = str(entry.get("deployment_id"))
            last = sent.get(version, {})
            if last.get("sha256") == digest and not (
                withheld is None and str(last.get("outcome", "")).startswith(WITHHELD)
            ):
                continue  # sent as it is now (or withheld, and the policy still says so)
            if withheld is not None:
                self._note(deployment, version, digest, f"{WITHHELD}: {withheld}")
                continue
            due.append(
                Reply(
                    study_id=deployment,
                    round=1,
                    site_id=self.site_id,
                    kind=DEPLOY_KIND,  # type: ignore[arg-type]
                    arrays=ArrayRecord({MONITORING_FILE: np.frombuffer(data, dtype=np.uint8)}),
                    info={"version": version, "sha256": digest},
                )
            )
        return due

    def sent(self, reply: Reply, outcome: str) -> None:
        """Note that ``reply``'s summary was sent (``outcome``: accepted, or refused and why),
        so it is sent again only once it changes; audited ``monitoring-sent``."""
        self._note(reply.study_id, reply.info["version"], reply.info["sha256"], outcome)

    def withheld(self) -> str | None:
        """Why monitoring summaries stay at the site now (the site policy in force does not
        allow ``monitoring``, or no valid policy is in force), or None."""
        gov = self.governance
        if gov is None:
            return None
        watched = getattr(gov, "policy_file", None)
        policy = watched.current().policy if watched is not None else gov.policy
        if policy is None:
            return "no valid site policy is in force"
        if "monitoring" not in policy.allowed_outputs:
            return "this site's policy does not allow monitoring output"
        return None

    def _note(self, deployment: str, version: str, digest: str, outcome: str) -> None:
        sent = self._sent()
        sent[version] = {"sha256": digest, "outcome": outcome}
        path = self.store.root / MONITORING_SENT_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sent, indent=2, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
        audit = getattr(self.governance, "audit", None)
        if audit is not None:
            event = "monitoring-withheld" if outcome.startswith(WITHHELD) else "monitoring-sent"
            audit.append(
                event, deployment_id=deployment, version=version, sha256=digest, outcome=outcome
            )

    def _sent(self) -> dict[str, dict[str, str]]:
        path = self.store.root / MONITORING_SENT_FILE
        try:
            sent = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return sent if isinstance(sent, dict) else {}
