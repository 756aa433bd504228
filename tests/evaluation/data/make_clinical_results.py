"""Rebuild ``clinical_results.json`` (the fixture of test_report_clinical.py) from a real run.

Usage: ``fedcare simulate STUDY --out RUN`` with a study like examples/heart-disease.yaml plus
``rounds: 5``, local and pooled baselines and ``validation: {bootstrap: 100, curve_bins: 50,
subgroups: [...], importance: true, leave_one_site_out: true}``, then
``python make_clinical_results.py RUN/results.json clinical_results.json``. The results are
shrunk (curves kept for the federated model only) and the federated subgroups block is
combined from hand-made site tables with one suppressed level, so the fixture has both
released and withheld cells whatever the run's suppression gives.
"""

import copy
import json
import sys
from pathlib import Path

from fedcare.evaluation.subgroups import combine_subgroups

r = json.loads(Path(sys.argv[1]).read_text())
DROP = ("curve", "roc", "pr", "subgroups", "importance", "information")


def strip(s, keep_curves=False):
    s = {k: v for k, v in s.items() if keep_curves or k not in DROP}
    if not keep_curves and isinstance(s.get("calibration"), dict):
        s["calibration"] = {k: v for k, v in s["calibration"].items() if k != "bins"}
    for k in ("subgroups", "importance", "information"):
        s.pop(k, None)
    return s


val = {}
for label, v in r["validation"].items():
    if label == "federated":
        v = copy.deepcopy(v)
        v["per_site"] = {s: strip(x, keep_curves=True) for s, x in v["per_site"].items()}
        val[label] = v
    elif label in ("pooled", "local-switzerland", "local-cleveland"):
        o = {k: x for k, x in v["overall"].items() if k not in ("roc", "pr", "net_benefit")}
        o["calibration"] = {
            k: x for k, x in o.get("calibration", {}).items() if k in ("brier", "ece")
        }
        val[label] = {"per_site": {s: strip(x) for s, x in v["per_site"].items()}, "overall": o}


def level(n, pos, tp, fp, sum_p, bins=10):
    fn, tn = pos - tp, n - pos - fp
    cn = [0] * bins
    cp = [0] * bins
    # spread rows over bins: negatives low, positives high
    for i in range(n - pos):
        cn[i % 4] += 1
    for i in range(pos):
        cn[5 + i % 5] += 1
        cp[5 + i % 5] += 1
    return {
        "n": n,
        "pos": pos,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sum_p": sum_p,
        "brier_sum": 0.15 * n,
        "curve_n": cn,
        "curve_pos": cp,
    }


site_tables = {
    "cleveland": {
        "task": "binary",
        "min_cell": 5,
        "threshold": 0.5,
        "bins": 10,
        "groups": {
            "sex": {
                "feature": "sex",
                "levels": {"0": level(34, 9, 6, 3, 10.2), "1": level(70, 39, 29, 7, 34.0)},
            },
            "age band": {
                "feature": "age",
                "levels": {
                    "<50": level(28, 8, 5, 2, 7.5),
                    "50-60": level(44, 21, 15, 5, 20.0),
                    ">=60": level(32, 19, 15, 3, 18.0),
                },
            },
        },
    },
    "switzerland": {
        "task": "binary",
        "min_cell": 5,
        "threshold": 0.5,
        "bins": 10,
        "groups": {
            "sex": {
                "feature": "sex",
                "levels": {"0": {"n": None, "suppressed": True}, "1": level(13, 12, 10, 0, 9.5)},
            },
            "age band": {
                "feature": "age",
                "levels": {
                    "<50": {"n": None, "suppressed": True},
                    "50-60": level(6, 6, 5, 0, 4.0),
                    ">=60": level(7, 6, 5, 0, 5.1),
                },
            },
        },
    },
}
val["federated"]["subgroups"] = combine_subgroups(site_tables, min_cell=5)

loso = r["leave_one_site_out"]
loso = {
    "sites": {s: {k: strip(x) for k, x in e.items()} for s, e in loso["sites"].items()},
    "summary": loso["summary"],
    "seconds": loso.get("seconds"),
}

card = r["model_card"]
out = {
    "fedcare_version": r["fedcare_version"],
    "study": {
        k: r["study"][k]
        for k in (
            "name",
            "dataset",
            "strategy",
            "rounds",
            "seed",
            "privacy",
            "preprocessing",
            "validation",
            "model",
        )
    },
    "dataset": r["dataset"],
    "task": r["task"],
    "metrics": r["metrics"],
    "sites": r["sites"],
    "site_sizes": r["site_sizes"],
    "history": [
        {"round": h["round"], "evaluate": {k: h["evaluate"][k] for k in ("per_site", "weighted")}}
        for h in r["history"]
        if h.get("evaluate")
    ],
    "final": {k: r["final"][k] for k in ("per_site", "weighted", "unweighted")},
    "validation": val,
    "leave_one_site_out": loso,
    "model_card": {
        k: card[k]
        for k in (
            "card_version",
            "model",
            "study",
            "plan_hash",
            "privacy",
            "sites",
            "not_participating",
            "created",
            "tripod",
        )
    },
}


def rnd(x):
    if isinstance(x, float):
        return round(x, 6)
    if isinstance(x, dict):
        return {k: rnd(v) for k, v in x.items()}
    if isinstance(x, list):
        return [rnd(v) for v in x]
    return x


Path(sys.argv[2]).write_text(
    json.dumps(rnd(out), sort_keys=True, separators=(",", ":"), allow_nan=False)
)
