"""Thumbnail worker handler: verified photo in, renditions out, photo.ready announced."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from datetime import UTC
from functools import partial

from services.thumbnail_worker.render import (
    DEFAULT_RENDITIONS,
    RenderError,
    RenderResult,
    RenditionSpec,
    render,
)
from shared.errors import NotYet
from shared.events import (
    PhotoReady,
    PhotoRejected,
    PhotoVerified,
    Rendition,
    announcement,
)
from shared.facts import Camera, Exposure, Location, PhotoFacts
from shared.keys import rendition_key
from shared.logging import get_logger
from shared.resources import Resources
from shared.runtime import Meta, Route, on_events
from shared.service import Job
from shared.storage import ObjectChanged
from shared.store import PhotoRecord, PhotoStatus, RenditionRecord, verified_of

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
        # Bounds originals and decoded images in memory, whatever the prefetch.
        self.slots = asyncio.Semaphore(concurrency)

    def routes(self) -> list[Route]:
        return [on_events(self.res.topology.thumbnail, {PhotoVerified: self.on_verified})]

    def jobs(self) -> list[Job]:
        return []

    async def on_verified(self, event: PhotoVerified, meta: Meta) -> None:
        photo = await self.res.store.get(event.photo_id)
        if photo is None:
            raise NotYet("photo.verified arrived before its record is readable")
        if photo.status is PhotoStatus.REJECTED:
            # Finishes an undecodable-photo rejection a crash interrupted (idempotent).
            await self.res.storage.delete(photo.object_key)
            return
        if photo.status is not PhotoStatus.VERIFIED:
            log.info("photo needs no renditions (duplicate)", status=photo.status.value)
            return
        try:
            result = await self._render(photo)
        except ObjectChanged:
            # Bytes swapped in after verification: the ingest worker rejects the photo on
            # that upload's notification. Rendering them here would serve unverified bytes.
            log.warning("original replaced since verification; not rendering")
            return
        except RenderError as exc:
            await self._reject(photo, str(exc))
            return
        await self._finish(photo, result)

    async def _render(self, photo: PhotoRecord) -> RenderResult:
        verified = verified_of(photo)
        loop = asyncio.get_running_loop()
        async with self.slots:
            data = await self.res.storage.get(photo.object_key, if_match=photo.etag)
            if len(data) != verified.size:
                raise ObjectChanged(f"expected {verified.size} bytes, read {len(data)}")
            job = partial(
                render,
                data,
                verified.content_type,
                self.specs,
                max_pixels=self.res.settings.max_image_pixels,
            )
            return await loop.run_in_executor(self.pool, job)

    async def _finish(self, photo: PhotoRecord, result: RenderResult) -> None:
        made = await self._store_renditions(photo, result)
        facts = stored_facts(result, keep_location=photo.keep_location)
        envelope = announcement(
            PhotoReady(
                photo_id=photo.id,
                owner_id=photo.owner_id,
                width=result.width,
                height=result.height,
                renditions=tuple(
                    Rendition(
                        name=r.name,
                        object_key=r.object_key,
                        width=r.width,
                        height=r.height,
                        content_type=r.content_type,
                        size=r.size,
                    )
                    for r in made
                ),
                placeholder=facts.placeholder,
                sha256=facts.sha256,
                taken_at=facts.taken_at,
            ),
            photo_id=photo.id,
            trace_id=photo.trace_id,
        )
        if await self.res.store.mark_ready(
            photo.id,
            observed=PhotoStatus.VERIFIED,
            width=result.width,
            height=result.height,
            made=made,
            announce=envelope,
            facts=facts,
        ):
            self.res.metrics.photos.labels("ready").inc()
            log.info("photo ready", width=result.width, height=result.height)
            await self.res.outbox.send(envelope)

    async def _store_renditions(
        self, photo: PhotoRecord, result: RenderResult
    ) -> list[RenditionRecord]:
        made = []
        for r in result.renditions:
            key = rendition_key(photo.owner_id, photo.id, r.spec.name, r.spec.extension)
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

    async def _reject(self, photo: PhotoRecord, detail: str) -> None:
        """A verified header over undecodable pixels (e.g. a truncated JPEG)."""
        envelope = announcement(
            PhotoRejected(
                photo_id=photo.id, owner_id=photo.owner_id, reason="undecodable", detail=detail
            ),
            photo_id=photo.id,
            trace_id=photo.trace_id,
        )
        if await self.res.store.mark_rejected(
            photo.id,
            observed=PhotoStatus.VERIFIED,
            reason="undecodable",
            detail=detail,
            announce=envelope,
        ):
            log.info("photo cannot be decoded; rejected", detail=detail)
            await self.res.storage.delete(photo.object_key)
            await self.res.outbox.send(envelope)


def stored_facts(result: RenderResult, *, keep_location: bool) -> PhotoFacts:
    """Facts as recorded. A camera time without an offset is filed as UTC for ordering and
    filtering, and kept as the camera showed it; GPS only with the owner's opt-in."""
    f = result.facts
    local = f.taken_at
    instant = local if local is None or local.tzinfo else local.replace(tzinfo=UTC)
    where = result.location if keep_location else None
    return PhotoFacts(
        sha256=f.sha256,
        placeholder=f.placeholder,
        taken_at=instant,
        taken_at_local=local.isoformat() if local else None,
        camera=Camera(make=f.camera_make, model=f.camera_model, lens=f.lens_model),
        exposure=Exposure(
            exposure_time=f.exposure_time,
            f_number=f.f_number,
            iso=f.iso,
            focal_length=f.focal_length,
        ),
        location=Location(latitude=where.latitude, longitude=where.longitude) if where else None,
    )
