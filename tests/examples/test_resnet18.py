"""examples/packages/resnet18-pneumonia: the architecture, its BatchNorm buffers, a short run."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

from fedcare.data.base import Dataset, FederatedDataset, SiteData
from fedcare.data.registry import load_dataset
from fedcare.errors import ModelError
from fedcare.models.base import LocalTrainSpec
from fedcare.records.arrays import ArrayRecord
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation
from tests.conftest import require_mirror
from tests.examples.conftest import PACKAGES, load_example

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

#: Trainable parameters of the standard ResNet-18 (11,689,512) with a 3×3 one-channel stem
#: (576 instead of 9,408 weights) and one output (513 instead of 513,000).
RESNET18_PARAMETERS = 11_689_512 - 9_408 + 576 - 513_000 + 513
STUDY = PACKAGES / "resnet18-pneumonia" / "study.yaml"


def _images(n: int, seed: int) -> Dataset:
    """Bright-centre (label 1) versus dark-centre (label 0) 1×28×28 images."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    X = rng.uniform(0.0, 0.3, size=(n, 1, 28, 28)).astype(np.float32)
    X[:, :, 10:18, 10:18] += 0.6 * y[:, None, None, None].astype(np.float32)
    return Dataset(X=X, y=y.astype(np.int64))


def test_width_64_is_the_standard_resnet18() -> None:
    adapter = load_example("resnet18-pneumonia", width=64)
    net = adapter.factory((1, 28, 28))  # type: ignore[attr-defined]
    assert sum(p.numel() for p in net.parameters()) == RESNET18_PARAMETERS
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert (convs[0].kernel_size, convs[0].stride, convs[0].in_channels) == ((3, 3), (1, 1), 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 20
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 1)


def test_batchnorm_running_statistics_travel_with_the_params() -> None:
    adapter = load_example("resnet18-pneumonia", width=4)
    data = _images(64, seed=0)
    rng = np.random.default_rng(0)
    params = adapter.init_params((1, 28, 28), rng)
    assert "bn.running_mean" in params and "bn.running_var" in params
    assert np.all(params["bn.running_var"] == 1.0)
    spec = LocalTrainSpec(max_steps=3, batch_size=16, lr=0.01, optimizer="adam")
    fitted = adapter.fit(params, data, spec, rng)
    assert fitted.num_steps == 3 and list(fitted.params) == list(params)
    # training updated the buffers, and they came back with the weights
    assert not np.allclose(fitted.params["bn.running_var"], 1.0)
    assert fitted.params["bn.num_batches_tracked"][()] == pytest.approx(3.0)
    # prediction (eval mode) uses the running statistics from the params it is given
    scores = adapter.predict(fitted.params, data.X)
    assert scores.shape == (64,) and np.all((scores > 0) & (scores < 1))
    shifted = dict(fitted.params)
    shifted["bn.running_mean"] = shifted["bn.running_mean"] + 5.0
    moved = adapter.predict(ArrayRecord(shifted), data.X)
    assert np.max(np.abs(moved - scores)) > 1e-4
    # the adapter (with its factory) pickles, as a worker process needs
    assert pickle.loads(pickle.dumps(adapter)).name == "resnet18(width=4)"


def test_a_narrow_resnet_learns_and_is_reproducible() -> None:
    adapter = load_example("resnet18-pneumonia", width=4, norm="group")
    data = _images(64, seed=1)
    spec = LocalTrainSpec(max_steps=8, batch_size=32, lr=0.01, optimizer="adam")
    params = adapter.init_params((1, 28, 28), np.random.default_rng(3))
    assert not any("running" in k for k in params)  # GroupNorm keeps no buffers
    before = adapter.loss(params, data)
    first = adapter.fit(params, data, spec, np.random.default_rng(4))
    again = adapter.fit(params, data, spec, np.random.default_rng(4))
    assert adapter.loss(first.params, data) < 0.8 * before
    for key in params:
        np.testing.assert_array_equal(first.params[key], again.params[key])


def test_bad_options_are_refused_naming_them() -> None:
    with pytest.raises(ModelError, match="width must be an integer >= 1, got 0"):
        load_example("resnet18-pneumonia", width=0)
    with pytest.raises(ModelError, match="norm must be 'batch' or 'group', got 'layer'"):
        load_example("resnet18-pneumonia", norm="layer")


def test_the_device_option_reaches_the_adapter_and_falls_back_to_the_cpu() -> None:
    adapter = load_example("resnet18-pneumonia", width=2, device="cuda", amp=True)
    assert (adapter.placement.device, adapter.placement.amp) == ("cuda", True)  # type: ignore[attr-defined]
    data = _images(16, seed=2)
    rng = np.random.default_rng(0)
    params = adapter.init_params((1, 28, 28), rng)
    spec = LocalTrainSpec(max_steps=1, batch_size=8, lr=0.01, optimizer="adam")
    fitted = adapter.fit(params, data, spec, rng)  # on CUDA if there is one, else on the CPU
    assert fitted.num_steps == 1 and fitted.params.all_finite()
    assert adapter.predict(fitted.params, data.X).shape == (16,)


def _small_pneumonia(train: int, test: int) -> FederatedDataset:
    """PneumoniaMNIST over its 5 Dirichlet sites, each cut to its first rows (for speed)."""
    ds = load_dataset("pneumoniamnist", num_sites=5, alpha=0.5, seed=0)
    sites = tuple(
        SiteData(s.site_id, s.train.take(np.arange(train)), s.test.take(np.arange(test)))
        for s in ds.sites
    )
    holdout = ds.extra["holdout"]
    assert isinstance(holdout, Dataset)
    small = holdout.take(np.arange(2 * test))
    return dataclasses.replace(ds, sites=sites, extra={**ds.extra, "holdout": small})


def test_the_study_file_runs_a_round_and_reports_the_official_test_split() -> None:
    require_mirror()
    study = StudyConfig.from_yaml(STUDY)
    assert study.model["options"] == {"width": 64} and study.dataset.options["alpha"] == 0.5
    study = study.with_overrides(
        model={**study.model, "options": {"width": 4}},
        rounds=1,
        training={**study.training.model_dump(), "max_steps": 2},
        baselines={"local": False, "pooled": True},
    )
    result = run_simulation(study, dataset=_small_pneumonia(train=40, test=8))
    assert result["study"]["model"]["package"].startswith("sha256:")
    assert result["study"]["model"]["name"] == "resnet18_pneumonia"
    assert len(result["history"]) == 1 and result["history"][0]["fit"]["num_contributions"] == 5
    for label in ("federated", "pooled"):
        holdout = result["holdout"][label]
        assert holdout["n"] == 16 and 0.0 <= holdout["auroc"] <= 1.0
    model = result.model
    assert "layers.7.bn2.running_var" in model.params  # the last block's BatchNorm buffers
    scores = model.predict(np.zeros((2, 1, 28, 28), dtype=np.float32))
    assert scores.shape == (2,) and np.all((scores > 0) & (scores < 1))
