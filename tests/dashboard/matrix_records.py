"""Authorization matrix, part 3: sites, models, analytics, ledger, audit (see matrix_core.py)."""

from __future__ import annotations

from .helpers import Api
from .matrix_core import PAGE, SIGNED_IN, V1
from .records_helpers import LEAD, analytics_job, register

AUDIT_READERS = {None: 401, "operator": 200, "study-lead": 403, "auditor": 200}
# no body is sent by the matrix: a submitter gets as far as the check of the body (422)
SUBMIT = {None: 401, "operator": 422, "study-lead": 422, "auditor": 403}

EXPECTED: dict[tuple[str, str], dict[str | None, int]] = {
    ("GET", f"{V1}/sites"): SIGNED_IN,
    ("GET", f"{V1}/sites/{{site_id}}"): SIGNED_IN,
    ("GET", f"{V1}/models"): SIGNED_IN,
    ("GET", f"{V1}/models/{{version}}"): SIGNED_IN,
    ("GET", f"{V1}/models/{{version}}/lineage"): SIGNED_IN,
    ("GET", f"{V1}/models/{{version}}/download"): SIGNED_IN,
    ("POST", f"{V1}/models/{{version}}/deploy"): SUBMIT,
    ("GET", f"{V1}/models/{{version}}/deployments"): SIGNED_IN,
    ("GET", f"{V1}/analytics"): SIGNED_IN,
    ("POST", f"{V1}/analytics"): SUBMIT,
    ("GET", f"{V1}/analytics/{{job_id}}"): SIGNED_IN,
    ("GET", f"{V1}/ledger"): SIGNED_IN,
    ("GET", f"{V1}/audit"): AUDIT_READERS,
    ("GET", f"{V1}/audit/verify"): AUDIT_READERS,
    ("GET", f"{V1}/audit/export"): AUDIT_READERS,
    ("GET", "/sites"): PAGE,
    ("GET", "/sites/{site_id}"): PAGE,
    ("GET", "/models"): PAGE,
    ("GET", "/models/{version}"): PAGE,
    ("GET", "/analytics"): PAGE,
    ("GET", "/privacy"): PAGE,
    ("GET", "/audit"): {None: 303, "operator": 200, "study-lead": 403, "auditor": 200},
}


def fill(api: Api) -> dict[str, str]:
    """Placeholder values: a site, a model and an analytics job of the study lead, and an
    audit entry (made once per served API)."""
    made: dict[str, str] | None = getattr(api, "_records_fill", None)
    if made is None:
        _, version = register(api.store, "matrix", LEAD)
        job = analytics_job(api.store, LEAD)
        api.audit.person_action("matrix-filled", "operator-person")
        made = {"{site_id}": "hungary", "{version}": version, "{job_id}": job}
        api._records_fill = made  # type: ignore[attr-defined]
    return made
