"""Resumable transfers (fedcare.transport.transfer): cut anywhere, go on from the last chunk."""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path

import pytest

from fedcare.errors import TransferIncompleteError, ValidationError
from fedcare.transport.transfer import Spool, chunk_count, file_chunks

CHUNK = 1000


def _source(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    path = tmp_path / "source.bin"
    path.write_bytes(os.urandom(size))
    return path, hashlib.sha256(path.read_bytes()).digest()


@pytest.mark.parametrize("cut_after", [0, 1, 3, 6])
def test_a_cut_transfer_resumes_from_the_last_whole_chunk(tmp_path: Path, cut_after: int) -> None:
    src, digest = _source(tmp_path, 6_500)
    spool = Spool(tmp_path / "out.bin", size=6_500, sha256=digest, chunk_size=CHUNK)
    first = file_chunks(src, sha256=digest, transfer_id="t", chunk_size=CHUNK)
    with pytest.raises(TransferIncompleteError, match="is cut"):
        spool.receive(itertools.islice(first, cut_after))
    assert spool.confirmed() == cut_after * CHUNK
    sent = []
    rest = file_chunks(src, sha256=digest, transfer_id="t", chunk_size=CHUNK,
                       offset=spool.confirmed())  # fmt: skip
    done = spool.receive(c for c in rest if not sent.append(len(c.data)))
    assert done.read_bytes() == src.read_bytes()
    assert sum(sent) == 6_500 - cut_after * CHUNK  # nothing sent twice
    assert not spool.part.exists() and spool.complete() and spool.confirmed() == 6_500


def test_a_torn_last_chunk_is_cut_off(tmp_path: Path) -> None:
    src, digest = _source(tmp_path, 3_000)
    spool = Spool(tmp_path / "out.bin", size=3_000, sha256=digest, chunk_size=CHUNK)
    spool.part.write_bytes(src.read_bytes()[:1_700])  # the receiver died mid-write
    assert spool.confirmed() == 1_000 and spool.part.stat().st_size == 1_000
    spool.receive(file_chunks(src, sha256=digest, transfer_id="t", chunk_size=CHUNK, offset=1_000))
    assert spool.path.read_bytes() == src.read_bytes()


def test_corrupted_bytes_fail_the_digest_and_the_part_is_dropped(tmp_path: Path) -> None:
    src, digest = _source(tmp_path, 2_500)
    spool = Spool(tmp_path / "out.bin", size=2_500, sha256=digest, chunk_size=CHUNK)
    spool.part.write_bytes(b"\x00" * 1_000)  # a part that does not match the source
    with pytest.raises(ValidationError, match="SHA-256 does not match"):
        spool.receive(
            file_chunks(src, sha256=digest, transfer_id="t", chunk_size=CHUNK, offset=1_000)
        )
    assert not spool.part.exists() and not spool.path.exists() and spool.confirmed() == 0


def test_chunks_out_of_order_or_of_another_transfer_are_refused(tmp_path: Path) -> None:
    src, digest = _source(tmp_path, 2_500)
    spool = Spool(tmp_path / "out.bin", size=2_500, sha256=digest, chunk_size=CHUNK)
    chunks = list(file_chunks(src, sha256=digest, transfer_id="t", chunk_size=CHUNK))
    with pytest.raises(ValidationError, match="expected chunk 0 of 3, got chunk 1"):
        spool.receive([chunks[1]])
    other = Spool(tmp_path / "o.bin", size=2_500, sha256=b"\x01" * 32, chunk_size=CHUNK)
    with pytest.raises(ValidationError, match="another size, digest or chunk count"):
        other.receive(chunks)
    with pytest.raises(ValidationError, match="not a chunk boundary"):
        list(file_chunks(src, sha256=digest, transfer_id="t", chunk_size=CHUNK, offset=500))


def test_empty_transfer_is_one_empty_chunk(tmp_path: Path) -> None:
    src = tmp_path / "empty"
    src.write_bytes(b"")
    digest = hashlib.sha256(b"").digest()
    chunks = list(file_chunks(src, sha256=digest, transfer_id="t"))
    assert len(chunks) == 1 == chunk_count(0)
    spool = Spool(tmp_path / "out", size=0, sha256=digest)
    with pytest.raises(TransferIncompleteError):
        spool.receive([])
    assert spool.receive(chunks).read_bytes() == b""
