"""A gateway on the embedded defaults (in-process broker, SQLite, moto over HTTP), driven
through aiohttp's test client, with every event sent to the ingest worker captured."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from services.gateway.app import create_app
from services.gateway.auth import issue_token
from shared.broker import Delivery
from shared.events import Envelope, PhotoReady
from shared.facts import PhotoFacts
from shared.keys import original_key, rendition_key
from shared.resources import Resources, open_resources
from shared.settings import Settings
from shared.store import PhotoStatus, RenditionRecord, Verified
from tests import images
from tests.conftest import JWT_SECRET
from tests.harness import intent


@dataclass
class Gateway:
    client: TestClient[Any, Any]
    res: Resources
    intents: asyncio.Queue[Envelope]

    def auth(self, user: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(JWT_SECRET, user)}"}


@asynccontextmanager
async def gateway(settings: Settings, *, dev_user: str = "") -> AsyncIterator[Gateway]:
    async with open_resources(settings) as res:
        await res.storage.ensure_bucket()
        intents: asyncio.Queue[Envelope] = asyncio.Queue()

        async def capture(delivery: Delivery) -> None:
            intents.put_nowait(Envelope.from_bytes(delivery.message.body))
            await delivery.ack()

        await res.broker.consume(res.topology.ingest_intents, capture)
        client = TestClient(TestServer(create_app(settings, resources=res, dev_user=dev_user)))
        await client.start_server()
        try:
            yield Gateway(client, res, intents)
        finally:
            await client.close()


def grant_body(**overrides: Any) -> dict[str, Any]:
    return {"filename": "holiday.jpg", "content_type": "image/jpeg", "size": 123_456, **overrides}


async def problem_of(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json(content_type=None)
    assert body["status"] == status and body["detail"]
    return body


async def ready_photo(
    gw: Gateway, owner: str = "alice", *, store_objects: bool = True
) -> tuple[str, bytes]:
    """A photo recorded ready, with its original and one rendition in storage (or only
    recorded, for tests that never fetch the bytes)."""
    res, data = gw.res, images.jpeg(64, 48)
    photo_id = uuid.uuid4().hex
    key, thumb = original_key(owner, photo_id), rendition_key(owner, photo_id, "thumb", "webp")
    await res.store.create_pending(intent(photo_id, owner, len(data), filename="Zoë.jpg"))
    verified = Verified(content_type="image/jpeg", size=len(data), width=64, height=48, etag=None)
    await res.store.mark_verified(
        photo_id, verified, observed=PhotoStatus.PENDING, envelope=_envelope(photo_id, owner)
    )
    preview = rendition_key(owner, photo_id, "preview", "jpeg")
    made = [
        RenditionRecord(
            name="thumb", object_key=thumb, width=64, height=48, content_type="image/webp", size=3
        ),
        RenditionRecord(
            name="preview",
            object_key=preview,
            width=64,
            height=48,
            content_type="image/jpeg",
            size=3,
        ),
    ]
    await res.store.mark_ready(
        photo_id,
        observed=PhotoStatus.VERIFIED,
        width=64,
        height=48,
        made=made,
        envelope=_envelope(photo_id, owner),
        facts=PhotoFacts(sha256=hashlib.sha256(data).hexdigest(), placeholder="placeholder"),
    )
    if store_objects:
        await res.storage.put(key, data, content_type="application/octet-stream")
        await res.storage.put(thumb, b"abc", content_type="application/octet-stream")
    return photo_id, data


def _envelope(photo_id: str, owner: str) -> Envelope:
    facts = PhotoFacts(sha256="0" * 64, placeholder="placeholder")
    event = PhotoReady(
        photo_id=photo_id, owner_id=owner, width=1, height=1, renditions=(), facts=facts
    )
    return Envelope.wrap(event, trace_id="t")
