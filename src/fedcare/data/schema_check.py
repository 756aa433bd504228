"""Feature schemas: what each column of a site's feature array means, and whether sites agree.

Two sites can send arrays of the same shape whose columns mean different things (a mapped
table's ``age, sex_1, cp_2, ...`` against the built-in ``age, sex, trestbps, ...``, both 13
wide). Training on both silently harms the model, so each site sends, in its dataset
description at Hello, its *feature schema*::

    {"input_shape": [13], "dtype": "float64",
     "columns": [{"name": "age", "unit": "years"}, {"name": "sex_1", "unit": null}, ...],
     "digest": "sha256:..."}

``columns`` names the features in order (2-D tabular data; empty for images), with the unit
where the common data model gives one. The coordinator picks a *reference* schema per study and
refuses, for that study only, every site whose schema differs from it, naming the differing
columns (:func:`schema_differences`).

Which schema is the reference (:func:`reference_schema`): the schema most of the connected
sites send (by digest); a tie goes to the group holding the site id that sorts first. Units are
compared only where both sides give one (a built-in dataset carries none). A description
without a schema (an older agent) is compared by ``input_shape`` only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "feature_schema",
    "reference_schema",
    "schema_differences",
    "schema_of_description",
]

_PREFIX = "sha256:"
#: Differing columns named in one refusal, at most (the count of the rest follows).
MAX_NAMED = 6


def feature_schema(
    input_shape: Sequence[int],
    dtype: str,
    names: Sequence[str] = (),
    units: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """The schema of one site's features (JSON-ready, with its digest).

    ``names`` are used only when they name every column of 2-D features; ``units`` maps a
    column name to its unit (columns not in it have none).
    """
    shape = [int(v) for v in input_shape]
    units = units or {}
    columns: list[dict[str, Any]] = []
    if len(shape) == 1 and len(names) == shape[0]:
        columns = [{"name": str(n), "unit": units.get(str(n))} for n in names]
    body = {"input_shape": shape, "dtype": str(dtype), "columns": columns}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return {**body, "digest": _PREFIX + hashlib.sha256(text.encode()).hexdigest()}


def schema_of_description(described: Mapping[str, Any]) -> dict[str, Any] | None:
    """The schema in a site's dataset description: its ``schema``, else one built from its
    ``input_shape`` alone (an older agent); ``None`` when it describes no usable data."""
    schema = described.get("schema")
    if isinstance(schema, Mapping) and isinstance(schema.get("input_shape"), list):
        return dict(schema)
    shape = described.get("input_shape")
    if isinstance(shape, list) and shape and all(isinstance(v, int) for v in shape):
        return {"input_shape": shape, "dtype": None, "columns": [], "digest": f"shape:{shape}"}
    return None


def reference_schema(schemas: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The schema most sites in ``schemas`` (site id -> schema) send; a tie goes to the group
    holding the site id that sorts first. ``schemas`` must not be empty."""
    groups: dict[str, list[str]] = {}
    for site in sorted(schemas):
        groups.setdefault(str(schemas[site].get("digest")), []).append(site)
    best = min(groups.values(), key=lambda sites: (-len(sites), sites[0]))
    return dict(schemas[best[0]])


def _column(c: Any) -> tuple[str, str | None]:
    if isinstance(c, Mapping):
        unit = c.get("unit")
        return str(c.get("name")), None if unit is None else str(unit)
    return str(c), None


def _column_differences(here: Sequence[Any], there: Sequence[Any]) -> list[str]:
    out = []
    for i in range(max(len(here), len(there))):
        a = _column(here[i]) if i < len(here) else ("(none)", None)
        b = _column(there[i]) if i < len(there) else ("(none)", None)
        if a[0] != b[0]:
            out.append(f"column {i}: {a[0]!r} here vs {b[0]!r} in the reference")
        elif a[1] is not None and b[1] is not None and a[1] != b[1]:
            out.append(f"column {i} ({a[0]!r}): unit {a[1]!r} here vs {b[1]!r} in the reference")
    if len(out) > MAX_NAMED:
        out = [*out[:MAX_NAMED], f"and {len(out) - MAX_NAMED} more"]
    return out


def schema_differences(schema: Mapping[str, Any] | None, reference: Mapping[str, Any]) -> list[str]:
    """How ``schema`` (a site's) differs from ``reference``: one line per difference, the
    position and the name (or unit) here vs there; empty when they agree."""
    if schema is None:
        return ["no usable data for this dataset (no input shape: its data check may have failed)"]
    shape, ref_shape = list(schema.get("input_shape") or []), list(reference["input_shape"])
    if shape != ref_shape:
        return [f"input shape {shape} here vs {ref_shape} in the reference"]
    dtype, ref_dtype = schema.get("dtype"), reference.get("dtype")
    out = []
    if dtype is not None and ref_dtype is not None and dtype != ref_dtype:
        out.append(f"dtype {dtype} here vs {ref_dtype} in the reference")
    columns, ref_columns = schema.get("columns") or [], reference.get("columns") or []
    if columns and ref_columns:
        out += _column_differences(columns, ref_columns)
    return out
