"""``POST /api/v1/packages`` and ``POST /api/v1/studies``: a study lead submits from their desk.

Both run the checks ``fedcare study submit`` runs on the coordinator's host
(:func:`fedcare.coordinator.submission.submit_study`), so a study the CLI refuses is refused
here with the same one-line reason (422). A study whose model is a package names it by hash
(``package: sha256:<hex>``), uploaded first with ``POST /packages``, which verifies the
archive against the federation CA exactly as submitting a study naming the ``.fcpkg`` does.
The web page ``/studies/new`` calls the same functions (:func:`upload_package`,
:func:`submit_text`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from fedcare.coordinator.packages import CoordinatorPackages, federation_ca
from fedcare.coordinator.rows import UserInfo
from fedcare.coordinator.submission import study_from_text, submit_study
from fedcare.dashboard.context import API_PREFIX, ApiContext, Ctx, current_user
from fedcare.dashboard.forms import read_limited
from fedcare.dashboard.views import study_brief
from fedcare.errors import FedcareError
from fedcare.packages.resolve import is_package_model

__all__ = ["MAX_PACKAGE_BYTES", "MAX_STUDY_BYTES", "router", "submit_text", "upload_package"]

router = APIRouter(prefix=API_PREFIX, tags=["studies"])

#: The largest package archive accepted (413 beyond).
MAX_PACKAGE_BYTES = 200 * 1024 * 1024
#: The largest study submission (its JSON body) accepted (413 beyond).
MAX_STUDY_BYTES = 1024 * 1024
_SUBMITTERS = ("operator", "study-lead")


def submitter(user: Annotated[UserInfo, Depends(current_user)]) -> UserInfo:
    """The caller if they may submit (operator, study lead); 403 before the body is read."""
    ApiContext.require(user, _SUBMITTERS, "submit studies or upload packages")
    return user


Submitter = Annotated[UserInfo, Depends(submitter)]


class Submission(BaseModel):
    """A study to submit: the text of its study file (YAML)."""

    study: str = Field(
        description="The study file's text (YAML), as `fedcare study submit` reads it."
    )
    queue: bool = Field(
        default=False,
        description="Queue it even if too few sites offer its dataset or the coordinator is "
        "not running (those refusals become warnings), like `--queue`.",
    )


def one_line(err: Exception) -> str:
    """An error's message on one line (a YAML error spans several)."""
    return " ".join(str(err).split())


def _home(ctx: ApiContext) -> Any:
    if ctx.home is None:
        raise HTTPException(409, "this API serves no coordinator home, so it cannot store studies")
    return ctx.home


def upload_package(ctx: ApiContext, user: UserInfo, data: bytes) -> dict[str, Any]:
    """Verify and store an uploaded archive; audited ``package-uploaded``. 422 if refused."""
    home = _home(ctx)
    if not data:
        raise HTTPException(422, "the request body is empty: send the bytes of a .fcpkg archive")
    try:
        ref, verified = CoordinatorPackages(home).add_bytes(data, ca_cert=federation_ca(home))
    except FedcareError as err:
        raise HTTPException(422, one_line(err)) from None
    manifest = verified.manifest
    ctx.audit.person_action(
        "package-uploaded",
        user.name,
        package=ref,
        name=manifest.name,
        version=manifest.version,
        signer=verified.signer.researcher_id,
        role=user.role,
        via="api",
    )
    return {"package": ref, "name": manifest.name, "version": manifest.version}


def submit_text(
    ctx: ApiContext, user: UserInfo, text: str, *, queue: bool, via: str = "api"
) -> dict[str, Any]:
    """Check and queue the study in YAML ``text`` owned by ``user``: its StudyBrief with the
    ``warnings`` of a queued submission; audited ``study-submitted``. 422 if refused."""
    home = _home(ctx)
    start = f"fedcare coordinator start --kit KIT --home {home}"
    try:
        config = study_from_text(text)
        ref = config.model.get("package")
        if is_package_model(config.model) and not (
            isinstance(ref, str) and ref.startswith("sha256:")
        ):
            raise HTTPException(
                422,
                f"model.package {ref!r} names a file on your computer: upload the signed "
                "archive first (POST /api/v1/packages; the Python client and `fedcare study "
                "submit --coordinator` do this) and name it as package: sha256:<hex>",
            )
        study_id, warnings = submit_study(
            ctx.store,
            config,
            "study",
            home,
            start=start,
            queue=queue,
            owner=user.name,
            queue_option='"queue": true',
        )
    except FedcareError as err:
        raise HTTPException(422, one_line(err)) from None
    study = ctx.store.get_study(study_id)
    ctx.audit.person_action(
        "study-submitted",
        user.name,
        study_id=study_id,
        name=study.name,
        created=study.created_at.isoformat(),
        warnings=warnings,
        role=user.role,
        via=via,
    )
    return {**study_brief(study), "warnings": warnings}


@router.post(
    "/packages",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def post_package(request: Request, user: Submitter, ctx: Ctx) -> dict[str, Any]:
    """Upload a signed study package (the raw bytes of a ``.fcpkg`` archive): verified against
    the federation CA and stored by hash. Name it in a study as ``package: sha256:<hex>``."""
    data = await read_limited(request, MAX_PACKAGE_BYTES, "the package archive")
    return await run_in_threadpool(upload_package, ctx, user, data)


@router.post("/studies", status_code=201)
async def post_study(
    request: Request, user: Submitter, body: Submission, ctx: Ctx
) -> dict[str, Any]:
    """Submit a study (its YAML text): the checks of ``fedcare study submit``, 422 with the
    one-line reason if it could not run; the caller owns it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_STUDY_BYTES:
        raise HTTPException(413, "the study is larger than the 1 MB allowed")
    return await run_in_threadpool(submit_text, ctx, user, body.study, queue=body.queue)
