"""fedcare.data: datasets split over sites, and where their files come from.

The interface is in :mod:`fedcare.data.base`; :func:`load_dataset` loads a built-in real
dataset by name; :func:`fetch` gets a verified file from the cache, a canonical URL or the
offline mirror (``FEDCARE_DATA_MIRROR``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedcare.data.base import Dataset, FederatedDataset, SiteData, TaskType
    from fedcare.data.eicu import load_eicu
    from fedcare.data.heart import load_heart_disease
    from fedcare.data.partition import class_fractions, dirichlet_partition, proportional_partition
    from fedcare.data.pneumonia import load_pneumoniamnist
    from fedcare.data.registry import DATASET_NAMES, load_dataset
    from fedcare.data.source import FileSpec, fetch, file_spec
    from fedcare.data.synthetic import load_synthetic
    from fedcare.data.tcga import load_tcga_brca

# Imported on first use (PEP 562), so that importing one submodule (a study package's
# runner imports fedcare.models.base and fedcare.data.base) does not import them all.
_WHERE = {
    "Dataset": "fedcare.data.base",
    "FederatedDataset": "fedcare.data.base",
    "SiteData": "fedcare.data.base",
    "TaskType": "fedcare.data.base",
    "load_eicu": "fedcare.data.eicu",
    "load_heart_disease": "fedcare.data.heart",
    "class_fractions": "fedcare.data.partition",
    "dirichlet_partition": "fedcare.data.partition",
    "proportional_partition": "fedcare.data.partition",
    "load_pneumoniamnist": "fedcare.data.pneumonia",
    "DATASET_NAMES": "fedcare.data.registry",
    "load_dataset": "fedcare.data.registry",
    "FileSpec": "fedcare.data.source",
    "fetch": "fedcare.data.source",
    "file_spec": "fedcare.data.source",
    "load_synthetic": "fedcare.data.synthetic",
    "load_tcga_brca": "fedcare.data.tcga",
}

__all__ = [
    "DATASET_NAMES",
    "Dataset",
    "FederatedDataset",
    "FileSpec",
    "SiteData",
    "TaskType",
    "class_fractions",
    "dirichlet_partition",
    "fetch",
    "file_spec",
    "load_dataset",
    "load_eicu",
    "load_heart_disease",
    "load_pneumoniamnist",
    "load_synthetic",
    "load_tcga_brca",
    "proportional_partition",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
