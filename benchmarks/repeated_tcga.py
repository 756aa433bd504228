"""TCGA-BRCA: lifelines' Cox fit per repeated split; the pooled Cox check on FLamby's split.

:func:`lifelines_extra` adds ``lifelines-tuned`` to every repeated split of ``repeated.py
--dataset tcga-brca``: ``CoxPHFitter`` on the pooled training rows with its penalizer chosen on
the split's validation rows (lowest mean validation partial-likelihood loss over regions).

:func:`tcga_rows` (``repeated.py --tcga-check``) asks whether the pooled Cox baseline of
``quality.py`` under-trains on FLamby's fixed split. Its rows' methods start with
``flamby-split``. Four pooled Cox models on the same pooled training rows (all 6 regions'
FLamby training split), each scored by the C-index on every region's test split, averaged
unweighted over regions (as ``quality.py``):

* ``pooled-quality-settings``: ``quality.py``'s pooled baseline (SGD batch 64, lr 0.003, L2 0.01,
  30 epochs), seeds 0..S-1;
* ``pooled-tuned``: the same SGD model with lr, epochs and L2 chosen on validation data
  (``GRID``; 30% of each region's training rows, stratified by event; lowest mean validation
  partial-likelihood loss over 3 tuning seeds), then retrained on all training rows;
* ``pooled-300-epochs``: ``quality.py``'s settings trained 10 times longer (300 epochs), to see
  where the SGD model goes when it is not stopped early;
* ``lifelines-same-penalty``: lifelines' ``CoxPHFitter`` (Newton-Raphson, exact optimum) with the
  penalty equal to the SGD model's L2 0.01 (``penalizer = l2 * E / n``, see
  ``fedcare.models.cox``): the optimum the SGD baseline is heading for;
* ``lifelines-tuned``: ``CoxPHFitter`` with its penalizer chosen on the same validation rows.

lifelines is a benchmark-only (dev) dependency; nothing in fedcare imports it. The check uses
FLamby's stored split only, so its intervals are over training seeds only (lifelines is
deterministic: one run). Features for lifelines are the raw ones without the
columns constant in the training rows (lifelines standardizes internally; the C-index does not
depend on the scale).
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedcare.data.base import Dataset, FederatedDataset
from fedcare.data.registry import load_dataset
from fedcare.evaluation.metrics import cindex
from fedcare.evaluation.summary import summarize_sites
from fedcare.models.cox import cox_loss_and_eta_grad
from quality import base_study, study_for
from quality_harness import merge, run_method, validation_split
from quality_protocols import TCGA
from repeated_stats import interval

TUNE_SEEDS = (100, 101, 102)
GRID: tuple[dict[str, Any], ...] = tuple(
    {"training": {"lr": lr, "l2": l2}, "rounds": rounds}
    for lr in (0.003, 0.01, 0.03)
    for rounds in (30, 100, 300)
    for l2 in (0.01, 0.1)
)
PENALIZERS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
#: The first word of the fixed-split check's methods.
CHECK_PREFIX = "flamby-split"


def _sgd(ds: FederatedDataset, study: Mapping[str, Any], seed: int) -> dict[str, float]:
    means = summarize_sites(run_method(ds, study, "pooled", seed).per_site)["unweighted"]
    return {"cindex": float(means["cindex"]), "loss": float(means["loss"])}


def _lifelines_fit(train: Dataset, penalizer: float) -> tuple[Any, np.ndarray]:
    """A fitted ``CoxPHFitter`` and the feature columns it uses (non-constant ones)."""
    import pandas as pd
    from lifelines import CoxPHFitter

    keep = np.flatnonzero(np.std(train.X, axis=0) > 0)
    frame = pd.DataFrame(train.X[:, keep], columns=[f"x{i}" for i in keep])
    frame["T"], frame["E"] = train.time, train.y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = CoxPHFitter(penalizer=penalizer).fit(frame, "T", "E")
    return model, keep


def _risk(model: Any, keep: np.ndarray, X: np.ndarray) -> np.ndarray:
    import pandas as pd

    frame = pd.DataFrame(X[:, keep], columns=[f"x{i}" for i in keep])
    return np.asarray(model.predict_log_partial_hazard(frame), dtype=np.float64)


def _lifelines_per_site(ds: FederatedDataset, penalizer: float) -> dict[str, dict[str, float]]:
    """Fit on the pooled training rows; C-index and partial-likelihood loss at each site."""
    train = Dataset.concat([s.train for s in ds.sites])
    model, keep = _lifelines_fit(train, penalizer)
    out = {}
    for s in ds.sites:
        assert s.test.time is not None
        eta = _risk(model, keep, s.test.X)
        out[s.site_id] = {
            "n": float(len(s.test)),
            "cindex": float(cindex(s.test.y, s.test.time, eta)),
            "loss": float(cox_loss_and_eta_grad(eta, s.test.y, s.test.time)[0]),
        }
    return out


def _lifelines_scores(ds: FederatedDataset, penalizer: float) -> dict[str, float]:
    """Mean C-index and loss over sites (where defined) of the pooled lifelines fit."""
    means = summarize_sites(_lifelines_per_site(ds, penalizer))["unweighted"]
    return {"cindex": float(means["cindex"]), "loss": float(means["loss"])}


def lifelines_extra(
    ds: FederatedDataset, val: FederatedDataset
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """``lifelines-tuned`` for one repeated split: the penalizer of lowest validation loss,
    refitted on all training rows (deterministic: one score, whatever the seeds)."""
    loss = {p: _lifelines_scores(val, p)["loss"] for p in PENALIZERS}
    finite = [p for p in PENALIZERS if math.isfinite(loss[p])]
    best = min(finite, key=lambda p: loss[p]) if finite else 0.1
    per_site = _lifelines_per_site(ds, best)
    means = summarize_sites(per_site)["unweighted"]
    scores = {
        "cindex": float(means["cindex"]),
        "sites": {s: {"cindex": v["cindex"]} for s, v in per_site.items()},
    }
    return {"lifelines-tuned": f"penalizer {best}"}, {"lifelines-tuned": [scores]}


def _row(method: str, values: Sequence[float], notes: str) -> dict[str, Any]:
    mean, sd, lo, hi = interval(values)
    return {
        "benchmark": "repeated",
        "dataset": "tcga-brca",
        "method": f"{CHECK_PREFIX} {method}",
        "metric": "cindex",
        "mean": round(mean, 4),
        "sd": round(sd, 4),
        "n": len(values),
        "unit": "cindex",
        "notes": notes,
        "lo": None if math.isnan(lo) else round(lo, 4),
        "hi": None if math.isnan(hi) else round(hi, 4),
    }


def _settings(over: Mapping[str, Any]) -> str:
    t = over["training"]
    return f"lr {t['lr']}, epochs {over['rounds']}, l2 {t['l2']}"


def tcga_rows(seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The four pooled Cox models' C-index rows (see the module docstring)."""
    base = base_study(TCGA)
    ds = load_dataset("tcga-brca")
    val = validation_split(ds)
    fixed = study_for(TCGA, base, "pooled")
    losses = []
    for over in GRID:
        study = merge(fixed, over)
        losses.append(statistics.mean(_sgd(val, study, s)["loss"] for s in TUNE_SEEDS))
    chosen = GRID[losses.index(min(losses))]
    chosen_loss = min(losses)
    print(f"tcga-brca pooled SGD chosen on validation: {_settings(chosen)}", flush=True)
    tuned = merge(fixed, chosen)
    quality = [_sgd(ds, fixed, s)["cindex"] for s in seeds]
    converged = [_sgd(ds, tuned, s)["cindex"] for s in seeds]
    long = [_sgd(ds, merge(fixed, {"rounds": 300}), s)["cindex"] for s in seeds]
    val_loss = {p: _lifelines_scores(val, p)["loss"] for p in PENALIZERS}
    best = min(PENALIZERS, key=lambda p: val_loss[p])
    print(f"tcga-brca lifelines penalizer chosen on validation: {best}", flush=True)
    pooled = Dataset.concat([s.train for s in ds.sites])
    same = 0.01 * float(np.sum(pooled.y)) / len(pooled)
    lifelines_same = _lifelines_scores(ds, same)["cindex"]
    lifelines_tuned = _lifelines_scores(ds, best)["cindex"]
    seeds_note = f"{len(seeds)} training seeds on FLamby's fixed split; 95% t-interval over seeds"
    grid = f"{len(GRID)} settings (lr x epochs x l2), lowest validation loss"
    return [
        _row("pooled-quality-settings", quality, f"{seeds_note}; {_settings(fixed)}"),
        _row(
            "pooled-tuned",
            converged,
            f"{seeds_note}; chosen of {grid}: {_settings(tuned)} (validation loss "
            f"{chosen_loss:.4f})",
        ),
        _row("pooled-300-epochs", long, f"{seeds_note}; quality.py's settings, 300 epochs"),
        _row(
            "lifelines-same-penalty",
            [lifelines_same],
            f"CoxPHFitter(penalizer={same:.5f} = l2 0.01 x events / rows): the exact optimum "
            "of the SGD baseline's objective; deterministic, one run",
        ),
        _row(
            "lifelines-tuned",
            [lifelines_tuned],
            f"CoxPHFitter(penalizer={best}) chosen on validation rows of {PENALIZERS} "
            f"(validation loss {val_loss[best]:.4f}); deterministic, one run",
        ),
    ]
