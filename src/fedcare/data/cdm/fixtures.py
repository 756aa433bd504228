"""A seeded fixture federation whose sites code the same variables differently.

Four sites draw patients from one true logistic model over age (years), sex, fasting glucose
(mmol/L) and systolic blood pressure (mmHg), then write them their own way:

======  ================  =========  ===============
site    sex               glucose    missing code
======  ================  =========  ===============
north   1 / 0             mmol/L     -9
south   M / F             mg/dL      ``?``
east    male / female     mg/dL      empty
west    M / F             mmol/L     -9
======  ================  =========  ===============

``examples/cdm/fixture/`` holds the schema and one mapping per site that harmonize them. A few
bad values are planted (an unknown sex code, a non-number glucose) so that checks report them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["FIXTURE_SITES", "GLUCOSE_MOLAR_MASS", "fixture_federation", "true_logit"]

#: g/mol; mg/dL = mmol/L * molar_mass / 10.
GLUCOSE_MOLAR_MASS = 180.16
FIXTURE_SITES: dict[str, dict[str, object]] = {
    "north": {"sex": {1: "1", 0: "0"}, "glucose_unit": "mmol/L", "missing": "-9"},
    "south": {"sex": {1: "M", 0: "F"}, "glucose_unit": "mg/dL", "missing": "?"},
    "east": {"sex": {1: "male", 0: "female"}, "glucose_unit": "mg/dL", "missing": ""},
    "west": {"sex": {1: "M", 0: "F"}, "glucose_unit": "mmol/L", "missing": "-9"},
}
_MISSING_RATE = 0.08


def true_logit(
    age: np.ndarray, sex: np.ndarray, glucose: np.ndarray, sbp: np.ndarray
) -> np.ndarray:
    """The shared model: log-odds of the outcome (glucose in mmol/L, sbp in mmHg)."""
    return -0.3 + 0.05 * (age - 60) + 1.0 * sex + 0.9 * (glucose - 6.5) + 0.03 * (sbp - 135)


def _patients(rng: np.random.Generator, n: int, shift: float) -> pd.DataFrame:
    age = np.clip(rng.normal(60 + shift, 10, n), 20, 95).round()
    sex = rng.integers(0, 2, n)
    glucose = np.clip(rng.normal(6.5 + 0.3 * shift / 5, 1.6, n), 3.0, 20.0)
    sbp = np.clip(rng.normal(135, 18, n), 80, 220).round()
    p = 1.0 / (1.0 + np.exp(-true_logit(age, sex, glucose, sbp)))
    outcome = (rng.random(n) < p).astype(int)
    return pd.DataFrame(
        {"age": age, "sex": sex, "glucose": glucose, "sbp": sbp, "outcome": outcome}
    )


def _code_site(truth: pd.DataFrame, site: str, rng: np.random.Generator) -> pd.DataFrame:
    spec = FIXTURE_SITES[site]
    sex_codes: dict[int, str] = spec["sex"]  # type: ignore[assignment]
    glucose = truth["glucose"].to_numpy()
    if spec["glucose_unit"] == "mg/dL":
        glucose = glucose * GLUCOSE_MOLAR_MASS / 10.0
    out = pd.DataFrame(
        {
            "age": truth["age"].map(lambda v: f"{v:g}"),
            "sex": truth["sex"].map(sex_codes),
            "glucose": [
                f"{v:.1f}" if spec["glucose_unit"] == "mg/dL" else f"{v:.2f}" for v in glucose
            ],
            "sbp": truth["sbp"].map(lambda v: f"{v:g}"),
            "outcome": truth["outcome"].astype(str),
        }
    )
    for column in ("glucose", "sbp"):
        hole = rng.random(len(out)) < _MISSING_RATE
        out.loc[hole, column] = str(spec["missing"])
    return out


def fixture_federation(
    rng: np.random.Generator, *, rows_per_site: int = 300, bad_values: bool = True
) -> dict[str, pd.DataFrame]:
    """Each site's raw table (all values as text, as read from a CSV file).

    Parameters
    ----------
    rng:
        The source of randomness (the same seed gives the same tables).
    rows_per_site:
        Rows at each site.
    bad_values:
        Plant one unknown sex code (``"U"``) at south and one non-number glucose (``"high"``)
        at east, for the checks to report.
    """
    tables: dict[str, pd.DataFrame] = {}
    for i, site in enumerate(FIXTURE_SITES):
        truth = _patients(rng, rows_per_site, shift=2.5 * i - 4)
        tables[site] = _code_site(truth, site, rng)
    if bad_values:
        tables["south"].loc[3, "sex"] = "U"
        tables["east"].loc[5, "glucose"] = "high"
    return tables
