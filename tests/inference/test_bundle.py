"""The model bundle: round trip through a folder and a zip, tampering refused, the frozen
statistics (the federation's, or a site's own frozen when it takes the model)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fedcare.errors import ConfigError, ValidationError
from fedcare.inference.bundle import (
    build_bundle,
    load_bundle,
    study_threshold,
    write_bundle,
)
from fedcare.inference.frozen import FrozenPreprocessing
from fedcare.inference.predict import Scorer
from fedcare.inference.site_statistics import freeze_local_statistics
from fedcare.site.preprocess import Preprocessor

from .conftest import Trained


def test_a_bundle_round_trips_through_a_folder_and_a_zip(trained: Trained, tmp_path: Path) -> None:
    folder = load_bundle(write_bundle(trained.files, tmp_path / "bundle"))
    archive = load_bundle(write_bundle(trained.files, tmp_path / "bundle.zip"))
    assert folder.bundle_hash == archive.bundle_hash
    manifest = json.loads(trained.files["manifest.json"])
    assert folder.bundle_hash == manifest["bundle_sha256"]
    assert sorted(e["path"] for e in manifest["files"]) == [
        "bundle.json",
        "model_card.json",
        "params.npz",
        "preprocess.npz",
    ]
    model = trained.result.model
    for bundle in (folder, archive):
        assert bundle.model == {"kind": "logistic"} and bundle.task == "binary"
        assert bundle.features == list(trained.data.feature_names)
        assert bundle.input_shape == (13,) and bundle.threshold == 0.5 and bundle.missing == []
        assert bundle.statistics_source == "federation"
        for name in ("weight", "bias"):
            assert np.array_equal(bundle.params[name], model.params[name])
        assert bundle.statistics is not None
        assert np.array_equal(bundle.statistics["mean"], model.arrays["preprocess"]["mean"])
        assert bundle.card is not None and bundle.card["model"]["hash"].startswith("sha256:")
    # the same model gives the same bytes (fixed entry times, sorted JSON)
    again = write_bundle(trained.files, tmp_path / "again.zip")
    assert again.read_bytes() == (tmp_path / "bundle.zip").read_bytes()


def test_the_threshold_comes_from_the_study() -> None:
    assert study_threshold({"validation": {"threshold": 0.3}}) == 0.3
    assert study_threshold({"name": "no validation section"}) == 0.5
    files = build_bundle(
        model={"kind": "logistic"},
        params={"weight": np.ones(2), "bias": np.float64(0)},
        feature_names=["a", "b"],
        input_shape=[2],
        preprocessing={},
        threshold=study_threshold({"validation": {"threshold": 0.3}}),
    )
    assert json.loads(files["bundle.json"])["threshold"] == 0.3


def test_a_changed_file_is_refused_naming_it(trained: Trained, tmp_path: Path) -> None:
    folder = write_bundle(trained.files, tmp_path / "bundle")
    params = folder / "params.npz"
    data = bytearray(params.read_bytes())
    data[-40] ^= 1
    params.write_bytes(bytes(data))
    with pytest.raises(ValidationError, match=r"file 'params\.npz' was changed"):
        load_bundle(folder)

    changed = dict(trained.files)
    description = json.loads(changed["bundle.json"])
    changed["bundle.json"] = json.dumps({**description, "threshold": 0.01}).encode()
    archive = tmp_path / "changed.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, content in changed.items():
            zf.writestr(name, content)
    with pytest.raises(ValidationError, match=r"file 'bundle\.json' was changed"):
        load_bundle(archive)


def test_extra_missing_or_unexpected_bundles_are_refused(trained: Trained, tmp_path: Path) -> None:
    folder = write_bundle(trained.files, tmp_path / "extra")
    (folder / "evil.py").write_text("print('hi')\n")
    with pytest.raises(ValidationError, match=r"'evil\.py' is not in its manifest"):
        load_bundle(folder)
    folder = write_bundle(trained.files, tmp_path / "missing")
    (folder / "preprocess.npz").unlink()
    with pytest.raises(ValidationError, match=r"'preprocess\.npz' of its manifest is missing"):
        load_bundle(folder)
    folder = write_bundle(trained.files, tmp_path / "fine")
    with pytest.raises(ValidationError, match="expected sha256:0000"):
        load_bundle(folder, expected_hash="sha256:" + "0" * 64)
    with pytest.raises(ConfigError, match="not a model bundle"):
        load_bundle(tmp_path / "nothing-here.zip")


def test_global_statistics_preprocess_as_the_site_did(trained: Trained, bundle_dir: Path) -> None:
    prep = load_bundle(bundle_dir).preprocessing()
    for site in trained.data.sites:
        model = trained.result.model
        site_prep = Preprocessor.for_task(
            trained.study.plan()["preprocessing"], model.arrays, site.train
        )
        assert np.array_equal(prep.apply(site.test.X), site_prep.apply(site.test).X)


def test_local_scaling_needs_the_sites_own_frozen_statistics(
    trained: Trained, tmp_path: Path
) -> None:
    spec = {"impute": "mean", "scale": "local"}
    files = build_bundle(
        model={"kind": "logistic"},
        params=dict(trained.result.model.params),
        feature_names=trained.data.feature_names,
        input_shape=[13],
        preprocessing=spec,
    )
    bundle = load_bundle(write_bundle(files, tmp_path / "local"))
    assert bundle.statistics_source == "site" and bundle.statistics is None
    with pytest.raises(ValidationError, match="freeze this site's training statistics"):
        Scorer(bundle)
    site = trained.data.site("switzerland")  # many missing values
    assert np.isnan(site.train.X).any()
    frozen = load_bundle(
        write_bundle(
            freeze_local_statistics(bundle, site.train.X, "switzerland"), tmp_path / "frozen"
        )
    )
    assert frozen.statistics_source == "site-frozen"
    assert frozen.description["source"]["frozen_by"] == "switzerland"
    assert frozen.description["source"]["frozen_from"] == bundle.bundle_hash
    assert frozen.bundle_hash != bundle.bundle_hash
    expected = Preprocessor.for_task(spec, {}, site.train).apply(site.test).X
    assert np.array_equal(frozen.preprocessing().apply(site.test.X), expected)
    with pytest.raises(ValidationError, match="nothing to freeze"):
        freeze_local_statistics(frozen, site.train.X, "switzerland")
    with pytest.raises(ValidationError, match="training rows have 3 features"):
        freeze_local_statistics(bundle, site.train.X[:, :3], "switzerland")


def test_a_bundle_without_what_prediction_needs_says_what_it_lacks(tmp_path: Path) -> None:
    files = build_bundle(
        model=None,
        params={"w": np.ones(3)},
        feature_names=[],
        input_shape=[3],
        preprocessing={"impute": "mean", "scale": "global"},
    )
    bundle = load_bundle(write_bundle(files, tmp_path / "b"))
    assert bundle.missing == ["model spec", "feature names", "global scaling statistics"]
    with pytest.raises(ConfigError, match="lacks model spec, feature names, global scaling"):
        Scorer(bundle)


def test_frozen_statistics_are_checked() -> None:
    with pytest.raises(ValidationError, match=r"'std' has shape \(2,\), expected \(3,\)"):
        FrozenPreprocessing.from_statistics(True, True, {"mean": np.zeros(3), "std": np.ones(2)}, 3)
    prep = FrozenPreprocessing.from_statistics(
        True, True, {"mean": np.array([np.nan, 1.0]), "std": np.array([0.0, 2.0])}, 2
    )
    out = prep.apply(np.array([[np.nan, np.nan], [4.0, 5.0]]))
    assert np.array_equal(out, [[0.0, 0.0], [4.0, 2.0]])  # NaN mean -> 0, std 0 -> 1
