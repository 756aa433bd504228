"""Run tasks in a long-lived worker subprocess with a time limit per task.

The agent's network threads never run model code: each task goes to a worker process (started
with ``spawn``, so no gRPC state is forked) that holds the site's data and runtimes, as a
framed file whose path goes over a pipe, and its reply comes back the same way
(:mod:`fedcare.site.worker_io`: memory-mapped, never a whole model as bytes). A task that runs
past the site's time limit gets the worker killed and a ``timeout`` error reply; a worker that
dies gets a ``worker-crashed`` reply; the next task starts a fresh worker (site state such as
SCAFFOLD control variates is on disk, and so is a fit task's training checkpoint: the same task
run again resumes its training where the last checkpoint left it,
:mod:`fedcare.site.train_checkpoint`).

With the site policy's ``sandbox: prefer | require`` the worker is started isolated
(:mod:`fedcare.packages.sandbox`: bubblewrap with no network, the filesystem read-only but for the
site's state dir, a private ``/tmp``, the memory limit as ``RLIMIT_AS``) over an inherited
socket pair, and every reply says in ``info["isolation"]`` what applied (``bwrap`` or
``rlimits-only``). ``require`` without a working bwrap refuses each task with
``sandbox-unavailable``. ``off`` (the default) starts it as a plain ``spawn`` process.

A study package's code never runs in the worker either: its tasks' adapters are
:class:`~fedcare.models.package_runner.SandboxedPackage` proxies (:func:`package_builder`) over
a runner subprocess per package, started from the site's verified store ``STATE/packages``
under the same sandbox mode (with ``off``: a separate process under resource limits), without
the site's data files; the reply's ``info["package_isolation"]`` says what it got. A package
not in the store is refused with ``package-unavailable``; a package that fails, runs past the
time limit or returns what its template and manifest do not allow is refused with
``package-error``, ``package-timeout``, ``package-crashed`` or ``package-output-refused``,
and the next task gets a fresh runner.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from fedcare.analytics.disclosure import DEFAULT_MIN_CELL, AnalyticsPolicy
from fedcare.errors import ValidationError
from fedcare.models.package_runner import RunnerLimits
from fedcare.models.registry import PackageBuilder, build_model
from fedcare.models.sandboxed_packages import SandboxedPackages
from fedcare.models.torch_offload import ParamOffload
from fedcare.packages.sandbox import (
    Isolation,
    SandboxMode,
    SandboxSpec,
    SandboxUnavailable,
    sandbox_command,
)
from fedcare.packages.store import PackageStore
from fedcare.records.messages import Reply, Task
from fedcare.site import worker_io
from fedcare.site.config import PreparedDataset, SiteDataConfig, refusal
from fedcare.site.packages import PACKAGES_DIR
from fedcare.site.row_skips import InvalidRowsHandler
from fedcare.site.staging import KeptReply
from fedcare.site.worker_sandbox import SandboxedProcess, read_only_paths

__all__ = ["TaskWorker", "build_apps", "package_builder"]


def _route(apps: dict[str, Any], task: Task) -> Reply:
    name = task.plan.get("dataset")
    app = apps.get(str(name))
    if app is None:
        return Reply.failure(
            task,
            "unknown-dataset",
            f"this site has no dataset {name!r}; it offers {sorted(apps)}",
        )
    reply: Reply = app(task)
    return reply


def build_apps(
    site_id: str,
    config: SiteDataConfig,
    state_dir: Path,
    *,
    he_secret: Path | None = None,
    min_cell: int = DEFAULT_MIN_CELL,
    packages: Callable[[], PackageBuilder] | None = None,
) -> dict[str, Any]:
    """One handler per dataset of ``config``: a :class:`SiteApp` whose analytics withhold
    counts below ``min_cell`` (the site policy's) and read a mapped dataset's harmonized
    table, or a refusal for a dataset that failed its data check. ``packages`` makes each
    dataset's builder of study packages' adapters (:func:`package_builder`: sandboxed
    runners; one builder per dataset, so no runner sees two datasets' rows). A study whose
    plan skips invalid rows gets the dataset prepared without them, on its first task
    (:class:`fedcare.site.row_skips.InvalidRowsHandler`). Fit tasks save training checkpoints
    every ``config.checkpoint_every_s`` (:mod:`fedcare.site.train_checkpoint`) and keep a
    torch model too large for ``config.memory_budget_mb`` in a scratch file of the worker's
    hand-over folder (:mod:`fedcare.models.torch_offload`, cleared when a worker starts)."""
    apps: dict[str, Any] = {}
    every = config.checkpoint_every_s  # training checkpoints under each dataset's state folder
    offload = ParamOffload.from_budget(config.memory_budget_mb, worker_io.io_dir(state_dir))
    for name, entry in config.datasets.items():
        app = partial(
            _dataset_app, site_id, state_dir / name, he_secret, min_cell, packages, every, offload
        )
        apps[name] = InvalidRowsHandler.for_entry(name, entry, app)
    return apps


def _dataset_app(
    site_id: str,
    state_dir: Path,
    he_secret: Path | None,
    min_cell: int,
    packages: Callable[[], PackageBuilder] | None,
    checkpoint_every_s: float,
    offload: ParamOffload | None,
    prepared: PreparedDataset,
) -> Any:
    """A :class:`SiteApp` on a prepared dataset, or a refusal when it failed its check."""
    from fedcare.data.base import SiteData
    from fedcare.site.app import SiteApp

    data, report, frame, schema, _ = prepared
    if data is None:  # failed its data check: every task on it is refused with the reason
        return refusal(report.summary if report is not None else "no data")
    app = SiteApp(
        SiteData(site_id, data.train, data.test), state_dir=state_dir, he_secret=he_secret
    )
    app.runtime.analytics_policy = AnalyticsPolicy(min_cell=min_cell)
    app.runtime.analytics_frame = frame
    app.runtime.feature_names = _column_names(schema)
    app.runtime.checkpoint_every_s = checkpoint_every_s
    app.runtime.param_offload = offload
    if packages is not None:
        app.runtime.model_builder = partial(build_model, packages=packages())
    return app


def _column_names(schema: dict[str, Any] | None) -> tuple[str, ...]:
    """The feature names of a dataset's feature schema (empty for images or unnamed columns)."""
    columns = (schema or {}).get("columns") or []
    return tuple(str(c.get("name")) for c in columns if isinstance(c, dict))


def _limit_memory(memory_limit_mb: int | None) -> None:
    """Cap this process's address space (the site policy's memory limit)."""
    if memory_limit_mb is None:
        return
    import resource

    limit = memory_limit_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def package_builder(
    state_dir: Path,
    *,
    sandbox: SandboxMode,
    time_limit: float | None,
    memory_limit_mb: int | None,
    devices: tuple[str, ...] = ("cpu",),
) -> SandboxedPackages:
    """How the worker runs study packages: each in its own sandboxed runner (never in the
    worker), from the site's verified store ``STATE/packages``, under the policy's sandbox
    mode, memory limit and a call time limit a little below the task's (so that a package
    that runs too long gets ``package-timeout``, and the worker lives on)."""
    limits = RunnerLimits()
    if time_limit is not None:
        call = max(1.0, time_limit - min(5.0, 0.1 * time_limit))
        limits = replace(limits, call_time_s=call, cpu_time_s=call * (os.cpu_count() or 1))
    if memory_limit_mb is not None:
        limits = replace(limits, memory_limit_mb=memory_limit_mb)
    store = PackageStore(state_dir / PACKAGES_DIR)
    return SandboxedPackages(store, limits=limits.for_devices(devices), mode=sandbox)


def _worker_main(
    conn: Connection,
    site_id: str,
    config_json: str,
    state_dir: str,
    memory_limit_mb: int | None = None,
    he_secret: str | None = None,
    min_cell: int = DEFAULT_MIN_CELL,
    sandbox: SandboxMode = "off",
    time_limit: float | None = None,
    devices: tuple[str, ...] = ("cpu",),
) -> None:
    _limit_memory(None if any(d != "cpu" for d in devices) else memory_limit_mb)
    config = SiteDataConfig.model_validate_json(config_json)
    packages = partial(
        package_builder,
        Path(state_dir),
        sandbox=sandbox,
        time_limit=time_limit,
        memory_limit_mb=memory_limit_mb,
        devices=tuple(devices),
    )
    apps = build_apps(
        site_id,
        config,
        Path(state_dir),
        he_secret=Path(he_secret) if he_secret else None,
        min_cell=min_cell,
        packages=packages,
    )

    def handle(task: Task) -> Reply:
        try:
            return _route(apps, task)
        except Exception as err:  # SiteApp already turns errors into replies; belt and braces
            return Reply.failure(task, "exception", traceback.format_exception_only(err)[-1])

    worker_io.serve(conn, handle)  # tasks and replies by file (fedcare.site.worker_io)


def _sandboxed_main(fd: str) -> None:
    """The sandboxed worker's entry: its arguments come first over the inherited socket."""
    conn = Connection(int(fd))
    args = json.loads(conn.recv_bytes())
    _worker_main(conn, *args)


class TaskWorker:
    """One worker process for one site; ``run`` blocks until the reply or the time limit."""

    def __init__(
        self,
        site_id: str,
        config: SiteDataConfig,
        state_dir: Path,
        *,
        time_limit: float,
        memory_limit_mb: int | None = None,
        he_secret: Path | None = None,
        min_cell: int = DEFAULT_MIN_CELL,
        sandbox: SandboxMode = "off",
        devices: tuple[str, ...] = ("cpu",),
    ) -> None:
        self.site_id = site_id
        self.devices = devices  # the site policy's: what package code may compute on
        self.sandbox: SandboxMode = sandbox  # the site policy's: off | prefer | require
        self.isolation: Isolation = "none"  # what the running worker got
        self.he_secret = he_secret  # the kit's HE secret context (privacy mode 'encrypted')
        self.config = config
        self.state_dir = state_dir
        self.time_limit = time_limit
        self.memory_limit_mb = memory_limit_mb
        self.min_cell = min_cell  # the site policy's analytics small-cell minimum
        self._ctx = mp.get_context("spawn")
        self._proc: Any = None
        self._conn: Connection | None = None
        self._launcher: ThreadPoolExecutor | None = None
        self.io_dir = worker_io.io_dir(state_dir)  # hand-over files (fedcare.site.worker_io)
        self._offered: tuple[Task, Path] | None = None
        self._keep: Path | None = None
        self._kept: KeptReply | None = None

    def offer_file(self, task: Task, path: Path | None, keep_reply: Path | None = None) -> None:
        """``task`` was read from the framed file ``path``: if it reaches :meth:`run` with those
        arrays, the worker reads that file (else the task is framed into a file of its own).
        With ``keep_reply`` the worker's reply file is moved there, not removed
        (:meth:`take_kept`)."""
        self._offered = None if path is None else (task, path)
        self._keep = None if path is None else keep_reply

    def take_kept(self) -> KeptReply | None:
        """The last run's reply, if it was kept in its file (``offer_file(keep_reply=...)``);
        once."""
        kept, self._kept = self._kept, None
        return kept

    def _start(self) -> Connection:
        if self._proc is not None and self._proc.is_alive() and self._conn is not None:
            return self._conn
        args = (
            self.site_id,
            self.config.model_dump_json(),
            str(self.state_dir),
            self.memory_limit_mb,
            None if self.he_secret is None else str(self.he_secret),
            self.min_cell,
            self.sandbox,
            self.time_limit,
            list(self.devices),
        )
        worker_io.clear(self.io_dir)  # no worker runs: what is left there is stale
        parent, child = self._ctx.Pipe()
        if self.sandbox != "off":
            try:
                self._proc = self._start_sandboxed(child, args)
            except BaseException:
                parent.close()
                raise
            finally:
                child.close()
            self._conn = parent  # before sending: stop() closes it if the send fails
            parent.send_bytes(json.dumps(args).encode())
            return parent
        self._proc = self._ctx.Process(
            target=_worker_main,
            args=(child, *args),
            name=f"fedcare-worker-{self.site_id}",
            daemon=True,
        )
        self._proc.start()
        child.close()
        self.isolation = "none"
        self._conn = parent
        return parent

    def _start_sandboxed(self, child: Connection, args: tuple[Any, ...]) -> SandboxedProcess:
        """The worker under :mod:`fedcare.packages.sandbox`, talking over ``child``'s socket (a
        pipe's end is inherited across bwrap); raises :class:`SandboxUnavailable`."""
        self.state_dir.mkdir(parents=True, exist_ok=True)  # bound writable: it must exist
        spec = SandboxSpec(
            memory_limit_mb=self.memory_limit_mb,
            cpu_time_s=None,  # a long-lived worker: the per-task time limit applies instead
            max_file_size_mb=None,
            max_processes=None,
            writable_dir=self.state_dir.resolve(),
            read_only_paths=read_only_paths(self.config, self.he_secret),
        )
        entry = "import sys; from fedcare.site.worker import _sandboxed_main as m; m(sys.argv[1])"
        fd = child.fileno()
        command = sandbox_command([sys.executable, "-c", entry, str(fd)], spec, mode=self.sandbox)
        package_root = str(Path(__file__).resolve().parents[2])  # the dir holding fedcare/
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, *sys.path[1:]])}
        popen = self._launch(command.argv, fd, env)
        self.isolation = command.isolation
        return SandboxedProcess(popen)

    def _launch(self, argv: Sequence[str], fd: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start the sandboxed worker from this worker's own launcher thread. bwrap's
        ``--die-with-parent`` kills it when the *thread* that started it ends, and tasks run in
        short-lived threads (:func:`fedcare.site.governance.run_watched`): started from one,
        the worker was killed after every task and started again (imports, data) for the next.
        """
        if self._launcher is None:
            self._launcher = ThreadPoolExecutor(1, f"fedcare-launcher-{self.site_id}")

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(argv, pass_fds=(fd,), start_new_session=True, env=env)

        return self._launcher.submit(start).result()

    def run(self, task: Task) -> Reply:
        try:
            conn = self._start()
        except SandboxUnavailable as err:
            return Reply.failure(task, SandboxUnavailable.code, str(err))
        except OSError as err:  # e.g. the sandboxed worker died before it read its arguments
            self.stop()
            return Reply.failure(task, "worker-crashed", f"worker did not start: {err!r}")
        reply = self._run(conn, task)
        if self.sandbox == "off":
            return reply
        return replace(reply, info={**reply.info, "isolation": self.isolation})

    def _run(self, conn: Connection, task: Task) -> Reply:
        self._kept = None
        try:
            hand = worker_io.HandOver(self.io_dir, task, self._offered, self._keep)
        except (OSError, ValidationError) as err:
            return Reply.failure(task, worker_io.IO_KIND, f"task file not written: {err}")
        try:
            conn.send_bytes(hand.request())
            if not conn.poll(self.time_limit):
                self.stop()
                return Reply.failure(
                    task, "timeout", f"task ran past the site's time limit of {self.time_limit:g} s"
                )
            reply = hand.reply(conn.recv_bytes())
            self._kept = hand.kept
            return reply
        except (EOFError, OSError, BrokenPipeError) as err:
            code = self._proc.exitcode if self._proc is not None else None
            self.stop()
            return Reply.failure(task, "worker-crashed", f"worker exited ({code}): {err!r}")
        finally:
            hand.close()

    def stop(self) -> None:
        """Kill the worker (a running task is abandoned)."""
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        if self._conn is not None:
            self._conn.close()
        if self._launcher is not None:  # its thread ends: nothing it started is left running
            self._launcher.shutdown(wait=False)
        self._proc, self._conn, self._launcher = None, None, None
