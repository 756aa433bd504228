"""The sandbox primitive against small, deliberately malicious scripts (issue 13 item 5).

Each script runs through :func:`run_sandboxed` as a real subprocess under bubblewrap and real
resource limits; the test asserts it was stopped and the reason that names the limit.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcare.packages.sandbox import (
    NOBODY,
    SandboxResult,
    SandboxSpec,
    SandboxUnavailable,
    bwrap_available,
    run_sandboxed,
    sandbox_command,
)

BWRAP, WHY = bwrap_available()
needs_bwrap = pytest.mark.skipif(not BWRAP, reason=f"bubblewrap unavailable here: {WHY}")


@pytest.fixture
def work() -> Iterator[Path]:
    """The code's writable dir, in /tmp: as root the code runs as ``nobody``, which cannot
    pass pytest's private ``tmp_path``."""
    path = Path(tempfile.mkdtemp(prefix="fedcare-sandbox-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run(work: Path, code: str, *, wall: float = 10.0, **limits: int | None) -> SandboxResult:
    spec = SandboxSpec(writable_dir=work, **limits)  # type: ignore[arg-type]
    return run_sandboxed([sys.executable, "-c", code], spec, mode="require", wall_time_s=wall)


@needs_bwrap
def test_a_benign_script_runs_and_returns_its_output(work: Path) -> None:
    result = _run(work, "import numpy; open('out.txt', 'w').write('ok'); print(6 * 7)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42" and result.reason is None
    assert result.isolation == "bwrap"
    assert (work / "out.txt").read_text() == "ok"  # the writable dir is shared


@needs_bwrap
def test_no_network_even_to_a_socket_listening_on_localhost(work: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
        result = _run(work, code)
    finally:
        server.close()
    assert result.returncode != 0
    assert "ConnectionRefusedError" in result.stderr or "unreachable" in result.stderr
    assert result.reason is not None and result.reason.startswith("no-network")


@needs_bwrap
def test_writing_outside_the_writable_dir_fails(work: Path) -> None:
    target = Path("/var/tmp") / f"{work.name}-escaped.txt"  # writable by anyone outside
    result = _run(work, f"open({str(target)!r}, 'w').write('x')")
    assert result.returncode != 0 and not target.exists()
    assert "Read-only file system" in result.stderr
    assert result.reason is not None and result.reason.startswith("read-only")


@needs_bwrap
def test_an_endless_loop_is_stopped_by_the_cpu_limit(work: Path) -> None:
    result = _run(work, "while True: pass", cpu_time_s=1)
    assert result.reason == "cpu-time-limit: the CPU time limit stopped it"


@needs_bwrap
def test_a_sleeping_loop_is_killed_by_the_wall_timeout(work: Path) -> None:
    started = time.monotonic()
    result = _run(work, "import time\nwhile True: time.sleep(1)", wall=1.5)
    assert time.monotonic() - started < 5
    assert result.reason == "wall-time-limit: killed after 1.5 s"


def _processes_of(uid: int, marker: str = "") -> int:
    """How many processes ``uid`` runs (whose command line holds ``marker``)."""
    count = 0
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and proc.stat().st_uid == uid:
                count += marker.encode() in (proc / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            pass
    return count


@needs_bwrap
def test_a_fork_bomb_is_contained(work: Path) -> None:
    # RLIMIT_NPROC counts all processes of the real uid and never binds root: as root the
    # bomb runs as nobody (bash, which nobody can execute; this venv's python may not be)
    uid = NOBODY if os.getuid() == 0 else os.getuid()
    spec = SandboxSpec(writable_dir=work, max_processes=_processes_of(uid) + 24, uid=uid)
    marker = f"fedcare-bomb-{work.name}"
    bomb = f"b() {{ b | b & }}; b; sleep 30 # {marker}"
    started = time.monotonic()
    result = run_sandboxed(["/bin/bash", "-c", bomb], spec, mode="require", wall_time_s=3.0)
    assert time.monotonic() - started < 10
    assert "fork: retry: Resource temporarily unavailable" in result.stderr
    assert result.reason == "wall-time-limit: killed after 3 s"
    deadline = time.monotonic() + 5  # every process of its pid namespace died with it
    while _processes_of(uid, marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_of(uid, marker) == 0


@needs_bwrap
def test_a_memory_hog_is_stopped_by_the_memory_limit(work: Path) -> None:
    result = _run(work, "x = bytearray(2 * 1024**3)", memory_limit_mb=256)
    assert result.returncode != 0 and "MemoryError" in result.stderr
    assert result.reason == "memory-limit: an allocation above the memory limit failed"


@needs_bwrap
def test_a_huge_file_write_is_stopped_by_the_file_size_limit(work: Path) -> None:
    code = "f = open('big.bin', 'wb')\nfor _ in range(64): f.write(bytes(1024**2))\nf.flush()"
    result = _run(work, code, max_file_size_mb=4)
    assert result.returncode != 0 and "File too large" in result.stderr
    assert result.reason == "file-size-limit: a write above the file-size limit failed"
    assert (work / "big.bin").stat().st_size <= 4 * 1024**2


def test_require_without_bwrap_refuses_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    bwrap_available.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable, match=r"sandbox-unavailable: .*bubblewrap"):
            sandbox_command(["true"], SandboxSpec(), mode="require")
        assert sandbox_command(["true"], SandboxSpec(), mode="prefer").isolation == ("rlimits-only")
        assert sandbox_command(["true"], SandboxSpec(), mode="off").isolation == "none"
    finally:
        bwrap_available.cache_clear()


def test_a_runtime_under_tmp_is_bound_back_over_the_private_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sandbox's private /tmp hid a checkout and venv made in a temporary folder (as CI
    makes them): bwrap then could not even start the venv's python."""
    from fedcare.packages import sandbox

    lib = tmp_path / "venv" / "lib"
    lib.mkdir(parents=True)
    monkeypatch.setattr(sandbox.sys, "path", [str(lib), str(lib / "missing"), "/usr/lib"])
    assert str(tmp_path).startswith("/tmp/")
    assert lib in sandbox._runtime_under_tmp()
    assert (lib / "missing") not in sandbox._runtime_under_tmp()
    args = sandbox._bwrap_args(SandboxSpec(writable_dir=tmp_path))
    tmpfs = args.index("--tmpfs")
    at = args.index(str(lib))
    assert args[at - 1 : at + 2] == ["--ro-bind", str(lib), str(lib)]
    assert at > tmpfs  # bound after the tmpfs, so it is visible on top
    other_uid = sandbox._bwrap_args(SandboxSpec(writable_dir=tmp_path, uid=65534))
    assert str(lib) not in other_uid or os.getuid() == 65534
