"""A content-addressed folder of artifacts (model checkpoints, task and reply payloads).

An artifact is stored under its SHA-256 hex digest as ``root/ab/cdef…`` (the first two hex
digits name a sub-folder). Writes go to a temporary file in ``root/.tmp`` (same file system),
are fsynced, then renamed into place atomically and the folder fsynced, so a crash leaves
either the whole artifact or nothing under its name. Putting the same bytes twice gives the
same digest and the same file (and repairs a corrupted copy). Reads verify the digest: a file
whose bytes changed raises :class:`ArtifactCorruptError`.

Safe to use from several threads and processes: every writer has its own temporary file and
the final rename is atomic; two writers of the same content write the same bytes.

A *composite* artifact is stored as pieces of other files (:class:`~fedcare.transport.pieces.
Pieces`): the tasks of one round differ only in their small header (each site's ``site_id`` and
seed), so :meth:`ArtifactStore.put_shared` writes their common body (the parameters) once, as
``ab/cdef….body`` named after the first of them, and each task as its header file
``ab/cdef….head`` and an index ``ab/cdef….pieces`` (the pieces as JSON) under its own digest:
the SHA-256 of header then body, hashed by reading them back, so a site receives byte for byte
what a whole file would hold. The index is renamed into place last, so no partial composite is
ever visible under its digest. Every reader takes both kinds (:meth:`~ArtifactStore.pieces`
says where a payload's bytes are); a plain artifact is stored and read as before. A composite
whose files are gone or shorter than its index says is a :class:`StoreError` naming it.

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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

from fedcare.coordinator.artifact_reading import Joined, VerifyingReader, sha256_of
from fedcare.coordinator.files import DIR_MODE, private_dir
from fedcare.errors import NotFoundError, StoreError, ValidationError
from fedcare.transport.pieces import Pieces

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
        tmp = self._write_tmp(chunks, durable, digest)
        try:
            hexdigest = digest.hexdigest()
            self._move_into_place(tmp, hexdigest, durable)
            return hexdigest
        except OSError as err:
            raise StoreError(f"writing an artifact under {self.root} failed: {err}") from err
        finally:
            tmp.unlink(missing_ok=True)

    def _write_tmp(
        self,
        chunks: Iterable[bytes | memoryview],
        durable: bool,
        digest: hashlib._Hash | None = None,
    ) -> Path:
        """``chunks`` written to a new file in ``.tmp`` (fed to ``digest`` if given)."""
        update = None if digest is None else digest.update
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    if update is not None:
                        update(chunk)
                    out.write(chunk)
                out.flush()
                if durable:
                    os.fsync(out.fileno())
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"writing an artifact under {self.root} failed: {err}") from err
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def put_shared(
        self,
        headers: Sequence[bytes],
        body: Iterable[bytes | memoryview],
        *,
        durable: bool = False,
    ) -> list[str]:
        """Store each ``header + body`` as a composite artifact, writing ``body`` once; return
        their digests, in order (hashed by reading the body back once per header).

        An artifact already stored under one of the digests is kept, not written again; when
        all are, the body is dropped. ``durable`` as for :meth:`put_stream`.

        Raises
        ------
        ValidationError
            If ``headers`` is empty.
        StoreError
            If a file cannot be written; no partial composite is visible under its digest.
        """
        if not headers:
            raise ValidationError("put_shared needs at least one header")
        tmp = self._write_tmp(body, durable)
        try:
            size = tmp.stat().st_size
            written = Pieces.of((tmp, 0, size))
            digests = [sha256_of(header, written) for header in headers]
            wanted = [len(h) + size for h in headers]
            if all(self.holds(d, n) for d, n in zip(digests, wanted, strict=True)):
                return digests
            final = self._sibling(digests[0], ".body")
            final.parent.mkdir(mode=DIR_MODE, exist_ok=True)
            os.replace(tmp, final)
            if durable:
                _fsync_dir(final.parent)
            stored = Pieces.of((final, 0, size))
            for header, digest in zip(headers, digests, strict=True):
                self._place_composite(digest, header, stored, durable)
            return digests
        except OSError as err:
            raise StoreError(f"writing an artifact under {self.root} failed: {err}") from err
        finally:
            tmp.unlink(missing_ok=True)

    def put_composite(self, header: bytes, body: Pieces, *, durable: bool = False) -> str:
        """Store ``header`` followed by ``body`` (pieces of files under the root, left where
        they are) as a composite artifact; return its digest (no-op if already stored).

        Raises
        ------
        ValidationError
            If a piece of ``body`` lies outside the root or its file is shorter.
        StoreError
            If a file cannot be written.
        """
        body.check()
        body.to_json(self.root)  # refuses a piece outside the root before anything is written
        digest = sha256_of(header, body)
        try:
            self._place_composite(digest, header, body, durable)
        except OSError as err:
            raise StoreError(f"writing an artifact under {self.root} failed: {err}") from err
        return digest

    def _place_composite(self, digest: str, header: bytes, body: Pieces, durable: bool) -> None:
        """The header file, then the index (last: the composite appears whole or not at all)."""
        if self.holds(digest, len(header) + body.size):
            return
        head = self._sibling(digest, ".head")
        head.parent.mkdir(mode=DIR_MODE, exist_ok=True)
        tmp = self._write_tmp([header], durable)
        try:
            os.replace(tmp, head)
            pieces = Pieces((*Pieces.of((head, 0, len(header))).pieces, *body.pieces))
            tmp = self._write_tmp([pieces.to_json(self.root).encode()], durable)
            os.replace(tmp, self._sibling(digest, ".pieces"))
            if durable:
                _fsync_dir(head.parent)
        finally:
            tmp.unlink(missing_ok=True)

    def _sibling(self, digest: str, suffix: str) -> Path:
        path = self.path(digest)
        return path.with_name(path.name + suffix)

    def _move_into_place(self, tmp: Path, digest: str, durable: bool = True) -> None:
        # Replacing an existing copy is harmless (same bytes) and repairs a corrupt one.
        final = self.path(digest)
        final.parent.mkdir(mode=DIR_MODE, exist_ok=True)
        os.replace(tmp, final)
        if durable:
            _fsync_dir(final.parent)

    def exists(self, digest: str) -> bool:
        """True when an artifact, plain or composite, is stored under ``digest`` (its bytes
        are not read)."""
        return self.path(digest).is_file() or self._sibling(digest, ".pieces").is_file()

    def is_composite(self, digest: str) -> bool:
        """True when ``digest`` is stored as a composite (pieces of other files) only."""
        return not self.path(digest).is_file() and self._sibling(digest, ".pieces").is_file()

    def size(self, digest: str) -> int:
        """The artifact's size in bytes (not read); NotFoundError if it is not stored."""
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            pass
        return self._index(digest).size

    def _index(self, digest: str) -> Pieces:
        """The pieces a composite's index names (not checked); NotFoundError without one."""
        index = self._sibling(digest, ".pieces")
        try:
            text = index.read_bytes()
        except FileNotFoundError as err:
            raise NotFoundError(f"no artifact {digest} under {self.root}") from err
        except OSError as err:
            raise StoreError(f"artifact {digest}: its index {index} is unreadable: {err}") from err
        try:
            return Pieces.from_json(text, self.root)
        except ValidationError as err:
            raise StoreError(f"artifact {digest}: its index {index} is invalid: {err}") from err

    def pieces(self, digest: str) -> Pieces:
        """Where the artifact's bytes are: its whole file, or a composite's pieces, checked to
        be there in full (their bytes are not read).

        Raises
        ------
        NotFoundError
            If no artifact is stored under ``digest``.
        StoreError
            If a composite's index is invalid, or a file it names is gone or too short.
        """
        try:
            return Pieces.whole(self.path(digest))
        except FileNotFoundError:
            pass
        pieces = self._index(digest)
        try:
            pieces.check()
        except ValidationError as err:
            raise StoreError(f"artifact {digest} is incomplete: {err}") from err
        return pieces

    def holds(self, digest: str, size: int) -> bool:
        """True when ``digest`` is stored in full as ``size`` bytes (sizes checked, not bytes)."""
        try:
            return self.pieces(digest).size == size
        except StoreError:
            return False

    def open(self, digest: str) -> BinaryIO:
        """A binary stream of the artifact; reading to the end (``b""``) verifies its digest.

        Raises
        ------
        NotFoundError
            If no artifact is stored under ``digest``.
        StoreError
            If a composite's pieces are not all there (see :meth:`pieces`).
        ArtifactCorruptError
            From a read that reaches the end, if the bytes do not hash to ``digest``.
        """
        path = self.path(digest)
        raw: io.BufferedIOBase | io.RawIOBase
        try:
            raw = path.open("rb")
        except FileNotFoundError:
            raw = Joined(self.pieces(digest), digest, CHUNK_SIZE)
            path = self._sibling(digest, ".pieces")
        return io.BufferedReader(VerifyingReader(raw, str(path), digest), CHUNK_SIZE)

    def map(self, digest: str) -> mmap.mmap | bytes:
        """A read-only memory map of the artifact, NOT verified against ``digest`` (reading
        it to verify would cost the pass the map saves): for artifacts this process verified
        as it stored them, such as a reply checked when its upload completed. A composite
        (a task payload) is joined into bytes instead.

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
        except FileNotFoundError:
            pass
        with self.open(digest) as stream:
            return stream.read()

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
        """Remove the artifact; return whether it was there. A composite loses its index and
        header file; the body it shares with others stays."""
        found = False
        for path in (self._sibling(digest, ".pieces"), self._sibling(digest, ".head")):
            try:
                path.unlink()
                found = True
            except FileNotFoundError:
                pass
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return found
        return True
