"""Run untrusted code in a subprocess, isolated: how a site contains researcher code.

:func:`sandbox_command` turns a command line into an isolated one that sets its own resource
limits (``prlimit``, ``setpriv`` of util-linux in front of it); :func:`run_sandboxed` runs it
with a wall-clock timeout and names why it stopped. What applies is reported (``bwrap``,
``rlimits-only`` or ``none``) so a caller can audit it.

* ``bwrap`` (Linux, bubblewrap present and a trial run works: namespaces may be disabled): no
  network (``--unshare-net``), own pid and IPC namespaces, the filesystem read-only
  (``--ro-bind / /``) with a private ``/tmp``, the writable directory bound read-write and the
  read-only paths bound read-only, killed with its parent.
* Resource limits, always (``rlimits-only`` when bwrap is unavailable): ``RLIMIT_AS``
  (memory), ``RLIMIT_CPU``, ``RLIMIT_FSIZE`` and ``RLIMIT_NPROC``.

A fork bomb: ``RLIMIT_NPROC`` counts every process of the *real uid* (not only the
sandbox's) and never binds uid 0. So it contains a bomb when the site runs as an unprivileged
user, or when a root caller sets ``SandboxSpec.uid`` (e.g. ``NOBODY``: the code then runs as
that user, who must be able to read the interpreter; the writable directory is handed to it).
As root without ``uid`` only the pid namespace plus the wall timeout bound it: killing bwrap
kills the namespace's init (``--die-with-parent``) and with it every process in it, but until
then the bomb can take the host's free pids. A cgroup ``pids.max`` would bind root too; it is
not used (not every host lets a site create cgroups).

``SandboxSpec.minimal_fs`` (the study-package runner, :mod:`fedcare.models.package_runner`)
shows the code much less: instead of the host's whole filesystem read-only, only the system
folders (``/usr``, ``/etc`` and the ``/bin``, ``/lib`` links), the Python runtime (interpreter,
standard library, site-packages, every import path) and the paths named; the rest (the site's
data, home folders, the state dir) does not exist in it. A root caller's ``uid`` is then taken
*inside* the sandbox (``setpriv``, after bwrap has bound what root may read), so the runtime
needs no permissions for that user beyond reading the bound folders.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

__all__ = [
    "NOBODY",
    "Isolation",
    "SandboxMode",
    "SandboxResult",
    "SandboxSpec",
    "SandboxUnavailable",
    "SandboxedCommand",
    "bwrap_available",
    "exit_reason",
    "limited_command",
    "python_runtime_paths",
    "run_sandboxed",
    "sandbox_command",
]

Isolation = Literal["bwrap", "rlimits-only", "none"]
#: The site policy's ``sandbox``: ``require`` refuses to run without bwrap, ``prefer`` runs
#: with what is available, ``off`` runs the worker as a plain subprocess.
SandboxMode = Literal["require", "prefer", "off"]
NOBODY = 65534
_MB = 1024 * 1024


class SandboxUnavailable(RuntimeError):
    """``require`` asked for a sandbox this machine cannot give; ``reason`` says why."""

    code = "sandbox-unavailable"


@dataclass(frozen=True)
class SandboxSpec:
    """What the code may use. ``None`` leaves a limit unset."""

    memory_limit_mb: int | None = 1024
    cpu_time_s: int | None = 60
    max_file_size_mb: int | None = 256
    max_processes: int | None = 64
    writable_dir: Path | None = None
    read_only_paths: tuple[Path, ...] = ()
    network: bool = False
    #: run as this uid (only possible as root); ``None``: as the caller
    uid: int | None = None
    #: show only the system folders, the Python runtime and the paths named (see above)
    minimal_fs: bool = False
    #: device files bound into the sandbox's minimal ``/dev`` (e.g. a GPU's), where present
    devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class SandboxedCommand:
    """A command line that applies its own limits (``prlimit``, ``setpriv``): start it with a
    plain ``Popen``, no ``preexec_fn`` (which would run Python, and gRPC's fork handlers, in a
    child forked from a threaded coordinator or agent: it aborted there)."""

    argv: list[str]
    isolation: Isolation


@dataclass(frozen=True)
class SandboxResult:
    returncode: int
    stdout: str
    stderr: str
    isolation: Isolation
    #: why it stopped, when it was stopped: ``wall-time-limit``, ``cpu-time-limit``, ...
    reason: str | None = None
    notes: tuple[str, ...] = field(default=())


def _bwrap_args(spec: SandboxSpec) -> list[str]:
    args = ["bwrap", "--unshare-pid", "--unshare-ipc", "--die-with-parent", "--new-session"]
    if not spec.network:
        args.append("--unshare-net")
    if spec.minimal_fs:
        return [*args, *_minimal_fs_args(spec)]
    args += ["--ro-bind", "/", "/", "--dev", "/dev", *_device_args(spec)]
    args += ["--proc", "/proc", "--tmpfs", "/tmp"]
    # another uid could not use (or even reach) a runtime in this user's temporary folder
    runtime = _runtime_under_tmp() if spec.uid in (None, os.getuid()) else ()
    for path in (*runtime, *spec.read_only_paths):
        args += ["--ro-bind", str(path), str(path)]
    if spec.writable_dir is not None:
        args += ["--bind", str(spec.writable_dir), str(spec.writable_dir)]
        args += ["--chdir", str(spec.writable_dir)]
    return [*args, "--"]


def _device_args(spec: SandboxSpec) -> list[str]:
    args: list[str] = []
    for device in spec.devices:
        args += ["--dev-bind-try", device, device]
    return args


def _drops_uid_inside(spec: SandboxSpec) -> bool:
    return spec.minimal_fs and spec.uid is not None and spec.uid != 0 and os.getuid() == 0


def _minimal_fs_args(spec: SandboxSpec) -> list[str]:
    """A root with only the system folders, the Python runtime and the spec's paths."""
    args = ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    args += ["--dev", "/dev", *_device_args(spec), "--proc", "/proc", "--tmpfs", "/tmp"]
    shown = ["/usr", "/etc"]  # not /tmp: the private one hides the host's
    binds: list[tuple[str, Path]] = []
    for path in (*python_runtime_paths(), *spec.read_only_paths):
        if not any(path == Path(s) or Path(s) in path.parents for s in shown):
            shown.append(str(path))
            binds.append(("--ro-bind", path))
    if spec.writable_dir is not None:
        binds.append(("--bind", spec.writable_dir))
    made: set[Path] = set()
    for _, path in binds:  # bwrap would make missing parents 0700: nobody could pass them
        for parent in reversed(path.parents):
            if parent != Path("/") and parent not in made:
                made.add(parent)
                args += ["--perms", "0755", "--dir", str(parent)]
    for flag, path in binds:
        args += [flag, str(path), str(path)]
    if spec.writable_dir is not None:
        args += ["--chdir", str(spec.writable_dir)]
    if _drops_uid_inside(spec):  # bwrap (root) bound what root reads; the code runs as uid
        uid = str(spec.uid)
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--"]
        return [
            *args,
            "setpriv",
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ]
    return [*args, "--"]


def python_runtime_paths() -> tuple[Path, ...]:
    """The folders this Python needs to start and import what it has installed (and fedcare):
    its prefixes, the interpreter's folder (and its link's target's) and every import path,
    without the current directory; the outermost of nested ones."""
    entries = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)]
    entries.append(os.path.dirname(os.path.realpath(sys.executable)))
    entries.append(str(Path(__file__).resolve().parents[2]))  # the folder holding fedcare/
    cwd = os.getcwd()
    entries += [p for p in sys.path if p and os.path.abspath(p) != cwd]
    found: list[Path] = []
    for entry in entries:
        path = Path(os.path.abspath(entry))
        if path.is_dir() and path not in found:
            found.append(path)
    return tuple(p for p in found if not any(q in p.parents for q in found))


def _runtime_under_tmp() -> tuple[Path, ...]:
    """What the Python in the sandbox needs that the private ``/tmp`` would hide: the
    interpreter, its environment and every import path that lives under ``/tmp`` (a checkout
    or virtual environment made in a temporary folder, as CI does), bound back read-only."""
    seen: list[Path] = []
    for entry in (sys.executable, sys.prefix, sys.base_prefix, *sys.path):
        if not entry:
            continue
        path = Path(entry).resolve() if entry != sys.executable else Path(entry).parent
        under_tmp = path.parts[:2] == ("/", "tmp") and path.exists()
        if under_tmp and path not in seen and not any(p in seen for p in path.parents):
            seen.append(path)
    return tuple(seen)


@cache
def bwrap_available() -> tuple[bool, str]:
    """Whether bwrap runs here: present *and* a trial run works (namespaces may be off)."""
    if sys.platform != "linux":
        return False, f"bubblewrap needs Linux (this is {sys.platform})"
    if shutil.which("bwrap") is None:
        return False, "bwrap is not installed (Debian package 'bubblewrap')"
    try:
        trial = subprocess.run(
            [*_bwrap_args(SandboxSpec()), "true"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"a trial bwrap run failed: {err!r}"
    if trial.returncode != 0:
        why = trial.stderr.decode(errors="replace").strip()[-300:]
        return False, f"a trial bwrap run failed (namespaces disabled?): {why}"
    return True, "bwrap works"


def _limits(spec: SandboxSpec) -> list[tuple[int, int]]:
    wanted = [
        (resource.RLIMIT_AS, spec.memory_limit_mb and spec.memory_limit_mb * _MB),
        (resource.RLIMIT_CPU, spec.cpu_time_s),
        (resource.RLIMIT_FSIZE, spec.max_file_size_mb and spec.max_file_size_mb * _MB),
        (resource.RLIMIT_NPROC, spec.max_processes),
    ]
    return [(which, int(value)) for which, value in wanted if value is not None]


_RLIMIT_OPTIONS = {
    resource.RLIMIT_AS: "--as",
    resource.RLIMIT_CPU: "--cpu",
    resource.RLIMIT_FSIZE: "--fsize",
    resource.RLIMIT_NPROC: "--nproc",
}


def _prefix(spec: SandboxSpec, uid: int | None, *, die_with_parent: bool = False) -> list[str]:
    """``prlimit`` and ``setpriv`` (util-linux) in front of a command: the limits pass to all
    it starts; as root, the uid (after the limits, so the process limit counts that user's);
    with ``die_with_parent``, SIGKILL when the thread that started it ends."""
    args: list[str] = []
    limits = _limits(spec)
    if limits:  # CPU: SIGXCPU at the soft limit, SIGKILL 1 s on
        args += [shutil.which("prlimit") or "prlimit"]
        for which, value in limits:
            hard = value + 1 if which == resource.RLIMIT_CPU else value
            args.append(f"{_RLIMIT_OPTIONS[which]}={value}:{hard}")
        args.append("--")
    drop = uid is not None and os.getuid() == 0 and uid != 0
    if drop or die_with_parent:
        args.append(shutil.which("setpriv") or "setpriv")
        if drop:
            args += [f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        if die_with_parent:
            args += ["--pdeathsig", "KILL"]
        args.append("--")
    return args


def sandbox_command(
    argv: Sequence[str], spec: SandboxSpec, *, mode: SandboxMode = "prefer"
) -> SandboxedCommand:
    """``argv`` isolated as ``mode`` and this machine allow; raises :class:`SandboxUnavailable`
    under ``require`` without a working bwrap. It applies its limits and uid itself."""
    if mode == "off":
        return SandboxedCommand(list(argv), "none")
    ok, why = bwrap_available()
    if not ok and mode == "require":
        raise SandboxUnavailable(f"sandbox-unavailable: the site policy requires one; {why}")
    if ok:  # with minimal_fs as root, setpriv takes the uid inside, after bwrap's mounts
        uid = None if _drops_uid_inside(spec) else spec.uid
        return SandboxedCommand([*_prefix(spec, uid), *_bwrap_args(spec), *argv], "bwrap")
    return limited_command(argv, spec)


def limited_command(
    argv: Sequence[str], spec: SandboxSpec, *, die_with_parent: bool = False
) -> SandboxedCommand:
    """``argv`` under the spec's resource limits (and ``uid``) only, without bwrap; with
    ``die_with_parent``, killed when the thread that started it ends (as bwrap's
    ``--die-with-parent``: start it from a thread that lives as long as it should)."""
    prefix = _prefix(spec, spec.uid, die_with_parent=die_with_parent)
    return SandboxedCommand([*prefix, *argv], "rlimits-only")


def exit_reason(code: int, stderr: str) -> str | None:
    """Why sandboxed code stopped, read from its exit status and stderr (``None``: no limit
    explains it); e.g. ``cpu-time-limit: the CPU time limit stopped it``."""
    return _reason(code, stderr, False, 0.0)


def _reason(code: int, stderr: str, timed_out: bool, wall: float) -> str | None:
    if timed_out:
        return f"wall-time-limit: killed after {wall:g} s"
    signum = -code if code < 0 else code - 128 if code > 128 else 0  # bwrap: 128 + signal
    if signum == signal.SIGXCPU:
        return "cpu-time-limit: the CPU time limit stopped it"
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return "memory-limit: an allocation above the memory limit failed"
    if "File too large" in stderr or signum == signal.SIGXFSZ:
        return "file-size-limit: a write above the file-size limit failed"
    if "Resource temporarily unavailable" in stderr and "fork" in stderr:
        return "process-limit: starting a process above the limit failed"
    if "Read-only file system" in stderr:
        return "read-only: a write outside the writable directory failed"
    if "Network is unreachable" in stderr or "Connection refused" in stderr:
        return "no-network: the sandbox has no network"
    return None


def run_sandboxed(
    argv: Sequence[str],
    spec: SandboxSpec,
    *,
    mode: SandboxMode = "prefer",
    wall_time_s: float = 30.0,
    env: dict[str, str] | None = None,
) -> SandboxResult:
    """Run ``argv`` isolated and wait at most ``wall_time_s``; the result says which
    isolation applied and, for code that was stopped, why (the text names the limit; it is
    read from the exit status and stderr, so it explains, it does not prove)."""
    if spec.uid is not None and spec.writable_dir is not None and os.getuid() == 0:
        os.chown(spec.writable_dir, spec.uid, spec.uid)
    command = sandbox_command(argv, spec, mode=mode)
    proc = subprocess.Popen(
        command.argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # one process group to kill (bwrap adds a pid namespace)
        env=env,
        cwd=spec.writable_dir,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=wall_time_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        out, err = proc.communicate()
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    reason = _reason(proc.returncode, stderr, timed_out, wall_time_s)
    return SandboxResult(proc.returncode, stdout, stderr, command.isolation, reason)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc``'s process group; under bwrap its death kills the pid namespace."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
