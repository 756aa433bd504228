"""A study package in a simulation: stored by hash, loaded in-process, bound by the plan hash."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedcare.errors import ConfigError, ModelError, PackageError, RoundFailedError
from fedcare.models.packaged import CheckedPackage
from fedcare.models.registry import build_model
from fedcare.packages.archive import build_package
from fedcare.packages.resolve import resolve_package_model
from fedcare.packages.store import PackageStore
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation
from fedcare.strategy.plan import plan_for_study
from tests.conftest import require_mirror
from tests.packages.conftest import EXAMPLE, Kit

STUDY = EXAMPLE / "study.yaml"


def _copy(tmp_path: Path) -> Path:
    folder = tmp_path / "pkg"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def _study(package: str, **changes: object) -> StudyConfig:
    base = StudyConfig.from_yaml(STUDY)
    return base.with_overrides(model={"kind": "package", "package": package}, **changes)


def test_the_example_study_trains_the_package_and_returns_the_model() -> None:
    require_mirror()
    study = StudyConfig.from_yaml(STUDY).with_overrides(rounds=5)
    result = run_simulation(study)
    model = result.model
    assert isinstance(model.adapter, CheckedPackage)  # checked as a site checks it
    assert type(model.adapter.inner).__name__ == "NumpyLogistic"
    assert model.params.shapes == {"w": (13,), "b": (1,)}
    assert result["final"]["weighted"]["accuracy"] > 0.75
    # the returned model is the one evaluated: its scores on fresh rows are probabilities
    scores = model.predict(np.zeros((3, 13)))
    assert scores.shape == (3,) and np.all((scores > 0) & (scores < 1))
    assert result["study"]["model"]["package"].startswith("sha256:")  # what ran, by hash
    card = result["model_card"]["model"]["package"]  # the model card names the package
    assert card == {"name": "numpy_logistic", "version": "1.0.0", "package": card["package"]}
    assert card["package"] == result["study"]["model"]["package"]
    again = run_simulation(study)
    assert np.array_equal(again.model.params["w"], model.params["w"])


def test_the_plan_binds_the_package_content_not_its_path(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    first = plan_for_study(_study(str(folder)))
    assert first.model["package"] == PackageStore().add_folder(EXAMPLE)  # same content
    assert first.model["requires"] == ["numpy"] and "numpy" in first.dependencies
    (folder / "model.py").write_text((folder / "model.py").read_text() + "\n# changed\n")
    second = plan_for_study(_study(str(folder)))
    assert second.model["package"] != first.model["package"]
    assert second.hash != first.hash
    # named by hash once stored, it resolves to the same plan
    by_hash = plan_for_study(_study(str(first.model["package"])))
    assert by_hash.hash == first.hash


def test_a_signed_archive_resolves_to_the_folders_hash(tmp_path: Path, researcher: Kit) -> None:
    built = build_package(EXAMPLE, tmp_path / "p.fcpkg", key=researcher.key, cert=researcher.cert)
    store = PackageStore(tmp_path / "store")
    spec = resolve_package_model({"kind": "package", "package": str(built.path)}, store)
    assert spec["package"] == f"sha256:{built.hash}"
    assert store.info(spec["package"])["signer"] is None  # no CA given: signer not checked
    assert spec["package"] == store.add_folder(EXAMPLE)


def test_a_relative_package_path_is_found_from_the_study_file(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    doc = yaml.safe_load(STUDY.read_text())
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(doc))  # package: . from tmp_path
    doc["model"]["package"] = "pkg"
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(doc))
    study = StudyConfig.from_yaml(tmp_path / "study.yaml")
    assert study.model["package"] == str(folder.resolve())


@pytest.mark.parametrize(
    ("model", "error", "message"),
    [
        ({"kind": "package"}, ConfigError, "a package model needs 'package'"),
        (
            {"kind": "package", "package": "nowhere/at/all"},
            ConfigError,
            "package 'nowhere/at/all' is no folder, archive or sha256:<hash>",
        ),
        (
            {"kind": "package", "package": "sha256:" + "0" * 64},
            PackageError,
            "is not in the package store",
        ),
        (
            {"kind": "package", "package": "sha256:abc"},
            ConfigError,
            "is not 'sha256:' and 64 lowercase hex digits",
        ),
        (
            {"kind": "package", "package": str(EXAMPLE), "layers": 3},
            ConfigError,
            r"unknown key\(s\) \['layers'\]",
        ),
    ],
)
def test_bad_package_specs_are_refused_naming_the_problem(
    model: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        plan_for_study(_study(str(EXAMPLE)).model_copy(update={"model": model}))
    if model.get("package"):
        with pytest.raises(error, match=message):
            build_model(model)


def test_an_entry_point_that_is_no_adapter_is_refused(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / "model.py").write_text("NumpyLogistic = 42\n")
    with pytest.raises(PackageError, match="entry point 'model:NumpyLogistic' is a int, not"):
        build_model({"kind": "package", "package": str(folder)})
    (folder / "model.py").write_text("import not_a_module_anywhere\n")
    with pytest.raises(PackageError, match="importing 'model' failed: ModuleNotFoundError"):
        build_model({"kind": "package", "package": str(folder)})


def test_options_reach_the_entry_point_and_a_wrong_task_is_refused(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / "model.py").write_text(
        (EXAMPLE / "model.py").read_text()
        + "\n\ndef make(scale: float = 1.0, task: str = 'binary') -> NumpyLogistic:\n"
        "    adapter = NumpyLogistic()\n    adapter.scale = scale\n"
        "    adapter.task = task  # type: ignore[misc]\n    return adapter\n"
    )
    manifest = (folder / "fedcare-package.yaml").read_text()
    (folder / "fedcare-package.yaml").write_text(
        manifest.replace("model:NumpyLogistic", "model:make")
    )
    adapter = build_model({"kind": "package", "package": str(folder), "options": {"scale": 2.5}})
    assert isinstance(adapter, CheckedPackage) and vars(adapter.inner)["scale"] == 2.5
    with pytest.raises(PackageError, match="the adapter's task is 'regression', the manifest"):
        build_model({"kind": "package", "package": str(folder), "options": {"task": "regression"}})


def test_a_simulation_refuses_what_a_site_would(tmp_path: Path) -> None:
    """The in-process adapter's outputs pass the site's checks: a package returning an
    undeclared metric or an extra array fails its simulation, not only its deployment."""
    require_mirror()
    folder = _copy(tmp_path)
    code = (folder / "model.py").read_text()
    (folder / "model.py").write_text(
        code.replace('{"loss": self.loss(new, data)}', '{"loss": 0.0, "rows": float(n)}')
    )
    study = _study(str(folder), rounds=1)
    refused = "package-output-refused: package numpy_logistic 1.0.0 fit: "
    with pytest.raises(RoundFailedError, match=refused + "metric 'rows' is not declared"):
        run_simulation(study)
    (folder / "model.py").write_text(
        code.replace('ArrayRecord({"w": w, "b": b})\n', 'ArrayRecord({"w": w, "b": b, "x": w})\n')
    )
    with pytest.raises(RoundFailedError, match=refused + r".*unexpected arrays \['x'\]"):
        run_simulation(_study(str(folder), rounds=1))


def test_a_simulation_refuses_dp_sgd_for_a_package_as_a_site_does() -> None:
    from fedcare.data.base import Dataset
    from fedcare.models.base import LocalTrainSpec
    from fedcare.privacy.dp_sgd import DpSgdSpec

    adapter = build_model({"kind": "package", "package": str(EXAMPLE)})
    spec = LocalTrainSpec(dp=DpSgdSpec(max_grad_norm=1.0, delta=1e-5, noise_multiplier=1.0))
    data = Dataset(X=np.zeros((4, 3)), y=np.array([0, 1, 0, 1]))
    params = adapter.init_params((3,), np.random.default_rng(0))
    with pytest.raises(ModelError, match=r"DP-SGD .* is not available for study packages"):
        adapter.fit(params, data, spec, np.random.default_rng(0))
