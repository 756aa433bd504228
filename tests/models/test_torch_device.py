"""Where a torch adapter computes: the site's device (policy ``devices``), else the CPU."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from fedcare.data.base import Dataset
from fedcare.errors import ModelError
from fedcare.models.base import LocalTrainSpec

torch = pytest.importorskip("torch")

from fedcare.models.torch import make_torch_adapter  # noqa: E402
from fedcare.models.torch_nets import mlp  # noqa: E402
from fedcare.models.torch_runtime import DEVICE_ENV  # noqa: E402

pytestmark = pytest.mark.torch


def _fit(device: str | None, amp: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 5)).astype(np.float32)
    data = Dataset(X=X, y=(X[:, 0] > 0).astype(np.int64))
    adapter = make_torch_adapter(partial(mlp, hidden=(8,)), "binary", device=device, amp=amp)
    params = adapter.init_params((5,), np.random.default_rng(1))
    fitted = adapter.fit(params, data, LocalTrainSpec(epochs=2, lr=0.1, batch_size=16), rng)
    return next(iter(fitted.params.values())), adapter.predict(fitted.params, X)


def test_cuda_where_there_is_none_and_amp_on_cpu_train_exactly_as_the_cpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: scripts/gpu_check.sh covers it")
    weights, scores = _fit("cpu")
    for device, amp in (("cuda", False), (None, True)):
        other_weights, other_scores = _fit(device, amp)
        assert np.array_equal(other_weights, weights)
        assert np.array_equal(other_scores, scores)


def test_the_site_device_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEVICE_ENV, "no-such-device")
    with pytest.raises(ModelError, match="torch device 'no-such-device' is not valid"):
        _fit(None)
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert _fit(None)[1].shape == (64,)
