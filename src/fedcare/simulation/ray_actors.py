"""Ray for :class:`~fedcare.simulation.ray_grid.RayGrid`: the connection to a Ray instance and the
site actors that run in it.

Ray is an optional extra (``pip install 'fedcare[ray]'``) and is imported only when a Ray grid
opens (:func:`import_ray`). :func:`connect` starts a local instance bound to 127.0.0.1 with no
dashboard, joins an existing cluster at ``address``, or uses the one this process already
joined. :class:`SiteActor` is the body of one actor: it builds its sites'
:class:`~fedcare.site.app.SiteApp` s once and answers their tasks one at a time.
"""

from __future__ import annotations

import importlib
import os
import socket
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from fedcare.data.base import SiteData
from fedcare.errors import ConfigError
from fedcare.records.messages import Reply, Task
from fedcare.simulation.parallel import _call
from fedcare.site.app import Mod, SiteApp

__all__ = ["SiteActor", "check_address", "connect", "import_ray"]

#: Seconds to wait for a TCP connection to a cluster's address before calling it unreachable
#: (Ray itself retries for minutes).
REACH_S = 5.0
INSTALL = "pip install 'fedcare[ray]'"
#: Ray's switch between a single-node instance on loopback ("0") and a joinable cluster node.
SINGLE_NODE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def import_ray() -> ModuleType:
    """The ``ray`` module.

    Raises
    ------
    ConfigError
        When Ray is not installed, naming the extra that installs it.
    """
    try:
        return importlib.import_module("ray")  # the extra, on first use (never at import)
    except ImportError as err:
        raise ConfigError(
            f"the Ray backend needs Ray, which is not installed ({err}); install it with {INSTALL}"
        ) from None


def check_address(address: str) -> None:
    """Refuse quickly an address nothing listens on (Ray itself retries for minutes).

    Raises
    ------
    ConfigError
        When ``address`` is not ``host:port``, ``ray://host:port`` or ``auto``, or nothing
        accepts a TCP connection there within :data:`REACH_S` seconds.
    """
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(
            f"Ray address {address!r} is not host:port, ray://host:port or 'auto' "
            "(e.g. 10.0.0.5:6379, the head node's GCS address)"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_S):
            pass
    except OSError as err:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address!r}: {err} "
            f"(start one with `ray start --head`, or leave out the address for a local instance)"
        ) from None


def connect(ray: ModuleType, address: str | None, num_cpus: float) -> bool:
    """Join Ray: the instance this process already joined, the cluster at ``address``, or a
    new local one (127.0.0.1, no dashboard, at least ``num_cpus`` logical CPUs).

    Returns
    -------
    bool
        True when this call started Ray (the caller shuts it down when done).

    Raises
    ------
    ConfigError
        When ``address`` is malformed or cannot be reached.
    """
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "configure_logging": False}
    if address is not None:
        check_address(address)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ConfigError(f"cannot join the Ray cluster at {address!r}: {err}") from None
        return True
    cpus = max(os.cpu_count() or 1, int(-(-num_cpus // 1)))
    with _loopback_only():
        ray.init(
            address="local",
            num_cpus=cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            **quiet,
        )
    return True


@contextmanager
def _loopback_only() -> Iterator[None]:
    """Start a local Ray instance whose servers listen on 127.0.0.1 only.

    On Linux Ray resolves 127.0.0.1 to the machine's network address and its servers listen on
    every interface, so that other nodes can join. A simulation's instance has no other nodes:
    Ray's own single-node setting (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the default on macOS
    and Windows) keeps its GCS, raylet and workers on loopback. Its processes inherit the
    variable; this process reads it once, when Ray is imported, so it is set there as well
    while Ray starts, then both are restored (joining a cluster later still works).
    """
    constants = importlib.import_module("ray._private.ray_constants")
    saved_env = os.environ.get(SINGLE_NODE)
    saved = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[SINGLE_NODE] = "0"
    if saved is not None:
        setattr(constants, "ENABLE_RAY_CLUSTER", False)  # noqa: B010 (not in Ray's stubs)
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop(SINGLE_NODE, None)
        else:
            os.environ[SINGLE_NODE] = saved_env
        if saved is not None:
            setattr(constants, "ENABLE_RAY_CLUSTER", saved)  # noqa: B010


class SiteActor:
    """One Ray actor's sites (run as ``ray.remote(SiteActor)``; see the module docstring).

    Parameters
    ----------
    index:
        The actor's number (named in error replies).
    sites:
        Its sites' data, sent once.
    mods, feature_names, site_reports:
        As :class:`~fedcare.simulation.parallel.ParallelGrid` takes them.
    torch_threads:
        Torch's thread count in the coordinator's process when torch is loaded there (a torch
        model's sums depend on it), else ``None``.
    """

    def __init__(
        self,
        index: int,
        sites: Sequence[SiteData],
        mods: Mapping[str, Sequence[Mod]],
        feature_names: tuple[str, ...],
        site_reports: Path | None,
        torch_threads: int | None,
    ) -> None:
        self.index = index
        self.apps: dict[str, SiteApp] = {}
        self.broken: str | None = None
        try:
            if torch_threads is not None:
                from fedcare.models.torch_runtime import import_torch

                import_torch().set_num_threads(torch_threads)
            for site in sites:
                app = SiteApp(site, mods=mods.get(site.site_id, ()), simulated=True)
                app.runtime.feature_names = feature_names
                if site_reports is not None:
                    app.runtime.report_dir = site_reports / site.site_id
                self.apps[site.site_id] = app
        except Exception as err:  # its replies name why this actor has no sites
            self.broken = traceback.format_exception_only(type(err), err)[-1].strip()

    def ready(self) -> str | None:
        """``None`` once its sites are built, else why they could not be."""
        return self.broken

    def call(self, task: Task) -> Reply:
        """The reply of ``task``'s site (an error reply when the site raised)."""
        if self.broken is not None:
            why = f"Ray actor {self.index} failed to start its sites: {self.broken}"
            return Reply.failure(task, "worker-died", f"site {task.site_id!r}: {why}")
        return _call(self.apps[task.site_id], task)
