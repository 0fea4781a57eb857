"""Ingest worker handlers: record upload intents, verify stored objects.

Every outcome is a state change committed together with its event (shared/outbox.py),
so a duplicate or replayed notification changes nothing and announces nothing.
"""

from __future__ import annotations

from services.ingest_worker.notifications import StoredObject, parse_notification
from services.ingest_worker.verify import Reason, Rejected, Verified, verify
from shared.broker import Message
from shared.errors import NotYet
from shared.events import (
    PhotoRejected,
    PhotoVerified,
    UploadRequested,
    announcement,
)
from shared.keys import photo_id_of
from shared.logging import get_logger, log_context
from shared.resources import Resources
from shared.runtime import Meta, Route, on_events
from shared.store import ImageFacts, NewPhoto, PhotoRecord, PhotoStatus

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
            case PhotoStatus.VERIFIED | PhotoStatus.READY:
                await self._check_unchanged(photo)
            case PhotoStatus.REJECTED:
                # Finishes a purge a crash interrupted; a re-upload through a still-valid
                # URL after rejection goes the same way.
                await self._purge(photo)
            case _:
                log.info("notification for a finished photo; nothing to do")

    async def _verify(self, photo: PhotoRecord) -> None:
        res = self.res
        info = await res.storage.head(photo.object_key)
        if info is None:
            # Ceph announces multipart initiations before the object exists.
            raise NotYet("object is not visible in storage yet")
        try:
            verified = await verify(res.storage, info, photo, res.settings)
        except Rejected as rejection:
            await self._reject(photo, rejection, allowed_from=(PhotoStatus.PENDING,))
            return
        await self._accept(photo, verified)

    async def _check_unchanged(self, photo: PhotoRecord) -> None:
        """The upload URL outlives verification: bytes swapped in later are not verified."""
        info = await self.res.storage.head(photo.object_key)
        if info is None or info.etag == photo.etag:
            log.info("duplicate notification; nothing to do", status=photo.status.value)
            return
        rejection = Rejected(
            Reason.REPLACED, "the object was overwritten after it had been verified"
        )
        await self._reject(photo, rejection, allowed_from=(PhotoStatus.VERIFIED, PhotoStatus.READY))

    async def _accept(self, photo: PhotoRecord, v: Verified) -> None:
        facts = ImageFacts(v.content_type, v.size, v.width, v.height)
        envelope = announcement(
            PhotoVerified(
                photo_id=photo.id,
                owner_id=photo.owner_id,
                bucket=self.res.storage.bucket,
                object_key=photo.object_key,
                content_type=v.content_type,
                size=v.size,
                width=v.width,
                height=v.height,
            ),
            photo_id=photo.id,
            trace_id=photo.trace_id,
        )
        if await self.res.store.mark_verified(
            photo.id, facts=facts, etag=v.etag, announce=envelope
        ):
            log.info("photo verified", width=v.width, height=v.height, type=v.content_type)
            await self.res.outbox.send(envelope)

    async def _reject(
        self,
        photo: PhotoRecord,
        rejection: Rejected,
        *,
        allowed_from: tuple[PhotoStatus, ...],
    ) -> None:
        envelope = announcement(
            PhotoRejected(
                photo_id=photo.id,
                owner_id=photo.owner_id,
                reason=rejection.reason.value,
                detail=rejection.detail,
            ),
            photo_id=photo.id,
            trace_id=photo.trace_id,
        )
        res = self.res
        if not await res.store.mark_rejected(
            photo.id,
            reason=rejection.reason.value,
            detail=rejection.detail,
            announce=envelope,
            allowed_from=allowed_from,
        ):
            return
        log.info("photo rejected", reason=rejection.reason.value, detail=rejection.detail)
        res.metrics.photos.labels("rejected").inc()
        await self._purge(photo)
        await res.outbox.send(envelope)

    async def _purge(self, photo: PhotoRecord) -> None:
        for rendition in await self.res.store.renditions(photo.id):
            await self.res.storage.delete(rendition.object_key)
        await self.res.storage.delete(photo.object_key)
