"""Thumbnail worker handler: verified photo in, renditions out, photo.ready published.

Everything it needs comes with `photo.verified`; the record is read only when a state
change fails, to tell a duplicate from a photo that moved on meanwhile.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from functools import partial

from services.thumbnail_worker.memory import MemoryBudget, TooLargeToRender, estimate
from services.thumbnail_worker.render import (
    DEFAULT_RENDITIONS,
    RenderError,
    RenderResult,
    RenditionSpec,
    render,
)
from shared.events import PhotoReady, PhotoRejected, PhotoVerified, Rendition, outcome_envelope
from shared.facts import PhotoFacts
from shared.keys import rendition_key
from shared.logging import get_logger
from shared.resources import Resources
from shared.runtime import Meta, Route, on_events
from shared.service import Job
from shared.storage import ObjectChanged
from shared.store import PhotoStatus, RenditionRecord
from shared.tracing import tracer

log = get_logger(__name__)


class Thumbnails:
    def __init__(
        self,
        res: Resources,
        pool: Executor,
        *,
        concurrency: int,
        budget: MemoryBudget,
        specs: tuple[RenditionSpec, ...] = DEFAULT_RENDITIONS,
    ) -> None:
        self.res = res
        self.pool = pool
        self.specs = specs
        self.budget = budget
        res.metrics.render_memory.set_budget(budget.total)
        budget.on_change = res.metrics.render_memory.set_reserved
        self.largest = max(spec.longest_side for spec in specs)
        # Bounds originals in memory, whatever the prefetch: two per render thread, so the
        # next original downloads while the thread renders the last one (with one, the
        # thread sat idle for every download). Decoded images are bounded by the budget.
        self.slots = asyncio.Semaphore(2 * concurrency)

    def routes(self) -> list[Route]:
        return [on_events(self.res.topology.thumbnail, {PhotoVerified: self.on_verified})]

    def jobs(self) -> list[Job]:
        return []

    async def on_verified(self, event: PhotoVerified, meta: Meta) -> None:
        try:
            result = await self._render(event)
        except ObjectChanged as exc:
            # Replaced or removed after verification: the ingest worker rejects or purges
            # the photo. Rendering other bytes here would serve unverified content.
            log.warning("original changed since verification; not rendering", detail=str(exc))
            return
        except RenderError as exc:
            await self._reject(event, meta, "undecodable", str(exc))
            return
        except TooLargeToRender as exc:
            await self._reject(event, meta, "too_many_pixels", str(exc))
            return
        await self._finish(event, meta, result)

    async def _render(self, event: PhotoVerified) -> RenderResult:
        loop = asyncio.get_running_loop()
        async with self.slots:
            data = await self.res.storage.get(event.object_key, if_match=event.etag)
            if len(data) != event.size:
                raise ObjectChanged(f"expected {event.size} bytes, read {len(data)}")
            try:
                need = estimate(data, event.content_type, self.largest)
            except Exception as exc:  # as in render(): bytes that make Pillow raise anything
                raise RenderError(f"{type(exc).__name__}: {exc}") from exc
            job = partial(
                render,
                data,
                event.content_type,
                self.specs,
                max_pixels=self.res.settings.max_image_pixels,
            )
            # Reserved before decoding, so renders at once never pass the budget together,
            # and held until the thread is done: a handler that times out leaves its
            # thread decoding, and the memory it uses is still in use.
            await self.budget.acquire(need)
            try:
                with tracer.start_as_current_span(
                    "render",
                    attributes={"darkroom.bytes": len(data), "darkroom.type": event.content_type},
                ):
                    rendering = loop.run_in_executor(self.pool, job)
            except BaseException:
                self.budget.release(need)
                raise
            rendering.add_done_callback(lambda _: self.budget.release(need))
            # Shielded: cancelling the wait must not mark the render done while it runs.
            return await asyncio.shield(rendering)

    async def _finish(self, event: PhotoVerified, meta: Meta, result: RenderResult) -> None:
        made = await self._store_renditions(event, result)
        facts = recorded_facts(result.facts, keep_location=event.keep_location)
        ready = PhotoReady(
            photo_id=event.photo_id,
            owner_id=event.owner_id,
            width=result.width,
            height=result.height,
            renditions=tuple(Rendition(**r.model_dump(exclude={"object_key"})) for r in made),
            facts=facts,
        )
        envelope = outcome_envelope(ready, photo_id=event.photo_id, trace_id=meta.trace_id)
        if await self.res.store.mark_ready(
            event.photo_id,
            observed=PhotoStatus.VERIFIED,
            width=result.width,
            height=result.height,
            made=made,
            facts=facts,
            envelope=envelope,
        ):
            self.res.metrics.photos.labels("ready").inc()
            log.info("photo ready", width=result.width, height=result.height)
            await self.res.outbox.publish(envelope)
        elif not await self._is(event.photo_id, PhotoStatus.READY):
            # Deleted or rejected while rendering: what was just written belongs to nobody.
            # (A duplicate of a ready photo wrote the same keys over its own renditions.)
            for rendition in made:
                await self.res.storage.delete(rendition.object_key)

    async def _store_renditions(
        self, event: PhotoVerified, result: RenderResult
    ) -> list[RenditionRecord]:
        made = []
        for r in result.renditions:
            key = rendition_key(event.owner_id, event.photo_id, r.spec.name, r.spec.extension)
            await self.res.storage.put(key, r.data, content_type=r.spec.content_type)
            made.append(
                RenditionRecord(
                    name=r.spec.name,
                    object_key=key,
                    width=r.width,
                    height=r.height,
                    content_type=r.spec.content_type,
                    size=len(r.data),
                )
            )
        return made

    async def _reject(self, event: PhotoVerified, meta: Meta, reason: str, detail: str) -> None:
        """A verified header over undecodable pixels (e.g. a truncated JPEG), or an image
        this worker's render memory could never hold."""
        rejected = PhotoRejected(
            photo_id=event.photo_id, owner_id=event.owner_id, reason=reason, detail=detail
        )
        envelope = outcome_envelope(rejected, photo_id=event.photo_id, trace_id=meta.trace_id)
        if await self.res.store.mark_rejected(
            event.photo_id,
            observed=PhotoStatus.VERIFIED,
            reason=reason,
            detail=detail,
            envelope=envelope,
        ):
            log.info("photo cannot be rendered; rejected", reason=reason, detail=detail)
            self.res.metrics.photos.labels("rejected").inc()
            self.res.metrics.rejections.labels(reason).inc()
            await self.res.storage.delete(event.object_key)
            await self.res.outbox.publish(envelope)
        elif await self._is(event.photo_id, PhotoStatus.REJECTED):
            # Finishes a purge that a crash interrupted (idempotent).
            await self.res.storage.delete(event.object_key)

    async def _is(self, photo_id: str, status: PhotoStatus) -> bool:
        photo = await self.res.store.get(photo_id)
        return photo is not None and photo.status is status


def recorded_facts(facts: PhotoFacts, *, keep_location: bool) -> PhotoFacts:
    """GPS is recorded only with the owner's opt-in; without it, it never leaves here."""
    return facts if keep_location else facts.model_copy(update={"location": None})
