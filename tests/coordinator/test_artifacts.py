"""The content-addressed artifact folder: digests, layout, idempotence, corruption."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcare.coordinator.artifacts import ArtifactStore, is_digest
from fedcare.errors import ArtifactCorruptError, NotFoundError, StoreError, ValidationError
from fedcare.transport.pieces import Pieces


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


# Composite artifacts: a round's task payloads, one shared body.

BODY = bytes(range(256)) * 4096  # 1 MiB
HEADERS = [b"header of north" + bytes(49), b"header of south" + bytes(49), b"h3"]


def _files(artifacts: ArtifactStore) -> list[Path]:
    return [p for p in artifacts.root.rglob("*") if p.is_file()]


def test_shared_bodies_are_written_once_and_read_as_whole_payloads(
    artifacts: ArtifactStore,
) -> None:
    chunks = [BODY[i : i + 100_000] for i in range(0, len(BODY), 100_000)]
    digests = artifacts.put_shared(HEADERS, iter(chunks))
    for header, digest in zip(HEADERS, digests, strict=True):
        whole = header + BODY
        assert digest == hashlib.sha256(whole).hexdigest()
        assert artifacts.exists(digest) and artifacts.is_composite(digest)
        assert artifacts.size(digest) == len(whole) == artifacts.pieces(digest).size
        assert artifacts.get(digest) == whole and bytes(artifacts.map(digest)) == whole
        assert (
            b"".join(artifacts.pieces(digest).blocks(len(BODY) // 2, 4096))
            == whole[len(BODY) // 2 :]
        )
        artifacts.verify(digest)
        assert not artifacts.path(digest).exists()  # no whole file
    bodies = [p for p in _files(artifacts) if p.name.endswith(".body")]
    assert len(bodies) == 1 and bodies[0].read_bytes() == BODY
    on_disk = sum(p.stat().st_size for p in _files(artifacts))
    assert len(BODY) < on_disk < len(BODY) + 8192  # one body, small headers and indexes


def test_storing_the_same_shared_payloads_again_writes_nothing_new(
    artifacts: ArtifactStore,
) -> None:
    digests = artifacts.put_shared(HEADERS, [BODY])
    before = {p: p.stat().st_mtime_ns for p in _files(artifacts)}
    assert artifacts.put_shared(HEADERS, [BODY]) == digests
    assert {p: p.stat().st_mtime_ns for p in _files(artifacts)} == before
    assert artifacts.put_shared(HEADERS[:1], [BODY]) == digests[:1]
    assert list((artifacts.root / ".tmp").iterdir()) == []


def test_a_missing_or_cut_body_is_a_store_error_naming_the_digest(
    artifacts: ArtifactStore,
) -> None:
    digests = artifacts.put_shared(HEADERS[:2], [BODY])
    [body] = [p for p in _files(artifacts) if p.name.endswith(".body")]
    body.write_bytes(BODY[:1000])
    for digest in digests:
        assert artifacts.exists(digest)  # the index is there; its pieces are not
        with pytest.raises(StoreError, match=f"artifact {digest} is incomplete"):
            artifacts.pieces(digest)
        with pytest.raises(StoreError, match=digest):
            artifacts.get(digest)
        assert not artifacts.holds(digest, len(HEADERS[0]) + len(BODY))
    body.unlink()
    with pytest.raises(StoreError, match=f"artifact {digests[0]} is incomplete.*not readable"):
        artifacts.verify(digests[0])
    assert artifacts.put_shared(HEADERS[:2], [BODY]) == digests  # stored again: repaired
    assert artifacts.get(digests[1]) == HEADERS[1] + BODY


def test_a_corrupted_body_fails_verification(artifacts: ArtifactStore) -> None:
    [digest] = artifacts.put_shared(HEADERS[:1], [BODY])
    [body] = [p for p in _files(artifacts) if p.name.endswith(".body")]
    _corrupt(body)
    with pytest.raises(ArtifactCorruptError, match=digest):
        artifacts.get(digest)


def test_a_bad_index_is_a_store_error(artifacts: ArtifactStore) -> None:
    [digest] = artifacts.put_shared(HEADERS[:1], [BODY])
    index = artifacts.path(digest).with_name(artifacts.path(digest).name + ".pieces")
    index.write_text('{"version": 1, "pieces": [{"path": "../../x", "offset": 0, "length": 1}]}')
    with pytest.raises(StoreError, match=f"artifact {digest}: its index .* is invalid.*leaves"):
        artifacts.size(digest)


def test_a_composite_of_pieces_already_stored(artifacts: ArtifactStore) -> None:
    whole = artifacts.put(b"H" * 64 + BODY)
    body = Pieces.of((artifacts.path(whole), 64, len(BODY)))
    digest = artifacts.put_composite(b"other header", body)
    assert digest == hashlib.sha256(b"other header" + BODY).hexdigest()
    assert artifacts.get(digest) == b"other header" + BODY
    assert artifacts.delete(digest) is True and not artifacts.exists(digest)
    assert artifacts.get(whole) == b"H" * 64 + BODY  # a plain artifact is untouched
    outside = Pieces.of((artifacts.root.parent / "elsewhere", 0, 0))
    (artifacts.root.parent / "elsewhere").write_bytes(b"")
    with pytest.raises(ValidationError, match="outside"):
        artifacts.put_composite(b"h", outside)
    with pytest.raises(ValidationError, match="at least one header"):
        artifacts.put_shared([], [BODY])


def test_durable_shared_payloads_read_back(artifacts: ArtifactStore) -> None:
    digests = artifacts.put_shared(HEADERS[:2], [BODY], durable=True)
    assert [artifacts.get(d) for d in digests] == [h + BODY for h in HEADERS[:2]]
