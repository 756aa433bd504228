"""Low-level file steps of the audit log: whole writes, folder fsync, reading the last line."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "last_line", "write_all"]


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def last_line(fd: int) -> bytes:
    """The file's last line with its ``\\n`` (or the torn rest without one); b"" if empty."""
    size = os.fstat(fd).st_size
    buf, pos, chunk = b"", size, 8192
    while pos > 0:
        start = max(0, pos - chunk)
        buf = os.pread(fd, pos - start, start) + buf
        pos, chunk = start, chunk * 2
        cut = buf.rfind(b"\n", 0, len(buf) - 1)
        if cut >= 0:
            return buf[cut + 1 :]
    return buf
