"""Who may talk to a real coordinator, and what a site may answer for.

A real :class:`Coordinator` serves mutual TLS on 127.0.0.1; the tests play the sites by hand
with real gRPC channels. Identity comes from the certificate only: revoked, rotated-out,
missing and foreign certificates are refused, a site gets only its own tasks, and a reply is
accepted only for an open task of the caller, of the study, round and kind it names. Every
refusal leaves the database exactly as it was.
"""

from __future__ import annotations

import itertools
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from fedcare.errors import TransportError
from fedcare.records.messages import Task
from fedcare.site.agent import SiteAgent
from fedcare.transport.grpc import fedcare_pb2 as pb
from fedcare.transport.grpc.fedcare_pb2_grpc import CoordinatorStub
from fedcare.transport.provisioning import create_federation, revoke_site, rotate_site

from ..conftest import require_mirror
from .helpers import assert_db_unchanged, db_state, heart_data
from .wire import Arena, answer, hello, pull, push, reply_chunks, rpc_error, site_client

REFUSED_AT_HANDSHAKE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)


# --- certificates -------------------------------------------------------------------------------
def test_a_revoked_site_is_refused_at_hello_and_on_every_call(arena: Arena) -> None:
    with arena.client("doomed") as stub:
        assert hello(stub).site_id == "doomed"  # accepted before the revocation
        revoke_site(arena.kits.root, "doomed")
        before = db_state(arena.store)
        calls = {
            "Hello": lambda: hello(stub),
            "PullTask": lambda: pull(stub, wait_s=0.1),
            "PushReply": lambda: push(stub, []),
            "Heartbeat": lambda: stub.Heartbeat(pb.HeartbeatRequest(state="idle"), timeout=30),
        }
        for name, call in calls.items():
            err = rpc_error(call)
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED, f"{name}: {err}"
            assert "'doomed'" in str(err.details()) and "revoked" in str(err.details()), name
        assert_db_unchanged(before, db_state(arena.store), "calls with a revoked certificate")


def test_a_site_agent_with_a_revoked_certificate_stops_with_the_reason(
    arena: Arena, tmp_path: Path
) -> None:
    require_mirror()
    revoke_site(arena.kits.root, "doomed-agent")
    agent = SiteAgent(
        arena.kits.sites["doomed-agent"],
        heart_data("va"),
        state_dir=tmp_path / "state",
        coordinator=arena.address,
        poll_wait=0.5,
    )
    stop = threading.Event()
    watchdog = threading.Timer(60, stop.set)  # a bug (retrying forever) fails, never hangs
    watchdog.start()
    try:
        with pytest.raises(TransportError, match=r"refused site 'doomed-agent'.*revoked"):
            agent.run(stop)
    finally:
        watchdog.cancel()
    assert not stop.is_set(), "the agent kept retrying with a revoked certificate"


def test_a_rotated_out_certificate_is_refused_and_the_new_one_accepted(
    arena: Arena, tmp_path: Path
) -> None:
    old_kit = tmp_path / "old-kit"
    shutil.copytree(arena.kits.sites["rotated"], old_kit)
    new_kit = rotate_site(arena.kits.root, "rotated")
    with site_client(old_kit, arena.address) as stub:
        err = rpc_error(lambda: hello(stub))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "rotated" in str(err.details())
    with site_client(new_kit, arena.address) as stub:
        assert hello(stub).site_id == "rotated"


def test_a_client_without_a_certificate_cannot_connect(arena: Arena) -> None:
    before = db_state(arena.store)
    no_cert = grpc.ssl_channel_credentials(root_certificates=arena.kits.ca_pem)
    with grpc.secure_channel(arena.address, no_cert) as channel:
        err = rpc_error(lambda: hello(CoordinatorStub(channel)))
    assert err.code() in REFUSED_AT_HANDSHAKE, err
    with grpc.insecure_channel(arena.address) as channel:  # no TLS at all
        err = rpc_error(lambda: hello(CoordinatorStub(channel)))
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err
    assert_db_unchanged(before, db_state(arena.store), "clients without a certificate")


def test_a_certificate_from_another_federation_cannot_connect(arena: Arena, tmp_path: Path) -> None:
    """Same site id, other CA: the name 'north' is worth nothing without our CA's signature."""
    rogue = create_federation(tmp_path / "rogue", name="rogue", sites=["north"])
    kit = rogue.site_kits["north"]
    study_id = arena.idle_study("north-task-waiting")
    task = Task(study_id=study_id, round=1, site_id="north", kind="fit")
    arena.create_task(task)
    before = db_state(arena.store)
    trusting_us = grpc.ssl_channel_credentials(
        root_certificates=arena.kits.ca_pem,
        private_key=(kit / "key.pem").read_bytes(),
        certificate_chain=(kit / "cert.pem").read_bytes(),
    )
    with grpc.secure_channel(arena.address, trusting_us) as channel:
        stub = CoordinatorStub(channel)
        assert rpc_error(lambda: hello(stub)).code() in REFUSED_AT_HANDSHAKE
        assert rpc_error(lambda: pull(stub, wait_s=0.5)).code() in REFUSED_AT_HANDSHAKE
    with site_client(kit, arena.address) as stub:  # its own CA does not trust our server
        assert rpc_error(lambda: hello(stub)).code() == grpc.StatusCode.UNAVAILABLE
    assert_db_unchanged(before, db_state(arena.store), "a foreign certificate")
    [row] = arena.store.list_tasks(study_id)
    assert row.status == "pending", "the real north's task must still wait for the real north"


# --- tasks and replies --------------------------------------------------------------------------
def test_a_site_gets_only_its_own_tasks(arena: Arena) -> None:
    study_id = arena.idle_study("south-only")
    task = Task(study_id=study_id, round=1, site_id="south", kind="fit")
    arena.create_task(task)
    with arena.client("north") as north:
        assert pull(north, wait_s=0.5) is None
    assert [t.status for t in arena.store.list_tasks(study_id)] == ["pending"]
    with arena.client("south") as south:
        pulled = pull(south, wait_s=10)
    assert pulled is not None and pulled.task_id == task.task_id
    assert [t.status for t in arena.store.list_tasks(study_id)] == ["delivered"]


def test_a_site_cannot_reply_for_another_site(arena: Arena) -> None:
    study_id = arena.idle_study("wrong-site")
    with arena.client("north") as north, arena.client("south") as south:
        arena.open_task(north, "north", study_id, round=1)
        south_task = arena.open_task(south, "south", study_id, round=1)
        before = db_state(arena.store)
        tasks_before = arena.store.list_tasks(study_id, 1)

        ack = push(north, reply_chunks(answer(south_task)))  # north answers south's task

        assert not ack.accepted
        assert ack.error_kind == "wrong_site"
        assert "'north'" in ack.message and "'south'" in ack.message, ack.message
        assert arena.store.list_tasks(study_id, 1) == tasks_before
        assert arena.store.replies_for_round(study_id, 1, 1) == []
        assert_db_unchanged(before, db_state(arena.store), "north replying as south")

        ack = push(south, reply_chunks(answer(south_task)))  # the real south still can
        assert ack.accepted, ack.message
    [reply] = arena.store.replies_for_round(study_id, 1, 1)
    assert (reply.site_id, reply.kind, reply.num_samples) == ("south", "fit", 25)


@pytest.fixture(scope="module")
def shared_study(arena_server: Arena) -> tuple[str, Iterator[int]]:
    """A running study for the module, and fresh round numbers for its tests."""
    return arena_server.idle_study("refusals", keep=True), itertools.count(1, step=2)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("old round", "expired"),
        ("round never sent", "unknown_task"),
        ("other study", "unknown_task"),
        ("unknown study", "unknown_task"),
        ("other kind: evaluate", "unknown_task"),
        ("other kind: stats", "unknown_task"),
        ("study cancelled", "study_not_running"),
        ("answered twice", "already_answered"),
    ],
)
def test_a_reply_that_answers_no_open_task_is_refused(
    arena: Arena, shared_study: tuple[str, Iterator[int]], case: str, reason: str
) -> None:
    study_id, rounds = shared_study
    other_study = study_id
    if case == "study cancelled":
        study_id = arena.idle_study(case)  # cancelled below; the others share one study
    first = next(rounds)
    with arena.client("north") as north:
        old = arena.open_task(north, "north", study_id, round=first)
        arena.store.expire_tasks(study_id, first, 1)  # that round ended, as at its deadline
        current = arena.open_task(north, "north", study_id, round=first + 1)
        if case == "other study":
            other_study = arena.idle_study("other")
        replies = {
            "old round": answer(old),
            "round never sent": answer(current, round=first + 1000),
            "other study": answer(current, study_id=other_study),
            "unknown study": answer(current, study_id="no-such-study"),
            "other kind: evaluate": answer(current, kind="evaluate"),
            "other kind: stats": answer(current, kind="stats"),
            "study cancelled": answer(current),
            "answered twice": answer(current),
        }
        if case == "study cancelled":
            arena.store.set_study_status(study_id, "cancelled", "by the test")
        if case == "answered twice":
            assert push(north, reply_chunks(answer(current))).accepted
        before = db_state(arena.store)

        ack = push(north, reply_chunks(replies[case]))

        assert not ack.accepted, f"{case}: accepted"
        assert ack.error_kind == reason, f"{case}: {ack.error_kind}: {ack.message}"
        assert ack.message, "a refusal says why"
        assert_db_unchanged(before, db_state(arena.store), f"a reply for {case}")
        if case not in ("study cancelled", "answered twice"):  # the open task is intact
            assert push(north, reply_chunks(answer(current))).accepted
