"""A real federation with a researcher kit, and a copy of the example package to build."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedcare.transport.provisioning import create_federation
from fedcare.transport.researchers import add_researcher

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "packages" / "numpy-logistic"


@dataclass(frozen=True)
class Kit:
    folder: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    ca: x509.Certificate


def load_kit(folder: Path) -> Kit:
    key = serialization.load_pem_private_key((folder / "key.pem").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cert = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    return Kit(folder, key, cert, ca)


@pytest.fixture(scope="session")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fed") / "federation"
    create_federation(root, name="packages-test", sites=["hospital-a"])
    add_researcher(root, "alice")
    return root


@pytest.fixture(scope="session")
def other_federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("other") / "federation"
    create_federation(root, name="packages-test", sites=[])  # same name, another CA
    add_researcher(root, "alice")
    return root


@pytest.fixture(scope="session")
def researcher(federation: Path) -> Kit:
    return load_kit(federation / "kits" / "researchers" / "alice")


@pytest.fixture
def package_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "src" / "numpy-logistic"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder
