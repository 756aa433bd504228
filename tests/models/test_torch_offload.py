"""A site's memory budget: a large torch model's params in a memory-mapped scratch file.

The mapped path is checked against the anonymous one bit for bit, and where the memory lives
is read from ``/proc/self/maps`` (the scratch file shows there as ``(deleted)``).
"""

from __future__ import annotations

import gc
import os
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcare.data.base import Dataset
from fedcare.errors import ModelError
from fedcare.models.base import LocalTrainSpec
from fedcare.models.torch_offload import BUDGET_SHARE, SCRATCH_PREFIX, ParamOffload, scratch_map

torch = pytest.importorskip("torch")

from fedcare.models.torch import make_torch_adapter  # noqa: E402
from fedcare.models.torch_nets import cnn_small, mlp  # noqa: E402

pytestmark = pytest.mark.torch

MLP = partial(mlp, hidden=(16, 8))
CNN = partial(cnn_small, channels=(4, 8), hidden=8)
SPECS = {
    "sgd": LocalTrainSpec(lr=0.05, max_steps=4, batch_size=8),
    "momentum_prox_l2": LocalTrainSpec(
        lr=0.05, max_steps=4, batch_size=8, prox_mu=0.1, momentum=0.9, l2=0.01
    ),
    "adam": LocalTrainSpec(lr=0.01, max_steps=4, batch_size=8, optimizer="adam"),
}


class Normed(torch.nn.Module):
    """Batch norm (saved float buffers and an int64 counter) and a layer tied to another."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.first = torch.nn.Linear(width, width)
        self.norm = torch.nn.BatchNorm1d(width)
        self.tied = torch.nn.Linear(width, width)
        self.tied.weight = self.first.weight
        self.out = torch.nn.Linear(width, 1)

    def forward(self, x: Any) -> Any:
        return self.out(torch.relu(self.tied(self.norm(self.first(x)))))


FACTORIES = {"mlp": (MLP, (6,)), "cnn": (CNN, (1, 8, 8)), "normed": (lambda s: Normed(s[0]), (6,))}


def data_for(shape: tuple[int, ...], n: int = 40) -> Dataset:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(n, *shape)).astype(np.float32)
    return Dataset(X, (X.reshape(n, -1)[:, 0] > 0).astype(float))


def scratch_maps(folder: Path) -> list[tuple[int, int, str]]:
    """``(start, end, line)`` of this process's mappings of scratch files in ``folder``."""
    out = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if f"{folder.resolve()}/{SCRATCH_PREFIX}" in line:
            start, end = (int(v, 16) for v in line.split()[0].split("-"))
            out.append((start, end, line))
    return out


def inside(arr: np.ndarray, spans: list[tuple[int, int, str]]) -> bool:
    at = arr.__array_interface__["data"][0]
    return any(start <= at and at + arr.nbytes <= end for start, end, _ in spans)


@pytest.mark.parametrize("net", list(FACTORIES))
@pytest.mark.parametrize("spec_name", list(SPECS))
def test_the_mapped_path_trains_bitwise_as_the_anonymous_one(
    net: str, spec_name: str, tmp_path: Path
) -> None:
    factory, shape = FACTORIES[net]
    adapter = make_torch_adapter(factory)
    start = adapter.init_params(shape, np.random.default_rng(1))
    data, spec = data_for(shape), SPECS[spec_name]
    tiny = ParamOffload(budget_bytes=1, folder=tmp_path / "scratch")
    mapped = adapter.fit(start, data, replace(spec, offload=tiny), rng(5))
    want = adapter.fit(start, data, spec, rng(5))
    spans = scratch_maps(tmp_path / "scratch")
    assert spans and all(line.endswith("(deleted)") for *_, line in spans)  # already unlinked
    # in the file: all but a tied layer's second name and batch norm's int64 counter (copied)
    elsewhere = {k for k in mapped.params if not inside(mapped.params[k], spans)}
    assert elsewhere == ({"tied.weight", "norm.num_batches_tracked"} if net == "normed" else set())
    assert mapped.owned
    for k in want.params:
        assert mapped.params[k].tobytes() == want.params[k].tobytes(), k
    assert mapped.metrics == want.metrics
    assert not any(inside(want.params[k], spans) for k in want.params)
    first = next(iter(start))
    assert not np.array_equal(mapped.params[first], start[first])  # it did train


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_the_scratch_file_is_owner_only_in_its_folder_and_gone_with_the_result(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "state" / "transfers" / "worker"
    adapter = make_torch_adapter(MLP)
    start = adapter.init_params((6,), rng(1))
    offload = ParamOffload(budget_bytes=start.nbytes * BUDGET_SHARE - 1, folder=folder)
    result = adapter.fit(
        start, data_for((6,)), LocalTrainSpec(max_steps=2, offload=offload), rng(2)
    )
    spans = scratch_maps(folder)
    assert 1 <= len(spans) <= len(start)  # a mapping per tensor (adjacent ones may merge)
    assert len({line.split()[4] for *_, line in spans}) == 1  # the same inode
    assert all(line.endswith("(deleted)") for *_, line in spans)
    assert list(folder.iterdir()) == []  # nothing left on disk
    for at, end, _ in spans:
        assert os.stat(f"/proc/self/map_files/{at:x}-{end:x}").st_mode & 0o777 == 0o600
    assert all(inside(result.params[k], spans) for k in result.params)  # all of them
    del result
    gc.collect()
    assert scratch_maps(folder) == []  # unmapped once the last array is gone


def test_params_within_the_budget_share_keep_the_anonymous_path(tmp_path: Path) -> None:
    adapter = make_torch_adapter(MLP)
    start = adapter.init_params((6,), rng(1))
    offload = ParamOffload(budget_bytes=start.nbytes * BUDGET_SHARE, folder=tmp_path)
    assert not offload.applies(start.nbytes) and offload.applies(start.nbytes + 1)
    spec = LocalTrainSpec(max_steps=2, offload=offload)
    result = adapter.fit(start, data_for((6,)), spec, rng(2))
    assert scratch_maps(tmp_path) == [] and result.owned
    assert (
        result.params
        == adapter.fit(start, data_for((6,)), LocalTrainSpec(max_steps=2), rng(2)).params
    )


def test_modules_whose_tensors_share_storage_are_left_as_they_are(tmp_path: Path) -> None:
    class Views(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.whole = torch.nn.Parameter(torch.zeros(4, 3))
            self.register_buffer("row", self.whole.detach()[0])

    module = Views()
    assert not ParamOffload(1, tmp_path).place(torch, module, 48)
    assert scratch_maps(tmp_path) == []


def test_budgets_are_positive_and_none_means_no_offload(tmp_path: Path) -> None:
    assert ParamOffload.from_budget(None, tmp_path) is None
    assert ParamOffload.from_budget(800, tmp_path) == ParamOffload(800_000_000, tmp_path)
    for bad in (0, -5.0, float("nan")):
        with pytest.raises(ModelError, match=f"memory_budget_mb must be > 0, got {bad}"):
            ParamOffload.from_budget(bad, tmp_path)


def test_a_scratch_folder_that_cannot_be_written_is_a_model_error(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(ModelError, match=r"cannot create the parameter scratch file in .*file"):
        next(scratch_map(blocked, [4096]))
    mappings = list(scratch_map(tmp_path / "ok", [10, 5000]))
    assert [len(m) for m in mappings] == [10, 5000] and list((tmp_path / "ok").iterdir()) == []
    mappings[1][4999] = 7  # writable


def resident_kb(span: tuple[int, int, str]) -> int:
    """The resident size of one mapping (``Rss`` in ``/proc/self/smaps``), in kB."""
    lines = Path("/proc/self/smaps").read_text().splitlines()
    head = f"{span[0]:x}-{span[1]:x} "
    at = next(i for i, line in enumerate(lines) if line.startswith(head))
    rss = next(line for line in lines[at + 1 :] if line.startswith("Rss:"))
    return int(rss.split()[1])


def test_the_mapped_params_can_be_written_back_dropped_and_read_again(tmp_path: Path) -> None:
    """What makes them not anonymous memory: the kernel may page them out to the file."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    adapter = make_torch_adapter(partial(mlp, hidden=(512, 256)))  # a few pages per tensor
    start = adapter.init_params((6,), rng(1))
    spec = LocalTrainSpec(max_steps=2, batch_size=8)
    want = adapter.fit(start, data_for((6,)), spec, rng(2))
    got = adapter.fit(
        start, data_for((6,)), replace(spec, offload=ParamOffload(1, tmp_path)), rng(2)
    )
    spans = scratch_maps(tmp_path)
    assert sum(resident_kb(s) for s in spans) > 0
    for at, end, _ in spans:  # MADV_PAGEOUT (Linux 5.4): write back and drop these pages
        if libc.madvise(ctypes.c_void_p(at), ctypes.c_size_t(end - at), 21) != 0:
            pytest.skip(f"madvise(MADV_PAGEOUT) failed: errno {ctypes.get_errno()}")
    assert sum(resident_kb(s) for s in spans) < sum(e - a for a, e, _ in spans) // 1024 // 4
    for k in want.params:  # read back from the file
        assert got.params[k].tobytes() == want.params[k].tobytes(), k
