"""Protocol version negotiation over real mutual TLS (fedcare.records.protocol).

One coordinator at protocol 1.1 and two real agents: ``cleveland`` speaks 1.1, ``hungary`` the
previous minor 1.0. A plain study goes on without hungary (1.1 put the validation section in
every training plan), naming its version and what it lacks; so does a study that compresses
updates (a 1.1 feature), naming compression; a model
deployment to hungary (deploy tasks are 1.1) is failed with the same kind of reason and never
sent. At the wire: another major, or two minors behind, is refused at Hello with
FAILED_PRECONDITION naming both versions and whom to upgrade (the site is not registered); a
Hello without the protocol fields counts as 1.0; an agent refused at Hello stops at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from fedcare.coordinator.deployments import request_deployment
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


def test_a_site_one_minor_behind_is_left_out_of_a_plan_it_cannot_check(mixed: Mixed) -> None:
    """1.1 added the validation section to every training plan's hashed content: a 1.0 agent
    would rebuild the plan without it and refuse on a hash mismatch. It is told why instead,
    and the study goes on with the others."""
    store = mixed.coordinator.store
    study_id = submit(store, heart_study(name="plain", rounds=2, min_sites=1))
    wait_for_status(store, study_id, "completed", describe=mixed.agents.describe)
    for r in (1, 2):
        record = store.get_round(study_id, r).record
        assert contributors(record) == ["cleveland"]
        why = str(record["fit"]["failed_sites"]["hungary"])
        assert (
            "site 'hungary' speaks protocol 1.0; the training plan's validation section needs 1.1"
        ) in why, record["fit"]
    assert mixed.coordinator.servicer.gate.version_of("hungary") == OLD


def test_a_later_minor_feature_is_not_sent_and_the_study_goes_on(mixed: Mixed) -> None:
    store = mixed.coordinator.store
    study = heart_study(name="squeezed", rounds=1, min_sites=1, compression={"method": "fp16"})
    study_id = submit(store, study)
    wait_for_status(store, study_id, "completed", describe=mixed.agents.describe)
    fit = store.get_round(study_id, 1).record["fit"]
    assert contributors(store.get_round(study_id, 1).record) == ["cleveland"]
    why = str(fit["failed_sites"]["hungary"])
    assert "site 'hungary' speaks protocol 1.0; update compression needs 1.1" in why, fit
    assert "upgrade its fedcare" in why


def test_a_deployment_to_a_site_one_minor_behind_fails_naming_the_version(mixed: Mixed) -> None:
    store = mixed.coordinator.store
    if not store.list_models():
        test_a_site_one_minor_behind_is_left_out_of_a_plan_it_cannot_check(mixed)
    version = store.list_models()[0].version
    (info,) = request_deployment(store, version, ["hungary"], "tester")
    end = time.monotonic() + 30
    while (info := store.get_deployment(info.id)).status in ("requested", "delivered"):
        assert time.monotonic() < end, f"{info}\n{mixed.agents.describe()}"
        time.sleep(0.1)
    assert info.status == "failed", info
    assert info.reason == (
        "site 'hungary' speaks protocol 1.0; deploy task needs 1.1: upgrade its fedcare"
    )
    assert info.answered_at is not None


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
            response = _hello(stub, None)  # an agent from before the protocol fields
            assert (response.protocol_major, response.protocol_minor) == PROTOCOL
            assert gate.version_of("legacy") == LEGACY == OLD
            assert gate.deployment_reason("legacy").startswith(
                "site 'legacy' speaks protocol 1.0; deploy task needs 1.1"
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
