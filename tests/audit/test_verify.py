"""verify_log: the must-hold mutation test, and each check naming the first bad entry."""

from __future__ import annotations

import base64
import json
import os
import random
from pathlib import Path
from typing import NamedTuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

import fedcare.audit.log as log_module
from fedcare.audit import AuditLog, Checkpoint, LogVerifier, VerifyResult, verify_bytes, verify_log
from fedcare.errors import ConfigError

from .conftest import fill

ENTRIES = 200
MUTATIONS = 1000
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class Generated(NamedTuple):
    path: Path
    log: bytes
    head: bytes
    lines: list[bytes]
    key: ec.EllipticCurvePublicKey
    verifier: LogVerifier  # has seen the intact log: only changed lines cost a full check


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory, kit: Path) -> Generated:
    path = tmp_path_factory.mktemp("generated") / "site.log"
    # Durability is not what these tests check: skip the fsyncs (3 per entry) to save time.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", lambda fd: None)
        with AuditLog.open(path, key_path=kit / "key.pem", actor="cleveland") as log:
            fill(log, ENTRIES)
    cert = x509.load_pem_x509_certificate((kit / "cert.pem").read_bytes())
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    data = path.read_bytes()
    head = Path(f"{path}.head").read_bytes()
    verifier = LogVerifier(key)
    assert verifier.verify(data, head).ok
    return Generated(path, data, head, data.splitlines(keepends=True), key, verifier)


def _check(g: Generated, mutated: bytes, at_most: int) -> VerifyResult:
    result = g.verifier.verify(mutated, g.head)
    assert not result.ok, f"mutation not detected (point {at_most})"
    assert result.first_bad is not None and 1 <= result.first_bad <= at_most, result
    assert result.reason.startswith(f"entry {result.first_bad}:"), result.reason
    assert result.count == result.first_bad - 1
    return result


def test_generated_log_verifies(generated: Generated) -> None:
    result = verify_bytes(generated.log, generated.head, public_key=generated.key)
    assert (result.ok, result.count, result.first_bad) == (True, ENTRIES, None)


def test_detects_every_single_byte_edit(generated: Generated) -> None:
    rng = random.Random(20261122)
    reasons = set()
    for _ in range(MUTATIONS):
        pos = rng.randrange(len(generated.log))
        byte = rng.choice([b for b in range(256) if b != generated.log[pos]])
        mutated = generated.log[:pos] + bytes([byte]) + generated.log[pos + 1 :]
        line = generated.log.count(b"\n", 0, pos) + 1
        reasons.add(_check(generated, mutated, line).reason.split(": ", 1)[1][:20])
    assert len(reasons) >= 4, reasons  # edits land in content, hashes, signatures, syntax


def test_detects_every_deletion(generated: Generated) -> None:
    rng = random.Random(1)
    picks = [ENTRIES, 1] + [rng.randrange(1, ENTRIES + 1) for _ in range(MUTATIONS - 2)]
    for k in picks:
        mutated = b"".join(generated.lines[: k - 1] + generated.lines[k:])
        assert _check(generated, mutated, k).first_bad == k
    last = verify_bytes(b"".join(generated.lines[:-1]), generated.head, public_key=generated.key)
    assert last.reason == (
        f"entry {ENTRIES}: missing; the signed head checkpoint names entry {ENTRIES} but the "
        f"log ends at entry {ENTRIES - 1} (newest entries deleted)"
    )


def test_detects_every_swap(generated: Generated) -> None:
    rng = random.Random(2)
    for _ in range(MUTATIONS):
        i, j = sorted(rng.sample(range(ENTRIES), 2))
        lines = list(generated.lines)
        lines[i], lines[j] = lines[j], lines[i]
        assert _check(generated, b"".join(lines), i + 1).first_bad == i + 1


def test_detects_every_insertion(generated: Generated) -> None:
    rng = random.Random(3)
    for _ in range(MUTATIONS):
        source, pos = rng.randrange(ENTRIES), rng.randrange(ENTRIES + 1)
        lines = [*generated.lines[:pos], generated.lines[source], *generated.lines[pos:]]
        # A copy put just before its original is indistinguishable from it: the original,
        # now one line later, is the first bad one.
        _check(generated, b"".join(lines), pos + 1 + (source == pos))


def test_detects_head_edits_and_a_foreign_head(generated: Generated, tmp_path: Path) -> None:
    rng = random.Random(4)
    for _ in range(200):
        pos = rng.randrange(len(generated.head))
        byte = rng.choice([b for b in range(256) if b != generated.head[pos]])
        head = generated.head[:pos] + bytes([byte]) + generated.head[pos + 1 :]
        result = generated.verifier.verify(generated.log, head)
        assert not result.ok and "head checkpoint" in result.reason, result
    # An entry's own signature can not be passed off as a head (domain separation).
    last = json.loads(generated.lines[-2])
    forged = {"hash": last["hash"], "seq": last["seq"], "sig": last["sig"], "version": 1}
    head = json.dumps(forged, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    result = verify_bytes(b"".join(generated.lines[:-1]), head, public_key=generated.key)
    assert (
        result.reason == "head checkpoint: signature does not verify with the signer's public key"
    )


@pytest.mark.parametrize("kind", ["edit", "delete", "swap", "insert"])
def test_verify_log_on_files_agrees(generated: Generated, tmp_path: Path, kind: str) -> None:
    # The file path and a fresh verifier (nothing remembered) give the same verdicts.
    rng = random.Random(kind)
    path = tmp_path / "site.log"
    Path(f"{path}.head").write_bytes(generated.head)
    for _ in range(10):
        lines = list(generated.lines)
        k = rng.randrange(ENTRIES)
        if kind == "edit":
            pos = rng.randrange(len(lines[k]))
            lines[k] = lines[k][:pos] + bytes([lines[k][pos] ^ 0x01]) + lines[k][pos + 1 :]
        elif kind == "delete":
            del lines[k]
        elif kind == "swap":
            lines[k], lines[k - 1] = lines[k - 1], lines[k]
        else:
            lines.insert(k, lines[-1])
        path.write_bytes(b"".join(lines))
        result = verify_log(path, public_key=generated.key)
        assert result == generated.verifier.verify(b"".join(lines), generated.head)
        assert not result.ok and result.first_bad is not None and result.first_bad <= k + 1


def _entry_with_sig(line: bytes, sig: str) -> bytes:
    record = json.loads(line)
    record["sig"] = sig
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_malleable_signature_twin_is_refused(generated: Generated) -> None:
    # (r, n - s) is also a valid ECDSA signature; only the low-S one is accepted.
    line = generated.lines[2]
    record = json.loads(line)
    r, s = decode_dss_signature(base64.b64decode(record["sig"]))
    twin = encode_dss_signature(r, P256_N - s)
    generated.key.verify(twin, record["hash"].encode(), ec.ECDSA(hashes.SHA256()))
    lines = list(generated.lines)
    lines[2] = _entry_with_sig(line, base64.b64encode(twin).decode()) + b"\n"
    result = verify_bytes(b"".join(lines), generated.head, public_key=generated.key)
    assert (result.first_bad, result.reason) == (
        3,
        "entry 3: signature is not canonical (DER, low-S)",
    )


def test_without_key_signatures_are_not_checked(generated: Generated, other_kit: Path) -> None:
    result = verify_log(generated.path)
    assert (result.ok, result.signatures_checked) == (True, False)
    assert "signatures not checked" in result.warnings[0]
    foreign = verify_log(generated.path, cert_path=other_kit / "cert.pem")
    assert (foreign.ok, foreign.first_bad) == (False, 1)


def test_head_rules(generated: Generated) -> None:
    missing = verify_bytes(generated.log, None, public_key=generated.key)
    assert (missing.ok, missing.first_bad) == (False, None)
    assert "head checkpoint is missing" in missing.reason
    lenient = verify_bytes(generated.log, None, public_key=generated.key, require_head=False)
    assert lenient.ok and "no head checkpoint" in lenient.warnings[0]


def test_old_head_put_back_is_detected_but_full_rollback_is_not(tmp_path: Path, kit: Path) -> None:
    path = tmp_path / "site.log"
    with AuditLog.open(path, key_path=kit / "key.pem", actor="cleveland") as log:
        fill(log, 10)
        old_log, old_head = path.read_bytes(), Path(f"{path}.head").read_bytes()
        fill(log, 5, start=10)
        witness = log.checkpoint()
    Path(f"{path}.head").write_bytes(old_head)
    result = verify_log(path, cert_path=kit / "cert.pem")
    assert (result.ok, result.first_bad) == (False, 11)
    assert "entries 11 to 15 are not covered by the signed head checkpoint" in result.reason
    # The documented limit: restoring an older copy of both files is not detectable locally,
    # only against a checkpoint someone else kept.
    path.write_bytes(old_log)
    assert verify_log(path, cert_path=kit / "cert.pem").ok
    rolled = verify_log(path, cert_path=kit / "cert.pem", witnessed=[witness])
    assert (rolled.ok, rolled.first_bad) == (False, 11)
    assert rolled.reason == (
        "entry 11: missing; a witnessed checkpoint names entry 15 but the log ends at entry 10 "
        "(rolled back to an older copy?)"
    )


def test_witnessed_checkpoints_expose_a_rewrite_by_the_key_holder(
    tmp_path: Path, kit: Path
) -> None:
    path = tmp_path / "site.log"
    with AuditLog.open(path, key_path=kit / "key.pem", actor="cleveland") as log:
        fill(log, 5)
        seen = str(log.checkpoint())
        fill(log, 3, start=5)
    assert Checkpoint.parse(seen) == Checkpoint(
        5, json.loads(path.read_bytes().splitlines()[4])["hash"]
    )
    assert verify_log(path, cert_path=kit / "cert.pem", witnessed=[seen, "0:" + "0" * 64]).ok
    # The key holder rewrites everything from scratch, validly signed: only the witness sees it.
    path.unlink()
    Path(f"{path}.head").unlink()
    with AuditLog.open(path, key_path=kit / "key.pem", actor="cleveland") as log:
        fill(log, 8, start=100)
    assert verify_log(path, cert_path=kit / "cert.pem").ok
    result = verify_log(path, cert_path=kit / "cert.pem", witnessed=[seen])
    assert (result.ok, result.first_bad) == (False, 5)
    assert result.reason == "entry 5: differs from a witnessed checkpoint (history rewritten)"
    with pytest.raises(ConfigError, match="witnessed: audit checkpoint '5-abc' is not 'seq:hash'"):
        verify_log(path, witnessed=["5-abc"])


def test_time_going_backwards_is_a_warning(
    tmp_path: Path, kit: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    times = iter(["2026-01-02T00:00:00.000000Z", "2026-01-01T00:00:00.000000Z"])
    monkeypatch.setattr(log_module, "utc_now", lambda: next(times))
    path = tmp_path / "site.log"
    with AuditLog.open(path, key_path=kit / "key.pem", actor="cleveland") as log:
        fill(log, 2)
    result = verify_log(path, cert_path=kit / "cert.pem")
    assert result.ok
    assert result.warnings == ("entry 2: time 2026-01-01T00:00:00.000000Z is before entry 1's",)


def test_missing_files(tmp_path: Path, generated: Generated) -> None:
    with pytest.raises(ConfigError, match=r"nothing.log does not exist"):
        verify_log(tmp_path / "nothing.log")
    Path(f"{tmp_path / 'gone.log'}.head").write_bytes(generated.head)
    result = verify_log(tmp_path / "gone.log")
    assert (result.ok, result.first_bad) == (False, 1)
    assert "is missing but its head checkpoint exists" in result.reason
    with pytest.raises(ConfigError, match=r"audit log .*generated\d* cannot be read"):
        verify_log(generated.path.parent)
    with pytest.raises(ConfigError, match=r"cert_path .*missing.pem"):
        verify_log(generated.path, cert_path=tmp_path / "missing.pem")


def _edit_record(line: bytes, **changes: object) -> bytes:
    record = json.loads(line)
    record.update(changes)
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b.replace(b'","', b'", "', 1), "line is not in canonical JSON form"),
        (lambda b: b.replace(b'"round"', b'"r\xffund"'), "line is not valid UTF-8"),
        (lambda b: b[:-1], "line is not valid JSON"),
        (lambda b: _edit_record(b, extra=1), "line has wrong fields (missing [], unexpected"),
        (
            lambda b: _edit_record(b, data={**json.loads(b)["data"], "rows": 0}),
            "hash does not match its content",
        ),
        (lambda b: _edit_record(b, prev="1" * 64), "prev does not match the hash of entry 4"),
        (lambda b: _edit_record(b, seq=6), "seq is 6, expected 5"),
        (lambda b: _edit_record(b, sig="AAAA"), "signature is not a DER ECDSA signature"),
        (lambda b: _edit_record(b, sig="not base64!"), "signature is not valid base64"),
        (
            lambda b: _edit_record(b, time="2026-01-01T00:00:00"),
            "time '2026-01-01T00:00:00' is not UTC",
        ),
        (lambda b: _edit_record(b, data=[1]), "field 'data' must be a JSON object"),
    ],
)
def test_reasons_name_the_entry_and_the_problem(
    generated: Generated, mutate: object, reason: str
) -> None:
    lines = [line.rstrip(b"\n") for line in generated.lines]
    lines[4] = mutate(lines[4])  # type: ignore[operator]
    result = generated.verifier.verify(b"\n".join(lines) + b"\n", generated.head)
    assert (result.ok, result.first_bad, result.count) == (False, 5, 4)
    assert result.reason.startswith(f"entry 5: {reason}"), result.reason
