"""Module <-> params without random init or extra copies: the same results, bit for bit."""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcare.data.base import Dataset
from fedcare.models.base import LocalTrainSpec
from fedcare.records.arrays import ArrayRecord

torch = pytest.importorskip("torch")

from fedcare.models.torch import make_torch_adapter  # noqa: E402
from fedcare.models.torch_nets import cnn_small, mlp  # noqa: E402
from fedcare.models.torch_params import build_module, export, init_free_safe  # noqa: E402

pytestmark = pytest.mark.torch

MLP = partial(mlp, hidden=(16, 8))
CNN = partial(cnn_small, channels=(4, 8), hidden=8)
SHAPES = {"mlp": (6,), "cnn": (1, 12, 12)}
SPECS = {
    "sgd": LocalTrainSpec(lr=0.05, max_steps=4, batch_size=8),
    "prox_momentum_l2": LocalTrainSpec(
        lr=0.05, max_steps=4, batch_size=8, prox_mu=0.1, momentum=0.9, l2=0.01
    ),
    "adam": LocalTrainSpec(lr=0.01, max_steps=4, batch_size=8, optimizer="adam"),
}


def data_for(shape: tuple[int, ...], n: int = 40) -> Dataset:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(n, *shape)).astype(np.float32)
    return Dataset(X, (X.reshape(n, -1)[:, 0] > 0).astype(float))


def forward(module: Any, inputs: Any) -> Any:
    """The default forward pass as a custom ``eval_step``: a hook makes the adapter build its
    modules the way it always did, with their random initialisation drawn."""
    return module(inputs)


def read_only(params: ArrayRecord, folder: Path) -> ArrayRecord:
    """``params`` as read-only memory-mapped views of a raw file (as a spilled download)."""
    path = folder / "params.f32"
    path.write_bytes(b"".join(np.ascontiguousarray(params[k]).tobytes() for k in params))
    mapped = np.memmap(path, dtype=np.float32, mode="r")
    out, offset = {}, 0
    for k in params:
        size = params[k].size
        out[k] = mapped[offset : offset + size].reshape(params[k].shape)
        offset += size
    return ArrayRecord(out, copy=False)


@pytest.mark.parametrize("net", ["mlp", "cnn"])
@pytest.mark.parametrize("spec_name", [*SPECS, "scaffold"])
def test_fit_from_an_uninitialised_module_is_bitwise_the_initialised_one(
    net: str, spec_name: str, tmp_path: Path
) -> None:
    factory, shape = (MLP if net == "mlp" else CNN), SHAPES[net]
    fast = make_torch_adapter(factory)
    before = make_torch_adapter(factory, eval_step=forward)
    start = fast.init_params(shape, np.random.default_rng(1))
    spec = SPECS.get(spec_name, SPECS["sgd"])
    if spec_name == "scaffold":
        spec = LocalTrainSpec(lr=0.05, max_steps=4, batch_size=8, correction=start.scale(0.1))
    data = data_for(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reading read-only params warns nothing
        got = fast.fit(read_only(start, tmp_path), data, spec, np.random.default_rng(5))
    want = before.fit(start, data, spec, np.random.default_rng(5))
    assert init_free_safe(torch, factory(shape))
    assert got.owned and list(got.params) == list(want.params)
    for k in want.params:
        assert got.params[k].dtype == np.float32
        assert got.params[k].tobytes() == want.params[k].tobytes(), k
    assert got.metrics == want.metrics
    first = next(iter(start))
    assert not np.array_equal(got.params[first], start[first])  # it did train


def test_building_to_load_leaves_the_generator_where_it_was() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        state = torch.get_rng_state()
        module = build_module(torch, MLP, (6,), name="mlp", skip_init=True)
        assert torch.equal(torch.get_rng_state(), state)  # no init drawn
        assert module.state_dict()["1.weight"].device.type == "cpu"
        build_module(torch, MLP, (6,), name="mlp", skip_init=False)
        assert not torch.equal(torch.get_rng_state(), state)  # init_params still draws


def test_a_module_with_dropout_is_built_with_its_init_drawn() -> None:
    """Dropout reads the generator after construction: skipping the init would change it."""
    factory = partial(mlp, hidden=(16,), dropout=0.3)
    assert not init_free_safe(torch, factory((6,)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        factory((6,))
        want = torch.get_rng_state()
        torch.manual_seed(4)
        build_module(torch, factory, (6,), name="mlp", skip_init=True)
        assert torch.equal(torch.get_rng_state(), want)


class NeedsValues(torch.nn.Module):
    """A module whose construction reads a tensor's value (impossible on the meta device)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        hidden = int(torch.tensor(width).item()) * 2
        self.layer = torch.nn.Linear(width, hidden)


def test_a_factory_that_fails_on_meta_is_built_as_before() -> None:
    adapter = make_torch_adapter(lambda shape: NeedsValues(shape[0]))
    start = adapter.init_params((3,), np.random.default_rng(0))
    assert (
        adapter.param_shapes((3,)) == start.shapes == {"layer.weight": (6, 3), "layer.bias": (6,)}
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        NeedsValues(3)
        want = torch.get_rng_state()
        torch.manual_seed(4)
        module = adapter.load(start, (3,))
        assert torch.equal(torch.get_rng_state(), want)
    assert np.array_equal(module.state_dict()["layer.weight"].numpy(), start["layer.weight"])


@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_param_shapes_are_the_initial_params_shapes(net: str) -> None:
    adapter = make_torch_adapter(MLP if net == "mlp" else CNN)
    shape = SHAPES[net]
    assert (
        adapter.param_shapes(shape) == adapter.init_params(shape, np.random.default_rng(0)).shapes
    )


def test_load_copies_read_only_params_once_into_module_memory(tmp_path: Path) -> None:
    adapter = make_torch_adapter(MLP)
    start = adapter.init_params((6,), np.random.default_rng(2))
    mapped = read_only(start, tmp_path)
    assert not mapped["1.weight"].flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = adapter.load(mapped, (6,))
    weight = module.state_dict()["1.weight"]
    assert np.array_equal(weight.numpy(), start["1.weight"])
    assert not np.shares_memory(weight.numpy(), mapped["1.weight"])
    with torch.no_grad():
        weight.add_(1.0)  # the module's own memory: the mapped file is untouched
    assert np.array_equal(mapped["1.weight"], start["1.weight"])


def test_export_shares_the_module_memory_but_never_between_keys() -> None:
    tied = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    tied[1].weight = tied[0].weight
    tied.register_buffer("steps", torch.tensor(3, dtype=torch.int64))
    record = export(tied, list(tied.state_dict()))
    assert np.shares_memory(record["0.weight"], tied[0].weight.detach().numpy())
    assert not np.shares_memory(record["0.weight"], record["1.weight"])
    assert np.array_equal(record["0.weight"], record["1.weight"])
    assert record["steps"].dtype == np.float32 and record["steps"] == 3.0
    assert not record["0.weight"].flags.writeable
