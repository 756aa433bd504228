"""Every example package builds reproducibly, verifies, and is what its study file runs."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from fedcare.packages.archive import build_package
from fedcare.packages.resolve import resolve_package_model
from fedcare.packages.store import PackageStore
from fedcare.packages.verify import verify_package
from fedcare.records.study import StudyConfig
from fedcare.transport.provisioning import create_federation
from fedcare.transport.researchers import add_researcher
from tests.examples.conftest import PACKAGES
from tests.packages.conftest import Kit, load_kit

EXAMPLES = sorted(p.name for p in PACKAGES.iterdir() if (p / "fedcare-package.yaml").is_file())


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    root = tmp_path_factory.mktemp("fed") / "federation"
    create_federation(root, name="examples-test", sites=[])
    add_researcher(root, "alice")
    return load_kit(root / "kits" / "researchers" / "alice")


def test_every_example_is_listed() -> None:
    assert EXAMPLES == [
        "eicu-los-mlp",
        "heart-severity-sklearn",
        "numpy-bare",
        "numpy-logistic",
        "resnet18-pneumonia",
    ]


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_example_builds_verifies_and_is_its_study_files_package(
    name: str, kit: Kit, tmp_path: Path
) -> None:
    folder = PACKAGES / name
    first = build_package(folder, tmp_path / "a.fcpkg", key=kit.key, cert=kit.cert)
    again = build_package(folder, tmp_path / "b.fcpkg", key=kit.key, cert=kit.cert)
    assert first.path.read_bytes() == again.path.read_bytes()
    verified = verify_package(first.path, ca_cert=kit.ca)
    assert verified.hash == first.hash and verified.signer
    with zipfile.ZipFile(first.path) as archive:
        names = set(archive.namelist())
    # the code and the manifest travel; the study file and notes beside them do not
    assert "fedcare-package.yaml" in names and "model.py" in names
    assert not names & {"study.yaml", "README.md"}
    study = StudyConfig.from_yaml(folder / "study.yaml")
    spec = resolve_package_model(study.model, PackageStore(tmp_path / "store"))
    assert spec["package"] == f"sha256:{first.hash}"
    assert spec["task"] == first.manifest.task
