"""Ready photos written straight into a benchmark's database, as the pipeline records them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from shared.db import open_database
from shared.events import PhotoReady, PhotoVerified, outcome_envelope
from shared.facts import PhotoFacts
from shared.keys import original_key, rendition_key
from shared.settings import Settings
from shared.store import NewPhoto, PhotoStatus, RenditionRecord, Store, Verified
from shared.tables import outbox

FACTS = PhotoFacts(sha256="0" * 64, placeholder="3OcRJYB4d3h/iIeHeEh3eIhw+j2w")


async def seed_ready_photos(database_url: str, owner: str, count: int) -> None:
    settings = Settings(database_url=database_url, migrate_on_start=True)
    async with open_database(settings) as db:
        store = Store(db)
        for _ in range(count):
            await _ready(store, owner, uuid.uuid4().hex)
        async with db.transaction() as conn:
            # Their events have no consumer in a benchmark: keep the relay quiet.
            await conn.execute(sa.delete(outbox))


async def _ready(store: Store, owner: str, photo_id: str) -> None:
    key = original_key(owner, photo_id)
    await store.create_pending(
        NewPhoto(
            id=photo_id,
            owner_id=owner,
            object_key=key,
            filename="party.jpg",
            declared_type="image/jpeg",
            declared_size=4_200_000,
            upload_expires_at=datetime.now(UTC) + timedelta(minutes=15),
            trace_id=photo_id,
        )
    )
    verified = PhotoVerified(
        photo_id=photo_id,
        owner_id=owner,
        object_key=key,
        etag="e",
        content_type="image/jpeg",
        size=4_200_000,
        keep_location=False,
    )
    await store.mark_verified(
        photo_id,
        Verified(content_type="image/jpeg", size=4_200_000, width=4000, height=3000, etag="e"),
        observed=PhotoStatus.PENDING,
        envelope=outcome_envelope(verified, photo_id=photo_id, trace_id=photo_id),
    )
    made = [
        RenditionRecord(
            name=name,
            object_key=rendition_key(owner, photo_id, name, ext),
            width=side,
            height=side * 3 // 4,
            content_type=f"image/{ext}",
            size=side * 40,
        )
        for name, side, ext in (("thumb", 256, "webp"), ("preview", 1280, "jpeg"))
    ]
    ready = PhotoReady(
        photo_id=photo_id, owner_id=owner, width=4000, height=3000, renditions=(), facts=FACTS
    )
    await store.mark_ready(
        photo_id,
        observed=PhotoStatus.VERIFIED,
        width=4000,
        height=3000,
        made=made,
        envelope=outcome_envelope(ready, photo_id=photo_id, trace_id=photo_id),
        facts=FACTS,
    )
