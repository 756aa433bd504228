"""Protocol versions at the coordinator: who may say Hello, and what a site is not sent.

:class:`ProtocolGate` applies :func:`fedcare.records.protocol.refusal` at each Hello and keeps
the protocol version each site announced there, in memory (an agent says Hello at the start of
every connection, so a restarted coordinator learns it again before the site pulls). A site
that has not said Hello to this process counts as speaking the coordinator's version.

Before a task is streamed to a site behind the coordinator, :meth:`ProtocolGate.study_reason`
and :meth:`ProtocolGate.deployment_reason` name what the site cannot handle: the servicer then
fails that study task (the round names the site among its failures and goes on per its
``min_sites``) or that deployment with the reason, instead of sending it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fedcare.records.protocol import (
    PROTOCOL,
    STREAMED_TRANSFERS,
    missing,
    refusal,
    study_features,
    too_old,
)

if TYPE_CHECKING:
    from fedcare.coordinator.deployments import DeploymentChannel
    from fedcare.coordinator.rows import TaskInfo
    from fedcare.coordinator.store import CoordinatorStore
    from fedcare.coordinator.store_deployments import DeploymentInfo

__all__ = ["PROTOCOL_ERROR_KIND", "ProtocolGate"]

#: The error kind of a study task failed because its site speaks an older protocol.
PROTOCOL_ERROR_KIND = "protocol_too_old"


class ProtocolGate:
    """The protocol version of each site that said Hello to this coordinator process."""

    def __init__(self, current: tuple[int, int] = PROTOCOL) -> None:
        self.current = current
        self._sites: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def hello(self, site_id: str, version: tuple[int, int]) -> str:
        """Note ``site_id``'s version; the refusal message (``""``: it may take part)."""
        why = refusal(site_id, version, self.current)
        with self._lock:
            if why:
                self._sites.pop(site_id, None)
            else:
                self._sites[site_id] = version
        return why

    def version_of(self, site_id: str) -> tuple[int, int]:
        with self._lock:
            return self._sites.get(site_id, self.current)

    def behind(self, site_id: str) -> bool:
        """Whether ``site_id`` speaks an older minor than the coordinator."""
        return self.version_of(site_id)[1] < self.current[1]

    def streamed(self, site_id: str) -> bool:
        """Whether ``site_id`` takes framed, resumable transfers (protocol 1.2 and later)."""
        version = self.version_of(site_id)
        return version >= (self.current[0], STREAMED_TRANSFERS)

    def study_reason(self, site_id: str, config: Mapping[str, Any]) -> str:
        """Why a task of a study with this stored config is not sent (``""``: send it)."""
        return self._reason(site_id, study_features(config))

    def deployment_reason(self, site_id: str) -> str:
        """Why a deployment is not sent to ``site_id`` (``""``: send it)."""
        return self._reason(site_id, ["deploy task"])

    def _reason(self, site_id: str, features: list[str]) -> str:
        version = self.version_of(site_id)
        lacking = missing(version[1], features)
        return too_old(site_id, version, lacking[0]) if lacking else ""

    def withhold_task(self, store: CoordinatorStore, site_id: str, task: TaskInfo) -> bool:
        """Fail the delivered study ``task`` if its site cannot handle it; True if failed.

        The caller notifies the rounds waiting (a failed task counts at once)."""
        if not self.behind(site_id):
            return False
        why = self.study_reason(site_id, store.get_study(task.study_id).config)
        if not why:
            return False
        store.fail_task(task.id, site_id, PROTOCOL_ERROR_KIND, why)
        return True

    def withhold_deployment(self, channel: DeploymentChannel, info: DeploymentInfo) -> bool:
        """Fail the delivered deployment ``info`` if its site cannot take it; True if failed."""
        why = self.deployment_reason(info.site_id) if self.behind(info.site_id) else ""
        if why:
            channel.fail(info, why)
        return bool(why)
