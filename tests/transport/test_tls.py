"""Mutual TLS over real gRPC on 127.0.0.1: who is let in, who is refused, and chunked transfers."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc import ServicerContext as Context

from fedcare.errors import AuthenticationError, ConfigError, ValidationError
from fedcare.records import ArrayRecord, Reply, Task
from fedcare.transport import codec, tls
from fedcare.transport import provisioning as prov
from fedcare.transport.grpc import fedcare_pb2 as pb
from fedcare.transport.grpc import fedcare_pb2_grpc as pb_grpc

MAX_BYTES = 64 << 20


class EchoCoordinator(pb_grpc.CoordinatorServicer):
    """A minimal servicer: identifies every caller and moves one task and one reply."""

    def __init__(self, revocations: tls.RevocationList, task: Task | None = None) -> None:
        self.revocations = revocations
        self.task = task
        self.replies: list[Reply] = []

    def Hello(self, request: pb.HelloRequest, context: Context) -> pb.HelloResponse:
        site = tls.peer_identity(context, self.revocations)
        return pb.HelloResponse(federation="test", site_id=site, server_time=time.time())

    def PullTask(self, request: pb.PullTaskRequest, context: Context) -> Iterator[pb.Chunk]:
        site = tls.peer_identity(context, self.revocations)
        if self.task is None or self.task.site_id != site:
            time.sleep(min(request.wait_s, 1.0))
            return
        yield from codec.chunk(codec.encode_task(self.task), transfer_id=codec.new_transfer_id())

    def PushReply(self, chunks: Iterator[pb.Chunk], context: Context) -> pb.PushReplyAck:
        site = tls.peer_identity(context, self.revocations)
        try:
            reply = codec.decode_reply(codec.assemble(chunks, max_bytes=MAX_BYTES))
        except ValidationError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        if reply.site_id != site:
            return pb.PushReplyAck(
                accepted=False,
                error_kind="wrong_site",
                message=f"caller is {site!r}, reply names {reply.site_id!r}",
            )
        self.replies.append(reply)
        return pb.PushReplyAck(accepted=True)

    def Heartbeat(self, request: pb.HeartbeatRequest, context: Context) -> pb.HeartbeatResponse:
        return pb.HeartbeatResponse(server_time=time.time())  # guarded by the interceptor only


@pytest.fixture
def fed(tmp_path: Path) -> prov.Federation:
    return prov.create_federation(tmp_path / "fed", name="test", sites=["site-a", "site-b"])


Serve = Callable[..., tuple[int, EchoCoordinator]]


@pytest.fixture
def serve(fed: prov.Federation) -> Iterator[Serve]:
    servers: list[grpc.Server] = []

    def start(task: Task | None = None, *, intercept: bool = True) -> tuple[int, EchoCoordinator]:
        revocations = tls.RevocationList.from_kit(fed.coordinator_kit)
        interceptors = [tls.RequireSiteIdentity(revocations)] if intercept else []
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=interceptors)
        servicer = EchoCoordinator(revocations, task)
        pb_grpc.add_CoordinatorServicer_to_server(servicer, server)
        port = server.add_secure_port("127.0.0.1:0", tls.server_credentials(fed.coordinator_kit))
        server.start()
        servers.append(server)
        return port, servicer

    yield start
    for server in servers:
        server.stop(grace=None).wait()


def stub(port: int, creds: grpc.ChannelCredentials) -> Iterator[pb_grpc.CoordinatorStub]:
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        yield pb_grpc.CoordinatorStub(channel)


def hello(port: int, creds: grpc.ChannelCredentials) -> str:
    for s in stub(port, creds):
        return str(s.Hello(pb.HelloRequest(site_version="0.1.0"), timeout=5).site_id)
    raise AssertionError


def refused(port: int, creds: grpc.ChannelCredentials) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        hello(port, creds)
    return info.value


def test_a_site_with_a_valid_kit_is_accepted_and_identified(
    fed: prov.Federation, serve: Serve
) -> None:
    port, _ = serve()
    assert hello(port, tls.channel_credentials(fed.site_kits["site-a"])) == "site-a"
    assert hello(port, tls.channel_credentials(fed.site_kits["site-b"])) == "site-b"


def test_a_client_without_a_certificate_is_refused(fed: prov.Federation, serve: Serve) -> None:
    port, _ = serve()
    ca = (fed.coordinator_kit / "ca.pem").read_bytes()
    err = refused(port, grpc.ssl_channel_credentials(root_certificates=ca))
    assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)


def test_a_certificate_from_another_federation_is_refused(
    fed: prov.Federation, serve: Serve, tmp_path: Path
) -> None:
    port, _ = serve()
    other = prov.create_federation(tmp_path / "other", name="test", sites=["site-a"])  # same names
    kit = other.site_kits["site-a"]
    creds = grpc.ssl_channel_credentials(
        root_certificates=(fed.coordinator_kit / "ca.pem").read_bytes(),  # trusts the server
        private_key=(kit / "key.pem").read_bytes(),
        certificate_chain=(kit / "cert.pem").read_bytes(),
    )
    assert refused(port, creds).code() == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_revoked_while_the_server_runs_is_refused(
    fed: prov.Federation, serve: Serve
) -> None:
    port, _ = serve()
    creds = tls.channel_credentials(fed.site_kits["site-a"])
    for s in stub(port, creds):  # one open connection, before and after the revocation
        assert s.Hello(pb.HelloRequest(), timeout=5).site_id == "site-a"
        prov.revoke_site(fed.root, "site-a")
        for method, request in (
            (s.Hello, pb.HelloRequest()),
            (s.PullTask, pb.PullTaskRequest(wait_s=0)),
            (s.Heartbeat, pb.HeartbeatRequest()),
        ):
            with pytest.raises(grpc.RpcError) as info:
                result = method(request, timeout=5)
                if method is s.PullTask:
                    list(result)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "site 'site-a'" in info.value.details() and "revoked" in info.value.details()
    assert hello(port, tls.channel_credentials(fed.site_kits["site-b"])) == "site-b"


def test_rotation_refuses_the_old_certificate_and_accepts_the_new(
    fed: prov.Federation, serve: Serve
) -> None:
    port, _ = serve()
    old = tls.channel_credentials(fed.site_kits["site-b"])
    prov.rotate_site(fed.root, "site-b")
    assert "rotated" in refused(port, old).details()
    assert hello(port, tls.channel_credentials(fed.site_kits["site-b"])) == "site-b"


def test_the_interceptor_guards_methods_that_forget_the_check(
    fed: prov.Federation, serve: Serve
) -> None:
    port, _ = serve(intercept=False)
    prov.revoke_site(fed.root, "site-a")
    for s in stub(port, tls.channel_credentials(fed.site_kits["site-a"])):
        s.Heartbeat(pb.HeartbeatRequest(), timeout=5)  # unguarded without the interceptor
    port, _ = serve(intercept=True)
    for s in stub(port, tls.channel_credentials(fed.site_kits["site-a"])):
        with pytest.raises(grpc.RpcError) as info:
            s.Heartbeat(pb.HeartbeatRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_20_mb_task_and_reply_stream_in_chunks(fed: prov.Federation, serve: Serve) -> None:
    weights = np.random.default_rng(1).standard_normal(5_000_000).astype(np.float32)  # 20 MB
    params = ArrayRecord({"w": weights})
    task = Task(study_id="s", round=1, site_id="site-a", kind="fit", params=params)
    port, servicer = serve(task)
    for s in stub(port, tls.channel_credentials(fed.site_kits["site-a"])):
        chunks = list(s.PullTask(pb.PullTaskRequest(wait_s=1), timeout=30))
        assert len(chunks) == 20
        got = codec.decode_task(codec.assemble(chunks, max_bytes=MAX_BYTES))
        assert got.params == params
        reply = Reply(
            study_id="s", round=1, site_id="site-a", kind="fit", arrays=params, num_samples=10
        )
        payload = codec.encode_reply(reply)
        ack = s.PushReply(codec.chunk(payload, transfer_id="r1"), timeout=30)
        assert ack.accepted and servicer.replies[0].arrays == params
        forged = Reply(study_id="s", round=1, site_id="site-b", kind="fit")
        ack = s.PushReply(codec.chunk(codec.encode_reply(forged), transfer_id="r2"), timeout=5)
        assert not ack.accepted and ack.error_kind == "wrong_site" and len(servicer.replies) == 1
        pieces = list(codec.chunk(payload, transfer_id="r3"))
        with pytest.raises(grpc.RpcError) as info:
            s.PushReply(iter(pieces[:5] + pieces[6:]), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "expected chunk 5" in info.value.details()


def test_pull_task_with_no_task_is_an_empty_stream(fed: prov.Federation, serve: Serve) -> None:
    port, _ = serve()
    for s in stub(port, tls.channel_credentials(fed.site_kits["site-b"])):
        start = time.monotonic()
        assert list(s.PullTask(pb.PullTaskRequest(wait_s=0.2), timeout=5)) == []
        assert time.monotonic() - start >= 0.2


# Kits, revocation lists and identities without a network ----------------------------------------
def test_load_kit_names_what_is_wrong(fed: prov.Federation) -> None:
    kit = tls.load_kit(fed.site_kits["site-a"])
    assert (kit.role, kit.identity, kit.federation) == ("site", "site-a", "test")
    assert kit.coordinator_address == fed.coordinator_address and "key_pem" not in repr(kit)
    folder = fed.site_kits["site-b"]
    os.chmod(folder / "key.pem", 0o644)
    with pytest.raises(ConfigError, match=r"key\.pem is readable by others"):
        tls.load_kit(folder)
    os.chmod(folder / "key.pem", 0o600)
    (folder / "key.pem").write_bytes((fed.site_kits["site-a"] / "key.pem").read_bytes())
    with pytest.raises(ConfigError, match=r"key\.pem does not belong to"):
        tls.load_kit(folder)
    (folder / "ca.pem").unlink()
    with pytest.raises(ConfigError, match=r"is missing ca\.pem"):
        tls.load_kit(folder)
    with pytest.raises(ConfigError, match="does not exist"):
        tls.load_kit(folder / "nope")
    with pytest.raises(ConfigError, match="is a site kit, not the coordinator's"):
        tls.server_credentials(fed.site_kits["site-a"])


def test_revocation_list_reloads_and_fails_closed(fed: prov.Federation) -> None:
    revocations = tls.RevocationList.from_kit(fed.coordinator_kit)
    assert len(revocations) == 0 and not revocations.refresh()
    entry = prov.revoke_site(fed.root, "site-b")
    assert entry.serial in revocations and revocations.lookup(entry.serial) == entry
    (fed.coordinator_kit / "revoked.json").unlink()
    with pytest.raises(ConfigError, match="is missing"):
        revocations.lookup(entry.serial)


def test_identify_peer_needs_a_site_certificate(fed: prov.Federation) -> None:
    revocations = tls.RevocationList.from_kit(fed.coordinator_kit)
    site = (fed.site_kits["site-a"] / "cert.pem").read_bytes()
    assert tls.identify_peer({"x509_pem_cert": [site]}, revocations) == "site-a"
    with pytest.raises(AuthenticationError, match="no client certificate"):
        tls.identify_peer({}, revocations)
    coordinator = (fed.coordinator_kit / "cert.pem").read_bytes()
    with pytest.raises(AuthenticationError, match="a site certificate has exactly one"):
        tls.identify_peer({"x509_pem_cert": [coordinator]}, revocations)


def test_concurrent_identity_checks_share_one_list(fed: prov.Federation) -> None:
    revocations = tls.RevocationList.from_kit(fed.coordinator_kit)
    pem = (fed.site_kits["site-a"] / "cert.pem").read_bytes()
    results: list[str] = []

    def check() -> None:
        results.append(tls.identify_peer({"x509_pem_cert": [pem]}, revocations))

    threads = [threading.Thread(target=check) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["site-a"] * 8
