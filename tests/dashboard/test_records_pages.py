"""The records pages (sites, models, analytics, privacy, audit), rendered by the real server
over real TLS for a person signed in by the session cookie: plain words, the same visibility
as the API."""

from __future__ import annotations

import html

from fedcare.coordinator.files import record_kit

from .helpers import Api, raw_call
from .records_helpers import LEAD, analytics_job, private_rounds, refusal, register


def _page(api: Api, path: str, role: str = "study-lead") -> tuple[int, str]:
    status, body, headers = raw_call(api, "GET", path, cookie=api.tokens[role])
    if status == 200:
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "<script>" not in body.decode()  # no inline script (the CSP would block it)
    return status, html.unescape(body.decode())


def test_the_nav_links_every_records_page(api: Api) -> None:
    _, page = _page(api, "/sites", "auditor")
    for link in ("/studies", "/sites", "/models", "/analytics", "/privacy", "/audit"):
        assert f'href="{link}"' in page
    _, page = _page(api, "/sites")
    assert 'href="/audit"' not in page  # a study lead may not read the audit trail


def test_sites_and_a_site_in_plain_words(api: Api) -> None:
    mine = private_rounds(api.store, LEAD, "mine")
    refusal(api.store, mine, "hungary", "the plan is not approved at this site")
    status, page = _page(api, "/sites")
    assert status == 200
    assert "Online" in page and "Has never connected" in page and "9.9" in page
    assert 'href="/sites/hungary"' in page and "heart-disease" in page
    status, page = _page(api, "/sites/hungary")
    assert status == 200 and "Site hungary" in page
    assert "3 columns: age, sex, chol" in page and "200 / 50" in page
    assert "yes / no outcome" in page
    assert "the plan is not approved at this site" in page
    assert f'href="/studies/{mine}"' in page
    assert "<details>" in page  # raw JSON only behind "technical details"
    status, page = _page(api, "/sites/nowhere")
    assert status == 404 and "Not found" in page


def test_models_list_card_lineage_and_download(api: Api) -> None:
    _, first = register(api.store, "first", LEAD)
    _, second = register(api.store, "second", LEAD, parent=first)
    _, other = register(api.store, "other", "someone-else")
    status, page = _page(api, "/models")
    assert status == 200 and first in page and second in page and other not in page
    assert "trained from scratch" in page
    status, page = _page(api, f"/models/{second}")
    assert status == 200 and f"Model {second}" in page
    assert f'href="/models/{first}"' in page  # the parent, linked, in the lineage
    assert f'href="/api/v1/models/{second}/download"' in page
    assert "va: timeout: too slow" in page  # the site that did not take part, and why
    assert "Privacy protection: <strong>open</strong>" in page
    status, page = _page(api, f"/models/{first}")
    assert f'href="/models/{second}"' in page and "built on it" in page
    status, page = _page(api, f"/models/{other}")
    assert status == 404 and "Not found" in page
    assert _page(api, f"/models/{other}", "auditor")[0] == 200


def test_analytics_and_privacy_pages(api: Api) -> None:
    job = analytics_job(api.store, LEAD)
    hidden = analytics_job(api.store, "someone-else")
    mine = private_rounds(api.store, LEAD, "mine")
    status, page = _page(api, "/analytics")
    assert status == 200 and job in page and hidden not in page
    assert "running" in page and "heart-disease" in page and "(count)" in page
    assert f'href="/studies/{job}"' in page and "Result (JSON)" in page and "42.0" in page
    status, page = _page(api, "/privacy")
    assert status == 200 and "Budget spent so far" in page
    eps = api.store.site_epsilon(mine)["hungary"]
    assert f"{eps:.4g}" in page and f'href="/studies/{mine}"' in page


def test_audit_page_browses_verifies_and_links_the_export(api: Api) -> None:
    record_kit(api.home, api.ca.parent)
    for n in range(60):
        api.audit.person_action("user-added", "operator-person", name=f"person-{n}")
    status, page = _page(api, "/audit")
    assert status == 403 and "Not allowed" in page
    status, page = _page(api, "/audit", "auditor")
    assert status == 200 and "Verify now" in page and 'href="/api/v1/audit/export"' in page
    assert "Page 1 of 2" in page and "user added" in page and "operator-person" in page
    assert 'data-line="60"' in page and 'data-line="10"' not in page
    status, page = _page(api, "/audit?page=2", "auditor")
    assert 'data-line="10"' in page and 'href="/audit?page=1"' in page
    status, page = _page(api, "/audit?verify=true", "auditor")
    assert "The audit trail is intact: all 60 entries check out" in page
    log = api.home / "audit.jsonl"
    lines = log.read_text().splitlines()
    lines[6] = lines[6].replace("person-6", "person-X")
    log.write_text("\n".join(lines) + "\n")
    status, page = _page(api, "/audit?verify=true", "operator")
    assert status == 200 and "The audit trail fails verification at line 7" in page
