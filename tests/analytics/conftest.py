from __future__ import annotations

import pytest

from fedcare.data.base import FederatedDataset
from fedcare.data.registry import load_dataset
from tests.conftest import require_mirror


@pytest.fixture(scope="session")
def heart() -> FederatedDataset:
    require_mirror()
    return load_dataset("heart-disease", protocol="raw")


@pytest.fixture(scope="session")
def tcga() -> FederatedDataset:
    require_mirror()
    return load_dataset("tcga-brca")
