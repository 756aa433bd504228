"""``/api/v1/audit``: the coordinator's audit trail, for operators and auditors (a study lead
gets 403): a page of entries newest first with the signed head, the verification ``fedcare
audit verify`` does, and the export ``fedcare audit export`` writes."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from fedcare.coordinator.audit_trail import AUDIT_FILE
from fedcare.coordinator.audit_view import (
    audit_head,
    audit_page,
    coordinator_certs,
    verify_coordinator_audit,
)
from fedcare.coordinator.rows import UserInfo
from fedcare.dashboard.context import API_PREFIX, ApiContext, Ctx, User
from fedcare.errors import AuditError, FedcareError

__all__ = ["audit_path", "audit_verification", "router"]

router = APIRouter(prefix=API_PREFIX, tags=["audit"])
READERS = ("operator", "auditor")


def audit_path(ctx: ApiContext, user: UserInfo) -> Path:
    """The coordinator's audit log, for a reader of it (403 for others, 404 without one)."""
    ctx.require(user, READERS, "read the coordinator's audit trail")
    path = ctx.audit.path or (ctx.home / AUDIT_FILE if ctx.home is not None else None)
    if path is None:
        raise HTTPException(404, "this coordinator keeps no audit trail")
    return path


def audit_verification(path: Path, ctx: ApiContext) -> dict[str, Any]:
    """The verification of the log at ``path`` as JSON, with ``summary`` in plain words."""
    try:
        check = verify_coordinator_audit(path, ctx.home)
    except FedcareError as err:
        raise HTTPException(409, f"the audit trail cannot be verified: {err}") from None
    result = check.result
    return {
        "ok": result.ok,
        "entries": result.count,
        "first_bad_line": result.first_bad,
        "problem": None if result.ok else result.reason,
        "warnings": list(result.warnings),
        "signatures_checked": result.signatures_checked,
        "anchors": check.anchors,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "summary": check.summary(),
    }


@router.get("/audit")
def audit_entries(
    user: User,
    ctx: Ctx,
    offset: Annotated[int, Query(ge=0, description="Entries to skip, from the newest.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Entries to return.")] = 50,
) -> dict[str, Any]:
    """Entries of the coordinator's audit trail, newest first, with its signed head
    (``{"seq", "hash"}``) and the number of entries."""
    path = audit_path(ctx, user)
    page = audit_page(path, offset, limit)
    return {
        "head": audit_head(path),
        "entries": page.entries,
        "total": page.total,
        "offset": offset,
        "limit": limit,
    }


@router.get("/audit/verify")
def verify(user: User, ctx: Ctx) -> dict[str, Any]:
    """Check every entry, the hash chain, the signatures (against the coordinator kit's
    certificates) and the signed head: ``ok``, or the first broken line and what is wrong."""
    return audit_verification(audit_path(ctx, user), ctx)


@router.get(
    "/audit/export",
    response_class=Response,
    responses={200: {"content": {"application/jsonl": {}}}},
)
def export(
    user: User,
    ctx: Ctx,
    force: Annotated[
        bool, Query(description="Export even if verification fails (entries marked).")
    ] = False,
) -> Response:
    """The verified trail as JSON lines (``fedcare audit export``): each entry with its
    ``line`` and ``verified``; a trail that fails verification only with ``force=true``."""
    from fedcare.audit import export_log

    path = audit_path(ctx, user)
    certs = coordinator_certs(ctx.home)
    with tempfile.TemporaryDirectory(prefix="fedcare-audit-") as tmp:
        out = Path(tmp) / "audit-export.jsonl"
        try:
            export_log(path, out, cert_path=certs, force=force)
        except AuditError as err:
            raise HTTPException(409, f"{err} (add force=true to export it marked)") from None
        except FedcareError as err:
            raise HTTPException(409, f"the audit trail cannot be exported: {err}") from None
        data = out.read_bytes()
    return Response(
        data,
        media_type="application/jsonl",
        headers={"Content-Disposition": 'attachment; filename="coordinator-audit.jsonl"'},
    )
