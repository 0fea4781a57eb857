"""The live event stream (`GET /v1/events`, server-sent events) and waiting for photos
to become ready or rejected: by the stream where the server has one, else by polling."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp

from darkroom_client.errors import DarkroomError, NotFound, error_for
from darkroom_client.models import Event, Photo
from darkroom_client.retry import RETRIED_STATUSES, parse_retry_after
from darkroom_client.transport import NETWORK_ERRORS, Transport

log = logging.getLogger(__name__)
# Longer than the server's keep-alive comments (15 s): silence this long means the
# connection is dead, so reconnect.
READ_TIMEOUT = 60.0
FINAL_EVENTS = ("photo.ready", "photo.rejected", "photo.deleted")
RESET = "reset"  # the server says events may have been missed


async def stream(
    t: Transport, last_event_id: str | None = None, *, reconnect: bool = True
) -> AsyncGenerator[Event, None]:
    """Events as they come. After a dropped connection it reconnects with backoff,
    sending `Last-Event-ID` so the server resumes after the last event seen."""
    failures = 0
    while True:
        retry_after: float | None = None
        headers = {**t.headers, "Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        timeout = aiohttp.ClientTimeout(total=None, sock_read=READ_TIMEOUT)
        try:
            async with t.session.get(
                f"{t.base_url}/v1/events", headers=headers, timeout=timeout
            ) as resp:
                if resp.status >= 400:
                    body: Any = await resp.text()
                    with contextlib.suppress(ValueError):
                        body = json.loads(body)
                    error = error_for(
                        resp.status, body, parse_retry_after(resp.headers.get("Retry-After"))
                    )
                    if resp.status not in RETRIED_STATUSES:
                        raise error
                    retry_after = error.retry_after
                else:
                    async for event in _parse(resp.content):
                        failures = 0
                        last_event_id = event.id or last_event_id
                        yield event
        except NETWORK_ERRORS:
            pass
        if not reconnect:
            return
        failures += 1
        await t.retry.sleep(t.retry.wait(failures, retry_after))


async def _parse(content: aiohttp.StreamReader) -> AsyncIterator[Event]:
    """The text/event-stream format: fields until a blank line; comments ignored."""
    fields: dict[str, str] = {}
    data: list[str] = []
    async for raw in content:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield _event(fields, "\n".join(data))
            fields, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name in ("id", "event"):
            fields[name] = value


def _event(fields: dict[str, str], data: str) -> Event:
    try:
        payload = json.loads(data)
    except ValueError:
        payload = {"text": data}
    if not isinstance(payload, dict) or "type" not in payload:
        # Not an API event (`event: reset` carries {reason, detail}): keep it whole.
        body = payload if isinstance(payload, dict) else {"value": payload}
        return Event(fields.get("id"), fields.get("event", "message"), None, body)
    return Event(
        id=fields.get("id"),
        type=str(payload.get("type") or fields.get("event") or "message"),
        timestamp=payload.get("timestamp"),
        data=payload.get("data") or {},
    )


class Waiter:
    """Waits for photos to reach ready or rejected. One background subscription to the
    stream wakes the waiters; each still checks the photo itself, with backoff, so an
    event missed (or a server without the stream) only makes it slower."""

    def __init__(self, t: Transport, *, use_events: bool = True, poll_cap: float = 2.0) -> None:
        self.t = t
        self.use_events = use_events
        self.poll_cap = poll_cap
        self.waiting: dict[str, set[asyncio.Event]] = {}
        self.task: asyncio.Task[None] | None = None
        self.streaming = False

    async def until_final(self, photo_id: str, timeout: float = 900.0) -> Photo:
        self._subscribe()
        woken = asyncio.Event()
        self.waiting.setdefault(photo_id, set()).add(woken)
        delay = 0.2
        try:
            async with asyncio.timeout(timeout):
                while True:
                    photo = Photo.of((await self.t.api("GET", f"/v1/photos/{photo_id}")).body)
                    if photo.final:
                        return photo
                    woken.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(woken.wait(), delay)
                    # Events make frequent polls needless: only a safety net then.
                    delay = min(delay * 2, 15.0 if self.streaming else self.poll_cap)
        except TimeoutError:
            raise DarkroomError(f"photo {photo_id} not ready after {timeout:.0f} s") from None
        finally:
            self.waiting[photo_id].discard(woken)
            if not self.waiting[photo_id]:
                del self.waiting[photo_id]

    def _subscribe(self) -> None:
        if self.use_events and self.task is None:
            self.task = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        try:
            async for event in stream(self.t):
                self.streaming = True
                if event.type == RESET:
                    for every in self.waiting.values():
                        for woken in every:
                            woken.set()
                elif event.type in FINAL_EVENTS:
                    for woken in self.waiting.get(str(event.data.get("photo_id")), ()):
                        woken.set()
        except NotFound:
            pass  # a server without the stream: polling alone
        except Exception:
            # Whatever else ends the stream leaves polling alone to do the work:
            # waiting must not fail because a wake-up call did.
            log.warning("the event stream ended; polling instead", exc_info=True)
        finally:
            self.streaming = False

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
