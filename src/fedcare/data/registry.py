"""Built-in datasets by name: ``load_dataset("heart-disease", protocol="raw")``."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from fedcare.data.base import FederatedDataset
from fedcare.data.cdm.loader import load_cdm
from fedcare.data.eicu import load_eicu
from fedcare.data.heart import load_heart_disease
from fedcare.data.pneumonia import load_pneumoniamnist
from fedcare.data.synthetic import load_synthetic
from fedcare.data.tcga import load_tcga_brca
from fedcare.errors import ConfigError
from fedcare.records.config_file import BASE_DIR_OPTION, with_base_dir

__all__ = ["BASE_DIR_OPTION", "DATASET_NAMES", "MAPPED_DATASET", "load_dataset", "with_base_dir"]

_LOADERS: dict[str, Callable[..., FederatedDataset]] = {
    "heart-disease": load_heart_disease,
    "tcga-brca": load_tcga_brca,
    "eicu": load_eicu,
    "pneumoniamnist": load_pneumoniamnist,
    "synthetic": load_synthetic,
}
#: The built-in datasets (each loads with no options).
DATASET_NAMES: tuple[str, ...] = tuple(_LOADERS)
#: Site tables mapped to a common data model (:mod:`fedcare.data.cdm.loader`); needs options.
MAPPED_DATASET = "cdm"
_LOADERS[MAPPED_DATASET] = load_cdm


def load_dataset(name: str, **options: object) -> FederatedDataset:
    """Load a built-in dataset by name.

    Parameters
    ----------
    name:
        One of :data:`DATASET_NAMES`: ``heart-disease``, ``tcga-brca``, ``eicu``,
        ``pneumoniamnist``, ``synthetic`` (seeded, generated: no download), ``cdm`` (site
        tables mapped to a common data model: :mod:`fedcare.data.cdm.loader`).
    **options:
        Keyword options of that dataset's loader, e.g. ``protocol="raw"`` for
        ``heart-disease``, ``split="region"`` for ``eicu``, ``num_sites=10`` for
        ``pneumoniamnist``.

    Returns
    -------
    FederatedDataset
        The dataset split over its sites.

    Raises
    ------
    ConfigError
        If the name is unknown (the message lists the known names), an option is unknown (the
        message names it and the accepted ones) or an option value is invalid.
    DataError
        If the data cannot be fetched, verified or parsed.
    """
    loader = _LOADERS.get(name)
    if loader is None:
        known = ", ".join((*DATASET_NAMES, MAPPED_DATASET))
        raise ConfigError(f"unknown dataset {name!r}; known datasets: {known}")
    accepted = list(inspect.signature(loader).parameters)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for dataset {name!r}; "
            f"accepted: {', '.join(accepted) if accepted else 'none'}"
        )
    return loader(**options)
