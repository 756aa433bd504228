"""fedcare.data: datasets split over sites, and where their files come from.

The interface is in :mod:`fedcare.data.base`; :func:`load_dataset` loads a built-in real
dataset by name; :func:`fetch` gets a verified file from the cache, a canonical URL or the
offline mirror (``FEDCARE_DATA_MIRROR``).
"""

from fedcare.data.base import Dataset, FederatedDataset, SiteData, TaskType
from fedcare.data.eicu import load_eicu
from fedcare.data.heart import load_heart_disease
from fedcare.data.partition import class_fractions, dirichlet_partition, proportional_partition
from fedcare.data.pneumonia import load_pneumoniamnist
from fedcare.data.registry import DATASET_NAMES, load_dataset
from fedcare.data.source import FileSpec, fetch, file_spec
from fedcare.data.synthetic import load_synthetic
from fedcare.data.tcga import load_tcga_brca

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
