"""TCGA-BRCA clinical survival data over 6 regions, as in FLamby's Fed-TCGA-BRCA.

FLamby (``flamby/datasets/fed_tcga_brca/dataset.py``) reads ``brca.csv`` as it is: columns
1-39 are the features (``age_at_index`` in years and 38 one-hot 0/1 indicators), columns 40-41
are the event indicator ``E`` and the time ``T`` in days. There is no scaling, imputation or
other preprocessing (none is needed: no values are missing). A centre's rows are the patients
whose ``fold2`` in ``train_test_split.csv`` is ``train_<c>`` / ``test_<c>``, in ``brca.csv``
order; the 8 patients of region "Other" are in no centre. :func:`load_tcga_brca` does the same:
site ``region-<c>`` is FLamby's centre ``c``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedcare.data.base import Dataset, FederatedDataset, SiteData
from fedcare.data.source import fetch_files
from fedcare.errors import DataError

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


def _site(brca: pd.DataFrame, split: pd.DataFrame, center: int) -> SiteData:
    parts = {}
    for fold in ("train", "test"):
        pids = split.loc[split["fold2"] == f"{fold}_{center}", "pid"]
        rows = brca[brca["pid"].isin(pids)]
        if len(rows) != len(pids):
            raise DataError(f"{len(pids) - len(rows)} pids of {fold}_{center} are not in brca.csv")
        parts[fold] = Dataset(
            X=rows.iloc[:, 1 : 1 + N_FEATURES].to_numpy(dtype=float),
            y=rows["E"].to_numpy().astype(np.int64),
            time=rows["T"].to_numpy(dtype=float),
        )
    return SiteData(site_id=f"region-{center}", train=parts["train"], test=parts["test"])


def _describe(sites: list[SiteData]) -> str:
    lines = [
        "TCGA-BRCA clinical survival data as in FLamby's Fed-TCGA-BRCA: 1,088 patients in 6 "
        "regions (from the tissue source site in the TCGA barcode), FLamby's fixed train/test "
        "split (stratified on censoring). Features: age at diagnosis (years, unscaled) and 38 "
        "one-hot indicators (ethnicity, race, AJCC stage/T/N/M, staging edition, ICD-10, "
        "morphology, diagnosis, prior/synchronous malignancy, therapy, tumour stage). "
        "Target: y = event (death observed), time = days to death or last follow-up.",
        "Per site (train/test patients, events):",
    ]
    for region, s in zip(TCGA_REGIONS, sites, strict=True):
        lines.append(
            f"  {s.site_id} ({region}): {len(s.train)}/{len(s.test)} patients, "
            f"{int(s.train.y.sum())}/{int(s.test.y.sum())} events"
        )
    return "\n".join(lines)


def load_tcga_brca() -> FederatedDataset:
    """TCGA-BRCA survival data over FLamby's 6 regions, with FLamby's train/test split.

    Returns
    -------
    FederatedDataset
        Sites ``region-0`` .. ``region-5`` (Northeast, South, West, Midwest, Europe, Canada);
        39 unscaled features; ``y`` = event indicator, ``time`` = days; survival task scored by
        the C-index.

    Raises
    ------
    DataError
        If a file cannot be fetched, verified or parsed.
    """
    paths = fetch_files(FOLDER, ("brca.csv", "train_test_split.csv"))
    brca, split = _read(paths["brca.csv"], paths["train_test_split.csv"])
    sites = [_site(brca, split, c) for c in range(len(TCGA_REGIONS))]
    return FederatedDataset(
        name="tcga-brca",
        task="survival",
        sites=tuple(sites),
        feature_names=tuple(str(c) for c in brca.columns[1 : 1 + N_FEATURES]),
        metrics=("cindex",),
        description=_describe(sites),
        citation=CITATION,
        license=LICENSE,
        extra={"regions": dict(zip([s.site_id for s in sites], TCGA_REGIONS, strict=True))},
    )
