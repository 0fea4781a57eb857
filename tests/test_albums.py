"""Albums as their users see them: creating, revealing, membership, links and events."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from pydantic import SecretStr

from services.notifier.reveal import reveal_once
from services.notifier.service import serve
from shared.broker import Delivery
from shared.events import Envelope
from shared.settings import Settings
from tests.gateway_harness import Gateway, gateway, grant_body, problem_of, ready_photo
from tests.harness import WEBHOOK_SECRET, WebhookReceiver

SOON = (datetime.now(UTC) + timedelta(days=1)).isoformat()


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    calm = settings.model_copy(
        update={"rate_limit_user": 0, "rate_limit_ip": 0, "link_password_attempts": 3}
    )
    async with gateway(calm) as gw:
        yield gw


@pytest.fixture
async def events(gw: Gateway) -> asyncio.Queue[Envelope]:
    """What the notifier would receive."""
    found: asyncio.Queue[Envelope] = asyncio.Queue()

    async def capture(delivery: Delivery) -> None:
        found.put_nowait(Envelope.from_bytes(delivery.message.body))
        await delivery.ack()

    await gw.res.broker.consume(gw.res.topology.notifier, capture)
    return found


async def ok(gw: Gateway, user: str, method: str, path: str, body: Any = None) -> Any:
    resp = await gw.client.request(method, path, json=body, headers=gw.auth(user))
    assert resp.status < 300, await resp.text()
    return None if resp.status == 204 else await resp.json()


async def album(gw: Gateway, reveal_at: str | None = SOON, **members: str) -> str:
    made = await ok(gw, "olive", "POST", "/v1/albums", {"title": "Party", "reveal_at": reveal_at})
    for user, role in members.items():
        await ok(gw, "olive", "PUT", f"/v1/albums/{made['id']}/members/{user}", {"role": role})
    album_id: str = made["id"]
    return album_id


async def develop(gw: Gateway, album_id: str) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    await ok(gw, "olive", "PATCH", f"/v1/albums/{album_id}", {"reveal_at": past})


async def test_a_new_album_is_sealed_until_its_time_and_counts_ready_photos(gw: Gateway) -> None:
    album_id = await album(gw, cora="contributor")
    await ready_photo(gw, "cora", store_objects=False, album_id=album_id)
    pending = await ok(gw, "cora", "POST", "/v1/uploads", grant_body(album_id=album_id))
    view = await ok(gw, "cora", "GET", f"/v1/albums/{album_id}")
    assert {k: view[k] for k in ("title", "owner_id", "sealed", "role", "photo_count")} == {
        "title": "Party",
        "owner_id": "olive",
        "sealed": True,
        "role": "contributor",
        "photo_count": 1,
    }
    photos = await ok(gw, "olive", "GET", f"/v1/albums/{album_id}/photos")
    assert (photos["sealed"], photos["photo_count"], photos["items"]) == (True, 1, [])
    mine = await ok(gw, "cora", "GET", f"/v1/photos/{pending['photo_id']}")
    assert mine == {
        "id": pending["photo_id"],
        "album_id": album_id,
        "owner_id": "cora",
        "status": "pending",
        "sealed": True,
        "reveal_at": mine["reveal_at"],
        "created_at": mine["created_at"],
    }


async def test_moving_the_reveal_into_the_past_develops_the_album_once(
    gw: Gateway, events: asyncio.Queue[Envelope]
) -> None:
    album_id = await album(gw, vic="viewer", cora="contributor")
    photo_id, _ = await ready_photo(gw, "cora", store_objects=False, album_id=album_id)
    await develop(gw, album_id)
    photos = await ok(gw, "vic", "GET", f"/v1/albums/{album_id}/photos")
    [item] = photos["items"]
    assert (photos["sealed"], item["id"], item["owner_id"], item["sealed"]) == (
        False,
        photo_id,
        "cora",
        False,
    )
    assert item["original"]["url"] and item["renditions"]["thumb"]["url"]
    assert await reveal_once(gw.res) == 0, "the PATCH announced it already"
    kinds = [(await events.get()).type for _ in range(3)]
    assert sorted(kinds) == ["album.member_added", "album.member_added", "album.revealed"]
    again = await gw.client.patch(
        f"/v1/albums/{album_id}", json={"reveal_at": SOON}, headers=gw.auth("olive")
    )
    assert (await problem_of(again, 409))["code"] == "already_revealed"


async def test_the_reveal_loop_announces_each_due_album_once(
    gw: Gateway, events: asyncio.Queue[Envelope]
) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    album_id = await album(gw, reveal_at=past)
    rounds = await asyncio.gather(*(reveal_once(gw.res) for _ in range(4)))
    assert sum(rounds) == 1
    event = await events.get()
    assert (event.type, event.data["album_id"], event.data["photo_count"]) == (
        "album.revealed",
        album_id,
        0,
    )


async def test_a_member_removed_mid_session_loses_access_on_the_next_request(
    gw: Gateway,
) -> None:
    album_id = await album(gw, vic="viewer")
    await develop(gw, album_id)
    photo_id, _ = await ready_photo(gw, "olive", store_objects=False, album_id=album_id)
    assert (await gw.client.get(f"/v1/photos/{photo_id}", headers=gw.auth("vic"))).status == 200
    await ok(gw, "olive", "DELETE", f"/v1/albums/{album_id}/members/vic")
    for path in (
        f"/v1/albums/{album_id}",
        f"/v1/albums/{album_id}/photos",
        f"/v1/photos/{photo_id}",
    ):
        resp = await gw.client.get(path, headers=gw.auth("vic"))
        assert (await problem_of(resp, 404))["code"] == "not_found", path
    assert (await ok(gw, "vic", "GET", "/v1/albums"))["items"] == []


async def test_uploads_granted_before_a_member_lost_the_right_to_add_leave_the_album(
    gw: Gateway,
) -> None:
    album_id = await album(gw, cam="contributor", dee="contributor")
    granted = {
        user: (await ok(gw, user, "POST", "/v1/uploads", grant_body(album_id=album_id)))["photo_id"]
        for user in ("cam", "dee")
    }
    await ok(gw, "olive", "DELETE", f"/v1/albums/{album_id}/members/cam")
    await ok(gw, "olive", "PUT", f"/v1/albums/{album_id}/members/dee", {"role": "viewer"})
    for user, photo_id in granted.items():
        view = await ok(gw, user, "GET", f"/v1/photos/{photo_id}")
        assert view["album_id"] is None, user  # finishing the upload adds nothing to the album


async def test_a_member_added_by_a_decomposed_name_is_the_user_of_that_name(
    gw: Gateway,
) -> None:
    album_id = await album(gw)
    decomposed = quote("jose\u0301")  # as macOS and copy-paste often hand it over
    path = f"/v1/albums/{album_id}/members/{decomposed}"
    await ok(gw, "olive", "PUT", path, {"role": "viewer"})
    assert (await ok(gw, "jos\u00e9", "GET", f"/v1/albums/{album_id}"))["role"] == "viewer"
    await ok(gw, "jos\u00e9", "DELETE", path)  # leaving, by either spelling
    resp = await gw.client.get(f"/v1/albums/{album_id}", headers=gw.auth("jos\u00e9"))
    assert resp.status == 404


async def test_deleting_an_album_leaves_its_photos_with_their_uploaders(
    gw: Gateway, events: asyncio.Queue[Envelope]
) -> None:
    album_id = await album(gw, cora="contributor")
    photo_id, _ = await ready_photo(gw, "cora", store_objects=False, album_id=album_id)
    link = await ok(gw, "olive", "POST", f"/v1/albums/{album_id}/links", {})
    await ok(gw, "olive", "DELETE", f"/v1/albums/{album_id}")
    view = await ok(gw, "cora", "GET", f"/v1/photos/{photo_id}")
    assert (view["album_id"], view["sealed"], view["status"]) == (None, False, "ready")
    assert (await gw.client.get(f"/v1/shared/{link['token']}")).status == 404
    assert (await gw.client.get(f"/v1/albums/{album_id}", headers=gw.auth("olive"))).status == 404
    kinds = {(await events.get()).type for _ in range(2)}
    assert kinds == {"album.member_added", "album.deleted"}


async def test_an_albums_listing_pages_through_owned_and_joined_albums(gw: Gateway) -> None:
    mine = [await album(gw) for _ in range(3)]
    joined = await ok(gw, "cora", "POST", "/v1/albums", {"title": "Cora's"})
    await ok(gw, "cora", "PUT", f"/v1/albums/{joined['id']}/members/olive", {"role": "viewer"})
    seen, cursor = [], None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await ok(gw, "olive", "GET", f"/v1/albums{query}")
        seen += [(a["id"], a["role"]) for a in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == [(joined["id"], "viewer"), *[(a, "owner") for a in reversed(mine)]]


async def test_dedupe_and_batch_answers_are_sealed_too(gw: Gateway) -> None:
    album_id = await album(gw, cora="contributor")
    photo_id, data = await ready_photo(gw, "cora", store_objects=False, album_id=album_id)
    same = grant_body(album_id=album_id, sha256=hashlib.sha256(data).hexdigest())
    batch = await ok(gw, "cora", "POST", "/v1/uploads:batch", {"items": [same, grant_body()]})
    duplicate = batch["items"][0]
    assert (duplicate["photo_id"], duplicate["photo"]["sealed"]) == (photo_id, True)
    assert "filename" not in duplicate["photo"] and "facts" not in duplicate["photo"]
    elsewhere = await gw.client.post(
        "/v1/uploads", json={**same, "album_id": None}, headers=gw.auth("cora")
    )
    assert elsewhere.status == 201, "a photo in an album is no duplicate outside it"


async def test_a_date_range_never_matches_a_sealed_photo(gw: Gateway) -> None:
    album_id = await album(gw)
    await ready_photo(gw, "olive", store_objects=False, album_id=album_id)
    loose, _ = await ready_photo(gw, "olive", store_objects=False)
    query = "?taken_after=1970-01-01T00:00:00Z"
    # ready_photo records no capture time, so only status-free listings show both.
    assert (await ok(gw, "olive", "GET", f"/v1/photos{query}"))["items"] == []
    everything = await ok(gw, "olive", "GET", "/v1/photos")
    assert {p["sealed"] for p in everything["items"]} == {True, False}
    in_album = await ok(gw, "olive", "GET", f"/v1/photos?album_id={album_id}")
    assert [p["sealed"] for p in in_album["items"]] == [True]
    assert loose not in {p["id"] for p in in_album["items"]}


async def test_wrong_link_passwords_are_limited_per_link(gw: Gateway) -> None:
    album_id = await album(gw)
    links = f"/v1/albums/{album_id}/links"
    guarded = await ok(gw, "olive", "POST", links, {"password": "s3cret"})
    other = await ok(gw, "olive", "POST", links, {"password": "s3cret"})
    assert guarded["has_password"] and len(guarded["token"]) >= 22

    async def attempt(link: dict[str, Any], password: str) -> int:
        headers = {"X-Darkroom-Link-Password": password}
        return (await gw.client.get(f"/v1/shared/{link['token']}", headers=headers)).status

    assert [await attempt(guarded, "guess") for _ in range(4)] == [401, 401, 401, 429]
    assert await attempt(guarded, "s3cret") == 429, "no guessing while limited"
    assert await attempt(other, "s3cret") == 200
    listed = await ok(gw, "olive", "GET", links)
    assert {item["id"] for item in listed["items"]} == {guarded["id"], other["id"]}
    assert all("token" not in item for item in listed["items"])


async def test_wrong_link_passwords_sent_in_parallel_are_limited_too(gw: Gateway) -> None:
    album_id = await album(gw)
    link = await ok(gw, "olive", "POST", f"/v1/albums/{album_id}/links", {"password": "s3cret"})
    headers = {"X-Darkroom-Link-Password": "guess"}

    async def guess() -> int:
        return (await gw.client.get(f"/v1/shared/{link['token']}", headers=headers)).status

    statuses = await asyncio.gather(*(guess() for _ in range(12)))
    assert sorted(statuses) == [401] * 3 + [429] * 9  # the limit is 3 a minute here


async def test_a_password_no_link_could_have_is_refused_even_by_a_link_without_one(
    gw: Gateway,
) -> None:
    album_id = await album(gw)
    link = await ok(gw, "olive", "POST", f"/v1/albums/{album_id}/links", {})
    path = f"/v1/shared/{link['token']}"
    headers = {"X-Darkroom-Link-Password": "x" * 1025}
    async with gw.client.get(path, headers=headers) as resp:
        problem = await problem_of(resp, 422)
    assert problem["code"] == "invalid_request", problem
    async with gw.client.get(path, headers={"X-Darkroom-Link-Password": "x" * 1024}) as resp:
        assert resp.status == 200, await resp.text()


async def test_a_link_shows_the_original_only_when_it_allows_downloads(gw: Gateway) -> None:
    album_id = await album(gw, reveal_at=None)
    await ready_photo(gw, "olive", store_objects=False, album_id=album_id)
    links = f"/v1/albums/{album_id}/links"
    for allow in (False, True):
        link = await ok(gw, "olive", "POST", links, {"allow_download": allow})
        shared = await gw.client.get(f"/v1/shared/{link['token']}")
        body = await shared.json()
        assert body["album"] == {"title": "Party", "reveal_at": None, "photo_count": 1}
        [item] = body["items"]
        assert (item["original"] is not None) is allow
        assert sorted(item["renditions"]) == ["preview", "thumb"]


async def test_deleting_an_account_removes_its_albums_and_memberships(gw: Gateway) -> None:
    owned = await album(gw, cora="contributor")
    photo_id, _ = await ready_photo(gw, "cora", store_objects=False, album_id=owned)
    theirs = await ok(gw, "cora", "POST", "/v1/albums", {"title": "Cora's"})
    await ok(gw, "cora", "PUT", f"/v1/albums/{theirs['id']}/members/olive", {"role": "viewer"})
    await ok(gw, "olive", "DELETE", "/v1/me")
    assert (await ok(gw, "cora", "GET", f"/v1/photos/{photo_id}"))["album_id"] is None
    members = await ok(gw, "cora", "GET", f"/v1/albums/{theirs['id']}/members")
    assert [m["user_id"] for m in members["items"]] == ["cora"]


async def test_the_notifier_sends_album_events_to_the_webhook_and_reveals_on_time(
    settings: Settings, hooks: WebhookReceiver
) -> None:
    hooked = settings.model_copy(
        update={
            "webhook_url": hooks.url,
            "webhook_secret": SecretStr(WEBHOOK_SECRET),
            "reveal_interval": 0.05,
            "rate_limit_user": 0,
        }
    )
    async with gateway(hooked) as gw:
        stop = asyncio.Event()
        notifier = asyncio.create_task(serve(hooked, stop, resources=gw.res, health=False))
        try:
            soon = (datetime.now(UTC) + timedelta(milliseconds=300)).isoformat()
            album_id = await album(gw, reveal_at=soon, cora="contributor")
            added = await hooks.wait_for(album_id, "album.member_added", key="album_id")
            assert (added["data"]["user_id"], added["data"]["role"]) == ("cora", "contributor")
            revealed = await hooks.wait_for(album_id, "album.revealed", key="album_id")
            assert revealed["data"]["title"] == "Party"
            await ok(gw, "olive", "DELETE", f"/v1/albums/{album_id}")
            await hooks.wait_for(album_id, "album.deleted", key="album_id")
        finally:
            stop.set()
            await notifier
    assert [p["type"] for p in hooks.received].count("album.revealed") == 1
