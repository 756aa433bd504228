"""TCGA-BRCA clinical survival data over 6 regions, as in FLamby's Fed-TCGA-BRCA.

FLamby (``flamby/datasets/fed_tcga_brca/dataset.py``) reads ``brca.csv`` as it is: columns
1-39 are the features (``age_at_index`` in years and 38 one-hot 0/1 indicators), columns 40-41
are the event indicator ``E`` and the time ``T`` in days. There is no scaling, imputation or
other preprocessing (none is needed: no values are missing). A centre's rows are the patients
whose ``fold2`` in ``train_test_split.csv`` is ``train_<c>`` / ``test_<c>``, in ``brca.csv``
order; the 8 patients of region "Other" are in no centre. :func:`load_tcga_brca` does the same:
site ``region-<c>`` is FLamby's centre ``c``.

``split_seed`` (not FLamby's; default ``None``: FLamby's stored split) draws another split of
each centre's patients for benchmarks over repeated splits: per centre,
``sklearn.model_selection.train_test_split`` of the centre's rows with as many test rows as
FLamby's split holds, stratified on the event indicator ``E`` (FLamby's split is stratified on
censoring), ``random_state=split_seed``; rows stay in ``brca.csv`` order within each part.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedcare.data.base import Dataset, FederatedDataset, SiteData
from fedcare.data.source import fetch_files
from fedcare.errors import ConfigError, DataError

__all__ = ["TCGA_REGIONS", "load_tcga_brca"]

FOLDER = "tcga_brca"
#: FLamby centre index -> region.
TCGA_REGIONS: tuple[str, ...] = ("Northeast", "South", "West", "Midwest", "Europe", "Canada")
N_FEATURES = 39

CITATION = (
    "The Cancer Genome Atlas (TCGA) Research Network, TCGA-BRCA, via the NCI Genomic Data "
    "Commons (https://portal.gdc.cancer.gov/projects/TCGA-BRCA); clinical data from Liu J et al. "
    "An Integrated TCGA Pan-Cancer Clinical Data Resource. Cell 173(2):400-416.e11 (2018), "
    "doi:10.1016/j.cell.2018.02.052; preprocessing as in Andreux M et al., Federated Survival "
    "Analysis with Discrete-Time Cox Models, arXiv:2006.08997 (2020); federated split from "
    "Ogier du Terrail J et al., FLamby, NeurIPS 2022 Datasets and Benchmarks "
    "(https://github.com/owkin/FLamby)."
)
LICENSE = (
    "TCGA open-access data under the NCI GDC data access terms and policies "
    "(https://gdc.cancer.gov/access-data/data-access-processes-and-tools, "
    "https://gdc.cancer.gov/about-gdc/gdc-policies): never attempt to identify individual "
    "research participants. The preprocessed files come from FLamby (code under MIT), which "
    "does not own the data; check the applicable terms before use."
)


def _read(brca_path: Path, split_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    brca = pd.read_csv(brca_path)
    split = pd.read_csv(split_path)
    expected = N_FEATURES + 3
    if brca.shape[1] != expected or list(brca.columns[[0, -2, -1]]) != ["pid", "E", "T"]:
        raise DataError(
            f"brca.csv must have {expected} columns: pid, {N_FEATURES} features, E, T; "
            f"got {brca.shape[1]} columns"
        )
    if not brca["pid"].is_unique or not split["pid"].is_unique:
        raise DataError("brca.csv and train_test_split.csv must list each pid once")
    if brca.iloc[:, 1:].isna().to_numpy().any():
        raise DataError("brca.csv has missing values; FLamby's file has none")
    return brca, split


def _redraw(rows: dict[str, pd.DataFrame], seed: int) -> dict[str, pd.DataFrame]:
    """Another stratified split of the centre's rows, with as many test rows as FLamby's."""
    from sklearn.model_selection import train_test_split  # slow to import: only when used

    both = pd.concat([rows["train"], rows["test"]]).sort_index()  # brca.csv order
    train, test = train_test_split(
        np.arange(len(both)),
        test_size=len(rows["test"]),
        random_state=seed,
        shuffle=True,
        stratify=both["E"].to_numpy(),
    )
    return {"train": both.iloc[np.sort(train)], "test": both.iloc[np.sort(test)]}


def _site(brca: pd.DataFrame, split: pd.DataFrame, center: int, seed: int | None) -> SiteData:
    rows = {}
    for fold in ("train", "test"):
        pids = split.loc[split["fold2"] == f"{fold}_{center}", "pid"]
        rows[fold] = brca[brca["pid"].isin(pids)]
        if len(rows[fold]) != len(pids):
            missing = len(pids) - len(rows[fold])
            raise DataError(f"{missing} pids of {fold}_{center} are not in brca.csv")
    if seed is not None:
        rows = _redraw(rows, seed)
    parts = {}
    for fold, part in rows.items():
        parts[fold] = Dataset(
            X=part.iloc[:, 1 : 1 + N_FEATURES].to_numpy(dtype=float),
            y=part["E"].to_numpy().astype(np.int64),
            time=part["T"].to_numpy(dtype=float),
        )
    return SiteData(site_id=f"region-{center}", train=parts["train"], test=parts["test"])


def _describe(sites: list[SiteData], seed: int | None) -> str:
    split = (
        "FLamby's fixed train/test split (stratified on censoring)"
        if seed is None
        else f"a per-region split stratified on the event with random_state={seed} (FLamby's "
        "test sizes; not FLamby's split: a repeated split)"
    )
    lines = [
        "TCGA-BRCA clinical survival data as in FLamby's Fed-TCGA-BRCA: 1,088 patients in 6 "
        f"regions (from the tissue source site in the TCGA barcode), {split}. Features: age at "
        "diagnosis (years, unscaled) and 38 one-hot indicators (ethnicity, race, AJCC "
        "stage/T/N/M, staging edition, ICD-10, morphology, diagnosis, prior/synchronous "
        "malignancy, therapy, tumour stage). "
        "Target: y = event (death observed), time = days to death or last follow-up.",
        "Per site (train/test patients, events):",
    ]
    for region, s in zip(TCGA_REGIONS, sites, strict=True):
        lines.append(
            f"  {s.site_id} ({region}): {len(s.train)}/{len(s.test)} patients, "
            f"{int(s.train.y.sum())}/{int(s.test.y.sum())} events"
        )
    return "\n".join(lines)


def load_tcga_brca(split_seed: int | None = None) -> FederatedDataset:
    """TCGA-BRCA survival data over FLamby's 6 regions, with FLamby's train/test split.

    Parameters
    ----------
    split_seed:
        ``None`` (default): FLamby's stored split. An integer in ``0 .. 2**32 - 1``: another
        split of each region's patients, stratified on the event, with FLamby's test sizes
        (``random_state`` of ``train_test_split``), for repeated-split benchmarks.

    Returns
    -------
    FederatedDataset
        Sites ``region-0`` .. ``region-5`` (Northeast, South, West, Midwest, Europe, Canada);
        39 unscaled features; ``y`` = event indicator, ``time`` = days; survival task scored by
        the C-index.

    Raises
    ------
    ConfigError
        If ``split_seed`` is neither ``None`` nor an integer in ``0 .. 2**32 - 1``.
    DataError
        If a file cannot be fetched, verified or parsed.
    """
    if split_seed is not None:
        if isinstance(split_seed, bool) or not isinstance(split_seed, int | np.integer):
            raise ConfigError(f"split_seed must be None or an integer, got {split_seed!r}")
        if not 0 <= split_seed < 2**32:
            raise ConfigError(f"split_seed must be in 0 .. 2**32 - 1, got {split_seed}")
        split_seed = int(split_seed)
    paths = fetch_files(FOLDER, ("brca.csv", "train_test_split.csv"))
    brca, split = _read(paths["brca.csv"], paths["train_test_split.csv"])
    sites = [_site(brca, split, c, split_seed) for c in range(len(TCGA_REGIONS))]
    return FederatedDataset(
        name="tcga-brca",
        task="survival",
        sites=tuple(sites),
        feature_names=tuple(str(c) for c in brca.columns[1 : 1 + N_FEATURES]),
        metrics=("cindex",),
        description=_describe(sites, split_seed),
        citation=CITATION,
        license=LICENSE,
        extra={
            "regions": dict(zip([s.site_id for s in sites], TCGA_REGIONS, strict=True)),
            "split_seed": split_seed,
        },
    )
