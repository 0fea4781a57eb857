"""GET /v1/photos answers, byte for byte, what its models (PhotoPage of PhotoView and
SealedPhotoView, as `photo_view` builds them from the store's records) serialise to,
though the page is built from plain values: for photos in every status the listing shows,
in albums sealed, never sealed and revealed, with every optional field present and absent, on
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
import sqlalchemy as sa

from services.gateway.context import DOWNLOADS
from services.gateway.models import PhotoPage
from services.gateway.photos import encode_cursor
from services.gateway.views import listing_body, page_items, photo_view
from shared.events import Envelope, PhotoRejected, PhotoVerified
from shared.facts import Camera, Exposure, Location, PhotoFacts
from shared.settings import Settings
from shared.store import PhotoStatus, Verified
from shared.tables import photos
from tests.gateway_harness import Gateway, gateway, grant_body, ready_photo

OWNER = "lister"
# Characters JSON encoders disagree on: quotes, backslashes, controls, non-ASCII, astral.
ODD_NAME = 'Zoë "b\\e\\st"\t😀 </script>.jpg'


@pytest.fixture
async def gw(on_both: Settings) -> AsyncIterator[Gateway]:
    async with gateway(on_both) as gw:
        yield gw


async def album(gw: Gateway, reveal_at: datetime | None) -> str:
    body: dict[str, Any] = {"title": "Party"}
    if reveal_at is not None:
        body["reveal_at"] = reveal_at.isoformat()
    resp = await gw.client.post("/v1/albums", json=body, headers=gw.auth(OWNER))
    assert resp.status == 201, await resp.text()
    album_id: str = (await resp.json())["id"]
    return album_id


async def granted(gw: Gateway, **overrides: Any) -> str:
    body = grant_body(**overrides)
    resp = await gw.client.post("/v1/uploads", json=body, headers=gw.auth(OWNER))
    assert resp.status == 201, await resp.text()
    photo_id: str = (await resp.json())["photo_id"]
    return photo_id


async def set_facts(gw: Gateway, photo_id: str, facts: dict[str, Any]) -> None:
    async with gw.res.database.transaction() as conn:
        await conn.execute(sa.update(photos).where(photos.c.id == photo_id).values(facts=facts))


EVERY_FACT = PhotoFacts(
    sha256="ab" * 32,
    placeholder="3OcRJYB4d3h/iIeHeEh3eIhw+j2w",
    taken_at=datetime(2021, 7, 4, 18, 30, 0, 120000, tzinfo=UTC),
    taken_at_local="2021-07-04T20:30:00.12+02:00",
    camera=Camera(make="FUJIFILM", model="X100V", lens="23mm ƒ/2"),
    exposure=Exposure(exposure_time=1 / 250, f_number=2.0, iso=160, focal_length=23.0),
    location=Location(latitude=52.520008, longitude=-13.404954),
)


async def every_kind_of_photo(gw: Gateway) -> None:
    store = gw.res.store
    await granted(gw)  # pending: no facts, no dimensions, the declared type and size
    await granted(gw, filename=ODD_NAME, content_type="image/png", size=7)
    verified = await granted(gw)
    facts = Verified(content_type="image/webp", size=99, width=3, height=2, etag="e")
    seen = PhotoVerified(
        photo_id=verified, owner_id=OWNER, object_key="k", keep_location=False, **dict(facts)
    )
    await store.mark_verified(
        verified, facts, observed=PhotoStatus.PENDING, envelope=Envelope.wrap(seen, trace_id="t")
    )
    rejected = await granted(gw)
    event = PhotoRejected(photo_id=rejected, owner_id=OWNER, reason="corrupt", detail="bad ✗")
    await store.mark_rejected(
        rejected,
        observed=PhotoStatus.PENDING,
        reason="corrupt",
        detail='truncated at byte 12 "\\x00"',
        envelope=Envelope.wrap(event, trace_id="t"),
    )
    everything, _ = await ready_photo(gw, OWNER, store_objects=False)
    await set_facts(gw, everything, EVERY_FACT.model_dump(mode="json"))
    legacy, _ = await ready_photo(gw, OWNER, store_objects=False)
    # Stored before a fact existed, with one since dropped: shown as the model says now.
    stored = EVERY_FACT.model_dump(mode="json", exclude={"location", "camera"})
    await set_facts(gw, legacy, {**stored, "retired_fact": 1})
    later = datetime.now(UTC) + timedelta(hours=1)
    sealed, open_, revealed = await album(gw, later), await album(gw, None), await album(gw, later)
    for album_id in (sealed, open_, revealed):
        await ready_photo(gw, OWNER, store_objects=False, album_id=album_id)
        await granted(gw, album_id=album_id)
    past = {"reveal_at": (datetime.now(UTC) - timedelta(seconds=1)).isoformat()}
    resp = await gw.client.patch(f"/v1/albums/{revealed}", json=past, headers=gw.auth(OWNER))
    assert resp.status == 200, await resp.text()


async def modelled(gw: Gateway, body: dict[str, Any], next_cursor: str | None) -> bytes:
    """The page the models make of the same records, as the routes with one photo do."""
    store, ids = gw.res.store, [item["id"] for item in body["items"]]
    records = [record for photo_id in ids if (record := await store.get(photo_id))]
    reveals = await gw.res.albums.reveal_times({r.album_id for r in records if r.album_id})
    sign = await gw.client.app[DOWNLOADS].signer()
    views = [photo_view(sign, r, reveal_at=reveals.get(r.album_id or "")) for r in records]
    return PhotoPage(items=views, next_cursor=next_cursor).model_dump_json().encode()


async def test_a_listing_page_is_byte_for_byte_what_the_models_serialise(gw: Gateway) -> None:
    await every_kind_of_photo(gw)
    queries: list[dict[str, Any]] = [
        {"limit": 100},
        {"limit": 3, "status": "ready,rejected"},
        {"limit": 100, "taken_after": "2020-01-01T00:00:00Z"},
    ]
    for query in queries:
        window = gw.res.settings.download_url_window
        for _ in range(2):  # again only if the signing window turned in between
            started = time.time() // window
            resp = await gw.client.get("/v1/photos", params=query, headers=gw.auth(OWNER))
            assert resp.status == 200
            sent = await resp.read()
            body = await resp.json()
            cursor = body["next_cursor"]
            expected = await modelled(gw, body, cursor)
            if time.time() // window == started:
                break
        assert sent == expected
        if query["limit"] == 3:
            last = await gw.res.store.get(body["items"][-1]["id"])
            assert last and cursor == encode_cursor(last)
    every = await (await gw.client.get("/v1/photos", headers=gw.auth(OWNER))).json()
    assert {i["status"] for i in every["items"]} == {"pending", "verified", "ready", "rejected"}
    assert [i["sealed"] for i in every["items"]].count(True) == 2, "both photos in the album"


async def test_a_listing_shows_each_change_at_once_within_a_signing_window(
    gw: Gateway,
) -> None:
    """Items are kept per signing window: a change to any of a photo's columns, its
    renditions or its album still shows on the next page."""
    later = datetime.now(UTC) + timedelta(hours=1)
    sealed, kept = await album(gw, later), await album(gw, None)
    in_sealed, _ = await ready_photo(gw, OWNER, store_objects=False, album_id=sealed)
    in_kept, _ = await ready_photo(gw, OWNER, store_objects=False, album_id=kept)
    plain, _ = await ready_photo(gw, OWNER, store_objects=False)

    async def listed() -> dict[str, Any]:
        resp = await gw.client.get("/v1/photos", headers=gw.auth(OWNER))
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return {item["id"]: item for item in body["items"]}

    before = await listed()
    assert before[in_sealed]["sealed"] and before[in_kept]["album_id"] == kept
    past = {"reveal_at": (datetime.now(UTC) - timedelta(seconds=1)).isoformat()}
    assert (await gw.client.patch(f"/v1/albums/{sealed}", json=past, headers=gw.auth(OWNER))).ok
    assert (await gw.client.delete(f"/v1/albums/{kept}", headers=gw.auth(OWNER))).ok
    await set_facts(gw, plain, EVERY_FACT.model_dump(mode="json"))
    after = await listed()
    assert not after[in_sealed]["sealed"] and after[in_sealed]["renditions"]
    assert after[in_kept]["album_id"] is None
    assert after[plain]["facts"] == EVERY_FACT.model_dump(mode="json")


async def test_a_repeated_page_reads_again_only_the_rows_that_changed(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within a signing window a page reads its keys, and the whole rows only of the
    photos changed since: on PostgreSQL by any statement at all (the row's xmin), on
    SQLite by any update SQLAlchemy makes (which sets updated_at)."""
    ids = [(await ready_photo(gw, OWNER, store_objects=False))[0] for _ in range(3)]
    store, read = gw.res.store, []
    page_rows = store.page_rows

    async def spied(owner: str, wanted: Any) -> Any:
        read.append(sorted(wanted))
        return await page_rows(owner, wanted)

    monkeypatch.setattr(store, "page_rows", spied)

    async def listed() -> dict[str, Any]:
        resp = await gw.client.get("/v1/photos", headers=gw.auth(OWNER))
        assert resp.status == 200
        return {item["id"]: item for item in (await resp.json())["items"]}

    window = gw.res.settings.download_url_window
    for _ in range(2):  # again only if the signing window turned in between
        started, read[:] = time.time() // window, []
        first, again = await listed(), await listed()
        await set_facts(gw, ids[1], EVERY_FACT.model_dump(mode="json"))
        if gw.res.database.is_sqlite:
            changed = await listed()
        else:  # a statement SQLAlchemy did not build: nothing set updated_at
            async with gw.res.database.transaction() as conn:
                rename = "UPDATE photos SET filename = 'renamed.jpg' WHERE id = :id"
                await conn.execute(sa.text(rename), {"id": ids[2]})
            changed = await listed()
        if time.time() // window == started:
            break
    assert first == again
    assert changed[ids[1]]["facts"] == EVERY_FACT.model_dump(mode="json")
    assert read[0] == sorted(ids)
    if gw.res.database.is_sqlite:
        assert read[1:] == [[ids[1]]]
    else:
        assert changed[ids[2]]["filename"] == "renamed.jpg"
        assert read[1:] == [sorted(ids[1:])]


async def test_a_photo_changed_or_deleted_between_a_pages_keys_and_its_rows(
    gw: Gateway,
) -> None:
    """Shown as it is now, or left out: never as it was, never deleted."""
    kept, changed, deleted = [
        (await ready_photo(gw, OWNER, store_objects=False))[0] for _ in range(3)
    ]
    store = gw.res.store
    keys = await store.owner_page(OWNER, limit=10)
    await set_facts(gw, changed, EVERY_FACT.model_dump(mode="json"))
    resp = await gw.client.delete(f"/v1/photos/{deleted}", headers=gw.auth(OWNER))
    assert resp.status == 204, await resp.text()
    window = await gw.client.app[DOWNLOADS].window()
    rows_of = partial(store.page_rows, OWNER)
    body = json.loads(await listing_body(window, page_items(keys), rows_of, None))
    assert [item["id"] for item in body["items"]] == [changed, kept]
    assert body["items"][0]["facts"] == EVERY_FACT.model_dump(mode="json")


async def test_a_pages_rows_are_read_only_from_its_owners_photos(gw: Gateway) -> None:
    mine, _ = await ready_photo(gw, OWNER, store_objects=False)
    theirs, _ = await ready_photo(gw, "someone-else", store_objects=False)
    rows = await gw.res.store.page_rows(OWNER, [mine, theirs])
    assert [row["id"] for row in rows] == [mine]
