"""The sandboxed worker's process handle and what it may read (:mod:`fedcare.site.worker`).

The worker runs under :mod:`fedcare.packages.sandbox` when the site policy asks for it: a
bubblewrap process tree that sees the filesystem read-only but for the site's state dir (where
its task and reply files are, :mod:`fedcare.site.worker_io`) and the folders named by
:func:`read_only_paths`. :class:`SandboxedProcess` gives that tree the few ``Process``
methods the worker's owner uses.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from fedcare.site.config import SiteDataConfig

__all__ = ["SandboxedProcess", "read_only_paths"]


def read_only_paths(config: SiteDataConfig, he_secret: Path | None) -> tuple[Path, ...]:
    """The folders the sandboxed worker reads: its data files' (which may lie under /tmp,
    private in the sandbox), the data mirror and cache, the HE secret's."""
    from fedcare.data.source import CACHE_ENV, MIRROR_ENV

    files: list[str] = [str(he_secret)] if he_secret is not None else []
    for entry in config.datasets.values():
        source = entry.source.get("path") if isinstance(entry.source, dict) else entry.source
        files += [str(f) for f in (source, entry.schema_file, entry.mapping) if f]
    folders = {Path(f).resolve().parent for f in files}
    folders |= {Path(os.environ[v]).resolve() for v in (MIRROR_ENV, CACHE_ENV) if os.environ.get(v)}
    return tuple(sorted(f for f in folders if f.is_dir()))


class SandboxedProcess:
    """The sandboxed worker (a bwrap process tree) with the few ``Process`` methods used."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def kill(self) -> None:  # its session; bwrap's death takes its pid namespace along
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def join(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
