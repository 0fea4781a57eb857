"""Deletion: gone from the API at once, then purged from storage by the ingest worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest

from services.gateway.auth import issue_token
from shared.events import AccountDeleted, PhotoDeleted
from shared.keys import originals_prefix, renditions_prefix
from shared.settings import Settings
from shared.storage import Storage, open_storage
from shared.store import PhotoStatus, open_store
from tests import images
from tests.conftest import JWT_SECRET
from tests.gateway_harness import Gateway, gateway, grant_body, problem_of
from tests.harness import ALL_SERVICES, Client, WebhookReceiver, running, with_sqs


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    async with gateway(settings) as gw:
        yield gw


async def granted(gw: Gateway, user: str = "alice") -> str:
    resp = await gw.client.post("/v1/uploads", json=grant_body(), headers=gw.auth(user))
    photo_id: str = (await resp.json())["photo_id"]
    return photo_id


async def test_deleted_photo_is_gone_at_once_and_its_purge_is_published(gw: Gateway) -> None:
    photo_id, kept = await granted(gw), await granted(gw)
    resp = await gw.client.delete(f"/v1/photos/{photo_id}", headers=gw.auth())
    assert resp.status == 204, await resp.text()
    event = (await asyncio.wait_for(gw.intents.get(), 5)).open(PhotoDeleted)
    assert (event.photo_id, event.owner_id) == (photo_id, "alice")
    await problem_of(await gw.client.get(f"/v1/photos/{photo_id}", headers=gw.auth()), 404)
    await problem_of(await gw.client.delete(f"/v1/photos/{photo_id}", headers=gw.auth()), 404)
    listed = await (await gw.client.get("/v1/photos", headers=gw.auth())).json()
    assert [i["id"] for i in listed["items"]] == [kept]
    assert await gw.res.outbox.claim_unpublished(older_than_s=0, lease_s=1) == [], "sent, not left"


async def test_account_deletion_hides_everything_and_publishes_the_purge(gw: Gateway) -> None:
    mine = [await granted(gw) for _ in range(3)]
    theirs = await granted(gw, "bob")
    resp = await gw.client.delete("/v1/me", headers=gw.auth())
    assert resp.status == 202
    assert await resp.json() == {"status": "deleting", "photos": 3}
    event = (await asyncio.wait_for(gw.intents.get(), 5)).open(AccountDeleted)
    assert event.owner_id == "alice"
    listed = await (await gw.client.get("/v1/photos", headers=gw.auth())).json()
    assert listed["items"] == []
    for photo_id in mine:
        record = await gw.res.store.get(photo_id)
        assert record is not None and record.status is PhotoStatus.DELETED
    assert (await gw.client.get(f"/v1/photos/{theirs}", headers=gw.auth("bob"))).status == 200


async def test_deletion_survives_a_broker_outage_through_the_outbox(gw: Gateway) -> None:
    photo_id = await granted(gw)
    await gw.res.broker.close()
    resp = await gw.client.delete(f"/v1/photos/{photo_id}", headers=gw.auth())
    assert resp.status == 204
    [left] = await gw.res.outbox.claim_unpublished(older_than_s=0, lease_s=1)
    assert left.open(PhotoDeleted).photo_id == photo_id


async def keys_of(storage: Storage, owner: str) -> list[str]:
    keys = [k async for k in storage.list_keys(originals_prefix(owner))]
    return keys + [k async for k in storage.list_keys(renditions_prefix(owner))]


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    """Purges have no event to await from outside the worker: poll."""
    async with asyncio.timeout(timeout):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@asynccontextmanager
async def client_for(settings: Settings, user: str) -> AsyncIterator[Client]:
    async with running(settings, ALL_SERVICES) as base, aiohttp.ClientSession() as http:
        yield Client(http, base, issue_token(JWT_SECRET, user))


async def test_deleting_a_photo_then_the_account_purges_every_object(
    real: Settings, hooks: WebhookReceiver, unique: str
) -> None:
    real = await with_sqs(real, unique)
    owner, data = f"erin-{unique}", images.jpeg(800, 500)
    async with client_for(real, owner) as client, open_storage(real) as storage:
        grants = [await client.grant(data, "image/jpeg") for _ in range(2)]
        for grant in grants:
            await client.upload(grant, data, "image/jpeg")
        for grant in grants:
            await hooks.wait_for(grant["photo_id"], "photo.ready")
        first, second = (g["photo_id"] for g in grants)
        before = await keys_of(storage, owner)
        assert len([k for k in before if first in k]) >= 2, before

        async with client.http.delete(
            f"{client.base}/v1/photos/{first}", headers=client.headers
        ) as resp:
            assert resp.status == 204
        async with client.http.get(f"{client.base}/v1/photos/{first}", headers=client.headers) as r:
            assert r.status == 404

        async def first_gone() -> bool:
            return not any(first in k for k in await keys_of(storage, owner))

        await until(first_gone)
        assert any(second in k for k in await keys_of(storage, owner)), "only the one photo"

        async with client.http.delete(f"{client.base}/v1/me", headers=client.headers) as resp:
            assert resp.status == 202

        async def all_gone() -> bool:
            return await keys_of(storage, owner) == []

        await until(all_gone)
    async with open_store(real) as store:

        async def forgotten() -> bool:
            return await store.get(second) is None and await store.get(first) is None

        await until(forgotten)
