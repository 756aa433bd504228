"""A real API server for tests, and a small HTTPS client (urllib with the federation CA)."""

from __future__ import annotations

import atexit
import json
import shutil
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import URL

from fedcare.coordinator.audit_trail import CoordinatorAudit
from fedcare.coordinator.files import record_kit
from fedcare.coordinator.store import CoordinatorStore
from fedcare.dashboard.api import create_app
from fedcare.dashboard.serve import ApiServer, serve_api

from ..deployment.helpers import provision

ROLES = ("operator", "study-lead", "auditor")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "heart-disease.yaml"


def example_config(**changes: Any) -> dict[str, Any]:
    """The example study's stored config (as submission stores it), with ``changes``."""
    from fedcare.records.study import StudyConfig

    return {**StudyConfig.from_yaml(EXAMPLE).model_dump(mode="json"), **changes}


@dataclass
class Api:
    """A served API: its base URL, store, audit, home and one token per role."""

    url: str
    store: CoordinatorStore
    audit: CoordinatorAudit
    home: Path
    ca: Path
    app: Any
    tokens: dict[str, str] = field(default_factory=dict)
    server: ApiServer | None = None

    def restart(self) -> None:
        """Stop the server (its open connections, event streams too, are cut) and serve the
        same app on the same port again, as when the coordinator is restarted."""
        assert self.server is not None
        port = self.server.port
        self.server.stop()
        kit = self.ca.parent
        self.server = serve_api(self.app, "127.0.0.1", port, kit / "cert.pem", kit / "key.pem")

    def call(
        self, method: str, path: str, token: str | None = None, *, client_ip: str = "127.0.0.1"
    ) -> tuple[int, Any]:
        """``(status, JSON body)`` of one HTTPS request (token as a Bearer header)."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        headers["X-Forwarded-For"] = client_ip
        req = urllib.request.Request(self.url + path, method=method, headers=headers)
        ctx = ssl.create_default_context(cafile=str(self.ca))
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def raw_call(
    api: Api,
    method: str,
    path: str,
    *,
    token: str | None = None,
    cookie: str | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    """``(status, body, headers)`` of one HTTPS request, redirects not followed; ``token``
    as a Bearer header, ``cookie`` as the dashboard's session cookie."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if cookie is not None:
        sent["Cookie"] = f"fedcare_session={cookie}"
    req = urllib.request.Request(api.url + path, data=body, method=method, headers=sent)
    opener = urllib.request.build_opener(
        _NoRedirect,
        urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(api.ca))),
    )
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


_TEMPLATE: dict[str, Any] = {}


def _template_db() -> tuple[Path, dict[str, str]]:
    """A migrated SQLite coordinator database with one user per role, made once per test
    process, and the users' tokens. Each SQLite API gets its own copy of the file: migrating
    and hashing three tokens with scrypt for every test cost about 0.3 s each."""
    if not _TEMPLATE:
        folder = Path(tempfile.mkdtemp(prefix="fedcare-api-template-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        store = CoordinatorStore(f"sqlite:///{folder / 'coordinator.db'}", folder / "artifacts")
        try:
            tokens = {role: store.add_user(f"{role}-person", role) for role in ROLES}
        finally:
            store.close()
        _TEMPLATE.update(path=folder / "coordinator.db", tokens=tokens)
    return _TEMPLATE["path"], dict(_TEMPLATE["tokens"])


@contextmanager
def start_api(tmp_path: Path, db_url: str | URL | None, **options: Any) -> Iterator[Api]:
    """Provision a federation, open a coordinator home with one user per role (on SQLite: a
    copy of :func:`_template_db`), serve."""
    kits = provision(tmp_path / "fed", sites=("hungary", "va"))
    home = tmp_path / "home"
    home.mkdir()
    record_kit(home, kits.coordinator)  # as `coordinator start` does: packages check its CA
    tokens: dict[str, str] | None = None
    if db_url is None:
        template, tokens = _template_db()
        shutil.copyfile(template, home / "coordinator.db")
    store = CoordinatorStore(db_url or f"sqlite:///{home / 'coordinator.db'}", home / "artifacts")
    audit = CoordinatorAudit.open(home, kits.coordinator, actor="coordinator:test")
    app = create_app(store, audit, home=home, **options)
    server = serve_api(
        app,
        "127.0.0.1",
        0,
        kits.coordinator / "cert.pem",
        kits.coordinator / "key.pem",
    )
    api = Api(
        f"https://127.0.0.1:{server.port}",
        store,
        audit,
        home,
        kits.coordinator / "ca.pem",
        app,
        server=server,
    )
    api.tokens = tokens or {role: store.add_user(f"{role}-person", role) for role in ROLES}
    try:
        yield api
    finally:
        assert api.server is not None
        api.server.stop()
        audit.close()
        store.close()
