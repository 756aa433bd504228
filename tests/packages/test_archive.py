"""Building a study package: reproducible bytes, content list, what goes in, what is refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from fedcare.errors import ConfigError
from fedcare.packages import build_package
from tests.packages.conftest import Kit


def test_two_builds_from_other_paths_and_mtimes_give_identical_bytes(
    package_dir: Path, researcher: Kit, tmp_path: Path
) -> None:
    first = build_package(
        package_dir, tmp_path / "a.fcpkg", key=researcher.key, cert=researcher.cert
    )
    copy = tmp_path / "elsewhere" / "deeper" / "pkg"
    shutil.copytree(package_dir, copy)
    for path in copy.iterdir():
        os.utime(path, (1_000_000_000, 1_000_000_000))
    (copy / "model.py").chmod(0o755)
    second = build_package(copy, tmp_path / "b.fcpkg", key=researcher.key, cert=researcher.cert)

    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.hash == second.hash
    with zipfile.ZipFile(first.path) as archive:
        infos = archive.infolist()
        assert [i.filename for i in infos] == sorted(i.filename for i in infos)
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert {i.external_attr >> 16 for i in infos} == {0o100644}
        assert {i.extra for i in infos} == {b""}
        content = archive.read("MANIFEST.json")
    # The package hash is over the content list, not the zip container.
    assert first.hash == hashlib.sha256(content).hexdigest()
    files = json.loads(content)["files"]
    model = (package_dir / "model.py").read_bytes()
    assert {
        "path": "model.py",
        "sha256": hashlib.sha256(model).hexdigest(),
        "size": len(model),
    } in files


def test_a_changed_file_changes_the_hash(
    package_dir: Path, researcher: Kit, tmp_path: Path
) -> None:
    first = build_package(
        package_dir, tmp_path / "a.fcpkg", key=researcher.key, cert=researcher.cert
    )
    (package_dir / "model.py").write_text((package_dir / "model.py").read_text() + "# v2\n")
    second = build_package(
        package_dir, tmp_path / "b.fcpkg", key=researcher.key, cert=researcher.cert
    )
    assert first.hash != second.hash


def test_only_python_files_the_manifest_and_declared_data_go_in(
    package_dir: Path, researcher: Kit, tmp_path: Path
) -> None:
    (package_dir / "notes.txt").write_text("not declared")
    (package_dir / "__pycache__").mkdir()
    (package_dir / "__pycache__" / "model.cpython-312.pyc").write_bytes(b"\0")
    (package_dir / "__pycache__" / "stale.py").write_text("x = 1\n")
    (package_dir / "nets").mkdir()
    (package_dir / "nets" / "small.py").write_text("LAYERS = 2\n")
    (package_dir / "weights").mkdir()
    (package_dir / "weights" / "init.npy").write_bytes(b"\x93NUMPY")
    manifest = package_dir / "fedcare-package.yaml"
    manifest.write_text(manifest.read_text() + "data: [weights/init.npy]\n")

    built = build_package(
        package_dir, tmp_path / "p.fcpkg", key=researcher.key, cert=researcher.cert
    )

    with zipfile.ZipFile(built.path) as archive:
        names = archive.namelist()
    assert names == [
        "MANIFEST.json",
        "SIGNATURE.json",
        "fedcare-package.yaml",
        "model.py",
        "nets/small.py",
        "weights/init.npy",
    ]


def test_a_symlink_is_refused(package_dir: Path, researcher: Kit, tmp_path: Path) -> None:
    (package_dir / "linked.py").symlink_to(package_dir / "model.py")
    with pytest.raises(ConfigError, match=r"file linked\.py: a symlink"):
        build_package(package_dir, tmp_path / "p.fcpkg", key=researcher.key, cert=researcher.cert)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("../secret.csv", r"field data: .*'\.\./secret\.csv' is not a safe relative path"),
        ("/etc/passwd", r"field data: .*'/etc/passwd' is not a safe relative path"),
        ("missing.bin", r"data file missing\.bin: listed in fedcare-package\.yaml but not found"),
    ],
)
def test_data_outside_the_folder_or_missing_is_refused(
    package_dir: Path, researcher: Kit, tmp_path: Path, data: str, message: str
) -> None:
    (package_dir.parent / "secret.csv").write_text("patient,1\n")
    manifest = package_dir / "fedcare-package.yaml"
    manifest.write_text(manifest.read_text() + f"data: ['{data}']\n")
    with pytest.raises(ConfigError, match=message):
        build_package(package_dir, tmp_path / "p.fcpkg", key=researcher.key, cert=researcher.cert)
    assert not (tmp_path / "p.fcpkg").exists()
