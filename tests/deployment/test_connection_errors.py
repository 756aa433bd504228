"""A site agent names why it cannot connect, in one line, and does not flood its log.

Real agents (threads) dial a real coordinator over mutual TLS on 127.0.0.1, or dial what is
not one: a closed port, a name under ``.invalid``, a coordinator of another federation; a
revoked site stops with its serial; the coordinator's kit is refused before anything starts.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcare.coordinator.server import Coordinator
from fedcare.errors import ConfigError, TransportError
from fedcare.site.agent import SiteAgent
from fedcare.site.config import DatasetEntry, SiteDataConfig
from fedcare.transport.provisioning import create_federation, revoke_site
from fedcare.transport.tls import load_kit

from .helpers import Kits, provision, running_coordinator

DATA = SiteDataConfig(
    datasets={
        "synthetic": DatasetEntry(
            builtin="synthetic", site="site-0", options={"n_features": 4, "rows_per_site": 40}
        )
    }
)


@pytest.fixture(scope="module")
def alpha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kits, Coordinator]]:
    root = tmp_path_factory.mktemp("alpha")
    kits = provision(root / "fed", ("good", "doomed"), name="alpha")
    with running_coordinator(kits, root / "home") as coordinator:
        yield kits, coordinator


def _run_agent(kit: Path, address: str, state: Path, seconds: float) -> list[str]:
    """Run an agent for ``seconds`` (or until it raises); the lines it logged."""
    events: list[str] = []
    agent = SiteAgent(kit, DATA, state_dir=state, coordinator=address, on_event=events.append)
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    try:
        agent.run(stop)
    finally:
        timer.cancel()
    return events


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _assert_sparse(events: list[str], cause: str) -> None:
    """The first line names the cause; repeats say "still failing" at attempts 2, 4, 8, …;
    no raw gRPC status appears."""
    assert events, "the agent logged nothing"
    assert re.fullmatch(rf"cannot reach the coordinator: {re.escape(cause)}; retrying in .+ s",
                        events[0]), events  # fmt: skip
    repeats = events[1:]
    for line in repeats:
        found = re.fullmatch(
            rf"still failing: {re.escape(cause)} \(attempt (\d+), next try in .+ s\)", line
        )
        assert found is not None, line
        attempt = int(found.group(1))
        assert attempt & (attempt - 1) == 0, f"attempt {attempt} logged: {events}"
    assert not [e for e in events if "StatusCode" in e or "UNAVAILABLE" in e], events


def test_a_closed_port_is_named_and_repeats_are_sparse(tmp_path: Path, alpha: tuple) -> None:
    kits, _ = alpha
    port = _closed_port()
    events = _run_agent(kits.sites["good"], f"127.0.0.1:{port}", tmp_path, 4.0)
    _assert_sparse(events, f"connection refused at 127.0.0.1:{port} (is the coordinator running?)")
    assert len(events) <= 5, events  # about 10 attempts in 4 s; 1, 2, 4, 8 logged


def test_an_unresolvable_host_is_named(tmp_path: Path, alpha: tuple) -> None:
    kits, _ = alpha
    events = _run_agent(kits.sites["good"], "coordinator.fedcare.invalid:50051", tmp_path, 1.5)
    assert events[0].startswith(
        "cannot reach the coordinator: name resolution failed for coordinator.fedcare.invalid"
    ), events
    cause = events[0].removeprefix("cannot reach the coordinator: ").rsplit("; retrying", 1)[0]
    _assert_sparse(events, cause)


def test_another_federations_coordinator_is_named_with_whose_ca(
    tmp_path: Path, alpha: tuple
) -> None:
    _, coordinator = alpha
    beta = create_federation(
        tmp_path / "beta", name="beta", sites=["good"], coordinator_hosts=("127.0.0.1",)
    )
    events = _run_agent(
        beta.site_kits["good"], f"127.0.0.1:{coordinator.port}", tmp_path / "state", 1.5
    )
    _assert_sparse(
        events,
        "TLS verification failed: the coordinator's certificate is not signed by this kit's CA "
        "(CN=beta CA,OU=ca,O=beta, federation beta) — probably another federation's kit "
        "(the coordinator's certificate is from federation alpha)",
    )


def test_a_revoked_site_stops_naming_its_serial(tmp_path: Path, alpha: tuple) -> None:
    kits, coordinator = alpha
    entry = revoke_site(kits.root, "doomed")
    serial = load_kit(kits.sites["doomed"]).serial
    started = time.monotonic()
    with pytest.raises(TransportError) as err:
        _run_agent(kits.sites["doomed"], f"127.0.0.1:{coordinator.port}", tmp_path, 30.0)
    assert time.monotonic() - started < 15, "the agent retried a permanent refusal"
    assert str(err.value) == (
        f"the coordinator refused site 'doomed': its certificate serial {serial:x} is revoked "
        f"(at {entry.revoked_at}); retrying cannot help (a revoked site stays revoked: ask "
        "the federation's operator)"
    )


def test_the_coordinator_kit_is_refused_before_the_agent_starts(
    tmp_path: Path, alpha: tuple
) -> None:
    kits, _ = alpha
    with pytest.raises(ConfigError) as err:
        SiteAgent(kits.coordinator, DATA, state_dir=tmp_path / "state")
    assert str(err.value) == (
        f"{kits.coordinator} is the coordinator's kit, not a site kit; use kits/sites/<site>/"
    )
    assert not (tmp_path / "state").exists()


def test_a_lost_coordinator_is_named_then_the_agent_reconnects(tmp_path: Path) -> None:
    kits = provision(tmp_path / "fed", ("good",), name="gamma")
    port = _closed_port()
    events: list[str] = []
    agent = SiteAgent(
        kits.sites["good"],
        DATA,
        state_dir=tmp_path / "state",
        coordinator=f"127.0.0.1:{port}",
        poll_wait=0.5,
        on_event=events.append,
    )
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)

    def start() -> Coordinator:
        return Coordinator(kits.coordinator, tmp_path / "home", listen=f"127.0.0.1:{port}").start()

    def wait_for(text: str) -> None:
        deadline = time.monotonic() + 20
        while not any(text in e for e in events):
            assert time.monotonic() < deadline, f"no {text!r} in {events}"
            time.sleep(0.05)

    coordinator = start()
    try:
        thread.start()
        wait_for("connected to gamma as good")
        coordinator.stop(grace=0.1)
        wait_for("connection lost: ")
        lost = next(e for e in events if e.startswith("connection lost: "))
        assert lost.startswith(
            f"connection lost: connection refused at 127.0.0.1:{port} (is the coordinator "
            "running?); retrying in "
        ), events
        coordinator = start()
        wait_for("reconnected after")
    finally:
        stop.set()
        thread.join(15)
        coordinator.stop(grace=0.1)
