"""Ingest worker handlers: verify stored objects, purge deleted ones.

Every outcome is a state change committed together with its event (shared/outbox.py),
so a duplicate or replayed notification changes nothing and announces nothing.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from functools import partial

from services.ingest_worker.notifications import StoredObject, parse_notification
from services.ingest_worker.sqs_bridge import run_sqs_bridge
from services.ingest_worker.sweep import run_sweeper
from services.ingest_worker.verify import TAIL_READ, Reason, Rejected, verify
from shared.broker import Message
from shared.errors import NotYet
from shared.events import (
    AccountDeleted,
    PhotoDeleted,
    PhotoRejected,
    PhotoVerified,
    UploadCompleted,
    outcome_envelope,
)
from shared.keys import (
    RENDITIONS,
    original_key,
    originals_prefix,
    photo_id_of,
    renditions_prefix,
)
from shared.logging import get_logger, log_context
from shared.resources import Resources
from shared.runtime import Meta, Route, on_events
from shared.service import Job
from shared.storage import ObjectInfo
from shared.store import PhotoRecord, PhotoStatus, Verified
from shared.tracing import photo_span

log = get_logger(__name__)

# Photos whose key must stay empty: whatever appears under it is deleted.
CLOSED = frozenset({PhotoStatus.REJECTED, PhotoStatus.DELETED})


class Ingest:
    def __init__(self, res: Resources) -> None:
        self.res = res
        # Bounds HEADs and ranged reads in flight, whatever the prefetch or the sweep.
        self.slots = asyncio.Semaphore(res.settings.verify_concurrency)
        # Open multipart uploads no pending photo held, and when the sweep first saw each.
        self.unheld_since: dict[tuple[str, str], datetime] = {}

    def routes(self) -> list[Route]:
        topology = self.res.topology
        return [
            on_events(
                topology.ingest_intents,
                {
                    UploadCompleted: self.on_upload_completed,
                    PhotoDeleted: self.on_photo_deleted,
                    AccountDeleted: self.on_account_deleted,
                },
            ),
            Route(topology.ingest_storage, self.on_storage_notification),
        ]

    def jobs(self) -> list[Job]:
        res = self.res
        jobs: list[Job] = [partial(run_sweeper, self)]
        if res.settings.sqs_queue_url:
            jobs.append(partial(run_sqs_bridge, res.settings, res.broker, res.topology))
        return jobs

    async def on_upload_completed(self, event: UploadCompleted, meta: Meta) -> None:
        """Verify now rather than at the notification; if the object is not there yet,
        the notification or the sweep will come for it."""
        photo = await self.res.store.get(event.photo_id)
        if photo is None or photo.owner_id != event.owner_id:
            return
        if photo.status in CLOSED:
            async with self.slots:
                await self._purge(photo)
            return
        if photo.status is not PhotoStatus.PENDING:
            return
        info = await self.res.storage.head(photo.object_key)
        if info is None:
            log.info("completion hint before the object exists; ignored")
            return
        await self.advance(photo, info)

    async def on_photo_deleted(self, event: PhotoDeleted, meta: Meta) -> None:
        storage = self.res.storage
        photo = await self.res.store.get(event.photo_id)
        if photo is not None and photo.upload_id is not None:
            # Deleted while parts were still being sent: drop them.
            await storage.multipart.abort(photo.object_key, photo.upload_id)
        removed = await storage.delete_prefix(renditions_prefix(event.owner_id, event.photo_id))
        await storage.delete(original_key(event.owner_id, event.photo_id))
        log.info("photo purged from storage", renditions=removed)

    async def on_account_deleted(self, event: AccountDeleted, meta: Meta) -> None:
        storage = self.res.storage
        originals = await storage.delete_prefix(originals_prefix(event.owner_id))
        renditions = await storage.delete_prefix(renditions_prefix(event.owner_id))
        photos = await self.res.store.forget_owner(event.owner_id)
        log.info("account purged", originals=originals, renditions=renditions, photos=photos)

    async def on_storage_notification(self, message: Message) -> None:
        final = message.attempt >= self.res.topology.ingest_storage.retry.max_attempts
        for obj in parse_notification(message.body):
            await self.ingest(obj, final_attempt=final)

    async def ingest(self, obj: StoredObject, *, final_attempt: bool = False) -> None:
        if obj.bucket != self.res.storage.bucket or obj.key.startswith(RENDITIONS):
            # Another bucket's events, or our own renditions being written.
            log.debug("not an upload; ignored", bucket=obj.bucket, key=obj.key)
            return
        photo_id = photo_id_of(obj.key)
        photo = await self.res.store.get(photo_id) if photo_id else None
        if photo is None and photo_id and not final_attempt:
            # The intent may still be on its way (the gateway records it first, so this
            # is rare): give it the retries before calling the object an orphan.
            raise NotYet(f"no upload intent recorded for {obj.key!r} yet")
        if photo is None or photo.object_key != obj.key:
            await self._remove_orphan(obj)
            return
        with log_context(photo_id=photo.id, trace_id=photo.trace_id, source=obj.source):
            await self.advance(photo)

    async def _remove_orphan(self, obj: StoredObject) -> None:
        """An object no intent asked for (unknown key, or under another user's prefix):
        never recorded, removed, and logged for the operator."""
        log.warning("removing an object no upload intent asked for", key=obj.key, source=obj.source)
        await self.res.storage.delete(obj.key)

    async def advance(self, photo: PhotoRecord, info: ObjectInfo | None = None) -> None:
        """Move the photo on from whatever state it is in; safe to repeat. `info` is the
        object's HEAD when the caller has just read it (one HEAD per verification)."""
        with photo_span("verify", photo.trace_id, photo.id):
            await self._advance(photo, info)

    async def _advance(self, photo: PhotoRecord, info: ObjectInfo | None) -> None:
        async with self.slots:
            match photo.status:
                case PhotoStatus.PENDING:
                    await self._verify(photo, info)
                case PhotoStatus.VERIFIED | PhotoStatus.READY:
                    await self._check_unchanged(photo)
                case PhotoStatus.REJECTED | PhotoStatus.DELETED:
                    # Finishes a purge a crash interrupted; bytes sent through a
                    # still-valid URL after rejection or deletion go the same way.
                    await self._purge(photo)

    async def expire(self, photo: PhotoRecord) -> None:
        """The upload URL lapsed and nothing arrived: leave pending, with a reason."""
        rejection = Rejected(Reason.UPLOAD_EXPIRED, "the upload URL expired unused")
        await self._reject(photo, rejection)

    async def _verify(self, photo: PhotoRecord, info: ObjectInfo | None) -> None:
        res = self.res
        tail = None
        if info is None:
            # The HEAD and the tail in one request: one request fewer a photo, which cost
            # the ingest worker 1.3 ms of CPU and moto 4 ms (bench.pipeline's storage).
            found = await res.storage.head_and_tail(photo.object_key, TAIL_READ)
            if found is None:
                # Ceph announces multipart initiations before the object exists.
                raise NotYet("object is not visible in storage yet")
            info, tail = found
        try:
            verified = await verify(res.storage, info, photo, res.settings, tail=tail)
        except Rejected as rejection:
            await self._reject(photo, rejection)
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
        if not await self._reject(photo, rejection):
            # Rendered meanwhile (verified -> ready): still replaced, so look again.
            raise NotYet("the photo moved on while its object was checked")

    async def _accept(self, photo: PhotoRecord, v: Verified) -> None:
        envelope = outcome_envelope(
            PhotoVerified(
                photo_id=photo.id,
                owner_id=photo.owner_id,
                object_key=photo.object_key,
                etag=v.etag,
                content_type=v.content_type,
                size=v.size,
                keep_location=photo.keep_location,
            ),
            photo_id=photo.id,
            trace_id=photo.trace_id,
        )
        if await self.res.store.mark_verified(
            photo.id, v, observed=photo.status, envelope=envelope
        ):
            log.info("photo verified", width=v.width, height=v.height, type=v.content_type)
            await self.res.outbox.publish(envelope)

    async def _reject(
        self,
        photo: PhotoRecord,
        rejection: Rejected,
    ) -> bool:
        """Reject the photo from the status it was read in; False if it moved on since."""
        envelope = outcome_envelope(
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
            observed=photo.status,
            envelope=envelope,
        ):
            return False
        log.info("photo rejected", reason=rejection.reason.value, detail=rejection.detail)
        res.metrics.photos.labels("rejected").inc()
        res.metrics.rejections.labels(rejection.reason.value).inc()
        await self._purge(photo)
        await res.outbox.publish(envelope)
        return True

    async def _purge(self, photo: PhotoRecord) -> None:
        if photo.upload_id is not None and photo.status is PhotoStatus.PENDING:
            # Rejected while pending (its grant lapsed, say): no part may linger, and no
            # later completion may assemble an object.
            await self.res.storage.multipart.abort(photo.object_key, photo.upload_id)
        for rendition in photo.renditions:
            await self.res.storage.delete(rendition.object_key)
        await self.res.storage.delete(photo.object_key)
        if photo.status in CLOSED:
            log.info("removed what was stored for a closed photo", status=photo.status.value)
