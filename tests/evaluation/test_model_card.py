"""Model cards list exactly the sites, fingerprints and approvals that produced the model."""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pytest

from fedcare.evaluation.model_card import (
    OPEN_MODE_NOTE,
    build_model_card,
    card_hash,
    model_hash,
    participants,
    plan_hash,
)
from fedcare.evaluation.report import render_report
from fedcare.records.arrays import ArrayRecord

FP = {s: f"sha256:{s * 64}"[:71] for s in "abcdef"}
WHEN = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


def _info(fp: str, rows: int, approval: str | None = None) -> dict[str, str]:
    out = {"dataset_fingerprint": fp, "num_rows": str(rows)}
    if approval:
        out |= {"approval_id": approval, "plan_hash": "sha256:" + "9" * 64}
    return out


def _history() -> list[dict[str, Any]]:
    """Three rounds: A every round (approved); B changes its data after round 1; C fails
    every round; D is rejected by aggregation in round 2 only; E is rejected every round."""
    rounds = []
    for r in (1, 2, 3):
        site_info = {
            "A": _info(FP["a"], 100, "appr-A-1"),
            "B": _info(FP["b"] if r == 1 else FP["c"], 50 if r == 1 else 55),
            "D": _info(FP["d"], 10),
            "E": _info(FP["e"], 10),
        }
        rejected = ["E", "D"] if r == 2 else ["E"]
        rounds.append(
            {
                "round": r,
                "fit": {
                    "num_contributions": 3,
                    "sampled_sites": ["A", "B", "C", "D", "E"],
                    "failed_sites": {"C": "policy-refused: plan not approved"},
                    "rejected_sites": rejected,
                    "rejected_reasons": {s: f"{s} norm too large" for s in rejected},
                    "site_info": site_info,
                },
            }
        )
    return rounds


def _params(shift: float = 0.0) -> ArrayRecord:
    return ArrayRecord({"w": np.arange(4.0) + shift, "b": np.zeros(1)})


def _card(**changes: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "study": {"name": "s", "seed": 3, "rounds": 3, "dataset": {"name": "d"}},
        "study_id": "sid",
        "plan": {"model": {"kind": "logistic"}, "dataset": "d"},
        "history": _history(),
        "final": {
            "per_site": {"A": {"auroc": 0.8}, "B": {"auroc": float("nan")}},
            "weighted": {"auroc": 0.8},
        },
        "params": _params(),
        "created": WHEN,
        "fedcare_version": "1.2.3",
        "version": "m-1",
        "parent": "m-0",
    }
    return build_model_card(**{**args, **changes})


def test_the_card_lists_exactly_the_aggregated_sites_with_their_fingerprints() -> None:
    card = _card()
    assert sorted(card["sites"]) == ["A", "B", "D"]
    assert card["sites"]["A"] == {
        "rounds": [1, 2, 3],
        "dataset_fingerprints": [FP["a"]],
        "num_rows": [100],
        "approval_ids": ["appr-A-1"],
        "plan_hashes": ["sha256:" + "9" * 64],
    }
    assert card["sites"]["B"]["dataset_fingerprints"] == [FP["b"], FP["c"]]  # changed mid-study
    assert card["sites"]["B"]["num_rows"] == [50, 55]
    assert card["sites"]["B"]["approval_ids"] == []
    assert card["sites"]["D"]["rounds"] == [1, 3]  # rejected in round 2
    assert card["not_participating"] == {
        "C": "policy-refused: plan not approved",
        "E": "E norm too large",
    }


def test_the_card_records_identity_privacy_metrics_and_lineage() -> None:
    card = _card()
    assert card["model"]["version"] == "m-1" and card["model"]["parent"] == "m-0"
    assert card["model"]["hash"] == model_hash(_params())
    assert card["model"]["shapes"] == {"w": [4], "b": [1]} and card["model"]["num_params"] == 5
    assert card["plan_hash"] == plan_hash({"dataset": "d", "model": {"kind": "logistic"}})
    assert card["privacy"] == {
        "mode": "open",
        "epsilon_spent": {"A": 0.0, "B": 0.0, "D": 0.0},
        "note": OPEN_MODE_NOTE,
    }
    assert card["metrics"]["per_site"] == {"A": {"auroc": 0.8}, "B": {"auroc": None}}
    assert card["study"] == {"id": "sid", "name": "s", "seed": 3}
    assert card["created"] == "2026-11-22T12:00:00+00:00" and card["fedcare_version"] == "1.2.3"
    json.dumps(card, allow_nan=False)  # strict JSON


def test_a_non_open_mode_has_no_epsilon_and_says_why() -> None:
    card = _card(study={"name": "s", "privacy": {"mode": "private"}})
    assert card["privacy"]["epsilon_spent"] == {"A": None, "B": None, "D": None}
    assert "does not account" in card["privacy"]["note"]


def test_the_builder_does_not_modify_its_inputs() -> None:
    history = _history()
    before = copy.deepcopy(history)
    _card(history=history)
    assert history == before


def test_model_hash_depends_on_every_value_name_dtype_and_shape() -> None:
    base = model_hash(_params())
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", base)
    assert model_hash(_params()) == base
    assert model_hash(ArrayRecord({"w": np.arange(4.0), "b": np.zeros(1)})) == base
    variants = [
        _params(1e-12),
        ArrayRecord({"w": np.arange(4.0).astype(np.float32), "b": np.zeros(1)}),
        ArrayRecord({"w": np.arange(4.0).reshape(2, 2), "b": np.zeros(1)}),
        ArrayRecord({"v": np.arange(4.0), "b": np.zeros(1)}),
    ]
    assert len({model_hash(v) for v in variants} | {base}) == 5


def test_card_hash_is_stable_under_key_order_and_changes_with_content() -> None:
    card = _card()
    shuffled = json.loads(json.dumps(card, sort_keys=False))
    assert card_hash(dict(reversed(list(shuffled.items())))) == card_hash(card)
    assert card_hash({**card, "created": "later"}) != card_hash(card)


def test_participants_of_an_empty_history() -> None:
    assert participants([]) == ({}, {})


def test_the_report_renders_the_card_section() -> None:
    card = _card()
    html = render_report({"study": {"name": "s"}, "model_card": card})
    assert 'id="model-card"' in html
    for site in ("A", "B", "D"):
        assert f"<td>{site}</td>" in html
    assert FP["c"] in html and "appr-A-1" in html and card["model"]["hash"] in html
    assert "<td>C</td>" not in html and "C (policy-refused: plan not approved)" in html
    assert 'id="model-card"' not in render_report({"study": {"name": "s"}})


def test_epsilon_composes_central_events_for_all_and_local_events_per_site() -> None:
    from fedcare.privacy.accounting import DpEvent, epsilon_of

    central, local = DpEvent(1.2, 1.0, 1), DpEvent(1.0, 0.1, 20)
    history = _history()
    for record in history:
        record["fit"]["dp_event"] = central.to_dict()
        record["fit"]["site_info"]["A"]["dp_event"] = json.dumps(local.to_dict())
    study = {"name": "s", "privacy": {"mode": "open", "dp": {"delta": 1e-5, "accountant": "rdp"}}}
    privacy = _card(study=study, history=history)["privacy"]
    expected_central = epsilon_of([central] * 3, 1e-5)
    assert privacy["epsilon_spent"] == pytest.approx(dict.fromkeys("ABD", expected_central))
    assert privacy["local_epsilon_spent"]["A"] == pytest.approx(epsilon_of([local] * 3, 1e-5))
    assert privacy["local_epsilon_spent"]["B"] is None
    assert 0 < expected_central < epsilon_of([central] * 4, 1e-5)


def test_the_plan_hash_stewards_approved_is_used_when_the_plan_carries_one() -> None:
    plan = {"model": {"kind": "logistic"}, "plan_hash": "ab" * 32}
    assert _card(plan=plan)["plan_hash"] == "ab" * 32
