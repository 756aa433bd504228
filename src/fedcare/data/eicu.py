"""eICU-CRD Demo: in-hospital mortality (or ICU length of stay), split by hospital or region.

Label: ``patient.hospitaldischargestatus`` (``Expired`` = 1, ``Alive`` = 0); the 28 stays with
no status are dropped. One row per ICU unit stay.

Features (37, chosen to be known by the end of the first ICU day and to leak nothing of the
outcome):

* ``patient``: age (``> 89`` -> 90), male (1/0), admission height (cm) and weight (kg); heights
  outside 100-250 cm and weights outside 20-350 kg are recording errors and become ``NaN``;
* ``apacheApsVar``: the 24 APACHE IV acute physiology variables (worst value on day 1:
  intubated, ventilated, dialysis, GCS eyes/motor/verbal, GCS unobtainable for meds, urine,
  WBC, temperature, respiratory rate, sodium, heart rate, mean BP, pH, haematocrit, creatinine,
  albumin, PaO2, PaCO2, BUN, glucose, bilirubin, FiO2), ``-1`` -> ``NaN``;
* ``apachePredVar``: elective surgery and the chronic health items (hepatic failure, lymphoma,
  metastatic cancer, leukaemia, immunosuppression, cirrhosis, diabetes; AIDS is 0 for every
  stay and left out);
* ``apachePatientResult`` (APACHE IVa row): the acute physiology score, ``-1`` -> ``NaN``.

Never used, because they are or reveal the outcome: ``actual*`` and ``predicted*`` columns
(including predicted mortality and length of stay), ``diedinhospital``, the ``*los``,
``*ventdays`` and discharge columns (location, offsets, weight, status). Stays without APACHE
rows keep ``NaN`` features: the site imputes.

``target="los"`` keeps the same stays, features and splits but labels each stay with its ICU
length of stay in days, ``patient.unitdischargeoffset / 1440`` (minutes from unit admission to
unit discharge): a regression task (dataset ``eicu-los``). The 12 stays recorded with an
offset of 0 are dropped from it (counted in ``extra["dropped_zero_los"]``). The features are
known by the end of the first ICU day, so a stay's length is predicted from its first day.

Splits: per site, a stratified train/test split that keeps all stays of one patient
(``uniquepid``) on the same side (the demo holds about 10 patients per hospital, several stays
each, so a stay-level split would put one patient's stays in both). Patients are stratified by
whether any of their stays ended in death; ``round(test_fraction * patients)`` of each class go
to test, but at least one to train and one to test when a class has two or more patients.
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

__all__ = ["EICU_FEATURES", "EICU_REGIONS", "load_eicu"]

FOLDER = "eicu_demo"
EICU_REGIONS: tuple[str, ...] = ("Midwest", "Northeast", "South", "West")
_TABLES = {
    "patient": "patient.csv.gz",
    "hospital": "hospital.csv.gz",
    "aps": "apacheApsVar.csv.gz",
    "pred": "apachePredVar.csv.gz",
    "result": "apachePatientResult.csv.gz",
}
_PATIENT = ("age", "male", "admission_height_cm", "admission_weight_kg")
_APS = (
    "intubated", "vent", "dialysis", "eyes", "motor", "verbal", "meds", "urine", "wbc",
    "temperature", "respiratoryrate", "sodium", "heartrate", "meanbp", "ph", "hematocrit",
    "creatinine", "albumin", "pao2", "pco2", "bun", "glucose", "bilirubin", "fio2",
)  # fmt: skip
_PRED = (
    "electivesurgery", "hepaticfailure", "lymphoma", "metastaticcancer", "leukemia",
    "immunosuppression", "cirrhosis", "diabetes",
)  # fmt: skip
#: The 37 feature names, in column order.
EICU_FEATURES: tuple[str, ...] = (
    *_PATIENT,
    *(f"aps_{c}" for c in _APS),
    *_PRED,
    "acute_physiology_score",
)
#: Minutes per day (``unitdischargeoffset`` is in minutes).
_MINUTES_PER_DAY = 1440.0
_PLAUSIBLE = {"admission_height_cm": (100.0, 250.0), "admission_weight_kg": (20.0, 350.0)}

CITATION = (
    "Pollard TJ, Johnson AEW, Raffa JD, Celi LA, Mark RG, Badawi O. The eICU Collaborative "
    "Research Database, a freely available multi-center database for critical care research. "
    "Scientific Data 5:180178 (2018), doi:10.1038/sdata.2018.178. eICU-CRD Demo, PhysioNet, "
    "https://physionet.org/content/eicu-crd-demo/2.0.1/. Goldberger AL et al. PhysioBank, "
    "PhysioToolkit, and PhysioNet. Circulation 101(23):e215-e220 (2000)."
)
LICENSE = (
    "Open Data Commons Open Database License v1.0 (ODbL, "
    "https://opendatacommons.org/licenses/odbl/1-0/). Attribute the eICU-CRD Demo (PhysioNet, "
    "MIT LCP, Philips eICU Research Institute); any derived database you publish must stay "
    "under ODbL. The files used are a value-equivalent reconstruction of the demo tables."
)


def _one_per_stay(table: pd.DataFrame, name: str) -> pd.DataFrame:
    if not table["patientunitstayid"].is_unique:
        raise DataError(f"eICU {name} must have one row per patientunitstayid")
    return table.set_index("patientunitstayid")


def _patient_features(patient: pd.DataFrame) -> pd.DataFrame:
    age = patient["age"].astype("string").str.replace(" ", "", regex=False)
    out = pd.DataFrame(index=patient.index)
    out["age"] = pd.to_numeric(age.replace(">89", "90"), errors="coerce")
    out["male"] = patient["gender"].map({"Male": 1.0, "Female": 0.0})
    out["admission_height_cm"] = pd.to_numeric(patient["admissionheight"], errors="coerce")
    out["admission_weight_kg"] = pd.to_numeric(patient["admissionweight"], errors="coerce")
    for column, (low, high) in _PLAUSIBLE.items():
        out[column] = out[column].where(out[column].between(low, high))
    return out.astype(float)


def _apache_features(tables: dict[str, pd.DataFrame], index: pd.Index) -> pd.DataFrame:
    aps = _one_per_stay(tables["aps"], "apacheApsVar")[list(_APS)]
    aps = aps.rename(columns={c: f"aps_{c}" for c in _APS})
    pred = _one_per_stay(tables["pred"], "apachePredVar")[list(_PRED)]
    result = tables["result"]
    iva = _one_per_stay(result[result["apacheversion"] == "IVa"], "apachePatientResult (IVa)")
    score = iva[["acutephysiologyscore"]].rename(
        columns={"acutephysiologyscore": "acute_physiology_score"}
    )
    joined = pd.concat([aps, pred, score], axis=1).reindex(index).astype(float)
    return joined.mask(joined == -1)


def _read_stays(paths: dict[str, Path]) -> tuple[pd.DataFrame, int, pd.Series]:
    """Labelled stays (site keys, patient id, label, features), #unlabelled, stays/hospital."""
    tables = {key: pd.read_csv(paths[name]) for key, name in _TABLES.items()}
    patient = _one_per_stay(tables["patient"], "patient")
    all_counts = patient["hospitalid"].value_counts()
    status = patient["hospitaldischargestatus"].map({"Expired": 1, "Alive": 0})
    known = status.notna()
    patient = patient[known]
    hospital = tables["hospital"].set_index("hospitalid")["region"]
    features = pd.concat(
        [_patient_features(patient), _apache_features(tables, patient.index)], axis=1
    )
    stays = pd.DataFrame(
        {
            "hospitalid": patient["hospitalid"].astype(int),
            "region": patient["hospitalid"].map(hospital),
            "uniquepid": patient["uniquepid"].astype(str),
            "label": status[known].astype(np.int64),
            "los_days": pd.to_numeric(patient["unitdischargeoffset"], errors="coerce")
            / _MINUTES_PER_DAY,
        },
        index=patient.index,
    )
    labelled = pd.concat([stays, features[list(EICU_FEATURES)]], axis=1)
    return labelled, int((~known).sum()), all_counts


def _grouped_split(
    labels: np.ndarray, groups: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Patient-grouped stratified split; returns sorted (train, test) row positions."""
    names, inverse = np.unique(groups, return_inverse=True)
    group_label = np.zeros(len(names), dtype=np.int64)
    np.maximum.at(group_label, inverse, labels)
    test_groups: list[np.ndarray] = []
    for value in (0, 1):
        members = rng.permutation(np.flatnonzero(group_label == value))
        n_test = int(np.floor(test_fraction * len(members) + 0.5))
        # Keep a class on both sides when it has two patients or more; a lone one trains.
        n_test = min(max(n_test, 1), len(members) - 1) if len(members) >= 2 else 0
        test_groups.append(members[:n_test])
    in_test = np.isin(inverse, np.concatenate(test_groups))
    return np.flatnonzero(~in_test), np.flatnonzero(in_test)


def _make_site(
    site_id: str, stays: pd.DataFrame, test_fraction: float, rng: np.random.Generator, target: str
) -> SiteData:
    stays = stays.sort_index()
    labels = stays["label"].to_numpy()
    train, test = _grouped_split(labels, stays["uniquepid"].to_numpy(), test_fraction, rng)
    if target == "los":  # the mortality split, then the stays with a recorded length only
        los = stays["los_days"].to_numpy(dtype=float)
        keep = np.isfinite(los) & (los > 0)
        train, test = train[keep[train]], test[keep[test]]
        labels = los
    X = stays[list(EICU_FEATURES)].to_numpy(dtype=float)
    return SiteData(
        site_id=site_id,
        train=Dataset(X=X[train], y=labels[train]),
        test=Dataset(X=X[test], y=labels[test]),
    )


def _hospital_sites(
    stays: pd.DataFrame,
    all_counts: pd.Series,
    min_stays: int,
    seed: int,
    test_fraction: float,
    target: str,
) -> list[SiteData]:
    chosen = sorted(int(h) for h in all_counts[all_counts >= min_stays].index)
    if not chosen:
        raise ConfigError(
            f"min_stays={min_stays} leaves no hospital (the largest has {all_counts.max()} stays)"
        )
    return [
        _make_site(
            f"hospital-{h}",
            stays[stays["hospitalid"] == h],
            test_fraction,
            np.random.default_rng([seed, h]),
            target,
        )
        for h in chosen
    ]


def _region_sites(
    stays: pd.DataFrame, seed: int, test_fraction: float, target: str
) -> list[SiteData]:
    return [
        _make_site(
            f"region-{region.lower()}",
            stays[stays["region"] == region],
            test_fraction,
            np.random.default_rng([seed, 1_000_000 + k]),
            target,
        )
        for k, region in enumerate(EICU_REGIONS)
    ]


def _check_options(
    split: str, min_stays: int, seed: int, test_fraction: float, target: str
) -> None:
    if target not in ("mortality", "los"):
        raise ConfigError(f"target must be 'mortality' or 'los', got {target!r}")
    if split not in ("hospital", "region"):
        raise ConfigError(f"split must be 'hospital' or 'region', got {split!r}")
    if isinstance(min_stays, bool) or not isinstance(min_stays, int) or min_stays < 1:
        raise ConfigError(f"min_stays must be a positive integer, got {min_stays!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction!r}")


def _site_summary(s: SiteData, target: str = "mortality") -> dict[str, float]:
    if target == "los":
        return {
            "train_stays": len(s.train),
            "train_mean_los_days": round(float(np.mean(s.train.y)), 3) if len(s.train) else 0.0,
            "test_stays": len(s.test),
            "test_mean_los_days": round(float(np.mean(s.test.y)), 3) if len(s.test) else 0.0,
        }
    return {
        "train_stays": len(s.train),
        "train_deaths": int(s.train.y.sum()),
        "test_stays": len(s.test),
        "test_deaths": int(s.test.y.sum()),
    }


def _describe(sites: list[SiteData], split: str, notes: list[str], target: str) -> str:
    lines = [
        "eICU-CRD Demo (PhysioNet, 2014-2015 US ICUs): in-hospital mortality of ICU unit stays "
        f"from demographics and first-day APACHE IV variables ({len(EICU_FEATURES)} features, "
        "missing as NaN); one site per "
        + ("hospital" if split == "hospital" else "US census region")
        + "; per-site train/test split grouped by patient and stratified by outcome.",
        *notes,
        "Per site (stays/deaths, train | test):",
    ]
    if target == "los":
        lines[0] = lines[0].replace("in-hospital mortality", "ICU length of stay (days)")
        lines[-1] = "Per site (stays/mean length of stay in days, train | test):"
        for s in sites:
            c = _site_summary(s, target)
            lines.append(
                f"  {s.site_id}: {c['train_stays']}/{c['train_mean_los_days']:.2f} | "
                f"{c['test_stays']}/{c['test_mean_los_days']:.2f}"
            )
        return "\n".join(lines)
    for s in sites:
        c = _site_summary(s)
        flag = "  [single class in test]" if len(np.unique(s.test.y)) < 2 else ""
        lines.append(
            f"  {s.site_id}: {c['train_stays']}/{c['train_deaths']} | "
            f"{c['test_stays']}/{c['test_deaths']}{flag}"
        )
    return "\n".join(lines)


def load_eicu(
    split: Literal["hospital", "region"] = "hospital",
    min_stays: int = 20,
    seed: int = 0,
    test_fraction: float = 0.3,
    target: Literal["mortality", "los"] = "mortality",
) -> FederatedDataset:
    """eICU-CRD Demo in-hospital mortality, one site per hospital or per US region.

    Parameters
    ----------
    split:
        ``"hospital"``: hospitals with at least ``min_stays`` ICU stays (counting stays with an
        unknown outcome too), ids ``hospital-<hospitalid>``. ``"region"``: the 4 US census
        regions of ``hospital.csv``, ids ``region-midwest`` etc.; stays of hospitals with no
        region are dropped (counted in ``extra["dropped_unknown_region"]``).
    min_stays:
        Fewest stays a hospital needs to be a site (``split="hospital"`` only).
    seed:
        Seed of the per-site train/test splits (each site draws from its own generator, seeded
        by ``seed`` and the site).
    test_fraction:
        Fraction of each site's patients (per outcome class) that go to test.
    target:
        ``"mortality"``: in-hospital death (binary). ``"los"``: ICU length of stay in days
        (regression, dataset ``eicu-los``), on the same splits.

    Returns
    -------
    FederatedDataset
        Binary task, metrics AUROC and accuracy; ``extra`` has per-site counts and the sites
        whose test split has a single class. With ``target="los"``: regression, metrics MAE,
        RMSE and R², per-site mean lengths of stay.

    Raises
    ------
    ConfigError
        If an option is invalid.
    DataError
        If a file cannot be fetched, verified or parsed.
    """
    _check_options(split, min_stays, seed, test_fraction, target)
    paths = fetch_files(FOLDER, _TABLES.values())
    stays, dropped_outcome, all_counts = _read_stays(paths)
    notes = [f"{dropped_outcome} stays with unknown discharge status dropped."]
    extra: dict[str, object] = {"split": split, "seed": seed, "test_fraction": test_fraction}
    if split == "hospital":
        sites = _hospital_sites(stays, all_counts, min_stays, seed, test_fraction, target)
        notes.append(f"Hospitals with at least {min_stays} stays: {len(sites)}.")
        extra["min_stays"] = min_stays
    else:
        unknown = int(stays["region"].isna().sum())
        notes.append(f"{unknown} labelled stays of hospitals with no region dropped.")
        extra["dropped_unknown_region"] = unknown
        sites = _region_sites(stays, seed, test_fraction, target)
    extra["dropped_unknown_outcome"] = dropped_outcome
    extra["site_counts"] = {s.site_id: _site_summary(s, target) for s in sites}
    los = target == "los"
    if los:
        extra["target"] = target
        extra["dropped_zero_los"] = int((stays["los_days"].fillna(0) <= 0).sum())
        notes.append(f"{extra['dropped_zero_los']} labelled stays with no recorded length dropped.")
    else:
        extra["single_class_test_sites"] = [
            s.site_id for s in sites if len(np.unique(s.test.y)) < 2
        ]
    return FederatedDataset(
        name="eicu-los" if los else "eicu",
        task="regression" if los else "binary",
        sites=tuple(sites),
        feature_names=EICU_FEATURES,
        metrics=METRICS_BY_TASK["regression"] if los else ("auroc", "accuracy"),
        description=_describe(sites, split, notes, target),
        citation=CITATION,
        license=LICENSE,
        extra=extra,
    )
