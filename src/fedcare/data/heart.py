"""UCI Heart Disease over its 4 hospitals, with FLamby's Fed-Heart-Disease protocol.

FLamby (``flamby/datasets/fed_heart_disease/dataset.py``) builds the benchmark like this, and
:func:`load_heart_disease` does the same:

* **Columns.** Of the 14 processed attributes, ``slope``, ``ca`` and ``thal`` (the most
  incomplete ones) are dropped; ``num`` is the label, binarised as ``num > 0``.
* **Rows.** Every row with a missing value (``?``) in the 10 remaining feature columns or the
  label is dropped: 303 / 261 / 46 / 130 rows are kept (Cleveland / Hungary / Switzerland /
  VA), 740 in all. ``chol == 0`` is *not* treated as missing by FLamby.
* **Encoding.** ``cp`` (chest pain type, 1-4) and ``restecg`` (0-2) are one-hot encoded with the
  first level dropped, giving 13 features: the 8 other columns in file order, then
  ``cp_2, cp_3, cp_4, restecg_1, restecg_2``.
* **Split.** Per centre, ``sklearn.model_selection.train_test_split`` of the row positions with
  ``train_size=0.66``, ``test_size=1 - 0.66``, ``random_state=43``, ``shuffle=True``, stratified
  on the binary label when both classes have more than 2 rows (not at Switzerland, which has a
  single negative row). Train / test sizes: 199/104, 172/89, 30/16, 85/45 (FLamby's README).
  ``split_seed`` (default 43, FLamby's) draws another split of the same rows the same way, for
  benchmarks over repeated splits; only 43 is FLamby's benchmark.
* **Scaling.** Per centre, z-scores with the mean and the (unbiased, ``ddof=1``) standard
  deviation of that centre's **train** rows only, applied to its train and test rows:
  ``(x - mean) / (std + 1e-9)``. A feature constant in a centre's train rows (``chol`` at
  Switzerland, all 0) becomes 0.

``protocol="raw"`` keeps the same rows, encoding and split, without scaling, and marks the
missing codes as ``NaN``: ``chol == 0`` (all Switzerland rows, 33 VA rows) and
``trestbps == 0`` (1 VA row), so that a site can standardise and impute with global statistics
from a federated statistics round.

``target="severity"`` (not FLamby's) keeps the same rows, features and split but labels each
row with ``num`` itself, 0 (no disease) to 4, as a 5-class problem (dataset
``heart-disease-severity``, task ``multiclass``). The Hungarian file records ``num`` only as 0
or 1, so that site holds classes 0 and 1 alone; Switzerland has 8 rows of class 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from fedcare.data.base import Dataset, FederatedDataset, SiteData
from fedcare.data.source import fetch_files
from fedcare.errors import ConfigError, DataError
from fedcare.records.tasks import METRICS_BY_TASK

__all__ = ["HEART_FEATURES", "HEART_SITES", "SEVERITY_CLASSES", "load_heart_disease"]

FOLDER = "heart_disease"
#: Site id -> file of the processed 14-attribute data.
HEART_SITES: dict[str, str] = {
    "cleveland": "processed.cleveland.data",
    "hungary": "processed.hungarian.data",
    "switzerland": "processed.switzerland.data",
    "va": "processed.va.data",
}
_SITE_NAMES = {
    "cleveland": "Cleveland Clinic Foundation",
    "hungary": "Hungarian Institute of Cardiology, Budapest",
    "switzerland": "University Hospitals of Zurich and Basel",
    "va": "V.A. Medical Center, Long Beach",
}
_COLUMNS = (
    "age", "sex", "cp", "trestbps", "chol", "fbs", "restecg",
    "thalach", "exang", "oldpeak", "slope", "ca", "thal", "num",
)  # fmt: skip
_KEPT = ("age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak")
_DUMMIES = {"cp": (2, 3, 4), "restecg": (1, 2)}  # levels kept; cp=1 and restecg=0 dropped
_LEVELS = {"cp": {1, 2, 3, 4}, "restecg": {0, 1, 2}}
#: The 13 feature names, in column order.
HEART_FEATURES: tuple[str, ...] = (
    *(c for c in _KEPT if c not in _DUMMIES),
    *(f"{c}_{level}" for c, levels in _DUMMIES.items() for level in levels),
)
#: Number of classes of ``target="severity"`` (``num`` 0..4).
SEVERITY_CLASSES = 5
TRAIN_FRACTION = 0.66
SPLIT_SEED = 43
_EPS = 1e-9

CITATION = (
    "Janosi A, Steinbrunn W, Pfisterer M, Detrano R (1988). Heart Disease. UCI Machine "
    "Learning Repository. https://doi.org/10.24432/C52P4X. Protocol: Ogier du Terrail J et al. "
    "FLamby: Datasets and Benchmarks for Cross-Silo Federated Learning in Realistic Healthcare "
    "Settings. NeurIPS 2022 Datasets and Benchmarks."
)
LICENSE = (
    "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/). Attribution: Andras Janosi "
    "(Hungarian Institute of Cardiology, Budapest), William Steinbrunn (University Hospital, "
    "Zurich), Matthias Pfisterer (University Hospital, Basel), Robert Detrano (V.A. Medical "
    "Center, Long Beach and Cleveland Clinic Foundation); UCI Machine Learning Repository."
)


def _read_site(path: Path, site_id: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """FLamby's rows of one file: (features before encoding, binary label, ``num``)."""
    try:
        raw = pd.read_csv(path, header=None, names=list(_COLUMNS), na_values="?")
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"heart disease {site_id}: cannot parse {path}: {exc}") from exc
    kept = raw[[*_KEPT, "num"]].dropna(axis=0).reset_index(drop=True)
    kept = kept.apply(pd.to_numeric, errors="raise").astype(float)
    num = kept.pop("num").to_numpy().astype(np.int64)
    if ((num < 0) | (num >= SEVERITY_CLASSES)).any():
        raise DataError(f"heart disease {site_id}: num outside 0..4 in {path}")
    return kept, (num > 0).astype(np.int64), num


def _encode(frame: pd.DataFrame, site_id: str) -> np.ndarray:
    """The 13 features: non-categorical columns, then first-level-dropped one-hots."""
    for column, levels in _LEVELS.items():
        bad = set(frame[column].unique()) - levels
        if bad:
            raise DataError(f"heart disease {site_id}: unexpected {column} values {sorted(bad)}")
    plain = [frame[c].to_numpy() for c in _KEPT if c not in _DUMMIES]
    dummies = [
        (frame[c].to_numpy() == level).astype(float)
        for c, levels in _DUMMIES.items()
        for level in levels
    ]
    return np.column_stack(plain + dummies)


def _split(label: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """FLamby's per-centre split at ``seed``; returns sorted (train, test) row positions."""
    from sklearn.model_selection import train_test_split  # slow to import: only when used

    counts = np.bincount(label, minlength=2)
    stratify = label if np.all(counts > 2) else None
    train, test = train_test_split(
        np.arange(len(label)),
        test_size=1.0 - TRAIN_FRACTION,
        train_size=TRAIN_FRACTION,
        random_state=seed,
        shuffle=True,
        stratify=stratify,
    )
    return np.sort(train), np.sort(test)


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(axis=0)
    scale = train.std(axis=0, ddof=1) + _EPS
    return (train - mean) / scale, (test - mean) / scale


def _mark_missing(X: np.ndarray) -> np.ndarray:
    out = X.copy()
    for name in ("chol", "trestbps"):
        column = out[:, HEART_FEATURES.index(name)]
        column[column == 0] = np.nan
    return out


def _site(site_id: str, path: Path, protocol: str, target: str, seed: int) -> SiteData:
    frame, disease, num = _read_site(path, site_id)
    X = _encode(frame, site_id)
    train_idx, test_idx = _split(disease, seed)  # the same split for both targets
    label = num if target == "severity" else disease
    X_train, X_test = X[train_idx], X[test_idx]
    if protocol == "flamby":
        X_train, X_test = _standardize(X_train, X_test)
    else:
        X_train, X_test = _mark_missing(X_train), _mark_missing(X_test)
    return SiteData(
        site_id=site_id,
        train=Dataset(X=X_train, y=label[train_idx]),
        test=Dataset(X=X_test, y=label[test_idx]),
    )


def _describe(sites: list[SiteData], protocol: str, target: str, seed: int) -> str:
    label = (
        "label: angiographic disease (num > 0)"
        if target == "disease"
        else "label: disease severity num (0-4, 5 classes; not FLamby's label)"
    )
    lines = [
        "UCI Heart Disease (processed Cleveland, Hungarian, Switzerland and VA Long Beach files), "
        f"one site per hospital; {label}. FLamby's Fed-Heart-"
        "Disease rows (no missing value in the 10 kept columns; slope, ca, thal dropped), "
        "13 features (cp and restecg one-hot), FLamby's per-centre 66/34 split "
        + (
            "(random_state=43)."
            if seed == SPLIT_SEED
            else f"with random_state={seed} (not FLamby's 43: a repeated split)."
        ),
        "Scaling: per-centre z-scores from the centre's train rows (FLamby)."
        if protocol == "flamby"
        else "Scaling: none (raw units); chol == 0 and trestbps == 0 are missing codes, set to "
        "NaN.",
        "Per site (train/test rows, positives):"
        if target == "disease"
        else "Per site (train/test rows; train rows per class 0..4):",
    ]
    for s in sites:
        if target == "disease":
            counts = f"{int(s.train.y.sum())}/{int(s.test.y.sum())} with disease"
        else:
            counts = "classes " + "/".join(
                str(c) for c in np.bincount(s.train.y, minlength=SEVERITY_CLASSES)
            )
        lines.append(
            f"  {s.site_id} ({_SITE_NAMES[s.site_id]}): {len(s.train)}/{len(s.test)} rows, {counts}"
        )
    return "\n".join(lines)


def load_heart_disease(
    protocol: Literal["flamby", "raw"] = "flamby",
    target: Literal["disease", "severity"] = "disease",
    split_seed: int = SPLIT_SEED,
) -> FederatedDataset:
    """UCI Heart Disease, one site per hospital, as in FLamby's Fed-Heart-Disease.

    Parameters
    ----------
    protocol:
        ``"flamby"``: FLamby's rows, split and per-centre standardisation (train statistics).
        ``"raw"``: the same rows and split, features in raw units, missing codes as ``NaN``.
    target:
        ``"disease"``: FLamby's binary label ``num > 0``. ``"severity"``: ``num`` itself,
        class indices 0..4 (a multiclass task named ``heart-disease-severity``).
    split_seed:
        ``random_state`` of each centre's stratified 66/34 split; 43 (default) is FLamby's
        split, any other value draws a different split of the same rows (repeated splits).

    Returns
    -------
    FederatedDataset
        Sites ``cleveland``, ``hungary``, ``switzerland``, ``va``; 13 features; binary task
        (multiclass for ``target="severity"``).

    Raises
    ------
    ConfigError
        If ``protocol`` is not ``"flamby"`` or ``"raw"``, or ``target`` not ``"disease"`` or
        ``"severity"``, or ``split_seed`` is not an integer in ``0 .. 2**32 - 1``.
    DataError
        If a file cannot be fetched, verified or parsed.
    """
    if protocol not in ("flamby", "raw"):
        raise ConfigError(f"protocol must be 'flamby' or 'raw', got {protocol!r}")
    if target not in ("disease", "severity"):
        raise ConfigError(f"target must be 'disease' or 'severity', got {target!r}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int | np.integer):
        raise ConfigError(f"split_seed must be an integer, got {split_seed!r}")
    if not 0 <= split_seed < 2**32:
        raise ConfigError(f"split_seed must be in 0 .. 2**32 - 1, got {split_seed}")
    seed = int(split_seed)
    paths = fetch_files(FOLDER, HEART_SITES.values())
    sites = [
        _site(site_id, paths[name], protocol, target, seed) for site_id, name in HEART_SITES.items()
    ]
    extra: dict[str, object] = {
        "protocol": protocol,
        "train_fraction": TRAIN_FRACTION,
        "split_seed": seed,
    }
    if target == "severity":
        extra.update(target=target, num_classes=SEVERITY_CLASSES)
    severity = target == "severity"
    return FederatedDataset(
        name="heart-disease-severity" if severity else "heart-disease",
        task="multiclass" if severity else "binary",
        sites=tuple(sites),
        feature_names=HEART_FEATURES,
        metrics=METRICS_BY_TASK["multiclass"] if severity else ("accuracy", "auroc"),
        description=_describe(sites, protocol, target, seed),
        citation=CITATION,
        license=LICENSE,
        extra=extra,
    )
