"""Protocol version negotiation over real mutual TLS (fedcare.records.protocol).

One coordinator at protocol 1.2 and two real agents: ``cleveland`` speaks 1.2 (framed,
resumable transfers), ``hungary`` the previous minor 1.1 (whole messages, which the
coordinator converts): both take part in a plain study and in one that compresses updates.
At the wire: another major, or two minors behind, is refused at Hello with
FAILED_PRECONDITION naming both versions and whom to upgrade (the site is not registered); a
Hello without the protocol fields counts as 1.0, now two minors behind: refused; an agent
refused at Hello stops at once. (Withholding a later minor's feature from a site behind is
covered by tests/records/test_protocol.py and the gate's unit tests: no feature is newer than
1.1 today.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from fedcare.coordinator.server import Coordinator
from fedcare.errors import NotFoundError, TransportError
from fedcare.records.messages import MESSAGE_VERSION
from fedcare.records.protocol import LEGACY, PROTOCOL
from fedcare.transport.grpc import fedcare_pb2 as pb

from ..conftest import require_mirror
from .helpers import (
    AgentThreads,
    contributors,
    heart_data,
    heart_study,
    provision,
    running_coordinator,
    submit,
    wait_for_status,
)
from .wire import RPC_TIMEOUT_S, rpc_error, site_client

pytestmark = pytest.mark.slow
OLD = (PROTOCOL[0], PROTOCOL[1] - 1)
SITES = ("cleveland", "hungary")


@dataclass
class Mixed:
    coordinator: Coordinator
    agents: AgentThreads


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mixed]:
    """cleveland at this protocol, hungary one minor behind, both real agents."""
    require_mirror()
    root = tmp_path_factory.mktemp("protocol")
    kits = provision(root / "federation", SITES, name="protocol")
    with running_coordinator(kits, root / "home") as coordinator:
        agents = AgentThreads()
        try:
            for site in SITES:
                agents.start(
                    kits.sites[site],
                    heart_data(site),
                    address=f"127.0.0.1:{coordinator.port}",
                    state_dir=root / "state" / site,
                    tamper=(lambda a: setattr(a, "protocol", OLD)) if site == "hungary" else None,
                )
            yield Mixed(coordinator, agents)
        finally:
            agents.stop.set()
            coordinator.stop()
            agents.close()


def test_a_site_one_minor_behind_takes_part_with_whole_messages(mixed: Mixed) -> None:
    """1.2 sends tasks and replies framed and resumable; a 1.1 agent gets the whole messages
    it reads (converted by the coordinator, from the task stored as its header and the body
    the round's tasks share) and its whole-message replies are aggregated."""
    store = mixed.coordinator.store
    study_id = submit(store, heart_study(name="plain", rounds=2, min_sites=2))
    wait_for_status(store, study_id, "completed", describe=mixed.agents.describe)
    for r in (1, 2):
        assert contributors(store.get_round(study_id, r).record) == ["cleveland", "hungary"]
    fits = [t for t in store.list_tasks(study_id, 1) if t.kind == "fit"]
    shared = [store.artifacts.pieces(str(t.payload_digest)).pieces[-1].path for t in fits]
    assert len(fits) == 2 and len(set(shared)) == 1  # both payloads read one stored body
    gate = mixed.coordinator.servicer.gate
    assert gate.version_of("hungary") == OLD and not gate.streamed("hungary")
    assert gate.version_of("cleveland") == PROTOCOL and gate.streamed("cleveland")


def test_a_one_minor_behind_site_compresses_as_the_study_says(mixed: Mixed) -> None:
    store = mixed.coordinator.store
    study = heart_study(name="squeezed", rounds=1, min_sites=2, compression={"method": "fp16"})
    study_id = submit(store, study)
    wait_for_status(store, study_id, "completed", describe=mixed.agents.describe)
    assert contributors(store.get_round(study_id, 1).record) == ["cleveland", "hungary"]


def _hello(stub: object, major: int | None, minor: int = 0) -> pb.HelloResponse:
    fields = {} if major is None else {"protocol_major": major, "protocol_minor": minor}
    request = pb.HelloRequest(site_version="test", message_version=MESSAGE_VERSION, **fields)
    response: pb.HelloResponse = stub.Hello(request, timeout=RPC_TIMEOUT_S)  # type: ignore[attr-defined]
    return response


def test_hello_refuses_another_major_and_two_minors_behind(tmp_path: Path) -> None:
    kits = provision(tmp_path / "federation", ("newcomer", "legacy"), name="hello-versions")
    with running_coordinator(kits, tmp_path / "home") as coordinator:
        address = f"127.0.0.1:{coordinator.port}"
        gate = coordinator.servicer.gate
        with site_client(kits.sites["newcomer"], address) as stub:
            err = rpc_error(lambda: _hello(stub, PROTOCOL[0] + 1, 0))
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert err.details() == (
                f"site 'newcomer' speaks fedcare protocol {PROTOCOL[0] + 1}.0, the coordinator "
                f"{PROTOCOL[0]}.{PROTOCOL[1]}: different major versions never talk; upgrade "
                "the coordinator's fedcare"
            )
            gate.current = (PROTOCOL[0], PROTOCOL[1] + 2)  # a coordinator two minors ahead
            err = rpc_error(lambda: _hello(stub, *PROTOCOL))
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert err.details() == (
                f"site 'newcomer' speaks fedcare protocol {PROTOCOL[0]}.{PROTOCOL[1]}, the "
                f"coordinator {PROTOCOL[0]}.{PROTOCOL[1] + 2}: a site may be at most 1 minor "
                "version behind; upgrade the site's fedcare"
            )
            with pytest.raises(NotFoundError):  # a refused Hello registers nothing
                coordinator.store.get_site("newcomer")
            gate.current = (PROTOCOL[0], PROTOCOL[1] + 1)  # one minor ahead: accepted
            response = _hello(stub, *PROTOCOL)
            assert (response.protocol_major, response.protocol_minor) == gate.current
            gate.current = PROTOCOL
        with site_client(kits.sites["legacy"], address) as stub:
            err = rpc_error(lambda: _hello(stub, None))  # from before the protocol fields: 1.0
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert err.details() == (
                f"site 'legacy' speaks fedcare protocol {LEGACY[0]}.{LEGACY[1]}, the coordinator "
                f"{PROTOCOL[0]}.{PROTOCOL[1]}: a site may be at most 1 minor version behind; "
                "upgrade the site's fedcare"
            )


def test_an_agent_refused_at_hello_stops_with_the_message(tmp_path: Path) -> None:
    kits = provision(tmp_path / "federation", ("future",), name="hello-stop")
    with running_coordinator(kits, tmp_path / "home") as coordinator:
        agents = AgentThreads()
        agents.start(
            kits.sites["future"],
            heart_data("cleveland"),
            address=f"127.0.0.1:{coordinator.port}",
            state_dir=tmp_path / "state",
            tamper=lambda a: setattr(a, "protocol", (PROTOCOL[0] + 1, 0)),
        )
        agents.threads["future"].join(20)
        try:
            assert not agents.threads["future"].is_alive(), agents.describe()
            err = agents.errors["future"]
            assert isinstance(err, TransportError), agents.describe()
            assert "upgrade the coordinator's fedcare" in str(err)
            assert any("refused at Hello" in e for e in agents.events["future"])
        finally:
            agents.close()
