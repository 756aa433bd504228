"""The site agent: connects outbound to the coordinator, pulls tasks, runs them, replies.

It never listens on a port. It says Hello over mutual TLS, then long-polls for its next task,
runs it in the worker subprocess (with the site's time limit) and pushes the reply in chunks.
A Heartbeat thread reports liveness, and lets the coordinator cancel a task it no longer
wants. When the connection drops (the coordinator restarted, the network failed) it retries
with exponential backoff and jitter, and resumes by itself. A refused identity (revoked or
unknown certificate) stops the agent with the coordinator's reason: retrying cannot help; so
does a protocol version the coordinator refuses at Hello (its message says whom to upgrade).

At start the kit is checked (:func:`fedcare.transport.diagnose.load_site_kit`: files, role
``site``, certificate signed by its CA, unexpired, key matching). A failed connection is named
in one line (:func:`fedcare.transport.diagnose.explain_failure`: name resolution, refused
connection, timeout, TLS verification and whose CA, a refused certificate); a cause that a
quick retry cannot fix (name resolution, TLS) is retried at most every ``SLOW_RETRY_S``
seconds, and repeats of one cause are logged sparsely (:class:`fedcare.site.retry_log.FailureLog`).

Every Hello lists the task the agent still holds (a reply not yet acknowledged), so the
coordinator fails whatever else it delivered to this site before (the agent restarted, or a
download was lost). A reply names its task in the call's metadata; one the coordinator refuses
as invalid (``INVALID_ARGUMENT``: its task is failed with the reason) is dropped, never re-sent.

A ``deploy`` task (a model the coordinator sends) is answered by
:class:`~fedcare.site.deployments.SiteDeployments`, never in the worker; the agent says Hello
again when the steward decides on a deployment, so the coordinator offers it again.

When both sides speak protocol 1.2 (:data:`~fedcare.records.protocol.STREAMED_TRANSFERS`) a
study task and its reply live in files under ``STATE/transfers/`` from the first chunk to the
coordinator's acknowledgement (:mod:`fedcare.site.transfers`): downloads and uploads resume
after a cut or an agent restart, the held task survives a restart (phase download, run or
upload, resumed after Hello), and the worker gets the task's file. Otherwise (an older
coordinator, or ``protocol`` set to an older one) tasks and replies are whole messages in
memory, as before.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from fedcare.analytics.disclosure import DEFAULT_MIN_CELL
from fedcare.errors import TransferIncompleteError, TransportError
from fedcare.inference.deployment_wire import DEPLOY_KIND
from fedcare.records.messages import MESSAGE_VERSION, Reply, Task
from fedcare.records.protocol import PROTOCOL, REFUSAL_MARK, STREAMED_TRANSFERS
from fedcare.site.app import Handler
from fedcare.site.config import SiteDataConfig
from fedcare.site.deployments import SiteDeployments
from fedcare.site.governance import SiteGovernance
from fedcare.site.mods import chain
from fedcare.site.packages import grpc_fetcher
from fedcare.site.retry_log import Backoff, FailureLog
from fedcare.site.staging import KeptReply
from fedcare.site.transfers import TaskTransfers, push_whole
from fedcare.site.worker import TaskWorker
from fedcare.transport.chunks import assemble
from fedcare.transport.codec import Limits
from fedcare.transport.diagnose import explain_failure, explain_refusal, load_site_kit
from fedcare.transport.framed import read_task
from fedcare.transport.grpc import fedcare_pb2 as pb
from fedcare.transport.grpc.fedcare_pb2_grpc import CoordinatorStub
from fedcare.transport.tls import channel_credentials

__all__ = ["Backoff", "SiteAgent"]

log = logging.getLogger("fedcare.site")
TRANSFER_TIMEOUT_S = 1800.0
#: Backoff cap for causes a quick retry cannot fix (name resolution, TLS verification).
SLOW_RETRY_S = 60.0
#: Per step (resolve, connect, TLS handshake) of the diagnosis after a failed call.
DIAGNOSE_TIMEOUT_S = 3.0
FATAL = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def _he_secret(kit_dir: Path) -> Path | None:
    """The kit's HE secret context (privacy mode 'encrypted'), if it was provisioned."""
    path = Path(kit_dir) / "he_secret.ctx"  # fedcare.secure.he.keys.HE_SECRET_FILE
    return path if path.is_file() else None


class SiteAgent:
    """A hospital's agent for one federation (one startup kit)."""

    def __init__(
        self,
        kit_dir: Path,
        data: SiteDataConfig,
        *,
        state_dir: Path,
        time_limit: float = 600.0,
        poll_wait: float = 5.0,
        coordinator: str | None = None,
        on_event: Callable[[str], None] | None = None,
        governance: SiteGovernance | None = None,
    ) -> None:
        self.kit = load_site_kit(kit_dir)
        self.site_id = self.kit.identity
        self.address = coordinator or self.kit.coordinator_address
        if not self.address:
            raise TransportError(f"kit {kit_dir} names no coordinator address; pass one")
        self.data = data
        self.poll_wait = poll_wait
        self.governance = governance
        self._time_limit = time_limit  # before the policy's limit (applied again on changes)
        limits = governance.policy.resources if governance is not None else None
        if limits is not None and limits.task_time_limit_s is not None:
            time_limit = min(time_limit, limits.task_time_limit_s)
        self.worker = TaskWorker(
            self.site_id,
            data,
            state_dir,
            time_limit=time_limit,
            memory_limit_mb=None if limits is None else limits.memory_limit_mb,
            he_secret=_he_secret(kit_dir),
            # the steward's analytics small-cell minimum (default 5 without a policy)
            min_cell=governance.policy.min_cell if governance is not None else DEFAULT_MIN_CELL,
            sandbox=governance.policy.sandbox if governance is not None else "off",
            devices=governance.policy.devices if governance is not None else ("cpu",),
        )
        self._handle: Handler = self.worker.run
        self.limits = Limits()
        self._on_event = on_event or (lambda msg: log.info(msg))
        self._busy: str = ""
        self._unsent: Reply | None = None  # a reply whose push failed; sent after reconnecting
        self.anchors = governance.anchors if governance is not None else None
        self._rng = random.Random()
        self._failures = FailureLog()
        self._connected = False  # the current session said Hello
        self.protocol = PROTOCOL  # announced at Hello (fedcare.records.protocol)
        self._stub: CoordinatorStub | None = None  # the current session's, for FetchPackage
        self.transfers = TaskTransfers(
            state_dir, self.site_id, limits=self.limits, on_event=self._on_event
        )
        self.deployments = SiteDeployments(state_dir, kit_dir, self.site_id, governance, data)
        packages = governance.packages if governance is not None else None
        if packages is not None and packages.fetch is None:
            packages.fetch = grpc_fetcher(lambda: self._stub)

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; reconnect on failures with backoff."""
        backoff = Backoff()
        described = self.data.describe()
        datasets = json.dumps(described)
        rows = {k: int(v["num_train"]) for k, v in described.items() if "num_train" in v}
        self._handle = self._handler(rows)
        try:
            while not stop.is_set():
                try:
                    self._session(stop, datasets, backoff)
                except grpc.RpcError as err:
                    self._failed(err, backoff, stop)
                except TransferIncompleteError as err:  # a stream ended early: resume it
                    self._connected = False
                    self._on_event(f"transfer cut: {err}")
                    stop.wait(backoff.next_delay(self._rng))
        finally:
            self.worker.stop()

    def _failed(self, err: grpc.RpcError, backoff: Backoff, stop: threading.Event) -> None:
        """Name why the call failed, then wait before the next try; raise on a refusal."""
        code = err.code() if hasattr(err, "code") else None
        details = str(err.details() if hasattr(err, "details") else err) or ""
        if code in FATAL:  # the coordinator refuses this certificate: retrying cannot help
            raise TransportError(explain_refusal(self.site_id, details, self.kit).message) from None
        if code == grpc.StatusCode.FAILED_PRECONDITION and REFUSAL_MARK in details:
            self._on_event(f"refused at Hello: {details}")  # an upgrade is needed: stop
            raise TransportError(details) from None
        name = code.name if code is not None else "UNKNOWN"
        cause = explain_failure(name, details, self.kit, self.address, timeout=DIAGNOSE_TIMEOUT_S)
        backoff.cap = SLOW_RETRY_S if cause.persistent else Backoff.cap
        delay = backoff.next_delay(self._rng)
        line = self._failures.failed(cause.message, delay, lost=self._connected)
        self._connected = False
        if line is not None:
            self._on_event(line)
        stop.wait(delay)

    def _session(self, stop: threading.Event, datasets: str, backoff: Backoff) -> None:
        creds = channel_credentials(self.kit.path)
        with grpc.secure_channel(self.address, creds, options=CHANNEL_OPTIONS) as channel:
            stub = self._stub = CoordinatorStub(channel)
            approved = self._approved_version()
            decided = self.deployments.decisions()
            hello = self._hello(stub, datasets)
            coordinator = (hello.protocol_major, hello.protocol_minor)
            streamed = self.protocol >= (1, STREAMED_TRANSFERS)
            self.transfers.begin(streamed and coordinator >= (self.protocol[0], STREAMED_TRANSFERS))
            backoff.reset()
            self._connected = True
            again = self._failures.connected()
            self._on_event(f"connected to {hello.federation} as {hello.site_id}")
            if again is not None:
                self._on_event(again)
            beat = threading.Thread(
                target=self._heartbeat,
                args=(stub, stop, max(hello.heartbeat_interval_s, 1.0)),
                daemon=True,
            )
            beat.start()
            self._anchor(stub, force=True)
            if self._unsent is not None:
                self._push(stub, self._unsent)
            self._resume(stub)
            while not stop.is_set():
                task = self._pull(stub)
                if task is not None:
                    self._serve(stub, task)
                self._anchor(stub)
                self._send_monitoring(stub)
                now_approved = self._approved_version()
                now_decided = self.deployments.decisions()
                if now_approved != approved or now_decided != decided:
                    # the steward decided: offer me withheld studies and waiting deployments
                    approved, decided = now_approved, now_decided
                    self._hello(stub, datasets)
                    self._on_event("approvals changed: said Hello again to the coordinator")

    def _hello(self, stub: CoordinatorStub, datasets: str) -> Any:
        """Hello: who this site is, its datasets, and the reply it still holds (if any)."""
        return stub.Hello(
            pb.HelloRequest(
                site_version=_version(),
                message_version=MESSAGE_VERSION,
                datasets_json=datasets,
                held_tasks=self.transfers.held_keys()
                + ([] if self._unsent is None else [self._unsent.task_id]),
                protocol_major=self.protocol[0],
                protocol_minor=self.protocol[1],
            ),
            timeout=30,
        )

    def _approved_version(self) -> tuple[int, str] | None:
        gov = self.governance
        return gov.approvals.approved_version() if gov is not None else None

    def _pull(self, stub: CoordinatorStub) -> Task | Reply | None:
        # The deadline covers the wait and the download of a large model, not just the wait.
        timeout = self.poll_wait + TRANSFER_TIMEOUT_S
        if self.protocol >= (1, STREAMED_TRANSFERS):  # a streamed task, or a whole one
            return self.transfers.pull(stub, wait_s=self.poll_wait, timeout=timeout)
        request = pb.PullTaskRequest(wait_s=self.poll_wait)
        chunks = list(stub.PullTask(request, timeout=timeout))
        if not chunks:
            return None
        return read_task(assemble(chunks, max_bytes=self.limits.max_payload_bytes))

    def _resume(self, stub: CoordinatorStub) -> None:
        """Go on with the held task after Hello: download the rest, run it, or upload."""
        held = self.transfers.held
        if held is None:
            return
        self._on_event(f"resuming task {held.task} ({held.phase})")
        if held.phase == "upload":
            self._upload(stub)
            return
        task = self.transfers.resume(stub, timeout=TRANSFER_TIMEOUT_S)
        if task is not None:
            self._serve(stub, task)

    def _serve(self, stub: CoordinatorStub, task: Task | Reply) -> None:
        if isinstance(task, Reply):  # a task that cannot be run: answered with the reason
            self._on_event(f"task {task.task_id} refused: {task.error}")
            self._staged(stub, task)
            return
        if task.kind == DEPLOY_KIND:  # checked and decided here, never in the worker
            answer = self.deployments.handle(task)
            state = answer.error.kind if answer.error is not None else "taken"
            self._on_event(f"deployment {task.study_id}: {state}")
            self._push(stub, answer)
            return
        held, store = self.transfers.held, self.transfers.store
        file, body = (store.task_file, store.body_file) if held is not None else (None, None)
        self.worker.offer_file(task, file, body)  # the task's own file; keep the reply's
        self._busy = task.task_id
        self._on_event(f"task {task.task_id}")
        try:
            reply = self._handle(task).answering(task)  # names the task's submission
        finally:
            self._busy = ""
            self.worker.offer_file(task, None)
        kept = self.worker.take_kept()  # staged from its file when the mods left its arrays
        if reply.error is not None:
            self._on_event(f"task {task.task_id} failed: {reply.error.kind}: {reply.error.message}")
        if held is None:  # a whole-message session
            self._push(stub, reply)
        else:
            self._staged(stub, reply, kept)

    def _staged(self, stub: CoordinatorStub, reply: Reply, kept: KeptReply | None = None) -> None:
        """Write ``reply`` to its file(s), held until the coordinator answers; upload it."""
        self.transfers.stage(reply, kept)
        self._upload(stub)

    def _upload(self, stub: CoordinatorStub) -> None:
        """Send the held reply from what the coordinator confirms (whole to a coordinator
        without UploadStatus; a link error is raised: resumed after reconnecting)."""
        key = self.transfers.held.task if self.transfers.held is not None else ""
        pushed = self.transfers.upload(stub, timeout=TRANSFER_TIMEOUT_S)
        if not pushed.accepted:
            self._on_event(f"reply to {key} {pushed.message}")

    def _handler(self, row_counts: dict[str, int]) -> Handler:
        """The worker behind the governance mods (policy, approvals, audit), if any."""
        gov = self.governance
        if gov is None:
            return self.worker.run

        def execute(task: Task) -> Reply:
            self._apply_policy()
            return gov.execute(task, self.worker.run, self.worker.stop)

        return chain(gov.mods(row_counts), execute)

    def _apply_policy(self) -> None:
        """Give the worker the limits and ``min_cell`` of a changed policy file: it is idle
        here, so it is stopped and the next task starts one under the new policy."""
        watched = self.governance.policy_file if self.governance is not None else None
        policy = watched.current().policy if watched is not None else None
        if policy is None:
            return
        limits, time_limit = policy.resources, self._time_limit
        if limits.task_time_limit_s is not None:
            time_limit = min(time_limit, limits.task_time_limit_s)
        wanted = (time_limit, limits.memory_limit_mb, policy.min_cell, policy.sandbox)
        worker = self.worker
        have = (worker.time_limit, worker.memory_limit_mb, worker.min_cell, worker.sandbox)
        if wanted != have or policy.devices != worker.devices:
            worker.time_limit, worker.memory_limit_mb, worker.min_cell, worker.sandbox = wanted
            worker.devices = policy.devices
            worker.stop()

    def _push(self, stub: CoordinatorStub, reply: Reply) -> None:
        """A whole-message reply (before 1.2; deployment answers), kept in memory until the
        coordinator answers, so a dropped link loses nothing; one refused as invalid (its task
        is failed) is dropped: sending it again can't help."""
        self._unsent = reply
        pushed = push_whole(stub, reply, timeout=300)  # a link error: sent after reconnecting
        self._unsent = None
        if not pushed.accepted:
            self._on_event(f"reply to {reply.task_id} {pushed.message}")

    def _send_monitoring(self, stub: CoordinatorStub) -> None:
        """Send each taken model's monitoring summary that changed since it was last sent."""
        for reply in self.deployments.monitoring_due():
            pushed = push_whole(stub, reply, timeout=60)  # a link error: sent after reconnecting
            outcome = "accepted" if pushed.accepted else pushed.message
            self.deployments.monitoring_sent(reply, outcome)
            self._on_event(f"monitoring of {reply.info['version']} sent: {outcome}")

    def _anchor(self, stub: CoordinatorStub, *, force: bool = False) -> None:
        """Anchor the audit head at the coordinator after Hello, then when it is due."""
        anchors = self.anchors
        if anchors is None or not (force or anchors.due()):
            return
        try:
            said = anchors.anchor(lambda request: stub.Anchor(request, timeout=30))
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                self.anchors = None  # an older coordinator: nothing to anchor at
            self._on_event(f"audit anchor failed: {err.code()}: {err.details()}")
            return
        if said:
            self._on_event(said)

    def _heartbeat(self, stub: CoordinatorStub, stop: threading.Event, every: float) -> None:
        while not stop.wait(every):
            try:
                busy = self._busy
                answer = stub.Heartbeat(
                    pb.HeartbeatRequest(state="busy" if busy else "idle", task_id=busy), timeout=10
                )
            except grpc.RpcError:  # one late or lost beat (a loaded host): beat again; while
                continue  # a long task runs, only beats keep this site live at the coordinator
            except ValueError:  # the channel was closed: the session is gone, the main loop
                return  # reconnects with a new one
            if answer.cancel and busy and busy == self._busy:
                self._on_event(f"coordinator cancelled {busy}")
                self.worker.stop()


def _version() -> str:
    from fedcare._version import __version__

    return __version__
