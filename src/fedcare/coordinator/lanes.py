"""Separate thread budgets for control calls (Hello, Heartbeat) and data streams.

gRPC's synchronous server runs every call on one executor. :class:`LaneExecutor` is that
executor with two pools: :class:`ControlLane` (a server interceptor, which gRPC runs on its
polling thread just before it submits the call) marks Hello, Heartbeat and Check for the control
pool, everything else goes to the data pool. However many streams the data pool holds, a
site's Heartbeat never queues behind them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from concurrent import futures
from typing import Any

import grpc

__all__ = ["CONTROL_METHODS", "ControlLane", "LaneExecutor"]

CONTROL_METHODS = ("Hello", "Heartbeat", "Check")


class LaneExecutor(futures.Executor):
    """Runs calls marked by :class:`ControlLane` on ``control`` threads, the rest on ``data``."""

    def __init__(self, *, control: int, data: int, name: str = "grpc") -> None:
        self._control = futures.ThreadPoolExecutor(control, thread_name_prefix=f"{name}-control")
        self._data = futures.ThreadPoolExecutor(data, thread_name_prefix=f"{name}-data")
        self._marked = threading.local()

    def mark_control(self) -> None:
        """The next call submitted from this thread runs on the control pool."""
        self._marked.control = True

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        control = getattr(self._marked, "control", False)
        self._marked.control = False
        pool = self._control if control else self._data
        return pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._control.shutdown(wait, cancel_futures=cancel_futures)
        self._data.shutdown(wait, cancel_futures=cancel_futures)


class ControlLane(grpc.ServerInterceptor):
    """Marks calls to ``methods`` (names without the service) for the control pool."""

    def __init__(self, executor: LaneExecutor, methods: Collection[str] = CONTROL_METHODS):
        self.executor, self.methods = executor, frozenset(methods)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        method = str(details.method or "").rsplit("/", 1)[-1]
        handler = continuation(details)
        if handler is not None and method in self.methods:
            self.executor.mark_control()
        return handler
