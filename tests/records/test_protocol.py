"""The protocol version rules (fedcare.records.protocol), without a network."""

from __future__ import annotations

from fedcare.records.protocol import (
    FEATURES,
    LEGACY,
    PROTOCOL,
    announced,
    missing,
    refusal,
    study_features,
    too_old,
)


def test_a_hello_without_fields_is_the_minor_before_the_first_announcing_one() -> None:
    assert announced(0, 0) == LEGACY == (1, 0)
    assert announced(1, 1) == (1, 1)
    assert PROTOCOL[1] >= 1


def test_refusal_rules() -> None:
    assert refusal("s", (1, 1), (1, 1)) == ""
    assert refusal("s", (1, 0), (1, 1)) == ""  # one minor behind takes part
    assert refusal("s", (1, 5), (1, 1)) == ""  # a newer agent understands older minors
    behind = refusal("s", (1, 1), (1, 3))
    assert behind.endswith("at most 1 minor version behind; upgrade the site's fedcare")
    assert "protocol 1.1, the coordinator 1.3" in behind
    assert refusal("s", (2, 0), (1, 1)).endswith("upgrade the coordinator's fedcare")
    assert refusal("s", (1, 9), (2, 0)).endswith("upgrade the site's fedcare")


def test_features_of_a_study_and_what_an_old_site_lacks() -> None:
    assert study_features({"compression": {"method": "none"}, "dataset": {"name": "x"}}) == []
    both = study_features(
        {"compression": {"method": "int8"}, "dataset": {"skip_invalid_rows": {"max_fraction": 0.1}}}
    )
    assert both == ["update compression", "invalid-row skipping"]
    assert missing(0, both) == both
    assert missing(1, both) == []
    assert set(FEATURES) >= {"deploy task", *both}
    training = study_features({"validation": {"report": True}, "compression": {"method": "fp16"}})
    assert training == ["update compression", "the training plan's validation section"]
    assert too_old("h", (1, 0), "deploy task") == (
        "site 'h' speaks protocol 1.0; deploy task needs 1.1: upgrade its fedcare"
    )
