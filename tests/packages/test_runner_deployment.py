"""The coordinator computes a package study's initial parameters in a sandboxed runner, from
the signed archive it stores, exactly as a simulation does in-process (issue 13 item 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedcare.coordinator.package_models import package_models
from fedcare.coordinator.packages import PACKAGES_DIR as ARCHIVES_DIR
from fedcare.models.package_runner import SandboxedPackage
from fedcare.models.packaged import load_adapter
from fedcare.models.registry import build_model
from fedcare.models.sandboxed_packages import SandboxedPackages
from fedcare.packages.archive import build_package
from fedcare.packages.sandbox import bwrap_available
from fedcare.packages.store import PackageStore
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation
from tests.conftest import require_mirror
from tests.packages.conftest import EXAMPLE, Kit

BWRAP, WHY = bwrap_available()


@pytest.mark.skipif(not BWRAP, reason=f"bubblewrap unavailable here: {WHY}")
def test_the_coordinators_initial_params_match_the_simulations(
    tmp_path: Path, researcher: Kit
) -> None:
    home = tmp_path / "home"
    (home / ARCHIVES_DIR).mkdir(parents=True)
    built = build_package(EXAMPLE, tmp_path / "p.fcpkg", key=researcher.key, cert=researcher.cert)
    built.path.rename(home / ARCHIVES_DIR / f"{built.hash}.fcpkg")  # as submission stores it
    builder = package_models(home, mode="require")
    spec = {"kind": "package", "package": f"sha256:{built.hash}", "options": {}}
    try:
        adapter = build_model(spec, packages=builder)
        deployed = adapter.init_params((13,), np.random.default_rng([11, 0]))
        assert getattr(adapter, "isolation", "").startswith("bwrap")
    finally:
        builder.close()
    store = PackageStore(tmp_path / "simulation")
    ref = store.add_folder(EXAMPLE)
    assert ref == f"sha256:{built.hash}"
    local = load_adapter(store.folder(ref), store.manifest(ref))
    assert deployed == local.init_params((13,), np.random.default_rng([11, 0]))


@pytest.mark.skipif(not BWRAP, reason=f"bubblewrap unavailable here: {WHY}")
def test_a_package_study_trains_the_same_model_in_process_and_sandboxed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every adapter a simulation builds (the initial params, each site's fit and evaluate)
    comes from the sandboxed runner instead: the trained model is the same, bit for bit."""
    require_mirror()
    study = StudyConfig.from_yaml(EXAMPLE / "study.yaml").with_overrides(rounds=3)
    in_process = run_simulation(study).model.params
    builder = SandboxedPackages(PackageStore(), mode="require")  # the store simulation fills
    monkeypatch.setattr("fedcare.models.registry._package_in_process", builder)
    try:
        sandboxed = run_simulation(study)
    finally:
        builder.close()
    assert isinstance(sandboxed.model.adapter, SandboxedPackage)
    assert sandboxed.model.params == in_process  # every array, bit for bit
