"""Study packages in a deployment (issue 13 item 3): stored at submission, fetched by hash.

A real federation with a researcher kit, a real coordinator over mutual TLS on 127.0.0.1, and
``fedcare study submit`` through the CLI:

* a study naming a signed ``.fcpkg`` archive (relative to the study file) is verified against
  the federation CA, stored as ``HOME/packages/<hex>.fcpkg`` and queued naming ``sha256:<hex>``;
  a folder, an unknown hash, a tampered archive and a foreign signer are refused in one line;
* ``FetchPackage`` serves a stored archive to a registered site only (NOT_FOUND for another
  hash, FAILED_PRECONDITION before Hello, UNAUTHENTICATED once revoked, no TLS for another
  federation's kit);
* a site fetches it with its agent's fetcher, verifies it and keeps it; an archive altered in
  the coordinator's store is refused at the site (package-invalid) and not kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from typer.testing import CliRunner, Result

from fedcare.cli.main import app
from fedcare.coordinator.home import open_home
from fedcare.coordinator.packages import CoordinatorPackages
from fedcare.packages.verify import VerifiedPackage
from fedcare.site.packages import SitePackages, check_package, grpc_fetcher
from fedcare.site.plans import Refusal
from fedcare.site.policy import SitePolicy
from fedcare.transport.codec import assemble
from fedcare.transport.grpc import fedcare_pb2 as pb
from fedcare.transport.provisioning import revoke_site
from fedcare.transport.researchers import add_researcher
from tests.packages.distribution import build, ca_cert, spec_of, tamper

from .helpers import Kits, provision, running_coordinator
from .wire import RPC_TIMEOUT_S, hello, rpc_error, site_client

runner = CliRunner(env={"COLUMNS": "400"})
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "heart-disease.yaml"
TRUST_ALICE = SitePolicy.from_dict({"packages": {"trusted_signers": ["alice"]}})


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Kits:
    sites = ("hospital-a", "hospital-b", "hospital-c")
    kits = provision(tmp_path_factory.mktemp("fed") / "federation", sites)
    add_researcher(kits.root, "alice")
    return kits


@pytest.fixture(scope="module")
def home(fed: Kits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A coordinator home (database, recorded kit) of a coordinator that ran and stopped."""
    home = tmp_path_factory.mktemp("coordinator") / "home"
    with running_coordinator(fed, home):
        pass
    return home


def _submit(folder: Path, home: Path, package: str) -> Result:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["model"] = {"kind": "package", "package": package, "options": {"l2": 0.01}}
    path = folder / "studies" / "study.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return runner.invoke(app, ["study", "submit", str(path), "--home", str(home), "--queue"])


def _refused(result: Result, *parts: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    [line] = result.output.strip().splitlines()
    for part in parts:
        assert part in line, line


def test_submit_stores_the_verified_archive_and_names_it(
    tmp_path: Path, fed: Kits, home: Path
) -> None:
    v1 = build(tmp_path / "pk", fed.root)
    accepted = _submit(tmp_path, home, f"../pk/{v1.path.name}")  # relative to the study file
    assert accepted.exit_code == 0, accepted.output
    study_id = accepted.stdout.strip().splitlines()[-1]
    ref = f"sha256:{v1.hash}"
    with open_home(home) as store:
        model = store.get_study(study_id).config["model"]
    assert model == spec_of(v1, options={"l2": 0.01})
    assert model["package"] == ref and model["requires"] == ["numpy"]
    stored = home / "packages" / f"{v1.hash}.fcpkg"
    assert stored.read_bytes() == v1.path.read_bytes()
    assert stored.stat().st_mode & 0o777 == 0o600
    by_hash = _submit(tmp_path, home, ref)  # a stored hash may be named directly
    assert by_hash.exit_code == 0, by_hash.output

    unknown = "sha256:" + "0" * 64
    _refused(_submit(tmp_path, home, unknown), f"model.package {unknown} is not stored")
    folder = tmp_path / "pk" / "src-1.0.0-alice-0"
    _refused(
        _submit(tmp_path, home, str(folder)),
        "is a package folder; a deployment runs only signed archives: build and sign it first",
        "fedcare package build",
    )
    bad = tamper(v1.path, tmp_path / "tampered.fcpkg")
    bad_hash = v1.hash  # the content list is unchanged: the archive claims v1's hash
    (home / "packages" / f"{bad_hash}.fcpkg").unlink()
    _refused(
        _submit(tmp_path, home, str(bad)),
        "file model.py: SHA-256 differs from the manifest",
    )
    assert not (home / "packages" / f"{bad_hash}.fcpkg").exists()
    left = sorted(p.name for p in (home / "packages").iterdir())
    assert left == [v1.hash, f"{v1.hash}.json"]  # v1's verified files; no temporary left


def test_submit_refuses_a_signer_of_another_federation(
    tmp_path: Path, fed: Kits, home: Path
) -> None:
    other = provision(tmp_path / "other", (), name="fedcare-test")  # same name, another CA
    add_researcher(other.root, "alice")
    foreign = build(tmp_path / "pk", other.root)
    _refused(
        _submit(tmp_path, home, str(foreign.path)),
        "signer CN=alice",
        "is not certified by this federation's CA",
    )
    assert not (home / "packages" / f"{foreign.hash}.fcpkg").exists()


@pytest.fixture(scope="module")
def served(fed: Kits, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A running coordinator (its address and home) with hospital-a registered."""
    home = tmp_path_factory.mktemp("served") / "home"
    with running_coordinator(fed, home) as coordinator:
        address = f"127.0.0.1:{coordinator.port}"
        with site_client(fed.sites["hospital-a"], address) as stub:
            hello(stub)
        yield address, home


def _fetch(stub: object, ref: str) -> bytes:
    chunks = stub.FetchPackage(pb.FetchPackageRequest(package=ref), timeout=RPC_TIMEOUT_S)  # type: ignore[attr-defined]
    return assemble(chunks, max_bytes=1 << 30)


def test_fetch_package_serves_stored_archives_to_registered_sites(
    tmp_path: Path, fed: Kits, served: tuple[str, Path]
) -> None:
    address, home = served
    v1 = build(tmp_path, fed.root)
    ref, _ = CoordinatorPackages(home).add_archive(v1.path, ca_cert=ca_cert(fed.root))
    with site_client(fed.sites["hospital-a"], address) as stub:
        assert _fetch(stub, ref) == v1.path.read_bytes()
        err = rpc_error(lambda: _fetch(stub, "sha256:" + "1" * 64))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert "is not stored at this coordinator" in str(err.details())
        err = rpc_error(lambda: _fetch(stub, "../../coordinator.db"))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    with site_client(fed.sites["hospital-b"], address) as stub:  # no Hello: not registered
        err = rpc_error(lambda: _fetch(stub, ref))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    with site_client(fed.sites["hospital-c"], address) as stub:  # registered, then revoked
        hello(stub)
        assert _fetch(stub, ref) == v1.path.read_bytes()
        revoke_site(fed.root, "hospital-c")
        err = rpc_error(lambda: _fetch(stub, ref))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in str(err.details())
    outsider = provision(tmp_path / "outsider", ("hospital-a",), name="fedcare-test")
    with site_client(outsider.sites["hospital-a"], address) as stub:  # another CA: no TLS
        err = rpc_error(lambda: _fetch(stub, ref))
        assert err.code() == grpc.StatusCode.UNAVAILABLE


def test_site_fetches_verifies_and_refuses_an_altered_store(
    tmp_path: Path, fed: Kits, served: tuple[str, Path]
) -> None:
    address, home = served
    built = build(tmp_path, fed.root, version="1.1.0")
    ref, _ = CoordinatorPackages(home).add_archive(built.path, ca_cert=ca_cert(fed.root))
    spec = spec_of(built)
    ca = ca_cert(fed.root)
    with site_client(fed.sites["hospital-a"], address) as stub:
        site = SitePackages(tmp_path / "state-1", ca, grpc_fetcher(lambda: stub))
        checked = check_package(site, TRUST_ALICE, spec)
        assert isinstance(checked, VerifiedPackage) and checked.signer.researcher_id == "alice"
        assert site.archive_path(ref).read_bytes() == built.path.read_bytes()
        refusal = check_package(site, SitePolicy(), spec)  # cached, but its signer untrusted
        assert isinstance(refusal, Refusal) and refusal.kind == "package-signer-untrusted"

        tamper(built.path, tmp_path / "bad.fcpkg").replace(CoordinatorPackages(home).path(ref))
        fresh = SitePackages(tmp_path / "state-2", ca, grpc_fetcher(lambda: stub))
        refusal = check_package(fresh, TRUST_ALICE, spec)
        assert isinstance(refusal, Refusal) and refusal.kind == "package-invalid"
        assert "file model.py: SHA-256 differs from the manifest" in refusal.message
        assert not fresh.archive_path(ref).exists() and not fresh.store.has(ref)
    gone = SitePackages(tmp_path / "state-3", ca, grpc_fetcher(lambda: None))
    refusal = check_package(gone, TRUST_ALICE, spec)
    assert isinstance(refusal, Refusal) and refusal.kind == "package-unavailable"
    assert "not connected to the coordinator" in refusal.message
