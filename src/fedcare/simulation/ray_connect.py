"""The connection to Ray for :class:`~fedcare.simulation.ray_grid.RayGrid`.

Ray is an optional extra (``pip install 'fedcare[ray]'``) and is imported only when a Ray grid
opens (:func:`import_ray`). :func:`check_address` refuses an address that does not answer
within :data:`REACH_S` (Ray itself retries for minutes). :func:`connect` starts a local
instance bound to 127.0.0.1 with no dashboard, joins an existing cluster at ``address``, or
uses the one this process already joined.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
from collections.abc import Iterator
from types import ModuleType

from fedcare.errors import ConfigError

__all__ = ["INSTALL", "REACH_S", "check_address", "connect", "import_ray"]

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
    new local one (127.0.0.1, no dashboard, at least ``num_cpus`` logical CPUs). An
    ``address`` is checked even when this process already joined Ray.

    Returns
    -------
    bool
        True when this call started Ray (the caller shuts it down when done).

    Raises
    ------
    ConfigError
        When ``address`` is malformed or cannot be reached.
    """
    if address is not None:
        check_address(address)
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "configure_logging": False}
    if address is not None:
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


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Start a local Ray instance whose servers listen on 127.0.0.1 only.

    On Linux Ray resolves 127.0.0.1 to the machine's network address and its servers listen on
    every interface, so that other nodes can join. A simulation's instance has no other nodes:
    Ray's own single-node setting (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the default on macOS
    and Windows) keeps its GCS, raylet and workers on loopback. Its processes inherit the
    variable; this process reads it once, when Ray is imported, so it is set there as well
    while Ray starts, then both are restored (joining a cluster later still works).
    """
    constants: ModuleType | None
    try:
        constants = importlib.import_module("ray._private.ray_constants")
    except ImportError:  # a Ray without it: the variable alone, read when Ray starts
        constants = None
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
