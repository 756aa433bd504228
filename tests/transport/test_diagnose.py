"""Connection failures named in one line, against a real coordinator over mutual TLS.

Each cause an operator hit (issue 11 item 4) is made for real: a name under ``.invalid``, a
closed port on 127.0.0.1, a coordinator of another federation (a second CA), the coordinator's
kit passed as a site kit, a revoked site; the exact text each gives is asserted.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from fedcare.coordinator.server import Coordinator
from fedcare.errors import ConfigError
from fedcare.transport.diagnose import (
    Cause,
    diagnose,
    explain_failure,
    explain_refusal,
    load_site_kit,
)
from fedcare.transport.grpc import fedcare_pb2 as pb
from fedcare.transport.grpc.fedcare_pb2_grpc import CoordinatorStub
from fedcare.transport.provisioning import create_federation, revoke_site, rotate_site
from fedcare.transport.tls import channel_credentials, load_kit

from ..deployment.helpers import Kits, provision, running_coordinator

TIMEOUT = 2.0


@pytest.fixture(scope="module")
def alpha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kits, Coordinator]]:
    """A real coordinator of federation 'alpha' on 127.0.0.1."""
    root = tmp_path_factory.mktemp("alpha")
    kits = provision(root / "fed", ("good", "doomed", "turned"), name="alpha")
    with running_coordinator(kits, root / "home") as coordinator:
        yield kits, coordinator


def _address(coordinator: Coordinator) -> str:
    return f"127.0.0.1:{coordinator.port}"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_working_connection_has_no_cause(alpha: tuple[Kits, Coordinator]) -> None:
    kits, coordinator = alpha
    assert diagnose(load_kit(kits.sites["good"]), _address(coordinator), TIMEOUT) is None


def test_an_unresolvable_host_is_named(alpha: tuple[Kits, Coordinator]) -> None:
    kit = load_kit(alpha[0].sites["good"])
    cause = diagnose(kit, "coordinator.fedcare.invalid:50051", TIMEOUT)
    assert cause is not None and cause.kind == "name-resolution"
    assert cause.message.startswith("name resolution failed for coordinator.fedcare.invalid")
    assert cause.persistent


def test_a_closed_port_is_a_refused_connection(alpha: tuple[Kits, Coordinator]) -> None:
    kit = load_kit(alpha[0].sites["good"])
    port = _closed_port()
    cause = diagnose(kit, f"127.0.0.1:{port}", TIMEOUT)
    assert cause == Cause(
        "refused", f"connection refused at 127.0.0.1:{port} (is the coordinator running?)"
    )
    assert not cause.persistent


def test_another_federations_coordinator_fails_tls_verification_naming_the_ca(
    alpha: tuple[Kits, Coordinator], tmp_path: Path
) -> None:
    beta = create_federation(
        tmp_path / "beta", name="beta", sites=["good"], coordinator_hosts=("127.0.0.1",)
    )
    kit = load_kit(beta.site_kits["good"])
    cause = diagnose(kit, _address(alpha[1]), TIMEOUT)
    assert cause is not None and cause.kind == "tls-verification", cause
    assert cause.message == (
        "TLS verification failed: the coordinator's certificate is not signed by this kit's CA "
        "(CN=beta CA,OU=ca,O=beta, federation beta) — probably another federation's kit "
        "(the coordinator's certificate is from federation alpha)"
    )


def test_a_certificate_for_another_host_fails_verification(
    alpha: tuple[Kits, Coordinator],
) -> None:
    kit = load_kit(alpha[0].sites["good"])
    cause = diagnose(kit, f"localhost:{alpha[1].port}", TIMEOUT)  # provisioned for 127.0.0.1
    if cause is not None and cause.kind == "refused":
        pytest.skip("localhost does not resolve to 127.0.0.1 here")
    assert cause is not None and cause.message.startswith(
        "TLS verification failed: the coordinator's certificate is not valid for localhost"
    ), cause


def test_the_coordinator_kit_is_refused_as_a_site_kit(alpha: tuple[Kits, Coordinator]) -> None:
    kit = alpha[0].coordinator
    with pytest.raises(ConfigError) as err:
        load_site_kit(kit)
    assert str(err.value) == (
        f"{kit} is the coordinator's kit, not a site kit; use kits/sites/<site>/"
    )


def test_a_broken_site_kit_is_named(alpha: tuple[Kits, Coordinator], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is missing ca\.pem, cert\.pem, key\.pem, kit\.yaml"):
        load_site_kit(tmp_path)  # an empty folder
    assert load_site_kit(alpha[0].sites["good"]).identity == "good"


def _refusal(kit: Path, coordinator: Coordinator) -> grpc.RpcError:
    """The error of a Check call presenting ``kit``'s certificate."""
    channel = grpc.secure_channel(_address(coordinator), channel_credentials(kit))
    with channel, pytest.raises(grpc.RpcError) as err:
        CoordinatorStub(channel).Check(pb.CheckRequest(), timeout=10)
    return err.value


def test_a_revoked_site_is_named_with_its_serial(alpha: tuple[Kits, Coordinator]) -> None:
    kits, coordinator = alpha
    entry = revoke_site(kits.root, "doomed")
    err = _refusal(kits.sites["doomed"], coordinator)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    kit = load_kit(kits.sites["doomed"])
    cause = explain_failure("UNAUTHENTICATED", str(err.details()), kit, _address(coordinator))
    assert cause == Cause(
        "revoked",
        f"the coordinator refused site 'doomed': its certificate serial {kit.serial:x} is "
        f"revoked (at {entry.revoked_at}); retrying cannot help (a revoked site stays revoked: "
        "ask the federation's operator)",
    )


def test_a_rotated_out_certificate_says_to_install_the_new_kit(
    alpha: tuple[Kits, Coordinator], tmp_path: Path
) -> None:
    kits, coordinator = alpha
    old = load_kit(kits.sites["turned"])
    old_copy = tmp_path / "old"
    old_copy.mkdir(mode=0o700)
    for name in ("ca.pem", "cert.pem", "key.pem", "kit.yaml"):
        (old_copy / name).write_bytes((kits.sites["turned"] / name).read_bytes())
    (old_copy / "key.pem").chmod(0o600)
    rotate_site(kits.root, "turned")
    err = _refusal(old_copy, coordinator)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    cause = explain_refusal("turned", str(err.details()), old)
    assert cause.kind == "rotated"
    assert cause.message.startswith(
        f"the coordinator refused site 'turned': its certificate serial {old.serial:x} was "
        "replaced by a rotation (at "
    ) and cause.message.endswith("; install the site's new kit")


def test_check_answers_who_the_site_is_and_writes_nothing(
    alpha: tuple[Kits, Coordinator],
) -> None:
    kits, coordinator = alpha
    with grpc.secure_channel(_address(coordinator), channel_credentials(kits.sites["good"])) as ch:
        answer = CoordinatorStub(ch).Check(pb.CheckRequest(), timeout=10)
    assert (answer.site_id, answer.federation, answer.site_status) == (
        "good",
        "alpha",
        "unregistered",
    )
    assert [s.id for s in coordinator.store.list_sites()] == []  # not registered by it


def test_a_silent_server_is_a_timeout(alpha: tuple[Kits, Coordinator]) -> None:
    kit = load_kit(alpha[0].sites["good"])
    with socket.socket() as silent:  # accepts TCP (backlog) but never speaks TLS
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        cause = diagnose(kit, f"127.0.0.1:{port}", 0.5)
    assert cause == Cause(
        "timeout", f"timeout: the TLS handshake with 127.0.0.1:{port} took over 0.5 s"
    )
