"""Verifying a study package: each way it can be wrong is refused with its own reason."""

from __future__ import annotations

import base64
import datetime as dt
import json
import zipfile
from pathlib import Path

import pytest

from fedcare.errors import PackageError
from fedcare.packages import build_package, verify_package
from fedcare.transport.certs import issue_researcher
from fedcare.transport.provisioning import _load_federation
from tests.packages.conftest import Kit, load_kit


def _build(package_dir: Path, kit: Kit, out: Path) -> Path:
    return build_package(package_dir, out, key=kit.key, cert=kit.cert).path


def _rewrite(archive: Path, changes: dict[str, bytes | None]) -> None:
    """Rewrite ``archive`` with entries replaced, added (bytes) or removed (None)."""
    with zipfile.ZipFile(archive) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    for name, data in changes.items():
        if data is None:
            entries.pop(name)
        else:
            entries[name] = data
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)


def _signature(archive: Path) -> dict[str, str]:
    with zipfile.ZipFile(archive) as zf:
        return json.loads(zf.read("SIGNATURE.json"))


@pytest.fixture
def archive(package_dir: Path, researcher: Kit, tmp_path: Path) -> Path:
    return _build(package_dir, researcher, tmp_path / "p.fcpkg")


def test_a_good_package_verifies(archive: Path, researcher: Kit, package_dir: Path) -> None:
    package = verify_package(archive, ca_cert=researcher.ca)
    assert package.signer.researcher_id == "alice"
    assert package.manifest.entry_point == "model:NumpyLogistic"
    assert package.manifest.task == "binary"
    assert [f.path for f in package.files] == ["fedcare-package.yaml", "model.py"]
    assert (
        package.hash
        == build_package(
            package_dir, archive.with_name("again.fcpkg"), key=researcher.key, cert=researcher.cert
        ).hash
    )


def test_a_tampered_file_is_refused_naming_it(archive: Path, researcher: Kit) -> None:
    with zipfile.ZipFile(archive) as zf:
        model = zf.read("model.py")
    _rewrite(archive, {"model.py": model + b"\nimport socket\n"})
    with pytest.raises(PackageError, match=r"^file model\.py: SHA-256 differs from the manifest"):
        verify_package(archive, ca_cert=researcher.ca)


def test_an_extra_file_is_refused(archive: Path, researcher: Kit) -> None:
    _rewrite(archive, {"sitecustomize.py": b"print('hi')\n"})
    with pytest.raises(
        PackageError, match=r"^file sitecustomize\.py: in the archive but not listed"
    ):
        verify_package(archive, ca_cert=researcher.ca)


def test_a_missing_file_is_refused(archive: Path, researcher: Kit) -> None:
    _rewrite(archive, {"model.py": None})
    with pytest.raises(
        PackageError, match=r"^file model\.py: listed in MANIFEST\.json but missing"
    ):
        verify_package(archive, ca_cert=researcher.ca)


def test_an_unsafe_entry_name_is_refused(archive: Path, researcher: Kit) -> None:
    _rewrite(archive, {"../evil.py": b"x = 1\n"})
    with pytest.raises(PackageError, match=r"file \.\./evil\.py: .*not a safe relative path"):
        verify_package(archive, ca_cert=researcher.ca)


def test_a_tampered_signature_is_refused(archive: Path, researcher: Kit) -> None:
    sig = _signature(archive)
    raw = bytearray(base64.b64decode(sig["signature"]))
    raw[-1] ^= 0x01
    sig["signature"] = base64.b64encode(bytes(raw)).decode()
    _rewrite(archive, {"SIGNATURE.json": json.dumps(sig).encode()})
    with pytest.raises(PackageError, match=r"^signature does not verify"):
        verify_package(archive, ca_cert=researcher.ca)


def test_a_consistently_edited_manifest_breaks_the_signature(
    archive: Path, researcher: Kit
) -> None:
    """Changing a file AND its line in MANIFEST.json changes the package hash: the signature
    (over the old hash) no longer verifies."""
    with zipfile.ZipFile(archive) as zf:
        content = json.loads(zf.read("MANIFEST.json"))
    import hashlib

    from fedcare.packages.archive import canonical_json

    new_model = b"EVIL = True\n"
    for entry in content["files"]:
        if entry["path"] == "model.py":
            entry.update(sha256=hashlib.sha256(new_model).hexdigest(), size=len(new_model))
    _rewrite(archive, {"model.py": new_model, "MANIFEST.json": canonical_json(content)})
    with pytest.raises(PackageError, match=r"^signature does not verify: it is for package"):
        verify_package(archive, ca_cert=researcher.ca)


def test_a_signer_from_another_federation_is_refused(
    package_dir: Path, researcher: Kit, other_federation: Path, tmp_path: Path
) -> None:
    foreign = load_kit(other_federation / "kits" / "researchers" / "alice")
    archive = _build(package_dir, foreign, tmp_path / "foreign.fcpkg")
    verify_package(archive, ca_cert=foreign.ca)  # fine in its own federation
    with pytest.raises(
        PackageError,
        match=r"^signer CN=alice,OU=researcher,O=packages-test is not certified by this "
        r"federation's CA",
    ):
        verify_package(archive, ca_cert=researcher.ca)


def test_a_site_certificate_cannot_sign_a_package(
    package_dir: Path, federation: Path, researcher: Kit, tmp_path: Path
) -> None:
    site = load_kit(federation / "kits" / "sites" / "hospital-a")
    archive = _build(package_dir, site, tmp_path / "site.fcpkg")
    with pytest.raises(
        PackageError, match=r"^signer CN=hospital-a,OU=site,.* is not a researcher: .*\['site'\]"
    ):
        verify_package(archive, ca_cert=researcher.ca)


def test_an_expired_researcher_certificate_is_refused(
    package_dir: Path, federation: Path, researcher: Kit, tmp_path: Path
) -> None:
    _, ca = _load_federation(federation)
    key, cert = issue_researcher(ca, "bob", 1)
    archive = build_package(package_dir, tmp_path / "bob.fcpkg", key=key, cert=cert).path
    verify_package(archive, ca_cert=researcher.ca)  # valid today

    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)
    with pytest.raises(PackageError, match=r"^signer CN=bob,.*: certificate is valid from"):
        verify_package(archive, ca_cert=researcher.ca, now=later)


def test_a_resigned_content_list_must_agree_with_the_manifest(
    archive: Path, researcher: Kit
) -> None:
    """Even a validly signed package is refused if its content list names another package."""
    import hashlib

    from fedcare.packages.archive import canonical_json
    from fedcare.packages.signing import sign_hash

    with zipfile.ZipFile(archive) as zf:
        content = json.loads(zf.read("MANIFEST.json"))
    content["name"] = "something_else"
    raw = canonical_json(content)
    sig = _signature(archive)
    sig["package_hash"] = hashlib.sha256(raw).hexdigest()
    sig["signature"] = sign_hash(researcher.key, sig["package_hash"])
    _rewrite(archive, {"MANIFEST.json": raw, "SIGNATURE.json": json.dumps(sig).encode()})
    with pytest.raises(
        PackageError, match=r"names something_else 1\.0\.0, but fedcare-package\.yaml says"
    ):
        verify_package(archive, ca_cert=researcher.ca)


def test_not_a_zip_is_refused(tmp_path: Path, researcher: Kit) -> None:
    bogus = tmp_path / "bogus.fcpkg"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(PackageError, match=r"cannot read package .*bogus\.fcpkg"):
        verify_package(bogus, ca_cert=researcher.ca)
