"""Multipart uploads through the gateway, against moto over HTTP: grant in parts, part
URLs, the listing for resume, completion, abort, and what ingest and the sweep make of
them. Moto checks no signature, so a part of the wrong size reaches it: verification
rejects the result `size_mismatch` (tests/test_storage_seaweedfs.py has storage refuse
the part itself)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from services.ingest_worker.handlers import Ingest
from services.ingest_worker.sweep import abort_strays, sweep_once
from shared.events import PhotoDeleted, UploadCompleted
from shared.keys import original_key
from shared.multipart import UploadGone
from shared.runtime import Meta
from shared.settings import MiB, Settings
from shared.store import PhotoStatus
from shared.tables import photos
from tests import images
from tests.gateway_harness import Gateway, gateway, grant_body, problem_of

PART = 5 * MiB
PHOTO = images.noise_png(1400, 1300)  # 5.46 MB: two parts of 5 MiB
META = Meta(event_id="e", trace_id="t", attempt=1)


@pytest.fixture
async def gw(on_both: Settings) -> AsyncIterator[Gateway]:
    changed = {"multipart_part_size": PART, "sweep_after": 1.0, "max_pending_uploads": 3}
    async with gateway(on_both.model_copy(update=changed)) as gw:
        yield gw


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def grant(gw: Gateway, data: bytes = PHOTO, user: str = "alice") -> dict[str, Any]:
    body = grant_body(content_type="image/png", size=len(data), multipart=True)
    resp = await gw.client.post("/v1/uploads", json=body, headers=gw.auth(user))
    assert resp.status == 201, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def sign(gw: Gateway, photo_id: str, numbers: list[int]) -> list[dict[str, Any]]:
    resp = await gw.client.post(
        f"/v1/uploads/{photo_id}/parts", json={"part_numbers": numbers}, headers=gw.auth()
    )
    assert resp.status == 200, await resp.text()
    parts: list[dict[str, Any]] = (await resp.json())["parts"]
    return parts


async def put_parts(
    http: aiohttp.ClientSession, parts: list[dict[str, Any]], data: bytes, *, extra: bytes = b""
) -> list[dict[str, Any]]:
    """PUT each part's slice of `data` (the last with `extra` appended); their ETags."""
    done = []
    for part in parts:
        n = part["part_number"]
        body = data[(n - 1) * PART : n * PART]
        headers = part["headers"]
        if extra and n == len(parts):
            body += extra
            headers = {}  # moto checks no signed length: the wrong size reaches storage
        async with http.put(part["url"], data=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            done.append({"part_number": n, "etag": resp.headers["ETag"]})
    return done


async def complete(gw: Gateway, photo_id: str, parts: Any) -> Any:
    return await gw.client.post(
        f"/v1/uploads/{photo_id}/complete", json={"parts": parts}, headers=gw.auth()
    )


async def status_of(gw: Gateway, photo_id: str) -> tuple[PhotoStatus, str | None]:
    photo = await gw.res.store.get(photo_id)
    assert photo is not None
    return photo.status, photo.reason


async def upload_is_gone(gw: Gateway, photo_id: str) -> bool:
    photo = await gw.res.store.get(photo_id)
    assert photo is not None and photo.upload_id is not None
    try:
        await gw.res.storage.multipart.parts(photo.object_key, photo.upload_id)
    except UploadGone:
        return True
    return False


async def test_a_photo_sent_in_parts_is_completed_and_verified(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    granted = await grant(gw)
    photo_id, upload = granted["photo_id"], granted["upload"]
    assert (upload["method"], upload["part_size"], upload["part_count"]) == ("MULTIPART", PART, 2)
    parts = await sign(gw, photo_id, [1, 2])
    assert [p["headers"] for p in parts] == [
        {"Content-Length": str(PART)},
        {"Content-Length": str(len(PHOTO) - PART)},
    ]
    etags = await put_parts(http, parts, PHOTO)
    resp = await complete(gw, photo_id, etags)
    assert resp.status == 202, await resp.text()
    assert await resp.json() == {"id": photo_id, "status": "pending"}
    hint = (await gw.intents.get()).open(UploadCompleted)
    assert hint.photo_id == photo_id
    stored = await gw.res.storage.head(original_key("alice", photo_id))
    assert stored is not None and stored.size == len(PHOTO)
    await Ingest(gw.res).on_upload_completed(hint, META)
    assert await status_of(gw, photo_id) == (PhotoStatus.VERIFIED, None)
    again = await complete(gw, photo_id, etags)
    assert (again.status, (await again.json())["status"]) == (200, "verified")


async def test_the_listing_tells_a_resuming_client_which_parts_are_stored(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    granted = await grant(gw)
    photo_id = granted["photo_id"]
    first = await put_parts(http, await sign(gw, photo_id, [1]), PHOTO)
    resp = await gw.client.get(f"/v1/uploads/{photo_id}/parts", headers=gw.auth())
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {
        "upload_id": granted["upload"]["upload_id"],
        "part_size": PART,
        "part_count": 2,
        "parts": [{"part_number": 1, "etag": first[0]["etag"], "size": PART}],
    }
    # Resumed: only the part missing is signed and sent (put_parts slices by number).
    second = await put_parts(http, await sign(gw, photo_id, [2]), PHOTO)
    assert (await complete(gw, photo_id, first + second)).status == 202
    stored = await gw.res.storage.head(original_key("alice", photo_id))
    assert stored is not None and stored.size == len(PHOTO)


async def test_parts_not_adding_up_to_the_declared_size_get_the_photo_rejected(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    photo_id = (await grant(gw))["photo_id"]
    etags = await put_parts(http, await sign(gw, photo_id, [1, 2]), PHOTO, extra=b"\0" * 10)
    assert (await complete(gw, photo_id, etags)).status == 202
    hint = (await gw.intents.get()).open(UploadCompleted)
    await Ingest(gw.res).on_upload_completed(hint, META)
    assert await status_of(gw, photo_id) == (PhotoStatus.REJECTED, "size_mismatch")
    assert await gw.res.storage.head(original_key("alice", photo_id)) is None


@pytest.mark.parametrize(
    "named",
    [
        pytest.param(lambda e: e[:1], id="a part left out"),
        pytest.param(lambda e: e[::-1], id="out of order"),
        pytest.param(lambda e: [e[0], {**e[1], "etag": '"0123"'}], id="a wrong etag"),
        pytest.param(lambda e: None, id="no parts"),
    ],
)
async def test_completion_with_parts_that_do_not_make_the_upload_is_refused(
    gw: Gateway, http: aiohttp.ClientSession, named: Any
) -> None:
    photo_id = (await grant(gw))["photo_id"]
    etags = await put_parts(http, await sign(gw, photo_id, [1, 2]), PHOTO)
    body = await problem_of(await complete(gw, photo_id, named(etags)), 409)
    assert body["code"] == "invalid_parts"
    assert await status_of(gw, photo_id) == (PhotoStatus.PENDING, None)
    assert (await complete(gw, photo_id, etags)).status == 202  # the right ones still do


async def test_grants_over_the_threshold_are_in_parts_up_to_the_multipart_limit(
    gw: Gateway,
) -> None:
    async def upload_of(size: int, **extra: Any) -> Any:
        body = grant_body(size=size, **extra)
        return await gw.client.post("/v1/uploads", json=body, headers=gw.auth())

    small = await upload_of(1000)
    assert (await small.json())["upload"]["method"] == "POST"
    big = await upload_of(16 * MiB + 1)
    assert (await big.json())["upload"]["method"] == "MULTIPART"
    assert (await big.json())["upload"]["part_count"] == 4
    beyond_single = await upload_of(50 * MiB + 1)
    assert (await beyond_single.json())["upload"]["method"] == "MULTIPART"
    too_large = await problem_of(await upload_of(200 * MiB + 1), 413)
    assert (too_large["code"], too_large["limit"]) == ("too_large", 200 * MiB)


async def test_a_batch_grants_its_large_items_in_parts_within_the_quotas(
    gw: Gateway,
) -> None:
    items = [grant_body(size=1000), grant_body(size=20 * MiB)]
    resp = await gw.client.post("/v1/uploads:batch", json={"items": items}, headers=gw.auth())
    assert resp.status == 201, await resp.text()
    methods = [item["upload"]["method"] for item in (await resp.json())["items"]]
    assert methods == ["POST", "MULTIPART"]
    # Both count as pending grants: one more fits under max_pending_uploads=3, two do not.
    more = {"items": [grant_body(size=20 * MiB, multipart=True)] * 2}
    refused = await gw.client.post("/v1/uploads:batch", json=more, headers=gw.auth())
    assert (await problem_of(refused, 409))["code"] == "too_many_pending"


async def test_signing_parts_beyond_the_count_or_of_a_single_upload_is_refused(
    gw: Gateway,
) -> None:
    photo_id = (await grant(gw))["photo_id"]
    resp = await gw.client.post(
        f"/v1/uploads/{photo_id}/parts", json={"part_numbers": [1, 3]}, headers=gw.auth()
    )
    assert (await problem_of(resp, 409))["code"] == "invalid_parts"
    single = await gw.client.post("/v1/uploads", json=grant_body(), headers=gw.auth())
    single_id = (await single.json())["photo_id"]
    resp = await gw.client.post(
        f"/v1/uploads/{single_id}/parts", json={"part_numbers": [1]}, headers=gw.auth()
    )
    assert (await problem_of(resp, 409))["code"] == "not_multipart"
    bare = await gw.client.post(f"/v1/uploads/{single_id}/complete", headers=gw.auth())
    assert bare.status == 202, await bare.text()


async def test_an_aborted_upload_is_gone_and_frees_its_place_at_once(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    ids = [(await grant(gw))["photo_id"] for _ in range(3)]
    refused = await gw.client.post(
        "/v1/uploads", json=grant_body(multipart=True), headers=gw.auth()
    )
    assert (await problem_of(refused, 409))["code"] == "too_many_pending"
    await put_parts(http, await sign(gw, ids[0], [1]), PHOTO)
    resp = await gw.client.delete(f"/v1/uploads/{ids[0]}", headers=gw.auth())
    assert resp.status == 204, await resp.text()
    assert await upload_is_gone(gw, ids[0])
    assert (await gw.client.get(f"/v1/photos/{ids[0]}", headers=gw.auth())).status == 404
    again = await gw.client.post("/v1/uploads", json=grant_body(multipart=True), headers=gw.auth())
    assert again.status == 201, await again.text()


async def test_the_sweep_aborts_an_upload_whose_grant_lapsed_uncompleted(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    photo_id = (await grant(gw))["photo_id"]
    await put_parts(http, await sign(gw, photo_id, [1]), PHOTO)
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    async with gw.res.store.db.transaction() as conn:
        await conn.execute(
            sa.update(photos)
            .where(photos.c.id == photo_id)
            .values(upload_expires_at=long_ago, created_at=long_ago)
        )
    counts = await sweep_once(Ingest(gw.res))
    assert counts["expired"] == 1
    assert await status_of(gw, photo_id) == (PhotoStatus.REJECTED, "upload_expired")
    assert await upload_is_gone(gw, photo_id)
    resp = await gw.client.post(
        f"/v1/uploads/{photo_id}/parts", json={"part_numbers": [2]}, headers=gw.auth()
    )
    assert (await problem_of(resp, 409))["code"] == "upload_closed"


async def test_the_sweep_aborts_open_uploads_no_pending_photo_holds(gw: Gateway) -> None:
    held = (await grant(gw))["photo_id"]
    # Begun for a grant then refused, and its abort failed: no record names it.
    stray = original_key("alice", "f" * 32)
    await gw.res.storage.multipart.begin(stray, content_type="image/png")
    ingest = Ingest(gw.res)
    # Seen unheld for the first time: it may be a grant's upload whose intent is a moment
    # from being committed (moto dates every upload 2010-11-10, so only the sweep's own
    # clock can tell it is young).
    assert await abort_strays(ingest) == 0
    later = datetime.now(UTC) + timedelta(seconds=gw.res.settings.sweep_after + 1)
    assert await abort_strays(ingest, now=later) == 1
    still_open = [u.key async for u in gw.res.storage.multipart.open_uploads("originals/")]
    assert still_open == [original_key("alice", held)]
    assert not await upload_is_gone(gw, held)


async def test_a_sweep_round_between_a_grants_begin_and_its_commit_spares_the_upload(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race CI once hit: the sweep listed the upload a grant had just begun, found no
    record yet, and aborted it before the client sent a part."""
    multipart, ingest, rounds = gw.res.storage.multipart, Ingest(gw.res), []
    begin = multipart.begin

    async def begin_then_sweep(key: str, *, content_type: str) -> str:
        upload_id = await begin(key, content_type=content_type)
        rounds.append(await abort_strays(ingest))
        return upload_id

    monkeypatch.setattr(multipart, "begin", begin_then_sweep)
    photo_id = (await grant(gw))["photo_id"]
    later = datetime.now(UTC) + timedelta(seconds=gw.res.settings.sweep_after + 1)
    assert [*rounds, await abort_strays(ingest, now=later)] == [0, 0]
    assert not await upload_is_gone(gw, photo_id)


async def test_deleting_a_photo_still_uploading_in_parts_aborts_its_upload(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    photo_id = (await grant(gw))["photo_id"]
    await put_parts(http, await sign(gw, photo_id, [1]), PHOTO)
    assert (await gw.client.delete(f"/v1/photos/{photo_id}", headers=gw.auth())).status == 204
    assert not await upload_is_gone(gw, photo_id)
    await Ingest(gw.res).on_photo_deleted(PhotoDeleted(photo_id=photo_id, owner_id="alice"), META)
    assert await upload_is_gone(gw, photo_id)


ROUTES = {
    "sign parts": ("POST", "/parts", {"part_numbers": [1]}, 200),
    "list parts": ("GET", "/parts", None, 200),
    "complete": ("POST", "/complete", {"parts": [{"part_number": 1, "etag": '"x"'}]}, 409),
    "abort": ("DELETE", "", None, 204),
}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    ("caller", "expected"),
    [("owner", None), ("another user", 404), ("no token", 401)],
)
async def test_only_the_uploader_reaches_the_multipart_routes(
    gw: Gateway, route: str, caller: str, expected: int | None
) -> None:
    photo_id = (await grant(gw))["photo_id"]
    method, tail, body, owner_status = ROUTES[route]
    headers = {"owner": gw.auth(), "another user": gw.auth("mallory"), "no token": {}}[caller]
    resp = await gw.client.request(
        method, f"/v1/uploads/{photo_id}{tail}", json=body, headers=headers
    )
    if expected is None:
        assert resp.status == owner_status, await resp.text()
    else:
        await problem_of(resp, expected)
    assert (await status_of(gw, photo_id))[0] is (
        PhotoStatus.DELETED if expected is None and route == "abort" else PhotoStatus.PENDING
    )
