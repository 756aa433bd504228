"""A small unit table: linear (and affine, for temperature) conversions between units.

Units of one dimension convert through a base unit. Mass concentration (``mg/dL``) and molar
concentration (``mmol/L``) convert only with the analyte's molar mass (g/mol), which the schema
or the mapping declares per variable: ``mmol/L = mg/dL * 10 / molar_mass``. Unit names are
case-sensitive (``mg/dl`` is not ``mg/dL``), so a typo is an error rather than a guess.
"""

from __future__ import annotations

__all__ = ["KNOWN_UNITS", "UnitError", "conversion"]

# unit -> (dimension, scale to base, offset to base): base = value * scale + offset
_UNITS: dict[str, tuple[str, float, float]] = {
    "kg": ("mass", 1.0, 0.0),
    "g": ("mass", 1e-3, 0.0),
    "lb": ("mass", 0.45359237, 0.0),
    "cm": ("length", 1.0, 0.0),
    "m": ("length", 100.0, 0.0),
    "mm": ("length", 0.1, 0.0),
    "in": ("length", 2.54, 0.0),
    "years": ("age", 1.0, 0.0),
    "months": ("age", 1.0 / 12.0, 0.0),
    "weeks": ("age", 7.0 / 365.25, 0.0),
    "days": ("age", 1.0 / 365.25, 0.0),
    "°C": ("temperature", 1.0, 0.0),
    "degC": ("temperature", 1.0, 0.0),
    "°F": ("temperature", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
    "degF": ("temperature", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
    "K": ("temperature", 1.0, -273.15),
    "mg/dL": ("mass-concentration", 1.0, 0.0),
    "mg/L": ("mass-concentration", 0.1, 0.0),
    "g/L": ("mass-concentration", 100.0, 0.0),
    "g/dL": ("mass-concentration", 1000.0, 0.0),
    "mmol/L": ("molar-concentration", 1.0, 0.0),
    "µmol/L": ("molar-concentration", 1e-3, 0.0),
    "umol/L": ("molar-concentration", 1e-3, 0.0),
    "mol/L": ("molar-concentration", 1e3, 0.0),
    "mmHg": ("pressure", 1.0, 0.0),
    "kPa": ("pressure", 7.500617, 0.0),
    "bpm": ("rate", 1.0, 0.0),
    "/min": ("rate", 1.0, 0.0),
    "%": ("fraction", 1.0, 0.0),
    "fraction": ("fraction", 100.0, 0.0),
    "mEq/L": ("electrolyte", 1.0, 0.0),
    "K/uL": ("count", 1.0, 0.0),
    "mL": ("volume", 1.0, 0.0),
    "L": ("volume", 1000.0, 0.0),
}
KNOWN_UNITS: tuple[str, ...] = tuple(_UNITS)


class UnitError(ValueError):
    """No conversion between two units (the caller adds the file and variable)."""


def _mass_to_molar(molar_mass: float | None, source: str, target: str) -> float:
    if molar_mass is None or molar_mass <= 0:
        raise UnitError(
            f"unit {source!r} has no conversion to {target!r} without the analyte's "
            "molar_mass (g/mol)"
        )
    return 10.0 / molar_mass  # mg/dL -> mmol/L


def conversion(source: str, target: str, molar_mass: float | None = None) -> tuple[float, float]:
    """``(scale, offset)`` with ``value_in_target = value_in_source * scale + offset``.

    Raises
    ------
    UnitError
        If either unit is unknown or they measure different things.
    """
    if source == target:
        return 1.0, 0.0
    for unit in (source, target):
        if unit not in _UNITS:
            raise UnitError(
                f"unit {source!r} has no conversion to {target!r}: {unit!r} is not a known unit "
                f"(known: {', '.join(KNOWN_UNITS)})"
            )
    dim_s, scale_s, off_s = _UNITS[source]
    dim_t, scale_t, off_t = _UNITS[target]
    bridge = 1.0
    if dim_s != dim_t:
        pair = {dim_s, dim_t}
        if pair != {"mass-concentration", "molar-concentration"}:
            raise UnitError(f"unit {source!r} has no conversion to {target!r} ({dim_s} vs {dim_t})")
        factor = _mass_to_molar(molar_mass, source, target)
        bridge = factor if dim_s == "mass-concentration" else 1.0 / factor
    # to base of source, bridge to base of target, then from base of target
    scale = scale_s * bridge / scale_t
    offset = (off_s * bridge - off_t) / scale_t
    return scale, offset
