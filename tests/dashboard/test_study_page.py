"""The study pages as served (HTML over real TLS): plain words, the data for the live parts,
the privacy budget, the model link, cancelling and submitting by form from the same origin."""

from __future__ import annotations

import json
import re
import uuid

import yaml

from fedcare.coordinator.store_ledger import PrivacySpend
from fedcare.privacy.accounting.analysis import DpEvent

from .helpers import EXAMPLE, Api, example_config, raw_call
from .rounds import register_sites


def _page(api: Api, path: str, role: str) -> tuple[int, str]:
    status, body, _ = raw_call(api, "GET", path, cookie=api.tokens[role])
    return status, body.decode()


def test_the_study_page_says_where_it_stands_in_plain_words(api: Api) -> None:
    register_sites(api.store)
    config = example_config(
        rounds=4,
        privacy={
            "mode": "private",
            "epsilon": 2.0,
            "dp": {"noise_multiplier": 1.0, "clip_norm": 1},
        },
    )
    sid = api.store.create_study("heart-dp", config, 7, owner="study-lead-person")
    api.store.set_study_status(sid, "running")
    record = {"round": 1, "fit": {"sampled_sites": ["hungary"], "site_info": {"hungary": {}}}}
    spend = PrivacySpend("hungary", "heart-disease", (DpEvent(1.2).to_dict(),))
    api.store.record_round(
        sid, 1, params=b"p", state=b"s", record=record, duration_s=1.0, privacy=[spend]
    )
    status, html = _page(api, f"/studies/{sid[:8]}", "study-lead")
    assert status == 200
    assert "heart-dp" in html and "running" in html and "1</strong>\n    of 4" in html
    eps = api.store.site_epsilon(sid)["hungary"]
    assert eps > 0 and "ε = 2.0" in html and f"{min(100.0, 50 * eps):.0f}%" in html
    assert "Cancel this study" in html and "/static/study.js" in html
    assert "<script>" not in html  # no inline script (the CSP forbids it)
    block = re.search(r'<script type="application/json" id="study-data">(.*?)</script>', html, re.S)
    assert block is not None
    data = json.loads(block.group(1))
    assert data["rounds"][0]["sites"]["hungary"]["status"] == "aggregated"
    assert data["events"] == f"/api/v1/studies/{sid}/events"
    status, html = _page(api, f"/studies/{sid}", "auditor")
    assert status == 200 and "Cancel this study" not in html
    other = api.store.create_study("theirs", example_config(), 1, owner="someone-else")
    assert _page(api, f"/studies/{other}", "study-lead")[0] == 404


def test_cancel_by_form_needs_the_dashboards_origin(api: Api) -> None:
    sid = api.store.create_study("heart", example_config(), 7, owner="study-lead-person")
    lead = api.tokens["study-lead"]
    status, _, _ = raw_call(api, "POST", f"/studies/{sid}/cancel", cookie=lead)
    assert status == 403 and api.store.get_study(sid).status == "pending"
    origin = {"Origin": api.url}
    status, _, headers = raw_call(
        api, "POST", f"/studies/{sid}/cancel", cookie=lead, headers=origin
    )
    assert status == 303 and headers["location"] == f"/studies/{sid}"
    assert api.store.get_study(sid).reason == "cancelled by study-lead-person"
    entries = (api.home / "audit.jsonl").read_text()
    assert '"study-cancel-requested"' in entries and '"via":"dashboard"' in entries.replace(" ", "")


def _multipart(fields: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, (filename, data) in fields.items():
        head = f'Content-Disposition: form-data; name="{name}"'
        if filename:
            head += f'; filename="{filename}"\r\nContent-Type: application/octet-stream'
        parts.append(f"--{boundary}\r\n{head}\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_the_submit_form_runs_the_same_checks(api: Api) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    text = yaml.safe_dump({**doc, "strategy": {"name": "fedmagic"}}).encode()
    body, kind = _multipart({"study": ("study.yaml", text)})
    headers = {"Origin": api.url, "Content-Type": kind}
    lead = api.tokens["study-lead"]
    status, page, _ = raw_call(api, "POST", "/studies/new", cookie=lead, body=body, headers=headers)
    assert status == 422 and b"unknown strategy" in page and b"submit-form" in page
    body, kind = _multipart(
        {"study": ("study.yaml", yaml.safe_dump(doc).encode()), "queue": ("", b"1")}
    )
    headers["Content-Type"] = kind
    status, _, answer = raw_call(
        api, "POST", "/studies/new", cookie=lead, body=body, headers=headers
    )
    assert status == 303
    (study,) = api.store.list_studies()
    assert answer["location"] == f"/studies/{study.id}" and study.owner == "study-lead-person"
    status, _, _ = raw_call(
        api, "POST", "/studies/new", cookie=api.tokens["auditor"], body=body, headers=headers
    )
    assert status == 403
    assert _page(api, "/studies/new", "auditor")[0] == 403
    status, html = _page(api, "/studies/new", "study-lead")
    assert status == 200 and 'enctype="multipart/form-data"' in html
