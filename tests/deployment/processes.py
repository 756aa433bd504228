"""Child processes for the deployment tests: ``python -m fedcare ...`` that always stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import grpc
import pytest

from fedcare.transport.tls import channel_credentials


def free_port() -> int:
    """A port that was free a moment ago (the coordinator subprocess needs it up front)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """``python -m fedcare ...`` children, each in its own session, logging to a file.

    :meth:`stop_all` always ends every one of them and their children (worker processes):
    SIGTERM to the process group, then SIGKILL after a grace period.
    """

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        assert name not in self.procs, f"process {name} already started"
        with open(self.logs / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fedcare", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> int:
        """SIGKILL the process itself (not its children) and reap it; return its exit code."""
        proc = self.procs[name]
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=30)

    def check(self, *names: str) -> None:
        """Fail, with its log, if one of ``names`` (default: all) exited."""
        for name in names or tuple(self.procs):
            proc = self.procs[name]
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}\n{self.describe()}")

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def describe(self, tail: int = 2500) -> str:
        parts = []
        for name, proc in self.procs.items():
            state = "running" if proc.poll() is None else f"exited {proc.returncode}"
            parts.append(f"--- {name} ({state}) ---\n{self.log(name)[-tail:]}")
        return "\n".join(parts)

    def terminate(self) -> None:
        """SIGTERM every process group (agents then stop as soon as their open call ends)."""
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)

    def stop_all(self, grace: float = 5.0) -> None:
        self.terminate()
        end = time.monotonic() + grace
        for proc in self.procs.values():
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, end - time.monotonic()))
            _signal_group(proc, signal.SIGKILL)  # leftovers: the worker of a killed agent
            proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the child's pid


def wait_until_serving(
    kit: Path, address: str, *, timeout: float, check: Callable[[], None]
) -> None:
    """Wait until a TLS connection to ``address`` with ``kit`` succeeds (no RPC is made)."""
    options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]
    end = time.monotonic() + timeout
    with grpc.secure_channel(address, channel_credentials(kit), options=options) as channel:
        ready = grpc.channel_ready_future(channel)
        while True:
            try:
                ready.result(timeout=0.5)
                return
            except grpc.FutureTimeoutError:
                check()
                if time.monotonic() > end:
                    pytest.fail(f"nothing served at {address} within {timeout:g} s")
