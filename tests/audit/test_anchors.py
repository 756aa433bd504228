"""Anchors: the book of heads the other side holds, and verification against anchored heads."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcare.audit import AuditLog, verify_log
from fedcare.audit.anchors import Anchor, AnchorBook, entry_hash_at
from fedcare.errors import ConfigError

from .conftest import fill

H = {k: format(k, "x") * 64 for k in range(1, 6)}


def test_anchor_book_round_trips_and_names_a_bad_line(tmp_path: Path) -> None:
    book = AnchorBook(tmp_path / "anchors.jsonl")
    assert book.read() == [] and book.newest() is None
    book.add(Anchor(2, H[1], "sig", "t1"))
    book.add(Anchor(5, H[2], "sig", "t2"))
    assert [a.seq for a in book.read()] == [2, 5] and book.newest() == Anchor(5, H[2], "sig", "t2")
    with open(book.path, "a") as f:
        f.write('{"seq": 1}\n')
    with pytest.raises(ConfigError, match="line 3 is invalid"):
        book.read()


def test_verify_fails_when_the_log_no_longer_holds_an_anchored_head(
    tmp_path: Path, kit: Path
) -> None:
    path = tmp_path / "site.log"
    with AuditLog.open(path, key_path=kit / "key.pem", actor="a") as log:
        fill(log, 3)
        anchored = log.checkpoint()
        old_log, old_head = path.read_bytes(), (tmp_path / "site.log.head").read_bytes()
        fill(log, 3, start=3)
        later = log.checkpoint()
    assert entry_hash_at(path, anchored.seq) == anchored.hash
    assert entry_hash_at(path, 99) is None
    assert verify_log(path, cert_path=kit / "cert.pem", witnessed=[later]).ok
    path.write_bytes(old_log)  # an older copy of both files
    (tmp_path / "site.log.head").write_bytes(old_head)
    assert verify_log(path, cert_path=kit / "cert.pem").ok  # undetectable locally
    result = verify_log(path, cert_path=kit / "cert.pem", witnessed=[anchored, later])
    assert not result.ok and "rolled back" in result.reason, result.reason
