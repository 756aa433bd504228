"""The study budget guard (fedcare.privacy.guard): one function for coordinator and simulation.

The simulation tests run the real site logic behind the in-memory grid; the same guard on a
real coordinator over mutual TLS is ``tests/deployment/test_study_budget.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedcare.errors import PrivacyBudgetError
from fedcare.privacy.accounting.analysis import DpEvent
from fedcare.privacy.budget import ledger_epsilon
from fedcare.privacy.guard import guard_next_round, planned_round_events
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation
from fedcare.strategy.private import private_round_event

from ..conftest import require_mirror

E1 = DpEvent(1.2).to_dict()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _study(**privacy: Any) -> StudyConfig:
    return StudyConfig.from_dict(
        {
            "name": "heart-private",
            "dataset": {"name": "heart-disease"},
            "model": {"kind": "logistic"},
            "rounds": 5,
            "min_sites": 2,
            "privacy": {"mode": "private", "dp": {"noise_multiplier": 1.2, "clip_norm": 1.0}}
            | privacy,
        }
    )


def _synthetic(rounds: int, **privacy: Any) -> StudyConfig:
    """A 3-site synthetic study in mode private (noise multiplier 1)."""
    return StudyConfig.from_dict(
        {
            "name": "budget-test",
            "dataset": {"name": "synthetic", "options": {"num_sites": 3, "rows_per_site": 60}},
            "model": {"kind": "logistic"},
            "training": {"epochs": 1, "lr": 0.2, "batch_size": 10},
            "rounds": rounds,
            "min_sites": 2,
            "privacy": {"mode": "private", "dp": {"noise_multiplier": 1.0, "clip_norm": 0.5}}
            | privacy,
            "baselines": {"local": True, "pooled": False, "cross_site": False},
        }
    )


def test_the_guard_refuses_the_round_that_would_overspend() -> None:
    one, three = ledger_epsilon([E1]), ledger_epsilon([E1] * 3)
    study = _study(epsilon=(three + ledger_epsilon([E1] * 4)) / 2)  # room for 3 rounds
    history = [{"round": r, "fit": {"dp_events": [E1]}} for r in (1, 2)]
    assert planned_round_events(study) == [private_round_event(study)]
    assert guard_next_round("st", study, [], 1) == pytest.approx(one, rel=1e-9)
    assert guard_next_round("st", study, history, 3) == pytest.approx(three, rel=1e-9)
    with pytest.raises(PrivacyBudgetError, match=r"round 4 would bring epsilon to .* \(privacy"):
        guard_next_round("st", study, [*history, {"round": 3, "fit": {"dp_events": [E1]}}], 4)
    assert guard_next_round("st", _study(), history * 5, 11) is None  # no declared budget


def test_a_target_epsilon_study_spends_its_budget_exactly() -> None:
    dp = {"target_epsilon": 2.0, "clip_norm": 1.0}
    study = _study(epsilon=2.0, dp=dp)
    history: list[dict[str, Any]] = []
    for rnd in range(1, study.rounds + 1):
        guard_next_round("st", study, history, rnd)
        history.append({"round": rnd, "fit": {"dp_events": [private_round_event(study).to_dict()]}})
    spent = ledger_epsilon([e for h in history for e in h["fit"]["dp_events"]])
    assert spent == pytest.approx(2.0, rel=1e-3)
    with pytest.raises(PrivacyBudgetError):
        guard_next_round("st", study, history, study.rounds + 1)


def test_simulation_refuses_round_one_that_overspends() -> None:
    """The README's old example: epsilon 3, noise multiplier 1, 20 rounds. One round spends
    4.73, so the coordinator refuses round 1; so does the simulation, with its message."""
    study = _synthetic(20, epsilon=3.0)
    with pytest.raises(PrivacyBudgetError) as err:
        run_simulation(study)
    one = ledger_epsilon([DpEvent(1.0)])
    assert one == pytest.approx(4.7285, abs=1e-3)
    assert str(err.value) == (
        "study 'budget-test (budget-test/federated)': round 1 would bring epsilon to 4.73 "
        "(privacy.epsilon 3; spent 0 in 0 rounds, delta 1e-05); the round was not started"
    )


def test_simulation_stops_before_the_round_that_overspends() -> None:
    """Budget for 2 rounds of 4: rounds 1-2 train, round 3 is refused before any task."""
    two, three = (ledger_epsilon([DpEvent(1.0)] * n) for n in (2, 3))
    study = _synthetic(4, epsilon=(two + three) / 2)
    seen: list[int] = []
    with pytest.raises(PrivacyBudgetError, match=r"round 3 would bring epsilon to .* in 2 rounds"):
        run_simulation(study, progress=lambda label, rec: seen.append(rec.round))
    assert seen == [1, 2]


def test_simulation_within_budget_reports_spent_and_budget() -> None:
    three = ledger_epsilon([DpEvent(1.0)] * 3)
    results = run_simulation(_synthetic(3, epsilon=three * 1.01))  # local baselines: no DP
    privacy = results["privacy"]
    assert privacy["budget"] == pytest.approx(three * 1.01)
    assert privacy["study_epsilon"] == pytest.approx(three, rel=1e-9)
    assert set(results["baselines"]["local"]) == set(results["sites"])


def test_cli_simulate_fails_with_the_reason_and_runs_the_readme_example(tmp_path: Path) -> None:
    from fedcare.cli.main import app

    require_mirror()
    example = EXAMPLES / "heart-disease-private.yaml"
    readme = (EXAMPLES.parent / "README.md").read_text()
    assert "examples/heart-disease-private.yaml" in readme
    assert "dp: {noise_multiplier: 7.0, clip_norm: 0.1, delta: 1.0e-5}" in readme
    old = tmp_path / "old.yaml"  # the README's former example: noise multiplier 1
    old.write_text(example.read_text().replace("noise_multiplier: 7.0", "noise_multiplier: 1.0"))
    runner = CliRunner()
    out = runner.invoke(app, ["simulate", str(old), "--out", str(tmp_path / "old")])
    assert out.exit_code == 2, out.output
    text = " ".join(out.output.split())
    assert "round 1 would bring epsilon to 4.73 (privacy.epsilon 3;" in text
    assert not (tmp_path / "old" / "results.json").exists()
    out = runner.invoke(app, ["simulate", str(example), "--out", str(tmp_path / "new")])
    assert out.exit_code == 0, out.output
    assert "epsilon spent 2.85 (budget privacy.epsilon 3; delta 1e-05)" in out.output
    data = json.loads((tmp_path / "new" / "results.json").read_text())
    assert len(data["history"]) == 20
    assert data["privacy"]["budget"] == 3.0
    assert data["privacy"]["study_epsilon"] == pytest.approx(2.8456, abs=1e-3)
    report = (tmp_path / "new" / "report.html").read_text()
    assert re.search(r"epsilon spent \(delta 1e-05\)</dt><dd>2\.85 of budget 3</dd>", report)
