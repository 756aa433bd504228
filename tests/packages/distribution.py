"""Signed package archives for the distribution tests (coordinator store, site cache, review).

Real federations (CA, researcher kits) and real archives built by ``build_package`` from a copy
of the example package, with the manifest and model code changed as a test needs.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedcare.packages.archive import BuiltPackage, build_package
from fedcare.packages.resolve import resolve_package_model
from fedcare.packages.store import PackageStore
from fedcare.transport.researchers import researcher_kit_dir

from .conftest import EXAMPLE


def build(
    root: Path,
    federation: Path,
    *,
    researcher: str = "alice",
    code: str | None = None,
    **manifest: Any,
) -> BuiltPackage:
    """The example package, signed by ``researcher`` of ``federation``, built under ``root``.

    ``manifest`` replaces fields of its ``fedcare-package.yaml`` (e.g. ``version``,
    ``dependencies``); ``code`` is appended to its ``model.py``.
    """
    kit = researcher_kit_dir(federation, researcher)
    folder = root / f"src-{manifest.get('version', '1.0.0')}-{researcher}-{len(code or '')}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    doc = yaml.safe_load((folder / "fedcare-package.yaml").read_text())
    (folder / "fedcare-package.yaml").write_text(yaml.safe_dump({**doc, **manifest}))
    if code:
        with (folder / "model.py").open("a") as fh:
            fh.write(code)
    key = serialization.load_pem_private_key((kit / "key.pem").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((kit / "cert.pem").read_bytes())
    out = root / f"{folder.name}.fcpkg"
    return build_package(folder, out, key=key, cert=cert)  # type: ignore[arg-type]


def tamper(archive: Path, out: Path, name: str = "model.py") -> Path:
    """A copy of ``archive`` whose file ``name`` has one more line (nothing else changed)."""
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == name:
                data += b"\nimport socket  # added after signing\n"
            dst.writestr(info, data)
    return out


def spec_of(built: BuiltPackage, **changes: Any) -> dict[str, Any]:
    """The plan's model spec of ``built`` (as submission resolves it), with ``changes``."""
    store = PackageStore(built.path.parent / "resolve-store")
    model = {"kind": "package", "package": str(built.path), "options": changes.pop("options", {})}
    return {**resolve_package_model(model, store), **changes}


def ca_cert(federation: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((federation / "ca" / "ca.pem").read_bytes())
