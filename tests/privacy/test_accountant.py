import json

import pytest

from fedcare.errors import ConfigError, ValidationError
from fedcare.privacy.accounting import (
    Accountant,
    DpEvent,
    accountant_names,
    create_accountant,
    epsilon_of,
    rdp_epsilon,
)


def test_record_is_immutable_and_epsilon_grows() -> None:
    empty = create_accountant("rdp")
    one = empty.record(DpEvent(1.0))
    two = one.record(DpEvent(1.0).to_dict())
    assert empty.events == () and len(two.events) == 2
    assert empty.epsilon(1e-5) == 0.0
    assert 0 < one.epsilon(1e-5) < two.epsilon(1e-5)
    assert two.epsilon(1e-5) == pytest.approx(rdp_epsilon([DpEvent(1.0, 1.0, 2)], 1e-5))


def test_state_round_trips_through_json() -> None:
    acc = Accountant("pld").record_all([DpEvent(1.2, 0.5, 3), DpEvent(2.0)])
    restored = Accountant.from_state(json.loads(json.dumps(acc.to_state())))
    assert restored == acc
    assert restored.epsilon(1e-6) == pytest.approx(acc.epsilon(1e-6))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "key 'version' is 2"),
        ({"method": "moments"}, "key 'method' is 'moments'"),
        ({"events": "x"}, "key 'events' must be a list"),
        ({"events": [{"kind": "sampled_gaussian"}]}, r"events\[0\]: missing key"),
        ({"extra": 1}, r"unknown key\(s\) \['extra'\]"),
    ],
)
def test_bad_state_names_the_key(change: dict[str, object], message: str) -> None:
    state = {**Accountant("rdp").record(DpEvent(1.0)).to_state(), **change}
    with pytest.raises(ValidationError, match=message):
        Accountant.from_state(state)


def test_missing_key_is_named() -> None:
    state = Accountant().to_state()
    del state["events"]
    with pytest.raises(ValidationError, match="missing key 'events'"):
        Accountant.from_state(state)


def test_registry_names_and_unknown_method() -> None:
    assert accountant_names() == ["opacus-rdp", "pld", "rdp"]
    with pytest.raises(ConfigError, match="unknown accountant 'gdp'"):
        epsilon_of([DpEvent(1.0)], 1e-5, method="gdp")
    with pytest.raises(ConfigError, match="unknown accountant"):
        create_accountant("gdp")
