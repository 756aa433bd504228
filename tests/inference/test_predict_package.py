"""``site predict`` on a study package's model: the numpy_logistic example package trained in
simulation, its bundle, and a site whose package store holds the signed archive. The scores
equal the package model's own predictions on the rows the site preprocessed (1e-9), run
through the site's package runner (a separate process; bubblewrap where the policy asks);
a package the site does not hold, holds changed, or whose signer its policy does not trust is
refused, naming it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.data.base import FederatedDataset, SiteData
from fedcare.data.registry import load_dataset
from fedcare.errors import ConfigError, NotFoundError, PackageError, ValidationError
from fedcare.inference.bundle import ModelBundle, bundle_from_study, load_bundle, write_bundle
from fedcare.inference.package_scorer import require_site_package
from fedcare.inference.predict import Scorer, predict_file
from fedcare.models.sandboxed_packages import SandboxedPackages
from fedcare.packages.archive import build_package
from fedcare.packages.resolve import resolve_study_package
from fedcare.packages.sandbox import SandboxMode, bwrap_available
from fedcare.packages.store import CACHE_ENV, PackageStore
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import SimulationResult, run_simulation
from fedcare.site.packages import PACKAGES_DIR, SitePackages
from fedcare.site.preprocess import Preprocessor
from fedcare.site.worker import package_builder
from fedcare.transport.provisioning import create_federation
from fedcare.transport.researchers import add_researcher, researcher_kit_dir

from ..conftest import require_mirror

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "packages" / "numpy-logistic"
runner = CliRunner(env={"COLUMNS": "240"})


@dataclass(frozen=True)
class Trained:
    study: StudyConfig
    result: SimulationResult
    data: FederatedDataset
    bundle_dir: Path
    state: Path  # a site state whose package store holds the signed archive
    ref: str

    def expected(self, site: SiteData) -> np.ndarray:
        model = self.result.model
        prep = Preprocessor.for_task(self.study.plan()["preprocessing"], model.arrays, site.train)
        return np.asarray(model.predict(prep.apply(site.test).X))

    def rows(self, site: SiteData, path: Path) -> Path:
        df = pd.DataFrame(site.test.X, columns=list(self.data.feature_names))
        df.insert(0, "patient", [f"{site.site_id}-{i}" for i in range(len(df))])
        df.to_csv(path, index=False)
        return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    require_mirror()
    root = tmp_path_factory.mktemp("pkg")
    fed = root / "federation"
    create_federation(fed, name="predict-packages", sites=["hospital-a"])
    add_researcher(fed, "alice")
    kit = researcher_kit_dir(fed, "alice")
    key = serialization.load_pem_private_key((kit / "key.pem").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((kit / "cert.pem").read_bytes())
    archive = build_package(EXAMPLE, root / "numpy-logistic.fcpkg", key=key, cert=cert)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:  # the study lead's own store (simulation)
        mp.setenv(CACHE_ENV, str(root / "lead-store"))
        study = StudyConfig.from_yaml(EXAMPLE / "study.yaml").with_overrides(rounds=3)
        study = resolve_study_package(study)
        result = run_simulation(study)
        study.plan()  # resolved once more below, from the same store
    data = load_dataset(study.dataset.name, **study.dataset.options)
    files = bundle_from_study(
        study.model_dump(mode="json"),
        params=dict(result.model.params),
        task_arrays=result.model.arrays,
        feature_names=data.feature_names,
        input_shape=data.sites[0].train.input_shape,
        task=result["task"],
        source={"study_id": study.name, "version": "pkg-1"},
    )
    state = root / "site-state"
    ca = x509.load_pem_x509_certificate((fed / "ca" / "ca.pem").read_bytes())
    SitePackages(state, ca).add_archive(archive.path)  # as the site keeps a verified package
    bundle_dir = write_bundle(files, root / "bundle")
    ref = str(study.model["package"])
    assert ref == f"sha256:{archive.hash}"  # the folder the lead ran is the archive signed
    return Trained(study, result, data, bundle_dir, state, ref)


def _builder(state: Path, sandbox: SandboxMode = "off") -> SandboxedPackages:
    """The site worker's package runners over ``state``'s store (60 s per call)."""
    return package_builder(state, sandbox=sandbox, time_limit=60.0, memory_limit_mb=None)


def test_scores_equal_the_package_models_on_every_site(trained: Trained, tmp_path: Path) -> None:
    bundle = load_bundle(trained.bundle_dir)
    assert bundle.model["kind"] == "package" and bundle.model["package"] == trained.ref
    require_site_package(bundle.model, PackageStore(trained.state / PACKAGES_DIR),
                         trusted_signers=["alice"])  # fmt: skip
    packages = _builder(trained.state)
    try:
        for site in trained.data.sites:
            source = trained.rows(site, tmp_path / f"{site.site_id}.csv")
            out = tmp_path / f"{site.site_id}-scores.csv"
            summary = predict_file(bundle, source, out, id_column="patient", packages=packages)
            scores = pd.read_csv(out)
            expected = trained.expected(site)
            assert summary.rows == len(expected) == len(scores)
            assert np.max(np.abs(scores["score"].to_numpy() - expected)) <= 1e-9
            assert np.array_equal(scores["predicted"], (expected >= 0.5).astype(int))
        adapter = packages(bundle.model)
        assert adapter.isolation == "rlimits-only"  # a runner process, not this one
        popen = adapter._runner._popen
        assert popen is not None and popen.pid != os.getpid()
    finally:
        packages.close()


@pytest.mark.skipif(not bwrap_available()[0], reason="bubblewrap unavailable here")
def test_a_policy_asking_for_the_sandbox_runs_it_under_bubblewrap(
    trained: Trained, tmp_path: Path
) -> None:
    bundle = load_bundle(trained.bundle_dir)
    site = trained.data.site("hungary")
    packages = _builder(trained.state, "require")
    try:
        out = tmp_path / "scores.csv"
        predict_file(bundle, trained.rows(site, tmp_path / "rows.csv"), out, packages=packages)
        assert packages(bundle.model).isolation.startswith("bwrap")
    finally:
        packages.close()
    got = pd.read_csv(out)["score"].to_numpy()
    assert np.max(np.abs(got - trained.expected(site))) <= 1e-9


def test_site_predict_runs_a_package_model_on_the_command_line(
    trained: Trained, tmp_path: Path
) -> None:
    site = trained.data.site("cleveland")
    rows = trained.rows(site, tmp_path / "rows.csv")
    policy = tmp_path / "policy.yaml"
    policy.write_text("sandbox: prefer\npackages: {trusted_signers: [alice]}\n")
    out = tmp_path / "predictions.csv"
    args = ["site", "predict", "--model", str(trained.bundle_dir), "--input", str(rows),
            "--out", str(out), "--state", str(trained.state), "--no-log"]  # fmt: skip
    done = runner.invoke(app, [*args, "--policy", str(policy), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["rows"] == len(site.test)
    got = pd.read_csv(out)["score"].to_numpy()
    assert np.max(np.abs(got - trained.expected(site))) <= 1e-9

    no_policy = runner.invoke(app, args)
    assert no_policy.exit_code == 2 and "give this site's policy (--policy" in no_policy.output

    bob = tmp_path / "bob.yaml"
    bob.write_text("packages: {trusted_signers: [bob]}\n")
    refused = runner.invoke(app, [*args, "--policy", str(bob)])
    assert refused.exit_code == 2
    assert "signed by alice" in refused.output and "trusted_signers: bob" in refused.output

    empty = runner.invoke(app, [*args[:-3], "--state", str(tmp_path / "other-site")])
    assert empty.exit_code == 2
    hex_ = trained.ref.removeprefix("sha256:")
    assert f"numpy_logistic 1.0.0 (sha256:{hex_})" in empty.output
    assert "not in this site's package store" in empty.output
    assert "fedcare site approve STUDY.yaml" in empty.output


def test_a_changed_package_or_a_bundle_without_its_hash_is_refused(
    trained: Trained, tmp_path: Path
) -> None:
    import shutil

    bundle = load_bundle(trained.bundle_dir)
    state = tmp_path / "state"
    shutil.copytree(trained.state / PACKAGES_DIR, state / PACKAGES_DIR)
    store = PackageStore(state / PACKAGES_DIR)
    with (store.folder(trained.ref) / "model.py").open("a") as fh:
        fh.write("\nimport socket  # added after verification\n")
    with pytest.raises(ValidationError, match="was changed on disk: its files hash to sha256:"):
        require_site_package(bundle.model, store)
    with pytest.raises(NotFoundError, match="not in this site's package store"):
        require_site_package(bundle.model, PackageStore(tmp_path / "none"))
    with pytest.raises(PackageError, match="signed by alice"):
        require_site_package(bundle.model, PackageStore(trained.state / PACKAGES_DIR),
                             trusted_signers=[])  # fmt: skip
    with pytest.raises(ConfigError, match="runs only through the site's package runner"):
        Scorer(bundle)

    unresolved = {**bundle.model, "package": "examples/packages/numpy-logistic"}
    description = {**bundle.description, "model": unresolved}
    files = bundle_from_study(
        {"model": unresolved}, params=dict(bundle.params), task_arrays={},
        feature_names=bundle.features, input_shape=bundle.input_shape, task="binary",
    )  # fmt: skip
    assert (
        "package hash (the study's package, resolved to sha256:<hex>)"
        in (json.loads(files["bundle.json"])["missing"])
    )
    lacking = ModelBundle(
        {**description, "missing": ["package hash"]}, bundle.params, None, None, {}, "x"
    )
    with pytest.raises(ConfigError, match="lacks package hash"):
        Scorer(lacking, _builder(state))
