import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcare.data.cdm.units import KNOWN_UNITS, UnitError, conversion


def _apply(value: float, source: str, target: str, molar_mass: float | None = None) -> float:
    scale, offset = conversion(source, target, molar_mass)
    return value * scale + offset


@pytest.mark.parametrize(
    ("value", "source", "target", "molar", "expected"),
    [
        (180.16, "mg/dL", "mmol/L", 180.16, 10.0),  # glucose
        (5.0, "mmol/L", "mg/dL", 386.65, 193.325),  # cholesterol
        (1.0, "mg/dL", "µmol/L", 113.12, 88.40169731),  # creatinine
        (98.6, "°F", "°C", None, 37.0),
        (0.0, "°C", "K", None, 273.15),
        (220.0, "lb", "kg", None, 99.790321),
        (70.0, "in", "cm", None, 177.8),
        (18.0, "months", "years", None, 1.5),
        (1.8, "m", "cm", None, 180.0),
    ],
)
def test_conversions_match_reference_values(value, source, target, molar, expected) -> None:
    assert _apply(value, source, target, molar) == pytest.approx(expected, rel=1e-6)


@given(
    st.floats(-1e4, 1e4),
    st.sampled_from([("°F", "°C"), ("lb", "kg"), ("in", "cm"), ("mg/dL", "mmol/L"), ("K", "°F")]),
)
def test_conversions_round_trip(value: float, pair: tuple[str, str]) -> None:
    there = _apply(value, *pair, molar_mass=180.16)
    back = _apply(there, pair[1], pair[0], molar_mass=180.16)
    assert math.isclose(back, value, rel_tol=1e-9, abs_tol=1e-9)


def test_no_conversion_names_both_units_and_why() -> None:
    with pytest.raises(UnitError, match=r"unit 'mg/dl' has no conversion to 'mmol/L'.*not a known"):
        conversion("mg/dl", "mmol/L", 180.16)
    with pytest.raises(UnitError, match=r"'kg' has no conversion to 'cm' \(mass vs length\)"):
        conversion("kg", "cm")
    with pytest.raises(UnitError, match="molar_mass"):
        conversion("mg/dL", "mmol/L")
    assert "mmol/L" in KNOWN_UNITS and np.isfinite(conversion("g/L", "mg/dL")[0])
