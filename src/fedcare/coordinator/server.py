"""The coordinator process: gRPC endpoint for sites, study runners, state in SQL.

``Coordinator`` opens the store (migrating it), serves the ``fedcare.v1.Coordinator`` service
over mutual TLS, and runs a scheduler thread that starts a runner for every pending study and
resumes every study left ``running`` by an earlier process (e.g. after a crash). Study events go
to ``home/audit.jsonl`` (:mod:`fedcare.coordinator.audit_trail`), reconciled with the database
when the coordinator starts; ``home/kit-path`` names its kit (for ``fedcare sites``). The home
is owner-only: folders ``0700``, files ``0600``
(:mod:`fedcare.coordinator.files`).

Calls run on two thread pools (:mod:`fedcare.coordinator.lanes`): Hello and Heartbeat on
``control_workers`` threads, PullTask and PushReply on ``max_workers``. Each site may hold at
most ``per_site_streams`` PullTask and as many PushReply calls (more are refused with
``RESOURCE_EXHAUSTED`` at once), and a stream idle for ``stream_idle_s`` seconds is cut, so
one site cannot starve the others.

While it serves, the coordinator says it is alive in its own database: a row with its listen
address, host and pid, refreshed every ``beat_s`` seconds and marked ``stopped`` when it stops
(:mod:`fedcare.coordinator.store_presence`); ``fedcare study submit`` reads it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

import grpc

from fedcare.aggregation.blockwise import spill_to
from fedcare.coordinator.anchoring import Anchoring
from fedcare.coordinator.audit_trail import CoordinatorAudit
from fedcare.coordinator.deployments import DeploymentChannel
from fedcare.coordinator.engine import default_db_url
from fedcare.coordinator.files import private_dir, record_kit
from fedcare.coordinator.hub import Hub
from fedcare.coordinator.lanes import ControlLane, LaneExecutor
from fedcare.coordinator.package_models import package_models
from fedcare.coordinator.packages import CoordinatorPackages
from fedcare.coordinator.rows import CoordinatorInfo
from fedcare.coordinator.runner import StudyRunner
from fedcare.coordinator.servicer import MAX_CHUNK_BYTES, CoordinatorServicer
from fedcare.coordinator.store import CoordinatorStore
from fedcare.coordinator.store_presence import BEAT_S
from fedcare.coordinator.transfers import prune_partials
from fedcare.coordinator.waiting import RETRY_BACKOFF, WITHDRAWAL_BACKOFF, Backoff
from fedcare.errors import NotFoundError
from fedcare.transport.grpc.fedcare_pb2_grpc import add_CoordinatorServicer_to_server
from fedcare.transport.tls import RequireSiteIdentity, RevocationList, load_kit, server_credentials

__all__ = ["Coordinator", "default_db_url"]

log = logging.getLogger("fedcare.coordinator")
SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # One Chunk of at most MAX_CHUNK_BYTES (Hello tells the sites) and its framing.
    ("grpc.max_receive_message_length", MAX_CHUNK_BYTES + 64 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


#: Under ``memory_budget_mb`` B, an aggregation accumulator larger than B / SPILL_SHARE is kept
#: on disk, memory-mapped (:func:`fedcare.aggregation.blockwise.spill_to`).
SPILL_SHARE = 8


class Coordinator:
    """One federation's coordinator.

    Parameters
    ----------
    kit_dir:
        The coordinator's startup kit (certificate, key, CA, revocation list).
    home:
        Folder for the SQLite database (unless ``db_url`` is given) and the artifacts.
    listen:
        ``host:port`` to serve on; port 0 picks a free one (see :attr:`port`).
    beat_s:
        Seconds between the writes of the coordinator's liveness row.
    retry_backoff:
        Delays before a failed round is retried, and between asks while a study awaits its
        plan's approval (5 s doubling to 60 s).
    withdrawal_backoff:
        How long a site that withdrew from a study is not sent its tasks (30 s doubling to
        10 min, or until the site connects again).
    """

    def __init__(
        self,
        kit_dir: Path,
        home: Path,
        *,
        listen: str = "127.0.0.1:50051",
        db_url: str | None = None,
        heartbeat_s: float = 5.0,
        liveness_s: float = 30.0,
        round_retries: int = 3,
        max_workers: int = 256,
        control_workers: int = 16,
        per_site_streams: int = 2,
        stream_idle_s: float = 30.0,
        beat_s: float = BEAT_S,
        retry_backoff: Backoff = RETRY_BACKOFF,
        withdrawal_backoff: Backoff = WITHDRAWAL_BACKOFF,
        memory_budget_mb: float | None = None,
    ) -> None:
        private_dir(home)  # 0700: database, artifacts and audit are the coordinator's only
        if memory_budget_mb is not None:  # large sums go to disk, memory-mapped
            spill_to(home / "spill", above_bytes=int(memory_budget_mb * 1e6 / SPILL_SHARE))
        self.kit = load_kit(kit_dir)
        record_kit(home, kit_dir)
        self.store = CoordinatorStore(db_url or default_db_url(home), home / "artifacts")
        self.package_models = package_models(home)  # study packages' init, sandboxed
        self.hub = Hub()
        self.audit = _open_audit(home, kit_dir, self.kit.identity)
        self.liveness_s, self.round_retries = liveness_s, round_retries
        self.retry_backoff, self.withdrawal_backoff = retry_backoff, withdrawal_backoff
        revocations = RevocationList.from_kit(kit_dir)
        self._pools = LaneExecutor(control=control_workers, data=max_workers)
        self.server = grpc.server(
            self._pools,
            interceptors=[ControlLane(self._pools), RequireSiteIdentity(revocations)],
            options=SERVER_OPTIONS,
        )
        servicer = CoordinatorServicer(
            self.store,
            self.hub,
            revocations,
            federation=self.kit.federation,
            heartbeat_s=heartbeat_s,
            per_site_streams=per_site_streams,
            idle_s=stream_idle_s,
            anchoring=Anchoring(self.store, kit_dir, self.audit),
            packages=CoordinatorPackages(home),
            deployments=DeploymentChannel(self.store, kit_dir, self.audit),
            audit=self.audit,
        )
        self.servicer = servicer
        add_CoordinatorServicer_to_server(servicer, self.server)
        self.port = self.server.add_secure_port(listen, server_credentials(kit_dir))
        self.listen = f"{listen.rsplit(':', 1)[0]}:{self.port}"
        self.beat_s = beat_s
        self.presence: CoordinatorInfo | None = None
        self._stop = threading.Event()
        self._runners: dict[str, StudyRunner] = {}
        self._scheduler = threading.Thread(target=self._schedule, name="scheduler", daemon=True)
        self._beats = threading.Thread(target=self._beat, name="liveness", daemon=True)

    def start(self) -> Coordinator:
        self.audit.reconcile_all(self.store)  # entries a crash left out of the audit trail
        prune_partials(self.store.artifacts)  # uploads cut long ago, whose tasks are closed
        self.server.start()
        self._say_alive()
        self._scheduler.start()
        self._beats.start()
        log.info("coordinator of %s listening on port %d", self.kit.federation, self.port)
        return self

    def _say_alive(self) -> None:
        self.presence = self.store.coordinator_started(
            listen=self.listen, host=socket.gethostname(), pid=os.getpid(), beat_s=self.beat_s
        )

    def _beat(self) -> None:
        while not self._stop.wait(self.beat_s):
            try:
                assert self.presence is not None
                self.store.coordinator_beat(self.presence.id)
            except NotFoundError:  # another coordinator dropped the row as stale: add it again
                self._say_alive()
            except Exception:  # keep beating; a database that is back makes it fresh again
                log.exception("writing the coordinator's liveness row failed")

    def _schedule(self) -> None:
        while not self._stop.is_set():
            try:
                self._start_runners()
            except Exception:  # keep scheduling; the store logs its own errors
                log.exception("scheduler pass failed")
            self._stop.wait(0.5)

    def _start_runners(self) -> None:
        for study in self.store.list_studies():
            runner = self._runners.get(study.id)
            if runner is not None and runner.thread.is_alive():
                continue
            if study.status == "pending":
                self.store.set_study_status(study.id, "running")
            elif study.status != "running" or runner is not None:
                continue  # finished, or its runner ended (stopped/cancelled) in this process
            runner = StudyRunner(
                self.store,
                self.hub,
                study.id,
                stop=self._stop,
                liveness_s=self.liveness_s,
                round_retries=self.round_retries,
                audit=self.audit,
                kit_dir=self.kit.path,
                retry_backoff=self.retry_backoff,
                withdrawal_backoff=self.withdrawal_backoff,
                packages=self.package_models,
            )
            self._runners[study.id] = runner
            runner.start()

    def stop(self, grace: float = 2.0) -> None:
        """Stop serving and let runners leave between rounds; studies stay resumable."""
        self._stop.set()
        self._say_stopped()
        self.hub.notify()
        self.server.stop(grace).wait(grace + 1)
        self.servicer.idle.close()
        self._pools.shutdown(wait=False)
        for runner in self._runners.values():
            runner.thread.join(timeout=grace + 5)
        self.package_models.close()
        self.store.close()
        self.audit.close()

    def _say_stopped(self) -> None:
        if self._beats.is_alive():
            self._beats.join(timeout=5)
        if self.presence is None:
            return
        try:
            self.store.coordinator_stopped(self.presence.id)
        except Exception:  # it goes stale by itself within a few beats
            log.exception("marking the coordinator stopped failed")

    def wait(self) -> None:
        self.server.wait_for_termination()


def _open_audit(home: Path, kit_dir: Path, identity: str) -> CoordinatorAudit:
    """The coordinator's audit trail; disabled (with a warning) if fedcare.audit is missing."""
    try:
        return CoordinatorAudit.open(home, kit_dir, actor=f"coordinator:{identity}")
    except ImportError as err:
        log.warning("coordinator audit trail disabled: %s", err)
        return CoordinatorAudit(None)
