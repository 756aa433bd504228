"""``fedcare provision add-researcher`` and ``fedcare package build|inspect|verify``."""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path

import yaml
from cryptography import x509
from typer.testing import CliRunner

from fedcare.cli.main import app

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "packages" / "numpy-logistic"


def _federation(tmp_path: Path) -> Path:
    root = tmp_path / "fed"
    made = runner.invoke(app, ["provision", "new", str(root), "--name", "cli-fed", "--site", "a"])
    assert made.exit_code == 0, made.output
    added = runner.invoke(app, ["provision", "add-researcher", str(root), "alice"])
    assert added.exit_code == 0, added.output
    return root


def test_add_researcher_issues_a_kit_and_refuses_a_clash(tmp_path: Path) -> None:
    root = _federation(tmp_path)
    kit = root / "kits" / "researchers" / "alice"
    assert stat.S_IMODE((kit / "key.pem").stat().st_mode) == 0o600
    info = yaml.safe_load((kit / "kit.yaml").read_text())
    assert info["role"] == "researcher" and info["id"] == "alice"
    cert = x509.load_pem_x509_certificate((kit / "cert.pem").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=alice,OU=researcher,O=cli-fed"
    assert (kit / "ca.pem").read_bytes() == (root / "ca" / "ca.pem").read_bytes()

    again = runner.invoke(app, ["provision", "add-researcher", str(root), "alice"])
    assert again.exit_code == 2
    assert "researcher 'alice' is already provisioned" in again.output
    bad = runner.invoke(app, ["provision", "add-researcher", str(root), "Alice Smith"])
    assert bad.exit_code == 2 and "researcher id 'Alice Smith' is invalid" in bad.output


def test_build_inspect_verify(tmp_path: Path) -> None:
    root = _federation(tmp_path)
    kit = root / "kits" / "researchers" / "alice"
    ca = str(root / "ca" / "ca.pem")
    out = tmp_path / "very" / "long" / ("folder-name-" * 6) / "numpy-logistic-1.0.0.fcpkg"

    built = runner.invoke(
        app, ["package", "build", str(EXAMPLE), "--kit", str(kit), "--out", str(out)]
    )
    assert built.exit_code == 0, built.output
    package_hash = built.output.split("hash: ", 1)[1].split()[0]
    assert len(package_hash) == 64 and f"path: {out}" in built.output

    verified = runner.invoke(app, ["package", "verify", str(out), "--ca", ca])
    assert verified.exit_code == 0, verified.output
    assert f"verified: numpy_logistic 1.0.0 {package_hash} signed by researcher alice" in (
        verified.output
    )

    shown = runner.invoke(app, ["package", "inspect", str(out), "--ca", ca])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert f"hash: {package_hash}" in lines
    assert "entry point: model:NumpyLogistic" in lines
    assert "task: binary" in lines
    assert "outputs: params=yes, metrics=accuracy, auroc" in lines
    assert "dependencies: numpy>=1.26,<3" in lines
    assert any(
        line.startswith("signer: CN=alice,OU=researcher,O=cli-fed (serial") for line in lines
    )
    model = [line for line in lines if line.endswith("  model.py")]
    assert len(model) == 1 and len(model[0].split()[0]) == 64  # the whole SHA-256, never cut
    assert lines[-1] == "verified: files and signature ok; signer certified by the CA given"

    unchecked = runner.invoke(app, ["package", "inspect", str(out)])
    assert unchecked.exit_code == 0 and "signer NOT checked (give --ca)" in unchecked.output


def test_verify_and_inspect_refuse_a_tampered_or_foreign_package(tmp_path: Path) -> None:
    root = _federation(tmp_path)
    kit = root / "kits" / "researchers" / "alice"
    out = tmp_path / "p.fcpkg"
    assert (
        runner.invoke(
            app, ["package", "build", str(EXAMPLE), "--kit", str(kit), "--out", str(out)]
        ).exit_code
        == 0
    )
    other = tmp_path / "other"
    assert runner.invoke(app, ["provision", "new", str(other), "--name", "x"]).exit_code == 0
    foreign = runner.invoke(app, ["package", "verify", str(out), "--ca", str(other / "ca/ca.pem")])
    assert foreign.exit_code == 1
    assert "signer CN=alice,OU=researcher,O=cli-fed is not certified by this federation's CA" in (
        foreign.output
    )

    tampered = tmp_path / "tampered.fcpkg"
    with zipfile.ZipFile(out) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, data + b"\n# changed\n" if name == "model.py" else data)
    ca = str(root / "ca" / "ca.pem")
    refused = runner.invoke(app, ["package", "verify", str(tampered), "--ca", ca])
    assert refused.exit_code == 1
    assert "file model.py: SHA-256 differs from the manifest" in refused.output
    shown = runner.invoke(app, ["package", "inspect", str(tampered)])
    assert shown.exit_code == 1
    assert "verified: NO: file model.py: SHA-256 differs from the manifest" in shown.output


def test_build_reports_a_bad_manifest_with_the_field(tmp_path: Path) -> None:
    root = _federation(tmp_path)
    folder = tmp_path / "pkg"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = folder / "fedcare-package.yaml"
    manifest.write_text(manifest.read_text().replace("task: binary", "task: ranking"))
    kit = str(root / "kits" / "researchers" / "alice")
    result = runner.invoke(
        app, ["package", "build", str(folder), "--kit", kit, "--out", str(tmp_path / "p.fcpkg")]
    )
    assert result.exit_code == 2
    assert "field task: Input should be 'binary'" in result.output
    assert not (tmp_path / "p.fcpkg").exists()
