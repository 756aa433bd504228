"""Authorization matrix, part 2: the studies routes (see matrix_core.py)."""

from __future__ import annotations

from .helpers import Api
from .matrix_core import SIGNED_IN, V1

EXPECTED: dict[tuple[str, str], dict[str | None, int]] = {
    ("GET", f"{V1}/studies"): SIGNED_IN,
    ("GET", f"{V1}/studies/{{study_id}}"): SIGNED_IN,
    ("POST", f"{V1}/studies/{{study_id}}/cancel"): {
        None: 401,
        "operator": 200,
        "study-lead": 200,
        "auditor": 403,
    },
}


def fill(api: Api) -> dict[str, str]:
    """Placeholder values: a fresh study the study lead submitted (made per call)."""
    return {
        "{study_id}": api.store.create_study("heart", {"rounds": 3}, 7, owner="study-lead-person")
    }
