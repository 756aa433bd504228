"""Authorization matrix, part 1: health, the schema and the dashboard's own pages.

Each ``matrix_*.py`` gives ``EXPECTED`` ((method, route template) -> {role or None: status})
and ``fill(api)`` (values for the template's placeholders); test_api.py checks them all and
that they cover every route the app answers. Pages (outside ``/api/v1``) are called with the
token as the session cookie; a page without one redirects (303) to the sign-in page.
"""

from __future__ import annotations

from .helpers import Api

V1 = "/api/v1"
ALL_200 = {None: 200, "operator": 200, "study-lead": 200, "auditor": 200}
SIGNED_IN = {None: 401, "operator": 200, "study-lead": 200, "auditor": 200}
PAGE = {None: 303, "operator": 200, "study-lead": 200, "auditor": 200}

EXPECTED: dict[tuple[str, str], dict[str | None, int]] = {
    ("GET", f"{V1}/health"): ALL_200,
    ("GET", f"{V1}/openapi.json"): SIGNED_IN,
    ("GET", "/login"): ALL_200,
    # the form's token is not sent here: an empty sign-in is refused
    ("POST", "/login"): {None: 401, "operator": 401, "study-lead": 401, "auditor": 401},
    ("POST", "/logout"): {None: 303, "operator": 303, "study-lead": 303, "auditor": 303},
    ("GET", "/"): {None: 303, "operator": 303, "study-lead": 303, "auditor": 303},
    ("GET", "/studies"): PAGE,
    ("GET", "/static/{name}"): ALL_200,
}


def fill(api: Api) -> dict[str, str]:
    """Placeholder values: a static file."""
    return {"{name}": "fedcare.css"}
