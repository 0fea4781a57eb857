"""Ingest worker handlers: record upload intents, verify stored objects."""

from __future__ import annotations

from services.ingest_worker.notifications import StoredObject, parse_notification
from services.ingest_worker.verify import Rejected, Verified, verify
from shared.broker import Message, publish
from shared.errors import NotYet
from shared.events import (
    PhotoRejected,
    PhotoVerified,
    UploadRequested,
    outcome_event_id,
)
from shared.keys import photo_id_of
from shared.logging import get_logger, log_context
from shared.resources import Resources
from shared.runtime import Meta, Route, on_events
from shared.store import NewPhoto, PhotoRecord, PhotoStatus, facts_of

log = get_logger(__name__)


class Ingest:
    def __init__(self, res: Resources) -> None:
        self.res = res

    def routes(self) -> list[Route]:
        topology = self.res.topology
        return [
            on_events(topology.ingest_intents, {UploadRequested: self.on_upload_requested}),
            Route(topology.ingest_storage, self.on_storage_notification),
        ]

    async def on_upload_requested(self, event: UploadRequested, meta: Meta) -> None:
        created = await self.res.store.create_pending(
            NewPhoto(
                event.photo_id,
                event.owner_id,
                event.object_key,
                event.filename,
                event.content_type,
                event.size,
                event.expires_at,
                meta.trace_id,
            )
        )
        log.info("upload intent recorded", new=created)

    async def on_storage_notification(self, message: Message) -> None:
        for obj in parse_notification(message.body):
            await self.ingest(obj)

    async def ingest(self, obj: StoredObject) -> None:
        photo_id = photo_id_of(obj.key)
        if obj.bucket != self.res.storage.bucket or photo_id is None:
            # Our own renditions and anything outside originals/ notify too.
            log.debug("not an original upload; ignored", bucket=obj.bucket, key=obj.key)
            return
        photo = await self.res.store.get(photo_id)
        if photo is None or photo.object_key != obj.key:
            raise NotYet(f"no upload intent recorded for {obj.key!r} yet")
        with log_context(photo_id=photo.id, trace_id=photo.trace_id, source=obj.source):
            await self._advance(photo)

    async def _advance(self, photo: PhotoRecord) -> None:
        """Move the photo on from whatever state it is in; safe to repeat."""
        match photo.status:
            case PhotoStatus.PENDING:
                await self._verify(photo)
            case PhotoStatus.VERIFIED:
                # A redelivery after a crash between recording and announcing.
                await self._announce_verified(photo)
            case PhotoStatus.REJECTED:
                await self.res.storage.delete(photo.object_key)
                await self._announce_rejected(photo)
            case _:
                log.info("duplicate notification; nothing to do", status=photo.status.value)

    async def _verify(self, photo: PhotoRecord) -> None:
        res = self.res
        info = await res.storage.head(photo.object_key)
        if info is None:
            # Ceph announces multipart initiations before the object exists.
            raise NotYet("object is not visible in storage yet")
        try:
            verified = await verify(res.storage, info, photo, res.settings)
        except Rejected as rejection:
            await self._reject(photo, rejection)
            return
        await self._accept(photo, verified)

    async def _accept(self, photo: PhotoRecord, v: Verified) -> None:
        await self.res.store.mark_verified(
            photo.id,
            content_type=v.content_type,
            size=v.size,
            width=v.width,
            height=v.height,
            etag=v.etag,
        )
        current = await self.res.store.get(photo.id)
        if current is not None and current.status is PhotoStatus.VERIFIED:
            log.info("photo verified", width=v.width, height=v.height, type=v.content_type)
            await self._announce_verified(current)

    async def _reject(self, photo: PhotoRecord, rejection: Rejected) -> None:
        log.info("photo rejected", reason=rejection.reason.value, detail=rejection.detail)
        await self.res.store.mark_rejected(
            photo.id, reason=rejection.reason.value, detail=rejection.detail
        )
        await self.res.storage.delete(photo.object_key)
        current = await self.res.store.get(photo.id)
        if current is not None and current.status is PhotoStatus.REJECTED:
            self.res.metrics.photos.labels("rejected").inc()
            await self._announce_rejected(current)

    async def _announce_verified(self, photo: PhotoRecord) -> None:
        facts = facts_of(photo)
        event = PhotoVerified(
            photo_id=photo.id,
            owner_id=photo.owner_id,
            bucket=self.res.storage.bucket,
            object_key=photo.object_key,
            content_type=facts.content_type,
            size=facts.size,
            width=facts.width,
            height=facts.height,
        )
        await self._publish(event, photo)

    async def _announce_rejected(self, photo: PhotoRecord) -> None:
        event = PhotoRejected(
            photo_id=photo.id,
            owner_id=photo.owner_id,
            reason=photo.reason or "unknown",
            detail=photo.reason_detail or "",
        )
        await self._publish(event, photo)

    async def _publish(self, event: PhotoVerified | PhotoRejected, photo: PhotoRecord) -> None:
        await publish(
            self.res.broker,
            self.res.topology,
            event,
            trace_id=photo.trace_id,
            event_id=outcome_event_id(event.TYPE, photo.id),
        )
