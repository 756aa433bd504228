"""Reading artifacts: a stream that checks the digest at its end, one that joins pieces.

Internal to :mod:`fedcare.coordinator.artifacts`.
"""

from __future__ import annotations

import hashlib
import io

from fedcare.errors import ArtifactCorruptError, StoreError, ValidationError
from fedcare.transport.pieces import Pieces

__all__ = ["Joined", "VerifyingReader", "sha256_of"]


class Joined(io.RawIOBase):
    """The bytes of :class:`Pieces`, read in order as one stream."""

    def __init__(self, pieces: Pieces, digest: str, block: int) -> None:
        super().__init__()
        self._blocks = pieces.blocks(0, block)
        self._left = memoryview(b"")
        self._digest = digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self._left:
            try:
                self._left = memoryview(next(self._blocks, b""))
            except (OSError, ValidationError) as err:
                raise StoreError(f"artifact {self._digest} cannot be read: {err}") from err
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


class VerifyingReader(io.RawIOBase):
    """Reads an artifact and checks its digest when the end is reached."""

    def __init__(self, raw: io.BufferedIOBase | io.RawIOBase, where: str, digest: str) -> None:
        super().__init__()
        self._file = raw
        self._where = where
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
                    f"artifact {self._digest} at {self._where} is corrupt: its bytes hash "
                    f"to {actual}",
                    digest=self._digest,
                    actual=actual,
                )
        return n or 0

    def close(self) -> None:
        self._file.close()
        super().close()


def sha256_of(header: bytes, body: Pieces) -> str:
    """The SHA-256 hex digest of ``header`` followed by ``body`` (read once)."""
    digest = hashlib.sha256(header)
    for block in body.blocks():
        digest.update(block)
    return digest.hexdigest()
