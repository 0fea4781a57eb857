"""Grant, send, complete, wait: one upload or many (granted in batches of 50)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from darkroom_client import multipart
from darkroom_client.errors import (
    Conflict,
    DarkroomError,
    InvalidRequest,
    NotFound,
    Rejected,
    StorageError,
    error_for,
)
from darkroom_client.events import Waiter
from darkroom_client.models import Photo, UploadState
from darkroom_client.multipart import StateHook
from darkroom_client.source import Progress, ProgressBody, Source
from darkroom_client.transport import Transport

BATCH = 50
MULTIPART_THRESHOLD = 16 * 1024 * 1024  # the server's default: larger goes multipart


@dataclass(frozen=True)
class Outcome:
    """What became of one item of `upload_many`: the photo, or the error."""

    source: Source
    photo: Photo | None = None
    error: DarkroomError | None = None


@dataclass(frozen=True)
class Options:
    album_id: str | None = None
    keep_location: bool = False
    method: str = "POST"  # single uploads: a form POST, or PUT
    multipart_threshold: int = MULTIPART_THRESHOLD
    part_concurrency: int = 4
    wait: bool = True
    timeout: float = 900.0


class Uploader:
    def __init__(self, t: Transport, waiter: Waiter) -> None:
        self.t = t
        self.waiter = waiter

    def request(self, source: Source, opts: Options) -> dict[str, Any]:
        """The upload request (`UploadRequest`) for `source`."""
        body: dict[str, Any] = {
            "filename": source.filename,
            "content_type": source.content_type,
            "size": source.size,
            "sha256": source.sha256,
            "method": opts.method,
        }
        if opts.album_id:
            body["album_id"] = opts.album_id
        if opts.keep_location:
            body["keep_location"] = True
        if source.size > opts.multipart_threshold:
            body["multipart"] = True
        return body

    async def upload(
        self,
        source: Source,
        opts: Options,
        *,
        progress: Progress | None = None,
        resume: UploadState | None = None,
        on_state: StateHook | None = None,
        on_sent: Callable[[str], None] | None = None,
    ) -> Photo:
        """Upload `source` and wait until it is ready; raises `Rejected` if it is not."""
        if (
            resume is not None
            and resume.sha256 == source.sha256
            and await self._resumed(source, resume, opts, progress, on_state)
        ):
            if on_sent is not None:
                on_sent(resume.photo_id)
            return await self.outcome(resume.photo_id, opts)
        answer = (await self.t.api("POST", "/v1/uploads", json=self.request(source, opts))).body
        return await self.granted(
            source, answer, opts, progress=progress, on_state=on_state, on_sent=on_sent
        )

    async def granted(
        self,
        source: Source,
        answer: dict[str, Any],
        opts: Options,
        *,
        progress: Progress | None = None,
        on_state: StateHook | None = None,
        on_sent: Callable[[str], None] | None = None,
        regranted: bool = False,
    ) -> Photo:
        """Carry on from a grant (or a duplicate answer) to the photo's outcome."""
        if answer.get("duplicate"):
            if progress is not None:
                progress(source.size, source.size)
            return replace(Photo.of(answer["photo"]), duplicate=True)
        upload = answer["upload"]
        if upload["method"] == "MULTIPART":
            state = multipart.state_of(source, answer)
            if on_state is not None:
                on_state(state)
            await self._multipart(source, state, opts, progress, on_state)
        else:
            try:
                await self._single(source, upload, progress)
            except StorageError as exc:
                if exc.status != 403 or regranted:
                    raise
                # The URL lapsed while it waited its turn (batches grant ahead): ask again.
                again = await self.t.api("POST", "/v1/uploads", json=self.request(source, opts))
                return await self.granted(
                    source, again.body, opts, progress=progress, on_sent=on_sent, regranted=True
                )
            await self.t.api("POST", f"/v1/uploads/{answer['photo_id']}/complete")
        if on_sent is not None:
            on_sent(answer["photo_id"])
        return await self.outcome(answer["photo_id"], opts)

    async def _resumed(
        self,
        source: Source,
        resume: UploadState,
        opts: Options,
        progress: Progress | None,
        on_state: StateHook | None,
    ) -> bool:
        """Carry `resume` to completion; False when it cannot be (start afresh)."""
        try:
            state = await multipart.held_parts(self.t, resume)
        except Conflict:
            # Closed: most likely completed by a run whose answer was lost. Completing
            # again is accepted when storage has the object, and starts verification.
            try:
                await multipart.complete(self.t, resume)
            except (Conflict, NotFound, InvalidRequest):
                # Gone for good: free its place among the pending uploads at once.
                with contextlib.suppress(DarkroomError):
                    await self.t.api("DELETE", f"/v1/uploads/{resume.photo_id}")
                return False
            return True
        if state is None:
            return False
        await self._multipart(source, state, opts, progress, on_state)
        return True

    async def outcome(self, photo_id: str, opts: Options) -> Photo:
        if not opts.wait:
            return Photo.of((await self.t.api("GET", f"/v1/photos/{photo_id}")).body)
        photo = await self.waiter.until_final(photo_id, opts.timeout)
        if photo.status == "rejected":
            raise Rejected(photo.id, photo.reason or "rejected", photo.reason_detail)
        return photo

    async def _multipart(
        self,
        source: Source,
        state: UploadState,
        opts: Options,
        progress: Progress | None,
        on_state: StateHook | None,
    ) -> None:
        await multipart.send_parts(
            self.t,
            source,
            state,
            progress=progress,
            on_state=on_state,
            concurrency=opts.part_concurrency,
        )
        await multipart.complete(self.t, state)

    async def _single(
        self, source: Source, upload: dict[str, Any], progress: Progress | None
    ) -> None:
        data = await source.read(0, source.size)
        sent = [0]

        def counted(n: int) -> None:
            sent[0] += n
            if progress is not None:
                progress(sent[0], source.size)

        def body() -> Any:
            sent[0] = 0
            file = ProgressBody(data, counted, content_type=source.content_type)
            if upload["method"] == "PUT":
                return file
            form = aiohttp.FormData(quote_fields=False)
            for name, value in upload["fields"].items():
                form.add_field(name, value)
            form.add_field("file", file, filename=source.filename)
            return form

        await self.t.storage(upload["method"], upload["url"], body, upload.get("headers"))

    async def many(
        self,
        sources: Sequence[Source],
        opts: Options,
        *,
        concurrency: int = 4,
        progress: Callable[[int, int, int], None] | None = None,
        on_state: Callable[[int, UploadState], None] | None = None,
        on_sent: Callable[[int, str], None] | None = None,
        on_outcome: Callable[[int, Outcome], None] | None = None,
    ) -> list[Outcome]:
        """Grant in batches of 50, then send `concurrency` at a time; one failure does not
        stop the others. `progress(index, sent, total)`; `on_state(index, state)`."""
        outcomes: list[Outcome | None] = [None] * len(sources)
        limit = asyncio.Semaphore(concurrency)

        async def one(index: int, answer: dict[str, Any]) -> None:
            source = sources[index]
            async with limit:
                try:
                    photo = await self.granted(
                        source,
                        answer,
                        opts,
                        progress=_bind(progress, index),
                        on_state=_bind(on_state, index),
                        on_sent=_bind(on_sent, index),
                    )
                    result = Outcome(source, photo=photo)
                except DarkroomError as exc:
                    result = Outcome(source, error=exc)
            outcomes[index] = result
            if on_outcome is not None:
                on_outcome(index, result)

        def fail(index: int, error: DarkroomError) -> None:
            outcomes[index] = failed = Outcome(sources[index], error=error)
            if on_outcome is not None:
                on_outcome(index, failed)

        for start in range(0, len(sources), BATCH):
            chunk = list(range(start, min(start + BATCH, len(sources))))
            items = await self._grant_batch(chunk, sources, opts, fail)
            await asyncio.gather(*(one(i, a) for i, a in zip(chunk, items, strict=False) if a))
        return [o for o in outcomes if o is not None]

    async def _grant_batch(
        self,
        chunk: list[int],
        sources: Sequence[Source],
        opts: Options,
        fail: Callable[[int, DarkroomError], None],
    ) -> list[dict[str, Any] | None]:
        """Grants for `chunk` (indexes into `sources`), None where the item failed. A
        batch is all or nothing, so items the server refuses (wrong type, too large)
        fail on their own and the rest is asked for again."""
        answers: list[dict[str, Any] | None] = [None] * len(chunk)
        todo = list(range(len(chunk)))
        while todo:
            body = {"items": [self.request(sources[chunk[k]], opts) for k in todo]}
            try:
                items = (await self.t.api("POST", "/v1/uploads:batch", json=body)).body["items"]
            except InvalidRequest as exc:
                refused = _refused_items(exc, len(todo))
                if not refused:
                    for k in todo:
                        fail(chunk[k], exc)
                    return answers
                for position, error in refused.items():
                    fail(chunk[todo[position]], error)
                todo = [k for n, k in enumerate(todo) if n not in refused]
                continue
            except DarkroomError as exc:
                for k in todo:
                    fail(chunk[k], exc)
                return answers
            for k, item in zip(todo, items, strict=True):
                answers[k] = item
            todo = []
        return answers


def _refused_items(exc: InvalidRequest, count: int) -> dict[int, DarkroomError]:
    """The batch positions a 422 names, each with its own typed error."""
    refused: dict[int, DarkroomError] = {}
    for entry in exc.problem.get("errors") or []:
        index = entry.get("index")
        if isinstance(index, int) and 0 <= index < count:
            status = {"unsupported_type": 415, "too_large": 413}.get(entry.get("code"), 422)
            body = {"code": entry.get("code") or exc.code, "detail": entry.get("message")}
            refused[index] = error_for(status, body)
    return refused


def _bind(hook: Callable[..., None] | None, index: int) -> Any:
    if hook is None:
        return None
    return lambda *args: hook(index, *args)
