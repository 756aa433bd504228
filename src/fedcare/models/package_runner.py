"""Run a study package's code isolated: a proxy adapter over a sandboxed runner subprocess.

A deployed site (and the coordinator, for a study's initial parameters) never imports a study
package's code. :class:`SandboxedPackage` is a :class:`~fedcare.models.base.ModelAdapter` whose
``init_params``, ``fit``, ``predict`` and ``loss`` send their arguments over a socket to a
long-lived runner process (:mod:`fedcare.models._package_worker`) started under
:mod:`fedcare.packages.sandbox`:

* **bubblewrap** (``sandbox: prefer | require``, and ``off`` uses it too when present? no:
  ``off`` runs the runner with resource limits only): no network; a filesystem of only the
  system folders, the Python runtime, the package's folder (read-only) and a private scratch
  folder; a private ``/tmp``; none of the site's data files (the rows of a call travel over
  the socket); as root, the code runs as ``nobody`` (:data:`~fedcare.packages.sandbox.NOBODY`)
  so that the process limit binds it (``RLIMIT_NPROC`` never binds root).
* **limits**: memory (``RLIMIT_AS``), file size, processes, CPU seconds per call (a soft
  ``RLIMIT_CPU`` under a hard one for the runner's life), and a wall-clock limit per call past
  which the runner's whole process tree is killed (``package-timeout``). A dead runner is
  started afresh for the next call.

What comes back is parsed as JSON and raw arrays (never unpickled) and checked outside the
code (:mod:`fedcare.models._package_checks`): the parameters must match, exactly, the template
``init_params`` fixed (names, shapes, dtypes; finite); ``num_samples`` is ``len(data)``, never
the code's; ``num_steps`` a positive integer; metrics finite scalars, named in the manifest's
``outputs.metrics`` (or ``loss``), at most 1e9 in magnitude; predictions in the task's shape;
the loss finite. The caller's generator state goes with each call and comes back, so the
runner draws exactly what the in-process adapter (a simulation) would: both give the same
model. DP-SGD is refused (it would run inside the package's code); a study wanting DP uses the
privacy mode ``private``, whose noise the site adds after the proxy returns.
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
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.data.base import Dataset
from fedcare.errors import ModelError, ValidationError
from fedcare.models import _package_checks as checks
from fedcare.models._package_wire import (
    decode_message,
    encode_message,
    generator_from_state,
    rng_state,
    spec_to_wire,
)
from fedcare.models.base import FitResult, LocalTrainSpec, ModelAdapter
from fedcare.packages.sandbox import (
    NOBODY,
    SandboxedCommand,
    SandboxMode,
    SandboxSpec,
    SandboxUnavailable,
    exit_reason,
    limited_command,
    python_runtime_paths,
    sandbox_command,
)
from fedcare.records.arrays import ArrayRecord
from fedcare.records.package import PackageManifest

__all__ = ["PackageRunnerError", "RunnerLimits", "SandboxedPackage"]

_ENTRY = "import sys; from fedcare.models._package_worker import main; main(int(sys.argv[1]))"
_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
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


def _others_can_run_python() -> bool:
    """Whether a user other than this one could start this Python (for ``nobody`` without
    bwrap): every runtime folder and its parents readable and passable by others."""
    for path in python_runtime_paths():
        for folder in (path, *path.parents):
            with contextlib.suppress(OSError):
                if os.stat(folder).st_mode & 0o005 != 0o005:
                    return False
    return True


class _Runner:
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
        root = os.getuid() == 0
        uid = NOBODY if root and (self.mode != "off" or _others_can_run_python()) else None
        if uid is not None:
            os.chown(scratch, uid, uid)
        return SandboxSpec(
            memory_limit_mb=self.limits.memory_limit_mb,
            cpu_time_s=self.limits.cpu_life_s,
            max_file_size_mb=self.limits.max_file_size_mb,
            max_processes=self.limits.max_processes,
            writable_dir=scratch,
            read_only_paths=(self.folder,),
            uid=uid,
            minimal_fs=True,
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
        return env

    def _command(self, fd: int, spec: SandboxSpec) -> SandboxedCommand:
        argv = [sys.executable, "-c", _ENTRY, str(fd)]
        if self.mode == "off":  # a separate process under resource limits, without bwrap
            return limited_command(argv, replace(spec, minimal_fs=False))
        try:
            return sandbox_command(argv, spec, mode=self.mode)
        except SandboxUnavailable as err:
            raise PackageRunnerError(str(err), SandboxUnavailable.code) from None

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
                    preexec_fn=command.preexec_fn,
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
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(5)
        if self._conn is not None:
            self._conn.close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            with contextlib.suppress(OSError):
                self._log_path().unlink()
        self._popen, self._conn, self._scratch = None, None, None


class SandboxedPackage(ModelAdapter):
    """A study package's adapter whose code runs in a sandboxed runner (module docstring).

    Parameters
    ----------
    folder:
        The stored, verified package (:meth:`fedcare.packages.store.PackageStore.folder`).
    manifest:
        Its manifest (the task, the declared metrics).
    options:
        The entry point's keyword arguments (the study's ``model.options``).
    limits, mode:
        The runner's resource limits; the sandbox mode (``require`` refuses without bwrap,
        ``prefer`` uses it when it works, ``off`` runs a separate process under the limits).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        manifest: PackageManifest,
        options: Mapping[str, Any] | None = None,
        *,
        limits: RunnerLimits | None = None,
        mode: SandboxMode = "prefer",
    ) -> None:
        self.manifest = manifest
        self.__dict__["task"] = manifest.task
        self.where = f"package {manifest.name} {manifest.version}"
        self.limits = limits or RunnerLimits()
        self.metrics = frozenset({*manifest.outputs.metrics, "loss"})
        self.template: checks.Template | None = None
        self._runner = _Runner(Path(folder), options or {}, self.limits, mode)
        self._lock = threading.Lock()

    @property
    def isolation(self) -> str:
        """What the runner got: ``bwrap+uid:65534``, ``bwrap``, ``rlimits-only``, ..."""
        return self._runner.isolation

    def close(self) -> None:
        """Stop the runner (the next call starts a new one)."""
        with self._lock:
            self._runner.stop()

    def _call(
        self, header: dict[str, Any], arrays: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        with self._lock:
            self._runner.start()
            try:
                return self._runner.call(header, arrays, self.limits.call_time_s)
            except PackageRunnerError as err:
                raise PackageRunnerError(f"{self.where}: {err}", err.code) from None
            except ValidationError as err:  # a malformed message: that runner is not trusted on
                self._runner.stop()
                raise checks.PackageOutputRefused(f"{self.where}: {err}") from None

    def _with_rng(
        self, header: dict[str, Any], arrays: Mapping[str, np.ndarray], rng: np.random.Generator
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        out, result = self._call({**header, "rng": rng_state(rng)}, arrays)
        after = generator_from_state(out.get("rng"))  # checked before the caller's is set
        if after.bit_generator.state["bit_generator"] != rng_state(rng)["bit_generator"]:
            raise checks.PackageOutputRefused(f"{self.where}: returned another bit generator")
        rng.bit_generator.state = after.bit_generator.state
        return out, result

    def init_params(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> ArrayRecord:
        header = {"op": "init_params", "input_shape": [int(d) for d in input_shape]}
        _, arrays = self._with_rng(header, {}, rng)
        params = ArrayRecord(arrays).unprefixed("params")
        if self.template is None:
            self.template = checks.template_of(params, self.where)
        else:
            checks.check_params(params, self.template, f"{self.where} init_params")
        return ArrayRecord(params)

    def _template(self, data: Dataset) -> checks.Template:
        if self.template is None:  # fixed by an init on the same inputs (its shapes only)
            self.init_params(data.input_shape, np.random.default_rng(0))
        assert self.template is not None
        return self.template

    def fit(
        self, params: ArrayRecord, data: Dataset, spec: LocalTrainSpec, rng: np.random.Generator
    ) -> FitResult:
        if spec.dp is not None:
            raise ModelError(
                f"{self.where}: DP-SGD (the study's 'dp' settings) is not available for study "
                "packages: it would run inside the package's own code; use privacy mode "
                "'private' (noise added by the site) instead"
            )
        template = self._template(data)
        fields, spec_arrays = spec_to_wire(spec)
        arrays = {**params.prefixed("params"), **_data_arrays(data), **spec_arrays}
        out, result = self._with_rng({"op": "fit", "spec": fields}, arrays, rng)
        where = f"{self.where} fit"
        others = [k for k in result if not k.startswith("params/")]
        if others:
            raise checks.PackageOutputRefused(f"{where}: returned arrays {others} besides params")
        new = ArrayRecord(result).unprefixed("params")
        checks.check_params(new, template, where)
        steps = checks.check_num_steps(out.get("num_steps"), where)
        metrics = checks.check_metrics(out.get("metrics"), self.metrics, where)
        return FitResult(ArrayRecord(new), len(data), steps, metrics)  # rows: never the code's

    def predict(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        _, result = self._call({"op": "predict"}, {**params.prefixed("params"), "X": X})
        scores = result.get("scores")
        if scores is None or set(result) != {"scores"}:
            raise checks.PackageOutputRefused(f"{self.where} predict: returned no scores")
        return checks.check_scores(scores, len(X), self.task, f"{self.where} predict")

    def loss(self, params: ArrayRecord, data: Dataset) -> float:
        arrays = {**params.prefixed("params"), **_data_arrays(data)}
        out, _ = self._call({"op": "loss"}, arrays)
        return checks.check_loss(out.get("loss"), f"{self.where} loss")


def _data_arrays(data: Dataset) -> dict[str, np.ndarray]:
    arrays = {"data/X": np.asarray(data.X), "data/y": np.asarray(data.y)}
    if data.time is not None:
        arrays["data/time"] = np.asarray(data.time)
    return arrays
