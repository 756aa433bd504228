"""The content-addressed artifact folder: digests, layout, idempotence, corruption."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcare.coordinator.artifacts import ArtifactStore, is_digest
from fedcare.errors import ArtifactCorruptError, NotFoundError, StoreError, ValidationError


@pytest.fixture
def artifacts(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_put_returns_the_sha256_and_lays_out_ab_slash_rest(artifacts: ArtifactStore) -> None:
    data = b"global model" * 100
    digest = artifacts.put(data)
    assert digest == hashlib.sha256(data).hexdigest() and is_digest(digest)
    assert artifacts.path(digest) == artifacts.root / digest[:2] / digest[2:]
    assert artifacts.path(digest).read_bytes() == data
    assert artifacts.exists(digest) and artifacts.get(digest) == data


def test_puts_are_idempotent_and_streams_match(artifacts: ArtifactStore) -> None:
    data = bytes(range(256)) * 5000
    digest = artifacts.put(data)
    assert artifacts.put(data) == digest
    chunks = (data[i : i + 4096] for i in range(0, len(data), 4096))
    assert artifacts.put_stream(chunks) == digest
    assert artifacts.put(b"") == hashlib.sha256(b"").hexdigest()
    stored = [p for p in artifacts.root.rglob("*") if p.is_file()]
    assert len(stored) == 2  # the data and the empty artifact; no temporary files left


def test_a_stream_is_consumed_chunk_by_chunk(artifacts: ArtifactStore) -> None:
    seen: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(50):
            seen.append(i)
            yield bytes([i]) * 65536

    digest = artifacts.put_stream(chunks())
    assert seen == list(range(50))
    assert hashlib.sha256(artifacts.get(digest)).hexdigest() == digest


def test_a_failing_stream_leaves_nothing_behind(artifacts: ArtifactStore) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"partial"
        raise RuntimeError("network dropped")

    with pytest.raises(RuntimeError, match="network dropped"):
        artifacts.put_stream(chunks())
    assert [p for p in artifacts.root.rglob("*") if p.is_file()] == []


def test_corruption_is_detected_on_every_read(artifacts: ArtifactStore) -> None:
    digest = artifacts.put(b"checkpoint bytes " * 1000)
    _corrupt(artifacts.path(digest))
    with pytest.raises(ArtifactCorruptError, match=digest) as info:
        artifacts.get(digest)
    assert info.value.digest == digest and info.value.actual != digest
    with pytest.raises(ArtifactCorruptError):
        artifacts.verify(digest)
    with artifacts.open(digest) as stream, pytest.raises(ArtifactCorruptError):
        while stream.read(1000):
            pass
    artifacts.put(b"checkpoint bytes " * 1000)  # putting the right bytes again repairs it
    artifacts.verify(digest)


def test_a_truncated_file_is_corrupt(artifacts: ArtifactStore) -> None:
    digest = artifacts.put(b"abcdef")
    artifacts.path(digest).write_bytes(b"abc")
    with pytest.raises(ArtifactCorruptError):
        artifacts.get(digest)


def test_open_streams_and_verifies(artifacts: ArtifactStore) -> None:
    data = b"x" * 3_000_000
    digest = artifacts.put(data)
    with artifacts.open(digest) as stream:
        assert stream.read(10) == b"x" * 10
        assert len(stream.read()) == len(data) - 10


def test_missing_bad_and_deleted_digests(artifacts: ArtifactStore) -> None:
    digest = artifacts.put(b"data")
    assert artifacts.delete(digest) is True
    assert artifacts.delete(digest) is False
    assert not artifacts.exists(digest)
    with pytest.raises(NotFoundError, match=digest):
        artifacts.get(digest)
    for bad in ["../../etc/passwd", digest.upper(), digest[:-1], ""]:
        with pytest.raises(ValidationError, match="64 lowercase hex"):
            artifacts.get(bad)


def test_concurrent_puts_of_the_same_bytes(artifacts: ArtifactStore) -> None:
    data = b"same" * 100_000
    digests: list[str] = []

    def put() -> None:
        digests.append(artifacts.put(data))

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(digests)) == 1 and artifacts.get(digests[0]) == data


def test_an_unusable_root_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot be created"):
        ArtifactStore(blocker / "artifacts")


def test_old_partial_uploads_are_pruned_and_fresh_ones_kept(tmp_path: Path) -> None:
    import os
    import time

    from fedcare.coordinator.transfers import prune_partials, reply_spool

    store = ArtifactStore(tmp_path / "a")
    assert prune_partials(store) == 0  # no folder yet
    old = reply_spool(store, "s/1/fit/a", "ab" * 32, 10).part
    new = reply_spool(store, "s/1/fit/b", "cd" * 32, 10).part
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    past = time.time() - 3 * 24 * 3600
    os.utime(old, (past, past))
    assert prune_partials(store) == 1
    assert not old.exists() and new.read_bytes() == b"y"
