"""The steward's review of a study package, and an approval that binds the package hash.

``fedcare site plan STUDY.yaml`` on a study naming a signed archive: the plan hash the site's
tasks carry, the package's signer (researcher, certificate fingerprint, trusted or not), each
dependency and whether it is satisfied here, every file with size and SHA-256, and a unified
diff against the last version of the package approved at this site. Then the governance
chain of a real site (policy, package, approval mods; real approvals store and audit log):
v1 approved runs, v2 is refused ``plan-not-approved`` with its own hash until approved.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from typer.testing import CliRunner, Result

from fedcare.cli.governance import build_governance
from fedcare.cli.main import app
from fedcare.packages.archive import BuiltPackage
from fedcare.records.messages import Reply, Task
from fedcare.site.mods import chain
from fedcare.strategy.plan import plan_for_study
from fedcare.transport.provisioning import create_federation
from fedcare.transport.researchers import add_researcher, researcher_kit_dir
from tests.packages.distribution import build, spec_of

from .governance_helpers import study, task

runner = CliRunner(env={"COLUMNS": "200"})
SOON = datetime.now(timezone.utc) + timedelta(days=1)
V2_CODE = "\n\ndef helper() -> int:\n    return 2\n"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fed") / "federation"
    create_federation(root, name="package-review", sites=["hospital-a"])
    add_researcher(root, "alice")
    return root


@pytest.fixture(scope="module")
def versions(fed: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltPackage]:
    where = tmp_path_factory.mktemp("pk")
    deps = ["numpy>=1.26,<3", "surely-absent-dist>=1.0"]
    return {
        "v1": build(where, fed),
        "v2": build(where, fed, version="1.1.0", code=V2_CODE, dependencies=deps),
        "v3": build(where, fed, version="1.2.0", code=V2_CODE),
    }


def _study_file(folder: Path, built: BuiltPackage) -> Path:
    doc = study().model_dump(mode="json")
    doc["model"] = {"kind": "package", "package": built.path.name}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"study-{built.manifest.version}.yaml"
    (folder / built.path.name).write_bytes(built.path.read_bytes())
    path.write_text(yaml.safe_dump(doc))
    return path


def _cli(*args: str | Path) -> Result:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_review_shows_signer_dependencies_files_and_the_diff(
    tmp_path: Path, fed: Path, versions: dict[str, BuiltPackage]
) -> None:
    kit, state = fed / "kits" / "sites" / "hospital-a", tmp_path / "state"
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"packages": {"trusted_signers": ["alice"]}}))
    v1, v2 = versions["v1"], versions["v2"]
    site = ("--state", state, "--kit", kit)
    first = _cli("site", "plan", _study_file(tmp_path, v1), *site, "--policy", policy).output
    cert = x509.load_pem_x509_certificate(
        (researcher_kit_dir(fed, "alice") / "cert.pem").read_bytes()
    )
    numpy = metadata.version("numpy")
    for line in (
        f"package:       numpy_logistic 1.0.0 (sha256:{v1.hash})",
        "task:          binary; entry point model:NumpyLogistic",
        f"signer:        researcher alice ({cert.subject.rfc4514_string()}), certificate "
        f"SHA-256 {cert.fingerprint(hashes.SHA256()).hex(':')}",
        "trusted by this site's policy (packages.trusted_signers: alice)",
        f"dependencies:  numpy>=1.26,<3 (installed {numpy}): satisfied here",
        "no earlier version of numpy_logistic was approved at this site: every line below is new",
        "+++ numpy_logistic-1.0.0/model.py",
    ):
        assert line in first, first
    for item in _files(v1):
        assert item in first, first
    plan_v1 = first.splitlines()[0]
    _cli("site", "approve", _study_file(tmp_path, v1), *site)

    second = _cli("site", "plan", _study_file(tmp_path, v2), *site).output
    plan_v2 = second.splitlines()[0]
    assert plan_v2 != plan_v1 and len(plan_v2) == 64
    for line in (
        f"package:       numpy_logistic 1.1.0 (sha256:{v2.hash})",
        "surely-absent-dist>=1.0 (not installed): NOT satisfied here",
        f"changes:       against numpy_logistic 1.0.0 (sha256:{v1.hash}), approved for study "
        f"'heart' as plan {plan_v1}",
        "--- numpy_logistic-1.0.0/model.py",
        "+++ numpy_logistic-1.1.0/model.py",
        "+def helper() -> int:",
        "-version: 1.0.0",
        "+version: 1.1.0",
        "+- surely-absent-dist>=1.0",
    ):
        assert line in second, second
    assert "trusted by this site's policy" not in second  # no --policy given
    listed = _cli("site", "approvals", "--state", state).output
    assert f"  package: numpy_logistic 1.0.0 (sha256:{v1.hash})" in listed, listed


def _files(built: BuiltPackage) -> list[str]:
    import hashlib
    import zipfile

    with zipfile.ZipFile(built.path) as archive:
        data = {n: archive.read(n) for n in ("fedcare-package.yaml", "model.py")}
    return [f"{n}  {len(b)} bytes  sha256 {hashlib.sha256(b).hexdigest()}" for n, b in data.items()]


def test_review_refuses_a_folder_and_an_unknown_hash(
    tmp_path: Path, fed: Path, versions: dict[str, BuiltPackage]
) -> None:
    kit, state = str(fed / "kits" / "sites" / "hospital-a"), tmp_path / "state"
    path = _study_file(tmp_path, versions["v1"])
    doc = yaml.safe_load(path.read_text())
    doc["model"]["package"] = "sha256:" + "2" * 64
    path.write_text(yaml.safe_dump(doc))
    result = runner.invoke(app, ["site", "plan", str(path), "--state", str(state), "--kit", kit])
    assert result.exit_code == 2 and "is not in this site's cache" in result.output
    doc["model"]["package"] = "."
    path.write_text(yaml.safe_dump(doc))
    result = runner.invoke(app, ["site", "plan", str(path), "--state", str(state), "--kit", kit])
    assert result.exit_code == 2 and "is a package folder" in result.output


def test_a_new_package_version_needs_a_new_approval(
    tmp_path: Path, fed: Path, versions: dict[str, BuiltPackage]
) -> None:
    kit, state = fed / "kits" / "sites" / "hospital-a", tmp_path / "state"
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"packages": {"trusted_signers": ["alice"]}}))
    archives = {f"sha256:{b.hash}": b.path for b in versions.values()}
    governance = build_governance(state, kit, policy)
    assert governance.packages is not None
    governance.packages.fetch = lambda ref: archives[ref].read_bytes()
    ran: list[str] = []

    def run(t: Task) -> Reply:
        ran.append(str(t.plan["plan_hash"]))
        return Reply(t.study_id, t.round, t.site_id, t.kind, num_samples=1)

    handle = chain(governance.mods({"heart-disease": 100}), run)
    studies = {n: study(model=spec_of(b)) for n, b in versions.items()}
    hashes = {n: plan_for_study(s).hash for n, s in studies.items()}
    assert len(set(hashes.values())) == 3  # the package hash is part of the plan hash

    def task_of(name: str) -> Task:
        plan = plan_for_study(studies[name])
        return task(task_plan=plan.to_task_plan(), config={**plan.training, "seed": 3})

    governance.approvals.approve("heart", hashes["v1"], SOON)
    assert handle(task_of("v1")).ok and ran == [hashes["v1"]]
    refused = handle(task_of("v3"))  # a new version of the approved package
    assert refused.error is not None and refused.error.kind == "plan-not-approved"
    assert f"plan {hashes['v3']} for study 'heart' is not approved" in refused.error.message
    assert ran == [hashes["v1"]]
    governance.approvals.approve("heart", hashes["v3"], SOON)
    assert handle(task_of("v3")).ok and ran == [hashes["v1"], hashes["v3"]]
    governance.approvals.approve("heart", hashes["v2"], SOON)
    refused = handle(task_of("v2"))  # approved, but it cannot run here
    assert refused.error is not None and refused.error.kind == "package-dependencies"
    assert "surely-absent-dist>=1.0 (not installed)" in refused.error.message
    assert len(ran) == 2
