"""PneumoniaMNIST (MedMNIST v2) split over simulated sites with a Dirichlet label skew.

The official train split (4,708 images) is partitioned over the sites by
:func:`~fedcare.data.partition.dirichlet_partition`. Each site's test split is its share of the
official validation split (524 images), drawn so that the site holds the same fraction of each
class of the validation split as it holds of the train split. The official test split (624
images) is kept whole in ``extra["holdout"]`` for benchmark evaluation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedcare.data.base import Dataset, FederatedDataset, SiteData
from fedcare.data.image_input import PNEUMONIAMNIST_INPUT
from fedcare.data.partition import class_fractions, dirichlet_partition, proportional_partition
from fedcare.data.source import fetch_files
from fedcare.errors import ConfigError, DataError

__all__ = ["load_pneumoniamnist"]

FOLDER = "pneumoniamnist"
FILE = "pneumoniamnist.npz"
_CLASSES = (0, 1)
#: Names of the image channels (axis 1 of ``X``): one grayscale channel.
CHANNELS: tuple[str, ...] = ("grayscale",)

CITATION = (
    "Yang J, Shi R, Wei D, Liu Z, Zhao L, Ke B, Pfister H, Ni B. MedMNIST v2 - A large-scale "
    "lightweight benchmark for 2D and 3D biomedical image classification. Scientific Data "
    "10:41 (2023), doi:10.1038/s41597-022-01721-8. Source images: Kermany DS et al. "
    "Identifying Medical Diagnoses and Treatable Diseases by Image-Based Deep Learning. Cell "
    "172(5):1122-1131.e9 (2018), doi:10.1016/j.cell.2018.02.010; Kermany D, Zhang K, Goldbaum "
    "M, Mendeley Data v2 (2018), doi:10.17632/rscbjbr9sj.2."
)
LICENSE = (
    "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/). Attribution: MedMNIST v2 "
    "(Yang et al. 2023, https://medmnist.com/) and the chest X-ray images of Kermany et al. "
    "(2018)."
)


def _split(arrays: dict[str, np.ndarray], name: str) -> Dataset:
    images, labels = arrays[f"{name}_images"], arrays[f"{name}_labels"]
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (len(images), 1):
        raise DataError(
            f"{FILE}: {name} images {images.shape} / labels {labels.shape} are not "
            "(n, 28, 28) / (n, 1)"
        )
    X = PNEUMONIAMNIST_INPUT.apply(images)  # what a bundle records for site predict
    return Dataset(X=X, y=labels[:, 0].astype(np.int64))


def _read(path: Path) -> dict[str, Dataset]:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    return {name: _split(arrays, name) for name in ("train", "val", "test")}


def _check(num_sites: int, alpha: float, seed: int, min_size: int) -> None:
    for name, value in (("num_sites", num_sites), ("seed", seed), ("min_size", min_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    if num_sites < 1:
        raise ConfigError(f"num_sites must be at least 1, got {num_sites!r}")
    if seed < 0:
        raise ConfigError(f"seed must be non-negative, got {seed!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ConfigError(f"alpha must be a positive number, got {alpha!r}")


def _describe(sites: list[SiteData], holdout: Dataset, alpha: float, seed: int) -> str:
    lines = [
        "PneumoniaMNIST (MedMNIST v2): pediatric chest X-rays, 1x28x28 in [0, 1], label "
        f"1 = pneumonia, 0 = normal. Official train split over {len(sites)} simulated sites "
        f"with Dirichlet label skew (alpha={alpha}, seed={seed}); each site's test split is its "
        "class-proportional share of the official validation split; the official test split "
        f"({len(holdout)} images) is extra['holdout'].",
        "Per site (train/test images, pneumonia):",
    ]
    for s in sites:
        lines.append(
            f"  {s.site_id}: {len(s.train)}/{len(s.test)} images, "
            f"{int(s.train.y.sum())}/{int(s.test.y.sum())} pneumonia"
        )
    return "\n".join(lines)


def load_pneumoniamnist(
    num_sites: int = 5, alpha: float = 0.5, seed: int = 0, min_size: int = 50
) -> FederatedDataset:
    """PneumoniaMNIST over ``num_sites`` simulated sites with a Dirichlet label skew.

    Parameters
    ----------
    num_sites:
        Number of sites, ids ``site-0`` .. ``site-<num_sites - 1>``.
    alpha:
        Dirichlet concentration: small values skew the label mix of the sites strongly.
    seed:
        Seed of the partition; the same seed gives the same sites.
    min_size:
        Fewest training images any site may get.

    Returns
    -------
    FederatedDataset
        Binary task, ``X`` float32 of shape ``(n, 1, 28, 28)``; ``feature_names`` names the
        one channel; ``extra["holdout"]`` is the official test split as a :class:`Dataset`.

    Raises
    ------
    ConfigError
        If an option is invalid or no partition meets ``min_size``.
    DataError
        If the file cannot be fetched, verified or parsed.
    """
    _check(num_sites, alpha, seed, min_size)
    splits = _read(fetch_files(FOLDER, (FILE,))[FILE])
    train, val, holdout = splits["train"], splits["val"], splits["test"]
    rng = np.random.default_rng(seed)
    train_parts = dirichlet_partition(train.y, num_sites, float(alpha), rng, min_size=min_size)
    fractions = class_fractions(train.y, train_parts, classes=_CLASSES)
    val_parts = proportional_partition(val.y, fractions, rng, classes=_CLASSES)
    sites = [
        SiteData(site_id=f"site-{k}", train=train.take(tr), test=val.take(te))
        for k, (tr, te) in enumerate(zip(train_parts, val_parts, strict=True))
    ]
    return FederatedDataset(
        name="pneumoniamnist",
        task="binary",
        sites=tuple(sites),
        feature_names=CHANNELS,
        metrics=("auroc", "accuracy"),
        description=_describe(sites, holdout, alpha, seed),
        citation=CITATION,
        license=LICENSE,
        extra={"holdout": holdout, "num_sites": num_sites, "alpha": alpha, "seed": seed},
    )
