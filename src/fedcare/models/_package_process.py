"""The package runner's process, seen from the trusted side: start, one call, stop.

See :mod:`fedcare.models.package_runner` for what the runner is and how it is isolated;
:mod:`fedcare.models._package_worker` is the other end.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.errors import ModelError
from fedcare.models._package_wire import decode_message, encode_message
from fedcare.models.torch_runtime import DEVICE_ENV
from fedcare.packages.sandbox import (
    NOBODY,
    SandboxedCommand,
    SandboxMode,
    SandboxSpec,
    SandboxUnavailable,
    bwrap_available,
    exit_reason,
    limited_command,
    python_runtime_paths,
    sandbox_command,
)

__all__ = ["PackageRunnerError", "RunnerLimits", "RunnerProcess"]

_ENTRY = "import sys; from fedcare.models._package_worker import main; main(int(sys.argv[1]))"
_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "CUDA_VISIBLE_DEVICES",
)


class PackageRunnerError(ModelError):
    """The package's code failed, ran too long or its runner died; ``code`` says which
    (``package-error``, ``package-timeout``, ``package-crashed``, ``sandbox-unavailable``)."""

    def __init__(self, message: str, code: str = "package-error") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RunnerLimits:
    """What a package's runner may use. ``None`` leaves a limit unset."""

    memory_limit_mb: int | None = 4096
    #: CPU seconds one call may use (the runner's life: ``cpu_life_s``)
    cpu_time_s: float | None = 3600.0
    cpu_life_s: int | None = 7 * 24 * 3600
    #: wall-clock seconds one call may take before the runner's processes are killed
    call_time_s: float = 3600.0
    #: seconds to start the runner and import the package
    start_time_s: float = 120.0
    max_file_size_mb: int | None = 256
    #: processes and threads of the runner's user (numpy and torch start threads)
    max_processes: int | None = 512
    #: the largest message the runner may send back
    max_reply_mb: int = 4096
    #: device files the code may use (e.g. ``/dev/nvidia0``, ``/dev/nvidiactl``,
    #: ``/dev/nvidia-uvm`` for a GPU the site policy allows; CUDA needs no memory limit)
    devices: tuple[str, ...] = ()
    #: the torch device a package's ready torch adapter uses (``FEDCARE_TORCH_DEVICE``) and
    #: the GPUs it may see (``CUDA_VISIBLE_DEVICES``; empty: none)
    torch_device: str = "cpu"
    visible_gpus: str = ""

    def for_devices(self, allowed: tuple[str, ...]) -> RunnerLimits:
        """These limits for the site policy's ``devices`` (``cpu``, ``cuda``, ``cuda:N``): a
        GPU allowed binds the NVIDIA device files, lifts the address-space limit (CUDA maps
        far more than it uses) and makes ``cuda`` the torch device; CPU only hides every GPU."""
        gpus = [d for d in allowed if d.startswith("cuda")]
        if not gpus:
            return replace(self, devices=(), torch_device="cpu", visible_gpus="")
        indices = sorted({d.partition(":")[2] for d in gpus} - {""})
        files = tuple(sorted(str(p) for p in Path("/dev").glob("nvidia*") if not p.is_dir()))
        return replace(
            self,
            devices=files,
            memory_limit_mb=None,
            torch_device="cuda",
            visible_gpus=",".join(indices) if "cuda" not in gpus else "all",
        )


def _others_can_run_python() -> bool:
    """Whether a user other than this one could start this Python (for ``nobody`` without
    bwrap): every runtime folder and its parents readable and passable by others."""
    for path in python_runtime_paths():
        for folder in (path, *path.parents):
            with contextlib.suppress(OSError):
                if os.stat(folder).st_mode & 0o005 != 0o005:
                    return False
    return True


class RunnerProcess:
    """One runner process (see the module docstring), started on first use."""

    def __init__(
        self, folder: Path, options: Mapping[str, Any], limits: RunnerLimits, mode: SandboxMode
    ) -> None:
        self.folder, self.options, self.limits, self.mode = folder, dict(options), limits, mode
        self.isolation = "not-started"
        self._popen: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._scratch: Path | None = None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def _spec(self, scratch: Path) -> SandboxSpec:
        # as root, run as nobody so that the process limit binds: under bwrap always (the
        # runtime is bound for it), without it only if nobody can start this Python
        under_bwrap = self.mode != "off" and bwrap_available()[0]
        root = os.getuid() == 0
        uid = NOBODY if root and (under_bwrap or _others_can_run_python()) else None
        if uid is not None:
            os.chown(scratch, uid, uid)
            _let_others_read(self.folder)
        return SandboxSpec(
            memory_limit_mb=self.limits.memory_limit_mb,
            cpu_time_s=self.limits.cpu_life_s,
            max_file_size_mb=self.limits.max_file_size_mb,
            max_processes=self.limits.max_processes,
            writable_dir=scratch,
            read_only_paths=(self.folder,),
            uid=uid,
            minimal_fs=True,
            devices=self.limits.devices,
        )

    def _env(self, scratch: Path) -> dict[str, str]:
        paths = [str(Path(__file__).resolve().parents[2]), *(p for p in sys.path if p)]
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": os.pathsep.join(paths),
            "HOME": str(scratch),
            "TMPDIR": "/tmp" if self.isolation.startswith("bwrap") else str(scratch),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONNOUSERSITE": "1",
        }
        env.update({k: os.environ[k] for k in _THREAD_VARS if k in os.environ})
        env[DEVICE_ENV] = self.limits.torch_device
        if self.limits.visible_gpus != "all":  # "all": as the site's own environment says
            env["CUDA_VISIBLE_DEVICES"] = self.limits.visible_gpus
        return env

    def _command(self, fd: int, spec: SandboxSpec) -> SandboxedCommand:
        argv = [sys.executable, "-c", _ENTRY, str(fd)]
        if self.mode != "off":
            ok, why = bwrap_available()
            if ok:
                return sandbox_command(argv, spec, mode=self.mode)
            if self.mode == "require":
                message = f"sandbox-unavailable: the site policy requires one; {why}"
                raise PackageRunnerError(message, SandboxUnavailable.code)
        # a separate process under resource limits, without bwrap, killed with its caller
        return limited_command(argv, replace(spec, minimal_fs=False), die_with_parent=True)

    def start(self) -> Connection:
        """The connection to a running runner, starting one (and loading the package)."""
        if self.running and self._conn is not None:
            return self._conn
        self.stop()
        self._scratch = scratch = Path(tempfile.mkdtemp(prefix="fedcare-runner-"))
        parent, child = mp.Pipe()
        try:
            spec = self._spec(scratch)
            command = self._command(child.fileno(), spec)
            uid = f"+uid:{spec.uid}" if spec.uid is not None else ""
            self.isolation = command.isolation + uid
            with open(self._log_path(), "wb") as log:  # the code's own output stays here
                self._popen = subprocess.Popen(
                    command.argv,
                    pass_fds=(child.fileno(),),
                    start_new_session=True,  # one process group to kill
                    env=self._env(scratch),
                    cwd=scratch,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
        except BaseException:
            parent.close()
            self.stop()
            raise
        finally:
            child.close()
        self._conn = parent
        first = {"folder": str(self.folder), "options": self.options}
        self.call({**first, "cpu_s": self.limits.cpu_time_s}, {}, self.limits.start_time_s)
        return parent

    def _log_path(self) -> Path:
        assert self._scratch is not None
        return self._scratch.parent / f"{self._scratch.name}.log"

    def call(
        self, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray], timeout: float
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """One exchange with the runner; PackageRunnerError when it fails, times out, dies."""
        what = str(header.get("op", "starting the package"))
        conn = self._conn
        assert conn is not None
        try:
            conn.send_bytes(encode_message(header, arrays))
            if not conn.poll(timeout):
                self.stop()
                raise PackageRunnerError(
                    f"{what} ran past the time limit of {timeout:g} s; the runner and every "
                    "process it started were killed",
                    "package-timeout",
                )
            data = conn.recv_bytes(self.limits.max_reply_mb * 1024 * 1024)
        except (EOFError, OSError) as err:
            reason = self._died() or repr(err)
            raise PackageRunnerError(
                f"{what}: the runner died ({reason})", "package-crashed"
            ) from None
        header, arrays = decode_message(data)
        if header.get("ok") is not True:
            raise PackageRunnerError(
                f"{what} failed: {header.get('error')!s:.60}: {header.get('message')!s:.400}"
            )
        return header, arrays

    def _died(self) -> str | None:
        popen, scratch = self._popen, self._scratch
        code = popen.wait(5) if popen is not None else None
        tail = ""  # read to name the limit that stopped it; the text itself never leaves
        if scratch is not None:
            with contextlib.suppress(OSError):
                tail = self._log_path().read_bytes()[-4000:].decode(errors="replace")
        self.stop()
        if code is None:
            return None
        return exit_reason(code, tail) or f"exit status {code}"

    def stop(self) -> None:
        """Kill the runner's process group (under bwrap: its whole pid namespace)."""
        if self._popen is not None:
            inner = _children(self._popen.pid)  # bwrap's pid 1 of the sandbox's namespace
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(5)
            # the namespace's pid 1 goes only after every process in it is gone: wait for it,
            # so that a fork bomb's processes no longer count against the next runner's limit
            deadline = time.monotonic() + 5
            while any(_alive(pid) for pid in inner):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
        if self._conn is not None:
            self._conn.close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            with contextlib.suppress(OSError):
                self._log_path().unlink()
        self._popen, self._conn, self._scratch = None, None, None


def _children(pid: int) -> list[int]:
    """The direct children of ``pid`` (Linux ``/proc``; none elsewhere)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs: a zombie (dead, not yet reaped by whoever inherited it) has
    left its namespace empty."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _let_others_read(folder: Path) -> None:
    """Make a stored package readable by the runner's user (a store written before stores
    made their folders 0755 has them 0700); its content is unchanged."""
    for path in (folder, *folder.rglob("*")):
        mode = path.stat().st_mode
        wanted = mode | (0o005 if path.is_dir() else 0o004)
        if wanted != mode:
            path.chmod(wanted)
