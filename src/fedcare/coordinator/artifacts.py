"""A content-addressed folder of artifacts (model checkpoints, task and reply payloads).

An artifact is stored under its SHA-256 hex digest as ``root/ab/cdef…`` (the first two hex
digits name a sub-folder). Writes go to a temporary file in ``root/.tmp`` (same file system),
are fsynced, then renamed into place atomically and the folder fsynced, so a crash leaves
either the whole artifact or nothing under its name. Putting the same bytes twice gives the
same digest and the same file (and repairs a corrupted copy). Reads verify the digest: a file
whose bytes changed raises :class:`ArtifactCorruptError`.

Safe to use from several threads and processes: every writer has its own temporary file and
the final rename is atomic; two writers of the same content write the same bytes.

Owner-only: the folders are ``0700`` (the root and ``.tmp`` tightened if they exist) and every
artifact ``0600`` (``mkstemp`` creates it so, and the rename keeps it).
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from fedcare.coordinator.files import DIR_MODE, private_dir
from fedcare.errors import ArtifactCorruptError, NotFoundError, StoreError, ValidationError

__all__ = ["CHUNK_SIZE", "ArtifactStore", "is_digest"]

CHUNK_SIZE = 1 << 20
_DIGEST = re.compile(r"[0-9a-f]{64}")


def is_digest(value: object) -> bool:
    """True when ``value`` is a lowercase SHA-256 hex digest."""
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":  # pragma: no cover - directories cannot be opened on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _VerifyingReader(io.RawIOBase):
    """Reads an artifact file and checks its digest when the end is reached."""

    def __init__(self, path: Path, digest: str) -> None:
        super().__init__()
        self._file = path.open("rb")
        self._digest = digest
        self._hash = hashlib.sha256()
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self._file.readinto(buffer)
        if n:
            self._hash.update(buffer[:n])
        elif not self._checked:
            self._checked = True
            actual = self._hash.hexdigest()
            if actual != self._digest:
                raise ArtifactCorruptError(
                    f"artifact {self._digest} at {self._file.name} is corrupt: its bytes hash "
                    f"to {actual}",
                    digest=self._digest,
                    actual=actual,
                )
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


class ArtifactStore:
    """Content-addressed artifacts under ``root``.

    Parameters
    ----------
    root:
        The folder; created (with parents, ``0700``) if missing.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._tmp = self.root / ".tmp"
        try:
            private_dir(self.root)
            private_dir(self._tmp)
        except StoreError as err:
            raise StoreError(f"artifact folder {self.root} cannot be created: {err}") from err

    def path(self, digest: str) -> Path:
        """Where the artifact ``digest`` lives (whether or not it exists).

        Raises
        ------
        ValidationError
            If ``digest`` is not a lowercase SHA-256 hex digest.
        """
        if not is_digest(digest):
            raise ValidationError(
                f"artifact digest must be 64 lowercase hex digits, got {digest!r}"
            )
        return self.root / digest[:2] / digest[2:]

    def put(self, data: bytes) -> str:
        """Store ``data``; return its SHA-256 hex digest (a no-op if already stored)."""
        return self.put_stream([data])

    def put_stream(self, chunks: Iterable[bytes | memoryview], *, durable: bool = True) -> str:
        """Store the concatenation of ``chunks`` in constant memory; return its digest.

        ``durable=False`` skips the fsyncs, for what can be made again byte for byte (a task
        payload, rebuilt from the round's checkpoint when the round is redone): a crash may
        then leave a torn file, which a read refuses on its digest and the next put repairs.

        Raises
        ------
        StoreError
            If the file cannot be written; no partial artifact is left behind.
        """
        digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                if durable:
                    os.fsync(out.fileno())
            hexdigest = digest.hexdigest()
            self._move_into_place(tmp, hexdigest, durable)
            return hexdigest
        except OSError as err:
            raise StoreError(f"writing an artifact under {self.root} failed: {err}") from err
        finally:
            tmp.unlink(missing_ok=True)

    def _move_into_place(self, tmp: Path, digest: str, durable: bool = True) -> None:
        # Replacing an existing copy is harmless (same bytes) and repairs a corrupt one.
        final = self.path(digest)
        final.parent.mkdir(mode=DIR_MODE, exist_ok=True)
        os.replace(tmp, final)
        if durable:
            _fsync_dir(final.parent)

    def exists(self, digest: str) -> bool:
        """True when an artifact is stored under ``digest`` (its bytes are not read)."""
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        """The artifact's size in bytes (not read); NotFoundError if it is not stored."""
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError as err:
            raise NotFoundError(f"no artifact {digest} under {self.root}") from err

    def open(self, digest: str) -> BinaryIO:
        """A binary stream of the artifact; reading to the end (``b""``) verifies its digest.

        Raises
        ------
        NotFoundError
            If no artifact is stored under ``digest``.
        ArtifactCorruptError
            From a read that reaches the end, if the bytes do not hash to ``digest``.
        """
        path = self.path(digest)
        try:
            raw = _VerifyingReader(path, digest)
        except FileNotFoundError as err:
            raise NotFoundError(f"no artifact {digest} under {self.root}") from err
        return io.BufferedReader(raw, CHUNK_SIZE)

    def map(self, digest: str) -> mmap.mmap | bytes:
        """A read-only memory map of the artifact, NOT verified against ``digest`` (reading
        it to verify would cost the pass the map saves): for artifacts this process verified
        as it stored them, such as a reply checked when its upload completed.

        Raises
        ------
        NotFoundError
            If no artifact is stored under ``digest``.
        """
        path = self.path(digest)
        try:
            with path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                return mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) if size else b""
        except FileNotFoundError as err:
            raise NotFoundError(f"no artifact {digest} under {self.root}") from err

    def get(self, digest: str) -> bytes:
        """The artifact's bytes, verified against ``digest``.

        Raises
        ------
        NotFoundError
            If no artifact is stored under ``digest``.
        ArtifactCorruptError
            If the stored bytes do not hash to ``digest``.
        """
        with self.open(digest) as stream:
            return stream.read()

    def verify(self, digest: str) -> None:
        """Read the artifact through and check its digest (raises as :meth:`get` does)."""
        with self.open(digest) as stream:
            while stream.read(CHUNK_SIZE):
                pass

    def delete(self, digest: str) -> bool:
        """Remove the artifact; return whether it was there."""
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True
