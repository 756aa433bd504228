"""A real site home for the console tests, and the console served on it by uvicorn.

The home is made the way a site's is: a provisioned federation with a researcher (alice), the
agent's governance built as ``fedcare site start`` builds it (policy file, kit record, signed
audit log), a package study whose version 1.0.0 the steward reviewed and approved with the
steward's own functions, and two plans that arrived in tasks and await a decision, recorded
as the agent's approval step records them (:meth:`ApprovalStore.record_pending` with the
plan's summary): version 1.1.0 of the package study, and a plain logistic study.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import yaml

from fedcare.cli.plans import plan_of_file, site_packages
from fedcare.dashboard.console import create_console_app
from fedcare.dashboard.console_auth import ensure_token
from fedcare.dashboard.serve import serve_http
from fedcare.site.approvals import ApprovalStore
from fedcare.site.stewardship import steward_store
from fedcare.strategy.plan import plan_for_study, plan_summary
from fedcare.transport.researchers import add_researcher
from tests.packages.distribution import build

from ..deployment.helpers import heart_study, provision

SOON = datetime.now(timezone.utc) + timedelta(days=30)


@dataclass
class SiteHome:
    """A site's state folder, kit and the plans in it."""

    home: Path
    kit: Path
    policy: Path
    #: study name -> plan hash, for "package-study" 1.0.0 (approved) and 1.1.0 (pending),
    #: and "plain-study" (pending).
    approved: tuple[str, str]
    pending_package: tuple[str, str]
    pending_plain: tuple[str, str]

    def store(self) -> ApprovalStore:
        return steward_store(self.home, self.kit)

    def row(self, study: str, plan_hash: str) -> Any:
        found = self.store().get(study, plan_hash)
        assert found is not None, f"no row for {study} {plan_hash}"
        return found


def make_site_home(root: Path) -> SiteHome:
    from fedcare.cli.governance import build_governance

    kits = provision(root / "federation", ("site-a",), name="console-test")
    add_researcher(kits.root, "alice")
    kit, home = kits.sites["site-a"], root / "site-home"
    policy = root / "policy.yaml"
    policy.write_text(yaml.safe_dump({"packages": {"trusted_signers": ["alice"]}, "min_cohort": 5}))
    build_governance(home, kit, policy).audit.close()  # as `fedcare site start` does
    packages = site_packages(home, lambda: kit)
    plans = {}
    for version, code in (("1.0.0", ""), ("1.1.0", "\n\nREVISION = 2\n")):
        built = build(root / "pk", kits.root, version=version, code=code)
        doc = heart_study(name="package-study", rounds=1, min_sites=1).model_dump(mode="json")
        doc["model"] = {"kind": "package", "package": str(built.path)}
        doc["preprocessing"] = {"impute": "mean", "scale": "local"}
        path = root / f"study-{version}.yaml"
        path.write_text(yaml.safe_dump(doc))
        plans[version] = plan_of_file(path, None, packages)  # the steward's review
    first, second = plans["1.0.0"], plans["1.1.0"]
    steward_store(home, kit).approve(first.study, first.hash, SOON, "ethics ref 1")
    approvals = ApprovalStore.in_state_dir(home)
    approvals.record_pending(second.study, second.hash, second.summary)
    plain = plan_for_study(heart_study(name="plain-study", rounds=2))
    approvals.record_pending("plain-study", plain.hash, plan_summary(plain))
    return SiteHome(
        home, kit, policy, (first.study, first.hash), (second.study, second.hash),
        ("plain-study", plain.hash),
    )  # fmt: skip


@dataclass
class Console:
    """The console served on a site home: its URL, app, token and the site."""

    url: str
    app: Any
    token: str
    site: SiteHome

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=20)

    def signed_in(self, name: str = "Dr Steward") -> tuple[httpx.Client, str]:
        """A client with a session, and the session's CSRF token (read from a page's form)."""
        client = self.client()
        answer = client.post("/signin", data={"token": self.token, "name": name})
        assert answer.status_code == 303, answer.text
        page = client.get("/plans")
        assert page.status_code == 200, page.text
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found, page.text
        return client, found.group(1)


@contextmanager
def serve_console(site: SiteHome, **options: Any) -> Iterator[Console]:
    token, _ = ensure_token(site.home)
    app = create_console_app(site.home, site.kit, token, **options)
    server = serve_http(app, "127.0.0.1", 0)
    try:
        yield Console(f"http://127.0.0.1:{server.port}", app, token, site)
    finally:
        server.stop()
