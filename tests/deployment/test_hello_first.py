"""Calls before Hello get a clean gRPC status over real mutual TLS, not an unhandled error.

A site with a valid certificate that has never said Hello is not registered: its Heartbeat,
PullTask and PushReply are answered ``FAILED_PRECONDITION`` ("say Hello first"), nothing is
stored and no handler raises (no "Exception calling application" in the coordinator's log);
after its Hello the same calls work.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from fedcare.records.messages import Reply
from fedcare.transport.grpc import fedcare_pb2 as pb

from .helpers import assert_db_unchanged, db_state, provision, running_coordinator
from .wire import hello, pull, push, reply_chunks, rpc_error, site_client

pytestmark = pytest.mark.slow


def test_calls_before_hello_answer_failed_precondition(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kits = provision(tmp_path / "federation", ("newcomer",), name="hello-first")
    reply = Reply(study_id="s", round=1, site_id="newcomer", kind="fit", num_samples=1)
    with running_coordinator(kits, tmp_path / "home") as coordinator:
        address = f"127.0.0.1:{coordinator.port}"
        before = db_state(coordinator.store)
        with caplog.at_level(logging.ERROR), site_client(kits.sites["newcomer"], address) as stub:
            calls = {
                "Heartbeat": lambda: stub.Heartbeat(pb.HeartbeatRequest(state="idle"), timeout=30),
                "PullTask": lambda: pull(stub, wait_s=0.1),
                "PushReply": lambda: push(stub, reply_chunks(reply)),
            }
            for name, call in calls.items():
                err = rpc_error(call)
                assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, f"{name}: {err}"
                assert err.details() == (
                    "site 'newcomer' is not registered at this coordinator: say Hello first"
                ), name
            assert_db_unchanged(before, db_state(coordinator.store), "calls before Hello")
            assert hello(stub).site_id == "newcomer"
            stub.Heartbeat(pb.HeartbeatRequest(state="idle"), timeout=30)
            assert pull(stub, wait_s=0.1) is None
            ack = push(stub, reply_chunks(reply))
            assert not ack.accepted and ack.error_kind == "unknown_task", ack
    unhandled = [r for r in caplog.records if "Exception calling application" in r.getMessage()]
    assert not unhandled, unhandled[0].getMessage()
