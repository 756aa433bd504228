"""Pieces: a payload made of file regions, read, hashed and sent without joining them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fedcare.errors import ValidationError
from fedcare.transport.pieces import Piece, Pieces
from fedcare.transport.transfer import Spool, file_chunks


def _files(tmp_path: Path) -> tuple[Pieces, bytes]:
    head, body = tmp_path / "head", tmp_path / "body"
    head.write_bytes(b"H" * 100)
    body.write_bytes(bytes(range(256)) * 40)  # 10,240 bytes
    pieces = Pieces.of((head, 0, 100), (body, 64, 10_000))
    return pieces, b"H" * 100 + (bytes(range(256)) * 40)[64:10_064]


@pytest.mark.parametrize("block", [1, 7, 100, 128, 4096, 1 << 20])
@pytest.mark.parametrize("offset", [0, 99, 100, 101, 5000, 10_100])
def test_blocks_are_the_concatenation_from_any_offset(tmp_path, block, offset):
    pieces, whole = _files(tmp_path)
    got = list(pieces.blocks(offset, block))
    assert b"".join(got) == whole[offset:]
    assert all(len(b) == block for b in got[:-1])  # only the last block is short


def test_sha256_and_size(tmp_path):
    pieces, whole = _files(tmp_path)
    assert pieces.size == len(whole) == 10_100
    assert pieces.sha256().digest() == hashlib.sha256(whole).digest()


def test_chunks_of_pieces_resume_into_a_spool(tmp_path):
    pieces, whole = _files(tmp_path)
    sha = hashlib.sha256(whole).digest()
    spool = Spool(tmp_path / "out", size=len(whole), sha256=sha, chunk_size=1024)
    first = list(file_chunks(pieces, sha256=sha, transfer_id="t", chunk_size=1024))[:4]
    with pytest.raises(Exception, match="cut"):
        spool.receive(iter(first))
    at = spool.confirmed()
    assert at == 4096
    rest = file_chunks(pieces, sha256=sha, transfer_id="t", chunk_size=1024, offset=at)
    assert spool.receive(rest).read_bytes() == whole


def test_check_names_a_short_file(tmp_path):
    pieces, _ = _files(tmp_path)
    (tmp_path / "body").write_bytes(b"x" * 500)
    with pytest.raises(ValidationError, match=r"has 500 bytes; the piece needs bytes 64\.\.10064"):
        pieces.check()
    with pytest.raises(ValidationError, match="ends early"):
        b"".join(pieces.blocks())


def test_json_round_trip_stays_inside_its_folder(tmp_path):
    pieces, whole = _files(tmp_path)
    text = pieces.to_json(tmp_path)
    again = Pieces.from_json(text, tmp_path)
    resolved = tuple(Piece(p.path.resolve(), p.offset, p.length) for p in pieces.pieces)
    assert again == Pieces(resolved)
    assert b"".join(again.blocks()) == whole
    escaping = text.replace('"head"', '"../head"')
    with pytest.raises(ValidationError, match="leaves"):
        Pieces.from_json(escaping, tmp_path)
    with pytest.raises(ValidationError, match="version 9"):
        Pieces.from_json('{"version": 9, "pieces": []}', tmp_path)
    with pytest.raises(ValidationError, match="offset must be an int >= 0"):
        Pieces.from_json(text.replace('"offset": 64', '"offset": -1'), tmp_path)
    with pytest.raises(ValidationError, match="outside"):
        pieces.to_json(tmp_path / "elsewhere")


def test_empty_payload_is_one_empty_chunk(tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    sha = hashlib.sha256(b"").digest()
    chunks = list(file_chunks(Pieces.whole(empty), sha256=sha, transfer_id="t"))
    assert [(c.index, c.total, c.data) for c in chunks] == [(0, 1, b"")]
