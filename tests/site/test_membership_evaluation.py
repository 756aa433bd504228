"""Sites attack the final model on their own rows when the approved plan asks, and send only
the attack's AUROC (a metric of the last round's test evaluation)."""

from __future__ import annotations

import math

from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation
from fedcare.strategy.plan import plan_for_study, plan_summary

from ..conftest import require_mirror
from ..deployment.helpers import heart_study


def _study(attack: bool) -> StudyConfig:
    return heart_study(rounds=2, privacy={"mode": "open", "membership_inference": attack})


def test_the_last_round_reports_the_loss_attack_auroc_per_site() -> None:
    require_mirror()
    results = run_simulation(_study(True))
    history = results["history"]
    first, last = history[0]["evaluate"]["per_site"], history[-1]["evaluate"]["per_site"]
    assert all("mia_loss_auroc" not in m for m in first.values())  # not before the end
    for site, metrics in last.items():
        value = metrics["mia_loss_auroc"]
        assert 0.0 <= value <= 1.0 and not math.isnan(value), site
    # a regularized logistic model on a few rounds barely memorizes: near chance
    mean = sum(m["mia_loss_auroc"] for m in last.values()) / len(last)
    assert abs(mean - 0.5) < 0.15, mean


def test_no_attack_unless_the_plan_says_so_and_the_flag_changes_the_plan_hash() -> None:
    require_mirror()
    results = run_simulation(_study(False))
    assert all("mia_loss_auroc" not in m for m in results["final"]["per_site"].values())
    assert plan_for_study(_study(True)).hash != plan_for_study(_study(False)).hash
    assert "membership-attack" in plan_summary(plan_for_study(_study(True)))
