"""AuditLog: round trip, validation, refusals, crashes, threads and processes."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fedcare.audit.log as log_module
from fedcare.audit import AuditEntry, AuditLog, verify_log
from fedcare.audit._format import load_cert_key, load_private_key, public_key_text
from fedcare.errors import AuditError, ConfigError, ValidationError
from fedcare.transport.provisioning import create_federation, rotate_site

from .conftest import fill

GENESIS = "0" * 64
# Forked children start at once (the modules are already imported); spawn would take seconds.
FORK = multiprocessing.get_context("fork")


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_round_trip(open_log: AuditLog, log_path: Path, kit: Path) -> None:
    assert open_log.head() == GENESIS
    first = open_log.append("task_received", task_id="t1", round=3, kind="train")
    second = open_log.append("decision", task_id="t1", accepted=True, reason="policy ok")
    assert isinstance(first, AuditEntry)
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == GENESIS and second.prev_hash == first.hash
    assert open_log.head() == second.hash
    assert first.actor == "cleveland" and first.data == {
        "task_id": "t1",
        "round": 3,
        "kind": "train",
    }
    stored = _records(log_path)
    assert stored == [first.to_record(), second.to_record()]
    assert log_path.read_bytes() == first.to_line() + second.to_line()
    assert sorted(stored[0]) == ["actor", "data", "event", "hash", "prev", "seq", "sig", "time"]
    assert stored[0]["time"].endswith("Z")
    result = verify_log(log_path, cert_path=kit / "cert.pem")
    assert (result.ok, result.count, result.first_bad, result.warnings) == (True, 2, None, ())
    assert result.reason == "ok: 2 entries"
    assert result.checkpoint == open_log.checkpoint() == (2, second.hash)


def test_reopen_continues_the_chain(log_path: Path, kit: Path) -> None:
    with AuditLog.open(log_path, key_path=kit / "key.pem", actor="cleveland") as log:
        fill(log, 3)
        head = log.head()
    with AuditLog.open(log_path, key_path=kit / "key.pem", actor="cleveland") as log:
        assert log.head() == head
        assert log.append("revocation", study="s1").prev_hash == head
    assert verify_log(log_path, cert_path=kit / "cert.pem").count == 4


def test_data_is_copied_and_converted(open_log: AuditLog) -> None:
    nested = {"sizes": [1, 2]}
    entry = open_log.append(
        "output_sent", meta=nested, rows=np.int64(7), loss=np.float32(0.5), path=Path("/a/b")
    )
    nested["sizes"].append(3)
    assert entry.data == {"meta": {"sizes": [1, 2]}, "rows": 7, "loss": 0.5, "path": "/a/b"}
    assert type(entry.data["rows"]) is int
    clash = open_log.append("decision", **{"event": "x", "self": 1, "data": 2})
    assert clash.event == "decision" and clash.data == {"event": "x", "self": 1, "data": 2}


@pytest.mark.parametrize(
    ("event", "data", "match"),
    [
        ("", {}, "event name ''"),
        ("bad event", {}, "event name 'bad event'"),
        ("decision", {"obj": object()}, r"audit event 'decision': data \['obj'\]"),
        ("decision", {"x": float("nan")}, "not JSON-serializable"),
        ("decision", {"x": "\ud800"}, "surrogates not allowed"),
        ("decision", {"x": {1: 2, "a": 3}}, "not supported between"),
    ],
)
def test_append_rejects_bad_input(
    open_log: AuditLog, log_path: Path, event: str, data: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValidationError, match=match):
        open_log.append(event, **data)
    assert log_path.read_bytes() == b""


def test_open_rejects_bad_arguments(log_path: Path, kit: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="actor"):
        AuditLog.open(log_path, key_path=kit / "key.pem", actor="")
    with pytest.raises(ConfigError, match=r"key_path .*cert.pem"):
        AuditLog.open(log_path, key_path=kit / "cert.pem", actor="cleveland")
    with pytest.raises(ConfigError, match=r"missing.pem"):
        AuditLog.open(log_path, key_path=tmp_path / "missing.pem", actor="cleveland")
    log_path.mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"site.log cannot be opened for appending"):
        AuditLog.open(log_path, key_path=kit / "key.pem", actor="cleveland")


def test_closed_log_refuses(log_path: Path, kit: Path) -> None:
    log = AuditLog.open(log_path, key_path=kit / "key.pem", actor="cleveland")
    log.close()
    with pytest.raises(AuditError, match="closed"):
        log.append("decision")


def test_foreign_key_is_refused(open_log: AuditLog, log_path: Path, other_kit: Path) -> None:
    fill(open_log, 2)
    with pytest.raises(AuditError, match="not signed with the key in use"):
        AuditLog.open(log_path, key_path=other_kit / "key.pem", actor="hungary")
    result = verify_log(log_path, cert_path=other_kit / "cert.pem")
    assert (result.ok, result.first_bad) == (False, 1)
    assert "signature does not verify" in result.reason


def test_crash_mid_write_leaves_a_detectable_torn_tail(
    open_log: AuditLog, log_path: Path, kit: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(open_log, 5)

    def half_then_fail(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(log_module, "write_all", half_then_fail)
        with pytest.raises(AuditError, match=r"writing entry 6 \('decision'\) failed .*No space"):
            open_log.append("decision", task_id="t")
    result = verify_log(log_path, cert_path=kit / "cert.pem")
    assert (result.ok, result.count, result.first_bad) == (False, 5, 6)
    assert "torn" in result.reason
    with pytest.raises(AuditError, match="torn"):
        open_log.append("decision", task_id="after crash")
    with pytest.raises(AuditError, match="torn"):
        AuditLog.open(log_path, key_path=kit / "key.pem", actor="cleveland")


def _die_mid_write(log_path: Path, kit: Path) -> None:
    log = AuditLog.open(log_path, key_path=kit / "key.pem", actor="cleveland")
    fill(log, 3)

    def die(fd: int, data: bytes) -> None:
        os.write(fd, data[:40])
        os._exit(9)

    log_module.write_all = die  # type: ignore[assignment]  # only in this child process
    log.append("decision", i=3)


def test_process_killed_mid_write(log_path: Path, kit: Path) -> None:
    # A real crash: the writer dies (os._exit) half-way through a line; no cleanup runs.
    child = FORK.Process(target=_die_mid_write, args=(log_path, kit))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 9
    result = verify_log(log_path, cert_path=kit / "cert.pem")
    assert (result.ok, result.count, result.first_bad) == (False, 3, 4)
    assert result.reason == "entry 4: the last line is torn (no newline at the end)"


def test_crash_before_the_head_is_written_is_repaired(
    open_log: AuditLog, log_path: Path, kit: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(open_log, 3)

    def fail(self: AuditLog, seq: int, hash_: str, key: object) -> None:
        raise OSError("crash")

    with monkeypatch.context() as patch:
        patch.setattr(AuditLog, "_write_head", fail)
        with pytest.raises(
            AuditError, match=r"entry 4 .* is written but its head checkpoint is not"
        ):
            open_log.append("decision", i=3)
    result = verify_log(log_path, cert_path=kit / "cert.pem")
    assert (result.ok, result.count) == (True, 4)
    assert result.warnings == (
        "entry 4 is newer than the signed head checkpoint (a crash before the checkpoint was "
        "written; the next append repairs it)",
    )
    # Reopening repairs the head (so does the next append).
    AuditLog.open(log_path, key_path=kit / "key.pem", actor="cleveland").close()
    assert verify_log(log_path, cert_path=kit / "cert.pem").warnings == ()
    assert open_log.append("decision", i=4).seq == 5
    assert verify_log(log_path, cert_path=kit / "cert.pem").count == 5


def test_deleting_the_newest_entries_is_refused(
    open_log: AuditLog, log_path: Path, kit: Path
) -> None:
    fill(open_log, 6)
    lines = log_path.read_bytes().splitlines(keepends=True)
    log_path.write_bytes(b"".join(lines[:4]))
    with pytest.raises(AuditError, match=r"ends at entry 4 but its signed head .* entry 6"):
        open_log.append("decision")
    assert log_path.read_bytes() == b"".join(lines[:4])


def test_deleted_head_is_refused(open_log: AuditLog, log_path: Path) -> None:
    fill(open_log, 2)
    Path(f"{log_path}.head").unlink()
    with pytest.raises(AuditError, match=r"head checkpoint .*site.log.head is missing"):
        open_log.append("decision")


def _append_many(log: AuditLog, tag: str, n: int) -> None:
    for i in range(n):
        log.append("decision", writer=tag, i=i)


def test_threads_append_one_valid_chain(open_log: AuditLog, log_path: Path, kit: Path) -> None:
    others = [AuditLog.open(log_path, key_path=kit / "key.pem", actor="cleveland") for _ in "ab"]
    jobs = [(open_log, f"shared-{t}") for t in range(4)] + [
        (o, f"own-{i}") for i, o in enumerate(others)
    ]
    threads = [threading.Thread(target=_append_many, args=(log, tag, 15)) for log, tag in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for other in others:
        other.close()
    result = verify_log(log_path, cert_path=kit / "cert.pem")
    assert (result.ok, result.count) == (True, 90)
    seen = {(r["data"]["writer"], r["data"]["i"]) for r in _records(log_path)}
    assert seen == {(tag, i) for _, tag in jobs for i in range(15)}


def _append_in_process(log_path: Path, kit: Path, tag: str) -> None:
    with AuditLog.open(log_path, key_path=kit / "key.pem", actor="cleveland") as log:
        _append_many(log, tag, 25)


def test_processes_append_one_valid_chain(open_log: AuditLog, log_path: Path, kit: Path) -> None:
    procs = [
        FORK.Process(target=_append_in_process, args=(log_path, kit, f"proc-{p}")) for p in range(2)
    ]
    for proc in procs:
        proc.start()
    _append_many(open_log, "parent", 25)
    for proc in procs:
        proc.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    result = verify_log(log_path, cert_path=kit / "cert.pem")
    assert (result.ok, result.count) == (True, 75)
    writers = [r["data"]["writer"] for r in _records(log_path)]
    assert {w: writers.count(w) for w in set(writers)} == {"parent": 25, "proc-0": 25, "proc-1": 25}


def test_key_rotation_hands_the_log_over_with_an_entry_signed_by_the_old_key(
    tmp_path: Path,
) -> None:
    fed = create_federation(tmp_path / "fed", name="rotation", sites=["a"])
    kit = fed.site_kits["a"]
    path = tmp_path / "site.log"
    with AuditLog.open(path, key_path=kit / "key.pem", actor="a") as log:
        fill(log, 3)
    rotate_site(fed.root, "a")
    old = kit / "previous" / "001"
    with pytest.raises(AuditError, match="key was rotated: then pass the old certificate"):
        AuditLog.open(path, key_path=kit / "key.pem", actor="a")
    # The old certificate alone is not enough: the change of key needs the handover.
    with pytest.raises(AuditError, match="no key-rotated entry hands the log over"):
        AuditLog.open(path, key_path=kit / "key.pem", actor="a", trusted_certs=[old / "cert.pem"])
    with AuditLog.open(
        path, key_path=kit / "key.pem", actor="a", previous_keys=[old / "key.pem"]
    ) as log:
        fill(log, 1, start=3)
    records = _records(path)
    handover = records[3]
    assert handover["event"] == "key-rotated" and handover["seq"] == 4
    assert handover["data"]["new_key"] == public_key_text(load_cert_key(kit / "cert.pem"))
    both = [old / "cert.pem", kit / "cert.pem"]
    rotated = verify_log(path, cert_path=both)
    assert (rotated.ok, rotated.count, rotated.warnings) == (True, 5, ())
    assert verify_log(path, cert_path=kit / "cert.pem").first_bad == 1
    assert verify_log(path, cert_path=old / "cert.pem").first_bad == 5
    # Reopening does not hand over again.
    with AuditLog.open(path, key_path=kit / "key.pem", actor="a", trusted_certs=[old / "cert.pem"]):
        pass
    assert len(_records(path)) == 5
    # Someone holding the retired key cannot add entries after the new key took over:
    # AuditLog refuses, and an entry they append by other means fails verification.
    with pytest.raises(AuditError, match="no key-rotated entry hands the log over"):
        AuditLog.open(path, key_path=old / "key.pem", actor="a", trusted_certs=[kit / "cert.pem"])
    log = AuditLog.open(path, key_path=kit / "key.pem", actor="a")
    log._key = load_private_key(old / "key.pem")
    log.append("decision", forged=True)
    log.close()
    result = verify_log(path, cert_path=both)
    assert (result.ok, result.first_bad) == (False, 6)
    assert result.reason.startswith("entry 6: signed with key 1 of 2 while key 2 was in force")


def test_a_change_of_key_without_a_handover_entry_fails_verification(tmp_path: Path) -> None:
    fed = create_federation(tmp_path / "fed", name="rotation", sites=["a"])
    kit = fed.site_kits["a"]
    path = tmp_path / "site.log"
    with AuditLog.open(path, key_path=kit / "key.pem", actor="a") as log:
        fill(log, 2)
    rotate_site(fed.root, "a")
    old = kit / "previous" / "001"
    # Forge the switch: the new key signs on, the old one is trusted only as the tail signer.
    log = AuditLog.open(path, key_path=old / "key.pem", actor="a")
    log._key = load_private_key(kit / "key.pem")  # as a writer that skipped the handover
    log._public = log._key.public_key()
    log._tail_keys = [log._public, load_cert_key(old / "cert.pem")]
    fill(log, 1, start=2)
    log.close()
    result = verify_log(path, cert_path=[old / "cert.pem", kit / "cert.pem"])
    assert (result.ok, result.first_bad) == (False, 3), result.reason
    assert "without a key-rotated entry handing over to it" in result.reason


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.dictionaries(st.text(min_size=1), JSON, max_size=5))
def test_any_json_data_round_trips(
    open_log: AuditLog, log_path: Path, data: dict[str, Any]
) -> None:
    entry = open_log.append("fuzz", **data)
    assert entry.data == data
    stored = json.loads(log_path.read_bytes().splitlines()[-1])
    assert stored["data"] == data and stored["hash"] == entry.hash
    result = verify_log(log_path)
    assert (result.ok, result.count) == (True, entry.seq)
