import json

import pytest

from fedcare.errors import ValidationError
from fedcare.privacy.accounting import DpEvent, pld_epsilon, rdp_epsilon
from fedcare.privacy.summary import privacy_summary


def record(rnd: int, central: list[DpEvent], sites: dict[str, DpEvent]) -> dict[str, object]:
    info = {s: {"dp_event": json.dumps(e.to_dict()), "num_rows": "10"} for s, e in sites.items()}
    return {
        "round": rnd,
        "fit": {"dp_events": [e.to_dict() for e in central], "site_info": info},
    }


def test_study_and_site_epsilon_compose_the_rounds() -> None:
    a, b = DpEvent(1.2, 0.1, 5), DpEvent(0.9, 0.2, 3)
    history = [
        record(1, [DpEvent(2.0)], {"x": a, "y": b}),
        record(2, [DpEvent(2.0)], {"x": a}),  # y sat this round out
    ]
    out = privacy_summary(history, delta=1e-5)
    assert out["study_epsilon"] == pytest.approx(rdp_epsilon([DpEvent(2.0, 1.0, 2)], 1e-5))
    assert out["site_epsilon"]["x"] == pytest.approx(rdp_epsilon([a, a], 1e-5), rel=1e-9)
    assert out["site_epsilon"]["y"] == pytest.approx(rdp_epsilon([b], 1e-5), rel=1e-9)
    first, second = out["per_round"]
    assert first["site_epsilon"]["x"] < second["site_epsilon"]["x"]
    assert first["site_epsilon"]["y"] == second["site_epsilon"]["y"]


def test_pld_final_figures_and_no_central_dp() -> None:
    history = [record(1, [], {"x": DpEvent(1.0, 1.0, 2)})]
    out = privacy_summary(history, delta=1e-5, accountant="pld")
    assert out["study_epsilon"] is None
    assert out["site_epsilon"]["x"] == pytest.approx(pld_epsilon([DpEvent(1.0, 1.0, 2)], 1e-5))


def test_bad_event_names_round_and_site() -> None:
    history = [{"round": 4, "fit": {"site_info": {"x": {"dp_event": '{"kind": "laplace"}'}}}}]
    with pytest.raises(ValidationError, match="round 4 site 'x' dp_event"):
        privacy_summary(history, delta=1e-5)
