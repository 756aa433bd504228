"""Reading request bodies with a size limit: the API's uploads, and the url-encoded forms of
the dashboard's pages and the site console."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import HTTPException, Request

__all__ = ["MAX_FORM_BYTES", "read_limited", "url_form"]

#: The largest url-encoded form accepted (413 beyond): a sign-in, a note, a date.
MAX_FORM_BYTES = 64 * 1024


def _size(limit: int) -> str:
    mib = 1024 * 1024
    return f"{limit // mib} MB" if limit >= mib else f"{limit // 1024} KB"


async def read_limited(request: Request, limit: int, what: str) -> bytes:
    """The request body, or 413 (naming ``what``) as soon as it is longer than ``limit``
    bytes."""
    too_large = HTTPException(413, f"{what} is larger than the {_size(limit)} allowed")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def url_form(request: Request, limit: int = MAX_FORM_BYTES) -> dict[str, str]:
    """The url-encoded form of a POST: the first value of each field (blank ones kept as
    ``""``); 413 beyond ``limit`` bytes."""
    body = await read_limited(request, limit, "the form")
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}
