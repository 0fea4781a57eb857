"""The sweep: what notifications missed.

Storage notifications get lost (MinIO drops them across a restart without queue_dir) and
some uploads never happen. Every interval, each pending photo older than `sweep_after`
is looked at: if its object exists it is verified now; if its upload URL lapsed
`sweep_after` ago with nothing stored, it leaves pending as `rejected/upload_expired`.
The keys of deleted and rejected photos whose URL could still be used are looked at too:
anything stored there is deleted. Multipart uploads open in storage that no pending photo
holds (begun for a grant that was then refused, or outliving their photo) are aborted.
Running it on every replica at once is harmless: every step is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from shared.errors import DarkroomError
from shared.keys import ORIGINALS, photo_id_of
from shared.logging import get_logger, log_context
from shared.multipart import OpenUpload
from shared.store import PhotoStatus

if TYPE_CHECKING:
    from services.ingest_worker.handlers import Ingest

log = get_logger(__name__)

BATCH = 200


async def sweep_once(ingest: Ingest) -> dict[str, int]:
    settings = ingest.res.settings
    lapsed_before = datetime.now(UTC) - timedelta(seconds=settings.sweep_after)
    counts = {"verified": 0, "expired": 0, "failed": 0}
    for photo in await ingest.res.store.pending_since(settings.sweep_after, limit=BATCH):
        with log_context(photo_id=photo.id, trace_id=photo.trace_id, source="sweep"):
            try:
                info = await ingest.res.storage.head(photo.object_key)
                if info is not None:
                    await ingest.advance(photo, info)
                    counts["verified"] += 1
                elif photo.upload_expires_at < lapsed_before:
                    await ingest.expire(photo)
                    counts["expired"] += 1
            except DarkroomError as exc:
                # One stubborn photo must not stall the sweep; the next round retries it.
                log.warning("sweep could not settle a photo", error=str(exc))
                counts["failed"] += 1
    counts["removed"] = await _empty_closed_keys(ingest)
    counts["aborted"] = await abort_strays(ingest)
    if any(counts.values()):
        log.info("sweep round", **counts)
    return counts


async def _empty_closed_keys(ingest: Ingest) -> int:
    """Bytes sent through a still-valid URL after the photo was deleted or rejected, whose
    notification was lost: checked until the URL has lapsed (plus `sweep_after`, for an
    upload started just before), then nothing can arrive any more."""
    res = ingest.res
    removed = 0
    after = None
    # Every such key, page by page: a long queue must not starve the newest deletions.
    while page := await res.store.closed_with_live_urls(
        res.settings.sweep_after, limit=BATCH, after=after
    ):
        for photo in page:
            with log_context(photo_id=photo.id, trace_id=photo.trace_id, source="sweep"):
                try:
                    if await res.storage.head(photo.object_key) is not None:
                        await ingest.advance(photo)
                        removed += 1
                except DarkroomError as exc:
                    log.warning("sweep could not empty a closed photo's key", error=str(exc))
        after = (page[-1].upload_expires_at, page[-1].id)
    return removed


async def abort_strays(ingest: Ingest, *, now: datetime | None = None) -> int:
    """Abort the open multipart uploads no pending photo holds. A grant begins its upload
    before recording its intent, so an upload is judged only once this process has seen
    it open and unheld for `sweep_after`, by its own clock: storage's start date cannot
    be trusted (moto dates every upload 2010-11-10, so a sweep round landing between a
    grant's begin and its commit aborted the upload the client was about to send)."""
    res = ingest.res
    now = now or datetime.now(UTC)
    judged_before = now - timedelta(seconds=res.settings.sweep_after)
    unheld = ingest.unheld_since
    still_unheld: set[tuple[str, str]] = set()
    aborted = 0
    async for upload in res.storage.multipart.open_uploads(ORIGINALS):
        if await _held(ingest, upload):
            continue  # its uploader's until the grant lapses; expire() ends it then
        seen = (upload.key, upload.upload_id)
        if unheld.setdefault(seen, now) > judged_before:
            still_unheld.add(seen)
            continue
        await res.storage.multipart.abort(upload.key, upload.upload_id)
        log.info("aborted a multipart upload no pending photo holds", key=upload.key)
        aborted += 1
    for gone in unheld.keys() - still_unheld:
        del unheld[gone]
    return aborted


async def _held(ingest: Ingest, upload: OpenUpload) -> bool:
    photo_id = photo_id_of(upload.key)
    photo = await ingest.res.store.get(photo_id) if photo_id else None
    if photo is None or photo.status is not PhotoStatus.PENDING:
        return False
    return photo.upload_id == upload.upload_id


async def run_sweeper(ingest: Ingest, stop: asyncio.Event) -> None:
    interval = ingest.res.settings.sweep_interval
    while not stop.is_set():
        try:
            await sweep_once(ingest)
        except DarkroomError as exc:
            log.warning("sweep round failed", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
