"""A payload kept as pieces of files: sent, hashed and read in order without joining them.

A framed payload (:mod:`fedcare.transport.framed`) is a small header followed by the arrays'
bytes. Two payloads that differ only in their header (a round's tasks: each site's has its
own ``site_id`` and seed, the parameters are the same; a site's reply after its governance
mods changed its metrics, its arrays still the worker's) need not be written twice: each is
the pieces ``[its header file] + [the shared arrays region of another file]``.

:class:`Pieces` is that list, ``(path, offset, length)`` per piece, with the operations a
transfer needs: its size, its bytes from any offset one block at a time (:meth:`Pieces.blocks`:
memory one block), its SHA-256 in one pass (:meth:`Pieces.sha256`), a check that every file
still holds its piece (:meth:`Pieces.check`), and a JSON form that round-trips with validation
(:meth:`Pieces.to_json` / :meth:`Pieces.from_json`, paths relative to a folder, never leaving
it). Every refusal is a :class:`~fedcare.errors.ValidationError` naming the piece.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcare.errors import ValidationError

__all__ = ["PIECES_VERSION", "Piece", "Pieces"]

PIECES_VERSION = 1
_READ = 1 << 22
#: Most pieces one payload may have (a header and a few shared regions).
MAX_PIECES = 64


@dataclass(frozen=True)
class Piece:
    """Bytes ``[offset, offset + length)`` of the file at ``path``."""

    path: Path
    offset: int
    length: int

    def check(self) -> None:
        """Raise ValidationError unless the file exists and holds the whole piece."""
        try:
            have = os.path.getsize(self.path)
        except OSError as err:
            raise ValidationError(f"piece file {self.path} is not readable: {err}") from err
        if self.offset + self.length > have:
            raise ValidationError(
                f"piece file {self.path} has {have} bytes; the piece needs bytes "
                f"{self.offset}..{self.offset + self.length}"
            )


@dataclass(frozen=True)
class Pieces:
    """A payload: the concatenation of its pieces, in order."""

    pieces: tuple[Piece, ...]

    def __post_init__(self) -> None:
        if not self.pieces or len(self.pieces) > MAX_PIECES:
            raise ValidationError(f"a payload has 1 to {MAX_PIECES} pieces, not {len(self.pieces)}")
        for i, piece in enumerate(self.pieces):
            for name in ("offset", "length"):
                value = getattr(piece, name)
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ValidationError(f"piece {i}: {name} must be an int >= 0, got {value!r}")

    @classmethod
    def of(cls, *parts: tuple[os.PathLike[str] | str, int, int]) -> Pieces:
        """``Pieces.of((path, offset, length), ...)``."""
        return cls(tuple(Piece(Path(p), o, n) for p, o, n in parts))

    @classmethod
    def whole(cls, path: os.PathLike[str] | str) -> Pieces:
        """One piece: the whole file at ``path`` (its size now)."""
        return cls((Piece(Path(path), 0, os.path.getsize(path)),))

    @property
    def size(self) -> int:
        """The payload's size in bytes."""
        return sum(p.length for p in self.pieces)

    def check(self) -> None:
        """Raise ValidationError unless every file still holds its piece."""
        for piece in self.pieces:
            piece.check()

    def blocks(self, offset: int = 0, block: int = _READ) -> Iterator[bytes]:
        """The payload's bytes from ``offset``, ``block`` bytes at a time (the last block and
        the blocks ending a piece may be shorter only where the payload ends; a block that
        spans two pieces is joined)."""
        if offset < 0 or offset > self.size:
            raise ValidationError(f"offset {offset} is outside the payload's {self.size} bytes")
        pending: list[bytes] = []
        have = 0
        for piece, start, n in self._from(offset):
            with open(piece.path, "rb", buffering=0) as f:
                f.seek(piece.offset + start)
                while n > 0:
                    want = min(block - have, n)
                    data = f.read(want)
                    if len(data) != want:
                        raise ValidationError(f"piece file {piece.path} ends early")
                    n -= want
                    if not pending and want == block:
                        yield data
                        continue
                    pending.append(data)
                    have += want
                    if have == block:
                        yield b"".join(pending)
                        pending, have = [], 0
        if pending:
            yield b"".join(pending)

    def _from(self, offset: int) -> Iterator[tuple[Piece, int, int]]:
        """``(piece, start within it, bytes from there)`` of the pieces from ``offset`` on."""
        for piece in self.pieces:
            if offset >= piece.length:
                offset -= piece.length
                continue
            yield piece, offset, piece.length - offset
            offset = 0

    def sha256(self) -> hashlib._Hash:
        """A SHA-256 object fed the whole payload (one pass, one block in memory)."""
        digest = hashlib.sha256()
        for data in self.blocks():
            digest.update(data)
        return digest

    def to_json(self, folder: Path) -> str:
        """The pieces as JSON, each path relative to ``folder`` (which must hold it)."""
        root = Path(folder).resolve()
        out: list[dict[str, Any]] = []
        for piece in self.pieces:
            resolved = piece.path.resolve()
            if not resolved.is_relative_to(root):
                raise ValidationError(f"piece file {piece.path} is outside {folder}")
            out.append(
                {"path": str(resolved.relative_to(root)), "offset": piece.offset,
                 "length": piece.length}
            )  # fmt: skip
        return json.dumps({"version": PIECES_VERSION, "pieces": out})

    @classmethod
    def from_json(cls, text: str | bytes, folder: Path) -> Pieces:
        """Pieces written by :meth:`to_json` for ``folder``, checked (a path that leaves the
        folder, a bad number or version is a ValidationError naming it)."""
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ValidationError(f"pieces: not JSON: {err}") from err
        if not isinstance(data, dict) or data.get("version") != PIECES_VERSION:
            version = data.get("version") if isinstance(data, dict) else None
            raise ValidationError(f"pieces: version {version!r}, expected {PIECES_VERSION}")
        items = data.get("pieces")
        if not isinstance(items, list):
            raise ValidationError("pieces: 'pieces' must be a list")
        root = Path(folder).resolve()
        parts: list[Piece] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("path"), str):
                raise ValidationError(f"pieces[{i}]: needs a string 'path'")
            path = (root / item["path"]).resolve()
            if not path.is_relative_to(root):
                raise ValidationError(f"pieces[{i}]: path {item['path']!r} leaves {folder}")
            parts.append(Piece(path, item.get("offset"), item.get("length")))  # type: ignore[arg-type]
        return cls(tuple(parts))
