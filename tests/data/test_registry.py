"""Loading built-in datasets by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

import fedcare.data as data
from fedcare.data.base import FederatedDataset
from fedcare.data.registry import _LOADERS, DATASET_NAMES, load_dataset
from fedcare.errors import ConfigError
from fedcare.records.config_file import BASE_DIR_OPTION, FILE_DATASETS


def test_names() -> None:
    assert DATASET_NAMES == (
        "heart-disease",
        "tcga-brca",
        "eicu",
        "pneumoniamnist",
        "synthetic",
    )


def test_records_names_exactly_the_datasets_that_read_files_by_relative_path() -> None:
    # Study files (fedcare.records) resolve these datasets' paths from their own folder without
    # importing the data layer; the list must match the loaders that take ``base_dir``.
    takes_base_dir = {
        name
        for name, loader in _LOADERS.items()
        if BASE_DIR_OPTION in inspect.signature(loader).parameters
    }
    assert takes_base_dir == set(FILE_DATASETS)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        load_dataset("mimic")
    assert "'mimic'" in str(info.value)
    for name in DATASET_NAMES:
        assert name in str(info.value)


def test_unknown_option_is_named() -> None:
    with pytest.raises(ConfigError, match=r"'protcol'.*accepted: protocol"):
        load_dataset("heart-disease", protcol="raw")
    with pytest.raises(ConfigError, match=r"'seed'.*accepted: split_seed"):
        load_dataset("tcga-brca", seed=1)


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_every_dataset_is_described(
    name: str, load_from_mirror: Callable[..., FederatedDataset]
) -> None:
    ds = load_from_mirror(load_dataset, name=name)
    assert ds.name == name
    assert ds.description and ds.citation and ds.license and ds.feature_names
    for s in ds.sites:
        assert len(s.train) > 0 and len(s.test) > 0
        assert s.train.input_shape == s.test.input_shape


def test_options_pass_through(load_from_mirror: Callable[..., FederatedDataset]) -> None:
    ds = load_from_mirror(load_dataset, name="eicu", split="region")
    assert len(ds.sites) == 4


def test_package_exports() -> None:
    for name in (
        "Dataset",
        "FederatedDataset",
        "SiteData",
        "TaskType",
        "load_dataset",
        "DATASET_NAMES",
        "fetch",
        "FileSpec",
        "dirichlet_partition",
    ):
        assert name in data.__all__ and getattr(data, name) is not None
