"""Dataset fingerprints: equal data, equal digest; any change in rows, name or options shows."""

from __future__ import annotations

import re

import numpy as np
import pytest

from fedcare.data.base import Dataset, SiteData
from fedcare.data.fingerprint import dataset_fingerprint, site_fingerprint
from fedcare.errors import DataError
from fedcare.records.messages import Task
from fedcare.site.runtime import SiteRuntime


def _site(seed: int = 0, n: int = 20, survival: bool = False) -> SiteData:
    rng = np.random.default_rng(seed)

    def split(rows: int) -> Dataset:
        time = rng.uniform(1, 10, rows) if survival else None
        return Dataset(rng.normal(size=(rows, 3)), rng.integers(0, 2, rows).astype(float), time)

    return SiteData("a", train=split(n), test=split(n // 2))


def test_equal_data_gives_the_same_digest_in_the_documented_form() -> None:
    one, two = dataset_fingerprint(_site(1), name="x"), dataset_fingerprint(_site(1), name="x")
    assert one == two
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", one)


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("field", ["X", "y", "time"])
def test_one_changed_value_changes_the_digest(split: str, field: str) -> None:
    site = _site(2, survival=True)
    part = getattr(site, split)
    arrays = {"X": part.X.copy(), "y": part.y.copy(), "time": part.time.copy()}
    arrays[field].flat[0] += 1e-9
    splits = {"train": site.train, "test": site.test, split: Dataset(**arrays)}
    changed = SiteData("a", **splits)
    assert dataset_fingerprint(changed) != dataset_fingerprint(site)


def test_dtype_shape_name_and_options_are_part_of_the_digest() -> None:
    site = _site(3)
    base = dataset_fingerprint(site, name="d", options={"protocol": "raw"})
    as32 = SiteData("a", Dataset(site.train.X.astype(np.float32), site.train.y), site.test)
    reshaped = SiteData("a", Dataset(site.train.X.reshape(20, 3, 1), site.train.y), site.test)
    others = {
        dataset_fingerprint(as32, name="d", options={"protocol": "raw"}),
        dataset_fingerprint(reshaped, name="d", options={"protocol": "raw"}),
        dataset_fingerprint(site, name="e", options={"protocol": "raw"}),
        dataset_fingerprint(site, name="d", options={"protocol": "flamby"}),
        dataset_fingerprint(site, name="d"),
    }
    assert base not in others and len(others) == 5
    # Options are canonical JSON: key order does not matter.
    assert dataset_fingerprint(site, name="d", options={"b": 1, "a": 2}) == dataset_fingerprint(
        site, name="d", options={"a": 2, "b": 1}
    )


def test_unhashable_options_are_a_data_error_naming_the_dataset() -> None:
    with pytest.raises(DataError, match="dataset 'd': options"):
        dataset_fingerprint(_site(), name="d", options={"bad": object()})


def test_site_fingerprint_is_cached_per_object_and_name() -> None:
    site = _site(4)
    first = site_fingerprint(site, "d")
    site.train.X.flags.writeable = True
    site.train.X[0, 0] += 1.0  # the cache answers for the object, not its current bytes
    assert site_fingerprint(site, "d") == first
    assert dataset_fingerprint(site, name="d") != first
    assert site_fingerprint(site, "e") != first


@pytest.mark.parametrize("kind", ["fit", "evaluate", "stats"])
def test_every_reply_carries_the_fingerprint_and_train_rows(kind: str) -> None:
    from fedcare.models.registry import build_model

    site = _site(5)
    params = build_model({"kind": "logistic"}).init_params((3,), np.random.default_rng(0))
    task = Task(
        study_id="s",
        round=1,
        site_id="a",
        kind=kind,  # type: ignore[arg-type]
        params=params,
        config={"seed": 1, "lr": 0.1},
        plan={"model": {"kind": "logistic"}, "dataset": "d"},
    )
    runtime = SiteRuntime(site)
    reply = {"fit": runtime.fit, "evaluate": runtime.evaluate, "stats": runtime.stats}[kind](task)
    assert reply.info == {
        "dataset_fingerprint": dataset_fingerprint(site, name="d"),
        "num_rows": "20",
    }
