"""The API routes the client needs that are not in this branch yet, per /work/API_CONTRACT.md.

``POST /packages``, ``POST /studies``, ``GET /studies/{id}/rounds``, ``.../events`` (server-sent
events), ``.../results`` and ``.../report`` are being written by the "studies" helper. Until
they are merged, the client is tested against this small real FastAPI app that answers them as
the contract says, over the same real coordinator store, with the real token check, served
over real TLS by :func:`fedcare.dashboard.serve.serve_api` with the coordinator kit's
certificate. REPLACED BY THE REAL ROUTES ONCE MERGED: then these tests run against
``create_app`` and this module goes.

Simplifications (the client does not see them): an uploaded archive is not verified (its hash
is the SHA-256 of its bytes, not of its manifest); a study's checks are only the ones the
client depends on (a package named by path is refused with 422).
"""

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import yaml
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials

from fedcare.coordinator.rows import UserInfo
from fedcare.dashboard.api import API_PREFIX
from fedcare.dashboard.auth import Authenticator, FailureLimiter, bearer
from fedcare.dashboard.serve import serve_api
from fedcare.dashboard.views import round_entry, study_brief
from fedcare.errors import NotFoundError

from .helpers import Api

FINISHED = ("completed", "failed", "cancelled")


@dataclass
class Contract:
    """The served contract app: its URL, and what it received (for the tests to check)."""

    url: str
    uploads: list[bytes] = field(default_factory=list)
    submitted: list[dict[str, Any]] = field(default_factory=list)
    after_rounds: list[int | None] = field(default_factory=list)
    #: Connections of the event stream to cut after their first round event (1: the first).
    cut_connections: set[int] = field(default_factory=set)
    ping_s: float = 0.05


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def contract_app(api: Api, contract: Contract) -> FastAPI:
    """The contract's new study routes over ``api``'s store."""
    store = api.store
    auth = Authenticator(store, FailureLimiter(100, 60.0))
    packages: dict[str, bytes] = {}
    lock = threading.Lock()

    def current_user(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> UserInfo:
        return auth.user(request, credentials)

    User = Annotated[UserInfo, Depends(current_user)]

    def study_of(study_id: str) -> Any:
        try:
            return store.get_study(study_id)
        except NotFoundError:
            raise HTTPException(404, f"no study with id {study_id!r}") from None

    app = FastAPI(openapi_url=None, docs_url=None)

    @app.post(f"{API_PREFIX}/packages", status_code=201)
    async def upload(request: Request, user: User) -> dict[str, Any]:
        body = await request.body()
        if not body:
            raise HTTPException(422, "the package archive is empty")
        contract.uploads.append(body)
        ref = "sha256:" + hashlib.sha256(body).hexdigest()
        packages[ref] = body
        return {"package": ref, "name": "uploaded", "version": "1.0.0"}

    @app.post(f"{API_PREFIX}/studies", status_code=201)
    def submit(body: dict[str, Any], user: User) -> dict[str, Any]:
        config = yaml.safe_load(body["study"])
        contract.submitted.append({"study": body["study"], "queue": body.get("queue")})
        model = config.get("model") or {}
        ref = model.get("package")
        if model.get("kind") == "package" and not str(ref).startswith("sha256:"):
            raise HTTPException(
                422, f"model.package {ref} is a path: upload the archive first (POST /packages)"
            )
        if model.get("kind") == "package" and ref not in packages:
            raise HTTPException(422, f"model.package {ref} is not stored at this coordinator")
        with lock:
            sid = store.create_study(config["name"], config, 0, owner=user.name)
        warnings = ["fewer than min_sites sites offer the dataset"] if body.get("queue") else []
        return {**study_brief(store.get_study(sid)), "warnings": warnings}

    @app.get(f"{API_PREFIX}/studies/{{study_id}}/rounds")
    def rounds(study_id: str, user: User) -> list[dict[str, Any]]:
        return [round_entry(r) for r in store.list_rounds(study_of(study_id).id)]

    @app.get(f"{API_PREFIX}/studies/{{study_id}}/events")
    def events(study_id: str, user: User, after_round: int | None = None) -> StreamingResponse:
        sid = study_of(study_id).id
        contract.after_rounds.append(after_round)
        cut = len(contract.after_rounds) in contract.cut_connections

        def stream() -> Iterator[str]:
            last, seen, pinged = None, after_round or 0, 0.0
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                study = store.get_study(sid)
                brief = study_brief(study)
                if (brief["status"], brief["reason"]) != last:
                    last = brief["status"], brief["reason"]
                    yield _sse("status", brief)
                for info in store.list_rounds(sid):
                    if info.round > seen:
                        seen = info.round
                        yield _sse("round", round_entry(info))
                        if cut:
                            raise ConnectionAbortedError("cut by the test")  # drops the stream
                if study.status in FINISHED:
                    yield _sse("end", brief)
                    return
                if time.monotonic() - pinged > contract.ping_s:
                    pinged = time.monotonic()
                    yield ": ping\n\n"
                time.sleep(0.02)

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get(f"{API_PREFIX}/studies/{{study_id}}/results")
    def results(study_id: str, user: User) -> dict[str, Any]:
        study = study_of(study_id)
        history = [round_entry(r) for r in store.list_rounds(study.id)]
        return {"study": study_brief(study), "history": history}

    @app.get(f"{API_PREFIX}/studies/{{study_id}}/report", response_class=HTMLResponse)
    def report(study_id: str, user: User) -> str:
        return f"<html><body><h1>{study_of(study_id).name}</h1></body></html>"

    @app.get(f"{API_PREFIX}/models/{{version}}/download")
    def download(version: str, user: User) -> Response:  # a route of the "records" helper
        if version != "v1":
            raise HTTPException(404, f"no model version {version!r}")
        disposition = 'attachment; filename="../../evil/model-v1.npz"'  # the client strips folders
        return Response(b"model bytes", headers={"Content-Disposition": disposition})

    return app


@contextmanager
def serve_contract(api: Api) -> Iterator[Contract]:
    """:func:`contract_app` over ``api``'s store, served over TLS with the same certificate."""
    contract = Contract("")
    kit = api.ca.parent
    server = serve_api(
        contract_app(api, contract), "127.0.0.1", 0, kit / "cert.pem", kit / "key.pem"
    )
    contract.url = f"https://127.0.0.1:{server.port}"
    try:
        yield contract
    finally:
        server.stop()
