"""A site's study packages: fetch by hash, verify, trust, dependencies (fedcare.site.packages).

Real federations and signed archives; the fetcher hands over bytes as the FetchPackage RPC
would (the RPC itself: tests/deployment/test_packages.py).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest

from fedcare.errors import ConfigError, TransportError
from fedcare.packages.archive import BuiltPackage
from fedcare.packages.verify import VerifiedPackage
from fedcare.records.messages import Reply, Task
from fedcare.site.packages import SitePackages, check_package, package_mod
from fedcare.site.plans import Refusal
from fedcare.site.policy import SitePolicy
from fedcare.transport.provisioning import create_federation
from fedcare.transport.researchers import add_researcher
from tests.packages.distribution import build, ca_cert, spec_of, tamper

from .governance_helpers import Recorder, task

TRUST_ALICE = SitePolicy.from_dict({"packages": {"trusted_signers": ["alice"]}})


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fed") / "federation"
    create_federation(root, name="site-packages", sites=["hospital-a"])
    add_researcher(root, "alice")
    return root


@pytest.fixture(scope="module")
def v1(fed: Path, tmp_path_factory: pytest.TempPathFactory) -> BuiltPackage:
    return build(tmp_path_factory.mktemp("v1"), fed)


def serving(*archives: Path) -> tuple[Callable[[str], bytes], list[str]]:
    """A fetcher that serves ``archives`` by the hash each claims, and the refs asked for."""
    from fedcare.packages.verify import read_package

    by_hash = {f"sha256:{read_package(a).hash}": a for a in archives}
    asked: list[str] = []

    def fetch(ref: str) -> bytes:
        asked.append(ref)
        if ref not in by_hash:
            raise TransportError(f"NOT_FOUND: package {ref} is not stored at this coordinator")
        return by_hash[ref].read_bytes()

    return fetch, asked


def test_fetches_once_verifies_and_keeps_the_files(
    tmp_path: Path, fed: Path, v1: BuiltPackage
) -> None:
    fetch, asked = serving(v1.path)
    packages = SitePackages(tmp_path / "state", ca_cert(fed), fetch)
    checked = check_package(packages, TRUST_ALICE, spec_of(v1), "ab12")
    assert isinstance(checked, VerifiedPackage) and checked.hash == v1.hash
    assert packages.archive_path(v1.hash).read_bytes() == v1.path.read_bytes()
    folder = packages.store.folder(v1.hash)
    assert (folder / "model.py").read_bytes() == checked.data["model.py"]
    assert packages.package_of_plan("ab12") == f"sha256:{v1.hash}"
    assert isinstance(check_package(packages, TRUST_ALICE, spec_of(v1)), VerifiedPackage)
    assert asked == [f"sha256:{v1.hash}"]  # the second task used the cache


def test_default_policy_trusts_no_signer(tmp_path: Path, fed: Path, v1: BuiltPackage) -> None:
    packages = SitePackages(tmp_path, ca_cert(fed), serving(v1.path)[0])
    refusal = check_package(packages, SitePolicy(), spec_of(v1))
    assert isinstance(refusal, Refusal) and refusal.kind == "package-signer-untrusted"
    assert "signed by researcher 'alice'" in refusal.message
    assert "numpy_logistic 1.0.0" in refusal.message
    assert "packages.trusted_signers: none" in refusal.message
    bob = SitePolicy.from_dict({"packages": {"trusted_signers": ["bob"]}})
    refusal = check_package(packages, bob, spec_of(v1))
    assert isinstance(refusal, Refusal) and "trusted_signers: bob" in refusal.message


def test_missing_and_wrong_dependencies_are_named(tmp_path: Path, fed: Path) -> None:
    built = build(tmp_path, fed, dependencies=["numpy<1", "surely-absent-dist>=1.0"])
    packages = SitePackages(tmp_path / "state", ca_cert(fed), serving(built.path)[0])
    refusal = check_package(packages, TRUST_ALICE, spec_of(built))
    assert isinstance(refusal, Refusal) and refusal.kind == "package-dependencies"
    numpy = metadata.version("numpy")
    assert f"numpy<1 (installed {numpy})" in refusal.message
    assert "surely-absent-dist>=1.0 (not installed)" in refusal.message


def test_tampered_archive_is_refused_and_not_kept(
    tmp_path: Path, fed: Path, v1: BuiltPackage
) -> None:
    bad = tamper(v1.path, tmp_path / "bad.fcpkg")
    packages = SitePackages(tmp_path / "state", ca_cert(fed), lambda ref: bad.read_bytes())
    refusal = check_package(packages, TRUST_ALICE, spec_of(v1))
    assert isinstance(refusal, Refusal) and refusal.kind == "package-invalid"
    assert f"package sha256:{v1.hash} does not verify" in refusal.message
    assert "file model.py: SHA-256 differs from the manifest" in refusal.message
    assert not packages.archive_path(v1.hash).exists()
    assert list(packages.archive_path(v1.hash).parent.iterdir()) == []  # no temporary left
    assert not packages.store.has(v1.hash)


def test_cached_archive_changed_on_disk_is_refused(
    tmp_path: Path, fed: Path, v1: BuiltPackage
) -> None:
    packages = SitePackages(tmp_path / "state", ca_cert(fed), serving(v1.path)[0])
    assert isinstance(check_package(packages, TRUST_ALICE, spec_of(v1)), VerifiedPackage)
    cached = packages.archive_path(v1.hash)
    tamper(v1.path, tmp_path / "bad.fcpkg").replace(cached)
    refusal = check_package(packages, TRUST_ALICE, spec_of(v1))
    assert isinstance(refusal, Refusal) and refusal.kind == "package-invalid"
    assert "SHA-256 differs" in refusal.message


def test_extracted_files_changed_on_disk_are_extracted_again(
    tmp_path: Path, fed: Path, v1: BuiltPackage
) -> None:
    packages = SitePackages(tmp_path / "state", ca_cert(fed), serving(v1.path)[0])
    checked = check_package(packages, TRUST_ALICE, spec_of(v1))
    assert isinstance(checked, VerifiedPackage)
    folder = packages.store.folder(v1.hash)
    (folder / "model.py").write_text("import socket\n")
    (folder / "extra.py").write_text("import os\n")
    assert isinstance(check_package(packages, TRUST_ALICE, spec_of(v1)), VerifiedPackage)
    assert (folder / "model.py").read_bytes() == checked.data["model.py"]
    assert not (folder / "extra.py").exists()


def test_another_package_under_the_hash_is_refused(
    tmp_path: Path, fed: Path, v1: BuiltPackage
) -> None:
    other = build(tmp_path, fed, version="2.0.0")
    packages = SitePackages(tmp_path / "state", ca_cert(fed), lambda ref: other.path.read_bytes())
    refusal = check_package(packages, TRUST_ALICE, spec_of(v1))
    assert isinstance(refusal, Refusal) and refusal.kind == "package-invalid"
    assert f"holds package sha256:{other.hash}" in refusal.message


def test_signer_of_another_federation_is_refused(
    tmp_path: Path, fed: Path, v1: BuiltPackage
) -> None:
    other = tmp_path / "other"
    create_federation(other, name="site-packages", sites=[])  # same name, another CA
    add_researcher(other, "alice")
    foreign = build(tmp_path, other)
    packages = SitePackages(tmp_path / "state", ca_cert(fed), serving(foreign.path)[0])
    refusal = check_package(packages, TRUST_ALICE, spec_of(foreign))
    assert isinstance(refusal, Refusal) and refusal.kind == "package-invalid"
    assert "is not certified by this federation's CA" in refusal.message


def test_unavailable_plan_mismatch_and_bad_hash(
    tmp_path: Path, fed: Path, v1: BuiltPackage
) -> None:
    packages = SitePackages(tmp_path / "state", ca_cert(fed), serving()[0])
    refusal = check_package(packages, TRUST_ALICE, spec_of(v1))
    assert isinstance(refusal, Refusal) and refusal.kind == "package-unavailable"
    assert f"package sha256:{v1.hash} could not be fetched from the coordinator" in refusal.message
    assert "NOT_FOUND" in refusal.message
    packages.fetch = serving(v1.path)[0]
    refusal = check_package(packages, TRUST_ALICE, spec_of(v1, version="9.9.9"))
    assert isinstance(refusal, Refusal) and refusal.kind == "package-invalid"
    assert "the plan gives its version as '9.9.9', its manifest '1.0.0'" in refusal.message
    refusal = check_package(packages, TRUST_ALICE, spec_of(v1, package="sha256:xyz"))
    assert isinstance(refusal, Refusal) and refusal.kind == "package-invalid"
    assert "'sha256:xyz'" in refusal.message


def test_mod_refuses_with_an_audited_reply_and_passes_other_models(
    tmp_path: Path, fed: Path, v1: BuiltPackage
) -> None:
    audit = Recorder()
    packages = SitePackages(tmp_path / "state", ca_cert(fed), serving(v1.path)[0])
    ran: list[str] = []

    def handler(t: Task) -> Reply:
        ran.append(t.task_id)
        return Reply.failure(t, "test-ran", "reached the handler")

    plain = task()
    assert package_mod(packages, SitePolicy(), audit)(plain, handler).error.kind == "test-ran"  # type: ignore[union-attr]
    packaged = task(task_plan={**plain.plan, "model": spec_of(v1)})
    reply = package_mod(packages, SitePolicy(), audit)(packaged, handler)
    assert reply.error is not None and reply.error.kind == "package-signer-untrusted"
    assert audit.last("decision")["reason_kind"] == "package-signer-untrusted"
    reply = package_mod(packages, TRUST_ALICE, audit)(packaged, handler)
    assert reply.error is not None and reply.error.kind == "test-ran"
    assert audit.last("package-verified")["signer"] == "alice"
    assert ran == [plain.task_id, packaged.task_id]
    reply = package_mod(None, TRUST_ALICE, audit)(packaged, handler)
    assert reply.error is not None and reply.error.kind == "package-unavailable"


def test_policy_names_researchers_only() -> None:
    assert SitePolicy().packages.trusted_signers == ()
    with pytest.raises(ConfigError, match="trusted_signers"):
        SitePolicy.from_dict({"packages": {"trusted_signers": ["Not A Researcher"]}})
    with pytest.raises(ConfigError, match="packages"):
        SitePolicy.from_dict({"packages": {"trusted": ["alice"]}})
