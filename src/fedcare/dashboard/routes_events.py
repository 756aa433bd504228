"""``GET /api/v1/studies/{id}/events``: a study's progress as server-sent events.

Events (``event: NAME`` / ``data: JSON``): ``status`` (the StudyBrief, first and on every
change), ``round`` (a RoundEntry per completed round, in order, past ones first; from
``?after_round=N`` on only rounds after N), ``end`` (the StudyBrief once the study completed,
failed or was cancelled; the stream then closes). A ``: ping`` comment every
:data:`KEEPALIVE_S` seconds keeps proxies from closing a quiet stream.

The stream polls the study's row every :data:`POLL_S` seconds (one cheap query, in a worker
thread) and reads rounds only when its ``last_completed_round`` moved, so a round shows up
well within 2 s of being recorded. A person may hold :data:`MAX_STREAMS` streams at once
(429 beyond); a stream ends when its client goes away.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from fedcare.coordinator.rows import StudyInfo
from fedcare.dashboard.context import API_PREFIX, ApiContext, Ctx, User
from fedcare.dashboard.rounds_view import FINAL_STATUSES, progress_events, progress_key
from fedcare.errors import NotFoundError

__all__ = ["KEEPALIVE_S", "MAX_STREAMS", "POLL_S", "router", "sse"]

router = APIRouter(prefix=API_PREFIX, tags=["studies"])

POLL_S = 0.5
KEEPALIVE_S = 15.0
MAX_STREAMS = 10


class StreamCounter:
    """Open event streams per person, at most ``limit`` each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, person: str) -> bool:
        with self._lock:
            if self._open.get(person, 0) >= self.limit:
                return False
            self._open[person] = self._open.get(person, 0) + 1
            return True

    def release(self, person: str) -> None:
        with self._lock:
            left = self._open.get(person, 0) - 1
            if left > 0:
                self._open[person] = left
            else:
                self._open.pop(person, None)


def _counter(request: Request) -> StreamCounter:
    state = request.app.state
    if not hasattr(state, "event_streams"):
        state.event_streams = StreamCounter(MAX_STREAMS)
    counter: StreamCounter = state.event_streams
    return counter


def sse(event: str, data: Any) -> bytes:
    """One server-sent event (JSON data on one line)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _events(
    ctx: ApiContext, study: StudyInfo, after_round: int, request: Request
) -> AsyncIterator[bytes]:
    """status first, past rounds, then changes as they happen, until the study ends."""
    sent_round = after_round
    last_key: tuple[Any, ...] | None = None
    last_write = time.monotonic()
    while True:
        if last_key is not None:
            try:
                study = await anyio.to_thread.run_sync(ctx.store.get_study, study.id)
            except NotFoundError:
                return
        if progress_key(study) != last_key:
            last_key = progress_key(study)
            events, sent_round = await anyio.to_thread.run_sync(
                functools.partial(progress_events, ctx.store, study, sent_round, cache=ctx.rounds)
            )
            for event, data in events:
                yield sse(event, data)
            last_write = time.monotonic()
            if study.status in FINAL_STATUSES:
                return
        if time.monotonic() - last_write >= KEEPALIVE_S:
            yield b": ping\n\n"
            last_write = time.monotonic()
        await anyio.sleep(POLL_S)
        if await request.is_disconnected():
            return


@router.get(
    "/studies/{study_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def study_events(
    study_id: str,
    request: Request,
    user: User,
    ctx: Ctx,
    after_round: int = Query(-1, description="Skip rounds up to and including this one."),
) -> StreamingResponse:
    """The study's progress as server-sent events: ``status``, ``round``, ``end``."""
    study = await anyio.to_thread.run_sync(ctx.visible_study, user, study_id)
    counter = _counter(request)
    if not counter.acquire(user.name):
        raise HTTPException(
            429, f"{counter.limit} event streams are open for you already; close one first"
        )

    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            released.set()
            counter.release(user.name)

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for chunk in _events(ctx, study, after_round, request):
                yield chunk
        finally:
            release()

    body = stream()
    # a client gone before the first byte: the generator never runs its finally
    weakref.finalize(body, release)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)
