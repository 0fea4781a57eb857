"""Multipart uploads: parts straight to storage through presigned URLs, resumable from
what storage says it holds (`GET /v1/uploads/{id}/parts`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from darkroom_client.errors import NotFound, StorageError
from darkroom_client.models import UploadState
from darkroom_client.source import Progress, ProgressBody, Source
from darkroom_client.transport import Transport

SIGN_BATCH = 16  # parts signed per call (the API allows 100): URLs are short-lived
StateHook = Callable[[UploadState], None]


def state_of(source: Source, grant: dict[str, Any]) -> UploadState:
    upload = grant["upload"]
    return UploadState(
        photo_id=grant["photo_id"],
        upload_id=upload["upload_id"],
        part_size=int(upload["part_size"]),
        part_count=int(upload["part_count"]),
        size=source.size,
        sha256=source.sha256,
    )


async def held_parts(t: Transport, state: UploadState) -> UploadState | None:
    """`state` brought up to date with the parts storage holds; None when the upload is
    gone (aborted, expired or completed), so it must start again."""
    try:
        listing = (await t.api("GET", f"/v1/uploads/{state.photo_id}/parts")).body
    except NotFound:
        return None
    if listing.get("upload_id") != state.upload_id:
        return None
    state.etags = {}
    for part in listing.get("parts", []):
        number = int(part["part_number"])
        # A part of the wrong length (cut short) is sent again: storage replaces it.
        if 1 <= number <= state.part_count and int(part["size"]) == state.part_range(number)[1]:
            state.etags[number] = str(part["etag"])
    return state


class _Meter:
    """Bytes sent across parts in flight, for the progress callback."""

    def __init__(self, state: UploadState, progress: Progress | None) -> None:
        self.total = state.size
        self.done = sum(state.part_range(n)[1] for n in state.etags)
        self.flight: dict[int, int] = {}
        self.progress = progress
        self.report()

    def report(self) -> None:
        if self.progress is not None:
            self.progress(self.done + sum(self.flight.values()), self.total)

    def restart(self, number: int) -> None:
        self.flight[number] = 0
        self.report()

    def sent(self, number: int, n: int) -> None:
        self.flight[number] = self.flight.get(number, 0) + n
        self.report()

    def finished(self, number: int, length: int) -> None:
        self.flight.pop(number, None)
        self.done += length
        self.report()


async def send_parts(
    t: Transport,
    source: Source,
    state: UploadState,
    *,
    progress: Progress | None = None,
    on_state: StateHook | None = None,
    concurrency: int = 4,
) -> None:
    """Send every part storage does not hold yet, `concurrency` at a time."""
    meter = _Meter(state, progress)
    limit = asyncio.Semaphore(concurrency)
    missing = state.missing
    for start in range(0, len(missing), SIGN_BATCH):
        numbers = missing[start : start + SIGN_BATCH]
        urls = await _sign(t, state.photo_id, numbers)

        async def one(number: int, urls: dict[int, dict[str, Any]] = urls) -> None:
            async with limit:
                etag = await _send_part(t, source, state, number, urls[number], meter)
            state.etags[number] = etag
            if on_state is not None:
                on_state(state)

        await asyncio.gather(*(one(n) for n in numbers))


async def _sign(t: Transport, photo_id: str, numbers: list[int]) -> dict[int, dict[str, Any]]:
    body = {"part_numbers": numbers}
    answer = (await t.api("POST", f"/v1/uploads/{photo_id}/parts", json=body)).body
    return {int(p["part_number"]): p for p in answer["parts"]}


async def _send_part(
    t: Transport,
    source: Source,
    state: UploadState,
    number: int,
    signed: dict[str, Any],
    meter: _Meter,
) -> str:
    offset, length = state.part_range(number)
    data = await source.read(offset, length)

    def body() -> ProgressBody:
        meter.restart(number)  # a retry sends the whole part again
        return ProgressBody(data, lambda n: meter.sent(number, n))

    try:
        answer = await t.storage("PUT", signed["url"], body, signed.get("headers") or {})
    except StorageError as exc:
        if exc.status != 403:
            raise
        # The URL lapsed while we waited out retries: sign this part again, once.
        fresh = (await _sign(t, state.photo_id, [number]))[number]
        answer = await t.storage("PUT", fresh["url"], body, fresh.get("headers") or {})
    etag = answer.headers.get("ETag")
    if not etag:
        raise StorageError(f"storage answered part {number} without an ETag")
    meter.finished(number, length)
    return etag


async def complete(t: Transport, state: UploadState) -> None:
    """Ask the gateway to assemble the parts; verification starts then."""
    parts = [{"part_number": n, "etag": state.etags[n]} for n in sorted(state.etags)]
    await t.api("POST", f"/v1/uploads/{state.photo_id}/complete", json={"parts": parts})
