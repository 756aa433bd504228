"""Authorization matrix, part 2: the studies routes and pages (see matrix_core.py)."""

from __future__ import annotations

from .helpers import Api, example_config
from .matrix_core import PAGE, SIGNED_IN, V1

CHANGE = {None: 401, "operator": 200, "study-lead": 200, "auditor": 403}
# no body is sent by the matrix: a submitter gets as far as the check of the body (422)
SUBMIT = {None: 401, "operator": 422, "study-lead": 422, "auditor": 403}

EXPECTED: dict[tuple[str, str], dict[str | None, int]] = {
    ("GET", f"{V1}/studies"): SIGNED_IN,
    ("POST", f"{V1}/studies"): SUBMIT,
    ("POST", f"{V1}/packages"): SUBMIT,
    ("GET", f"{V1}/studies/{{study_id}}"): SIGNED_IN,
    ("POST", f"{V1}/studies/{{study_id}}/cancel"): CHANGE,
    ("GET", f"{V1}/studies/{{study_id}}/rounds"): SIGNED_IN,
    ("GET", f"{V1}/studies/{{study_id}}/results"): SIGNED_IN,
    ("GET", f"{V1}/studies/{{study_id}}/report"): SIGNED_IN,
    # on a finished study (fill): the stream ends at once
    ("GET", f"{V1}/studies/{{study_id}}/events"): SIGNED_IN,
    ("GET", "/studies/{study_id}"): PAGE,
    ("POST", "/studies/{study_id}/cancel"): {
        None: 303,
        "operator": 303,
        "study-lead": 303,
        "auditor": 403,
    },
    ("GET", "/studies/new"): {None: 303, "operator": 200, "study-lead": 200, "auditor": 403},
    # an empty form: refused with the form again (400), after the role check
    ("POST", "/studies/new"): {None: 303, "operator": 400, "study-lead": 400, "auditor": 403},
}


def fill(api: Api) -> dict[str, str]:
    """Placeholder values: a fresh study the study lead submitted (made per call); for the
    event stream a cancelled one, whose stream ends at once (replaced first: dict order)."""
    config = example_config(rounds=3)
    ended = api.store.create_study("heart", config, 7, owner="study-lead-person")
    api.store.set_study_status(ended, "cancelled", "for the matrix")
    return {
        "{study_id}/events": f"{ended}/events",
        "{study_id}": api.store.create_study("heart", config, 7, owner="study-lead-person"),
    }
