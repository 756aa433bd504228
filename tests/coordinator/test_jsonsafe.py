"""Round records and configs become strict JSON (PostgreSQL rejects NaN)."""

from __future__ import annotations

import numpy as np
import pytest

from fedcare.coordinator.jsonsafe import to_json
from fedcare.errors import ValidationError


def test_numpy_tuples_and_non_finite_floats() -> None:
    record = {
        "n": np.int64(3),
        "auc": np.float64("nan"),
        "loss": float("inf"),
        "w": np.array([1.5, 2.5]),
        "pair": (1, "a"),
        "nested": {"ok": True, "none": None},
    }
    assert to_json(record, "record") == {
        "n": 3,
        "auc": None,
        "loss": None,
        "w": [1.5, 2.5],
        "pair": [1, "a"],
        "nested": {"ok": True, "none": None},
    }
    assert record["auc"] != record["auc"]  # the input is not changed


@pytest.mark.parametrize(
    ("value", "match"),
    [({1: "x"}, r"record: key 1"), ({"a": [object()]}, r"record\['a'\]\[0\]")],
)
def test_what_has_no_json_form_is_named(value: object, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        to_json(value, "record")
