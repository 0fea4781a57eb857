"""Thumbnail worker handler: verified photo in, renditions out, photo.ready announced."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from functools import partial

from services.thumbnail_worker.render import (
    DEFAULT_RENDITIONS,
    RenderError,
    RenderResult,
    RenditionSpec,
    render,
)
from shared.broker import publish
from shared.errors import NotYet
from shared.events import PhotoReady, PhotoRejected, PhotoVerified, Rendition, outcome_event_id
from shared.keys import rendition_key
from shared.logging import get_logger
from shared.resources import Resources
from shared.runtime import Meta, Route, on_events
from shared.store import PhotoRecord, PhotoStatus, RenditionRecord, facts_of

log = get_logger(__name__)


class Thumbnails:
    def __init__(
        self,
        res: Resources,
        pool: Executor,
        *,
        concurrency: int,
        specs: tuple[RenditionSpec, ...] = DEFAULT_RENDITIONS,
    ) -> None:
        self.res = res
        self.pool = pool
        self.specs = specs
        # Bounds decoded images in memory, whatever the prefetch.
        self.slots = asyncio.Semaphore(concurrency)

    def routes(self) -> list[Route]:
        return [on_events(self.res.topology.thumbnail, {PhotoVerified: self.on_verified})]

    async def on_verified(self, event: PhotoVerified, meta: Meta) -> None:
        photo = await self.res.store.get(event.photo_id)
        if photo is None:
            raise NotYet("photo.verified arrived before its record is readable")
        match photo.status:
            case PhotoStatus.VERIFIED:
                await self._render(photo)
            case PhotoStatus.READY:
                # Redelivery after a crash between recording and announcing.
                await self._announce_ready(photo)
            case _:
                log.info("photo no longer needs renditions", status=photo.status.value)

    async def _render(self, photo: PhotoRecord) -> None:
        res = self.res
        content_type = facts_of(photo).content_type
        data = await res.storage.get(photo.object_key)
        loop = asyncio.get_running_loop()
        async with self.slots:
            try:
                result = await loop.run_in_executor(
                    self.pool,
                    partial(
                        render,
                        data,
                        content_type,
                        self.specs,
                        max_pixels=res.settings.max_image_pixels,
                    ),
                )
            except RenderError as exc:
                await self._reject(photo, str(exc))
                return
        del data
        made = await self._store_renditions(photo, result)
        await res.store.mark_ready(photo.id, width=result.width, height=result.height, made=made)
        current = await res.store.get(photo.id)
        if current is not None and current.status is PhotoStatus.READY:
            res.metrics.photos.labels("ready").inc()
            log.info("photo ready", width=result.width, height=result.height)
            await self._announce_ready(current)

    async def _store_renditions(
        self, photo: PhotoRecord, result: RenderResult
    ) -> list[RenditionRecord]:
        made = []
        for r in result.renditions:
            key = rendition_key(photo.owner_id, photo.id, r.spec.name, r.spec.extension)
            await self.res.storage.put(key, r.data, content_type=r.spec.content_type)
            made.append(
                RenditionRecord(
                    r.spec.name, key, r.width, r.height, r.spec.content_type, len(r.data)
                )
            )
        return made

    async def _reject(self, photo: PhotoRecord, detail: str) -> None:
        """A verified header over undecodable pixels (e.g. a truncated JPEG)."""
        log.info("photo cannot be decoded; rejecting", detail=detail)
        await self.res.store.mark_rejected(photo.id, reason="undecodable", detail=detail)
        await self.res.storage.delete(photo.object_key)
        event = PhotoRejected(
            photo_id=photo.id, owner_id=photo.owner_id, reason="undecodable", detail=detail
        )
        await publish(
            self.res.broker,
            self.res.topology,
            event,
            trace_id=photo.trace_id,
            event_id=outcome_event_id(event.TYPE, photo.id),
        )

    async def _announce_ready(self, photo: PhotoRecord) -> None:
        facts = facts_of(photo)
        renditions = tuple(
            Rendition(
                name=r.name,
                object_key=r.object_key,
                width=r.width,
                height=r.height,
                content_type=r.content_type,
                size=r.size,
            )
            for r in await self.res.store.renditions(photo.id)
        )
        event = PhotoReady(
            photo_id=photo.id,
            owner_id=photo.owner_id,
            width=facts.width,
            height=facts.height,
            renditions=renditions,
        )
        await publish(
            self.res.broker,
            self.res.topology,
            event,
            trace_id=photo.trace_id,
            event_id=outcome_event_id(event.TYPE, photo.id),
        )
