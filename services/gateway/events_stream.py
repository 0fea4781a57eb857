"""`GET /v1/events`: the caller's live events as Server-Sent Events (fan-out: live.py)."""

from __future__ import annotations

import time

from aiohttp import web
from pydantic import Field, ValidationError

from services.gateway.context import CORS_HEADERS, LIVE, RESOURCES, TRACE_ID
from services.gateway.inputs import parsed_query, validation_problem
from services.gateway.live import Stream, TooManyStreams
from services.gateway.models import _Shape
from services.gateway.pages import SERVER
from services.gateway.problems import INVALID, TOO_MANY_STREAMS, ApiError
from services.gateway.registry import Answer, Routes
from services.gateway.security import authenticate, identify
from shared.errors import TransientError
from shared.events import USER_EVENTS
from shared.logging import get_logger

log = get_logger(__name__)
api = Routes("events")

SCOPE = "photos:read"
LAST_EVENT_ID = "Last-Event-ID"
KEEP_ALIVE = b": keep-alive\n\n"
# An event id as SSE carries it: printable ASCII, no spaces (ours are UUIDs).
_ID_PATTERN = r"^[\x21-\x7e]{1,200}$"


class EventsQuery(_Shape):
    last_event_id: str | None = Field(
        None,
        pattern=_ID_PATTERN,
        description=f"resume after this event, as the {LAST_EVENT_ID} header does (for "
        "clients that cannot send headers)",
    )


class EventsHeaders(_Shape):
    last_event_id: str | None = Field(
        None,
        alias=LAST_EVENT_ID,
        pattern=_ID_PATTERN,
        description="resume after this event: the `id` of the last message received",
    )


STREAM = (
    "`text/event-stream`. Each event is `id: <event id>`, `event: <type>`, `data: <one "
    "line of JSON>`: `{type, timestamp, data}`, the payload a webhook receiver gets (see "
    "`webhooks`). `event: reset` (data `StreamReset`) says events may have been missed: "
    "list again, then carry on (its `id`, when present, is where to resume from). "
    "Comment lines `: keep-alive` come when nothing else has for a while."
)


@api.route(
    "GET",
    "/v1/events",
    "streamEvents",
    "The caller's live photo and album events (Server-Sent Events)",
    {200: Answer("the event stream", events=USER_EVENTS, stream=STREAM)},
    scope=SCOPE,
    query=EventsQuery,
    headers=EventsHeaders,
    faults=(TOO_MANY_STREAMS, INVALID),
)
async def stream_events(request: web.Request) -> web.StreamResponse:
    """Own photos' `photo.ready`, `photo.rejected` and `photo.deleted`; `album.revealed`,
    `album.member_added` and `album.deleted` of albums the caller owns or is a member of.
    `Last-Event-ID` (or `last_event_id`) resumes after that event within the server's
    recent window; an id outside it answers `event: reset`. Streams per user are
    capped on each server (429 `too_many_streams`). The credentials are checked again
    while the stream is open: an expired token or revoked key ends it."""
    user = (await authenticate(request, SCOPE)).user_id
    last_event_id = _last_event_id(request)
    hub = request.app[LIVE]
    try:
        stream = hub.open(user, last_event_id)
    except TooManyStreams as exc:
        cap = request.app[RESOURCES].settings.events_max_streams_per_user
        raise TOO_MANY_STREAMS(
            f"{cap} event streams are open for this user already; close one first",
            headers={"Retry-After": "5"},
            limit=cap,
        ) from exc
    try:
        return await _serve(request, stream)
    finally:
        hub.close(stream)


def _last_event_id(request: web.Request) -> str | None:
    query = parsed_query(request.query, EventsQuery).last_event_id
    given = request.headers.get(LAST_EVENT_ID)
    try:
        header = EventsHeaders.model_validate({} if given is None else {LAST_EVENT_ID: given})
    except ValidationError as exc:
        raise validation_problem(exc, what="headers") from exc
    return header.last_event_id or query


async def _serve(request: web.Request, stream: Stream) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            # Proxies that buffer (nginx) would hold events back.
            "X-Accel-Buffering": "no",
            "X-Request-ID": request[TRACE_ID],
            "Server": SERVER,
            **request.get(CORS_HEADERS, {}),
            "Vary": "Origin",
        }
    )
    await response.prepare(request)
    settings = request.app[RESOURCES].settings
    recheck = Recheck(request, settings.events_recheck_seconds)
    try:
        while not stream.closed and await recheck.still_allowed():
            frames = await stream.wait(min(settings.events_keepalive, recheck.due_in()))
            if request.transport is None or request.transport.is_closing():
                break
            if frames or recheck.due_in() > 0:
                await response.write(b"".join(frames) or KEEP_ALIVE)
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away: its slot is freed by the caller
    return response


class Recheck:
    """The stream's credentials, checked again every `every` seconds."""

    def __init__(self, request: web.Request, every: float) -> None:
        self._request = request
        self._every = every
        self._next = time.monotonic() + every

    def due_in(self) -> float:
        return max(0.0, self._next - time.monotonic())

    async def still_allowed(self) -> bool:
        if self.due_in() > 0:
            return True
        self._next = time.monotonic() + self._every
        try:
            await identify(self._request, SCOPE)
        except ApiError as exc:
            log.info("event stream ends: credentials no longer accepted", code=exc.code)
            return False
        except TransientError as exc:
            log.warning("event stream credentials not checked", error=str(exc))
        return True
