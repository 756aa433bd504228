"""Writing results: strict JSON (NaN as null) and the HTML report."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fedcare.evaluation.report import write_report

__all__ = ["jsonable", "write_outputs"]


def jsonable(value: Any) -> Any:
    """``value`` with NaN/inf floats as ``None`` and tuples as lists, for strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return jsonable(value.item())
    return value


def write_outputs(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``results.json`` and ``report.html`` into ``out`` (and ``clinical.json``, the flat
    clinical validation summary, when the results have a validation); return the first two."""
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results_path.write_text(json.dumps(jsonable(results), indent=2, allow_nan=False) + "\n")
    if results.get("validation") or results.get("leave_one_site_out"):
        from fedcare.evaluation.clinical_json import clinical_summary

        summary = jsonable(clinical_summary(results))
        (out / "clinical.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    report_path = write_report(results, out / "report.html")
    return results_path, report_path
