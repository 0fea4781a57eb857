"""GET /v1/photos: newest first, keyset cursors stable under concurrent inserts, filters;
and user isolation on every photo route. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from services.gateway.context import DOWNLOADS
from shared.events import Envelope, PhotoRejected
from shared.facts import PhotoFacts
from shared.settings import Settings
from shared.store import PhotoStatus
from shared.tables import photos
from tests.gateway_harness import Gateway, gateway, grant_body, problem_of, ready_photo


@pytest.fixture
async def gw(on_both: Settings) -> AsyncIterator[Gateway]:
    async with gateway(on_both) as gw:
        yield gw


async def grant(gw: Gateway, user: str) -> str:
    resp = await gw.client.post("/v1/uploads", json=grant_body(), headers=gw.auth(user))
    assert resp.status == 201, await resp.text()
    photo_id: str = (await resp.json())["photo_id"]
    return photo_id


async def page(gw: Gateway, user: str, **query: Any) -> dict[str, Any]:
    resp = await gw.client.get("/v1/photos", params=query, headers=gw.auth(user))
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_pages_are_newest_first_and_stable_under_concurrent_inserts(
    gw: Gateway, unique: str
) -> None:
    user = f"lister-{unique}"
    existing = [await grant(gw, user) for _ in range(23)]
    seen: list[str] = []
    inserted: list[str] = []
    cursor: str | None = None
    while True:
        query = {"limit": 5} | ({"cursor": cursor} if cursor else {})
        # Other uploads land while the client pages through.
        body, *new = await asyncio.gather(page(gw, user, **query), grant(gw, user), grant(gw, user))
        inserted += new
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    first_page = [item["id"] for item in (await page(gw, user, limit=100))["items"]]
    assert sorted(first_page) == sorted(existing + inserted)
    # Every photo that existed was seen exactly once, newest first; an offset-paged
    # listing would repeat items as new uploads push the rest down.
    assert [p for p in seen if p in existing] == existing[::-1]
    assert len(seen) == len(set(seen))


async def test_newest_first_by_creation(gw: Gateway, unique: str) -> None:
    user = f"order-{unique}"
    made = [await grant(gw, user) for _ in range(3)]
    assert [i["id"] for i in (await page(gw, user))["items"]] == made[::-1]


async def test_status_and_taken_at_filters(gw: Gateway, unique: str) -> None:
    user = f"filter-{unique}"
    a, b, c = [await grant(gw, user) for _ in range(3)]
    rejected = PhotoRejected(photo_id=b, owner_id=user, reason="corrupt", detail="x")
    await gw.res.store.mark_rejected(
        b,
        observed=PhotoStatus.PENDING,
        reason="corrupt",
        detail="x",
        envelope=Envelope.wrap(rejected, trace_id="t"),
    )
    await set_taken_at(gw, a, datetime(2020, 6, 1, tzinfo=UTC))
    await set_taken_at(gw, c, datetime(2023, 6, 1, tzinfo=UTC))

    def ids(body: dict[str, Any]) -> list[str]:
        return [i["id"] for i in body["items"]]

    assert ids(await page(gw, user, status="rejected")) == [b]
    assert ids(await page(gw, user, status="pending,rejected")) == [c, b, a]
    after = await page(gw, user, taken_after="2021-01-01T00:00:00Z")
    assert ids(after) == [c]
    assert after["items"][0]["facts"]["taken_at"].startswith("2023-06-01")
    window = {"taken_after": "2019-01-01T00:00:00+00:00", "taken_before": "2021-01-01T00:00:00Z"}
    assert ids(await page(gw, user, **window)) == [a]


async def set_taken_at(gw: Gateway, photo_id: str, when: datetime) -> None:
    """As rendering records it: with the rest of the facts (a digest, a placeholder)."""
    facts = PhotoFacts(taken_at=when, sha256=photo_id * 2, placeholder="AAAA")
    values = {"taken_at": when, "sha256": facts.sha256, "facts": facts.model_dump(mode="json")}
    async with gw.res.database.transaction() as conn:
        await conn.execute(sa.update(photos).where(photos.c.id == photo_id).values(**values))


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ({"cursor": "not-a-cursor"}, 400, "invalid_cursor"),
        ({"cursor": "A" * 31}, 400, "invalid_cursor"),
        ({"status": "deleted"}, 422, "invalid_request"),
        ({"status": ""}, 422, "invalid_request"),
        ({"status": "ready,"}, 422, "invalid_request"),
        ({"album_id": "not-an-album-id"}, 422, "invalid_request"),
        ({"limit": "0"}, 422, "invalid_request"),
        ({"limit": "101"}, 422, "invalid_request"),
        ({"taken_after": "2020-01-01T00:00:00"}, 422, "invalid_request"),  # no offset
        ({"surprise": "1"}, 422, "invalid_request"),
    ],
)
async def test_bad_queries_are_problems(
    gw: Gateway, query: dict[str, str], status: int, code: str
) -> None:
    resp = await gw.client.get("/v1/photos", params=query, headers=gw.auth())
    assert (await problem_of(resp, status))["code"] == code


async def test_another_users_photos_are_404_on_every_route(gw: Gateway, unique: str) -> None:
    alice, bob = f"alice-{unique}", f"bob-{unique}"
    photo_id = await grant(gw, alice)
    for method, path in [
        ("GET", f"/v1/photos/{photo_id}"),
        ("GET", f"/v1/photos/{photo_id}/original"),
        ("GET", f"/v1/photos/{photo_id}/thumb"),
        ("POST", f"/v1/uploads/{photo_id}/complete"),
        ("DELETE", f"/v1/photos/{photo_id}"),
    ]:
        resp = await gw.client.request(method, path, headers=gw.auth(bob))
        await problem_of(resp, 404)
    assert (await page(gw, bob))["items"] == []
    assert [i["id"] for i in (await page(gw, alice))["items"]] == [photo_id]


async def ready_records(gw: Gateway, user: str, count: int) -> None:
    """Photos recorded ready, each with its renditions."""
    for _ in range(count):
        await ready_photo(gw, user, store_objects=False)


async def queries_for_page(gw: Gateway, user: str, limit: int) -> int:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    engine = gw.res.store.db.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        body = await page(gw, user, limit=limit)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert len(body["items"]) == limit and all(i["renditions"] for i in body["items"])
    return len(statements)


async def test_a_page_costs_the_same_queries_for_1_photo_as_for_50(
    gw: Gateway, unique: str
) -> None:
    user = f"counted-{unique}"
    await ready_records(gw, user, 50)
    assert await queries_for_page(gw, user, 1) == await queries_for_page(gw, user, 50)


async def test_a_page_sent_back_by_its_etag_is_304_until_something_on_it_changes(
    gw: Gateway, unique: str
) -> None:
    user = f"poller-{unique}"
    first, second = [(await ready_photo(gw, user, store_objects=False))[0] for _ in range(2)]

    async def listed(if_none_match: str | None = None) -> tuple[int, str, bytes]:
        headers = gw.auth(user) | ({"If-None-Match": if_none_match} if if_none_match else {})
        resp = await gw.client.get("/v1/photos", headers=headers)
        assert resp.headers["Cache-Control"] == "private, no-cache"
        return resp.status, resp.headers["ETag"], await resp.read()

    status, etag, body = await listed()
    assert status == 200 and body
    assert (await listed(etag))[:3] == (304, etag, b"")
    for held in (f"W/{etag}", f'"other", {etag}', "*"):
        assert (await listed(held))[0] == 304, held
    assert (await listed('"other"'))[:2] == (200, etag)
    async with gw.res.database.transaction() as conn:
        renamed = sa.update(photos).where(photos.c.id == second).values(filename="new.jpg")
        await conn.execute(renamed)
    status, changed, body = await listed(etag)
    assert status == 200 and changed != etag and b"new.jpg" in body
    resp = await gw.client.delete(f"/v1/photos/{first}", headers=gw.auth(user))
    assert resp.status == 204
    status, after_delete, body = await listed(changed)
    assert status == 200 and after_delete != changed and first.encode() not in body


async def test_a_page_s_etag_changes_with_the_signing_window(gw: Gateway, unique: str) -> None:
    """Its links change with each window, so the page does too."""
    user = f"windows-{unique}"
    await ready_photo(gw, user, store_objects=False)
    downloads = gw.client.app[DOWNLOADS]
    tags = []
    for moved in (0, gw.res.settings.download_url_window):
        downloads._clock = lambda moved=moved: time.time() + moved
        resp = await gw.client.get("/v1/photos", headers=gw.auth(user))
        tags.append(resp.headers["ETag"])
    assert tags[0] != tags[1]
