"""The SDK's calls, retries and typed errors, against a gateway (aiohttp's test server on
embedded parts) and against small servers that misbehave on purpose."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from darkroom_client import (
    Client,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    RetryPolicy,
    StorageError,
    Unauthorized,
    Unavailable,
    UnsupportedType,
)

from shared.settings import Settings
from tests.gateway_harness import Gateway, gateway, ready_photo
from tests.harness import serve_local

PHOTO_ID = "ab" * 16
Handler = Callable[[web.Request], Any]


class Sleeps:
    """A RetryPolicy's sleep that records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def policy(sleeps: Sleeps, attempts: int = 6) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, base=0.5, sleep=sleeps)


def problem(status: int, code: str, **headers: str) -> web.Response:
    body = {"title": code, "status": status, "detail": f"{code} (test)", "code": code}
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/problem+json",
        headers=headers,
    )


@asynccontextmanager
async def answering(*answers: Handler) -> AsyncIterator[tuple[str, list[str]]]:
    """A server whose n-th request to GET /v1/photos/{id} is handled by answers[n]; it
    records each request's path."""
    seen: list[str] = []

    async def photo(request: web.Request) -> Any:
        seen.append(request.path)
        return await answers[min(len(seen), len(answers)) - 1](request)

    app = web.Application()
    app.router.add_get("/v1/photos/{photo_id}", photo)
    async with serve_local(app) as url:
        yield url, seen


async def ok(request: web.Request) -> web.Response:
    view = {"id": request.match_info["photo_id"], "status": "ready", "sealed": False}
    return web.json_response(view)


async def limited(_: web.Request) -> web.Response:
    return problem(429, "rate_limited", **{"Retry-After": "7"})


async def unavailable(_: web.Request) -> web.Response:
    return problem(503, "unavailable")


async def hang_up(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.close()  # the connection drops before any answer
    return web.Response()


async def test_a_429_is_retried_after_the_time_retry_after_names() -> None:
    sleeps = Sleeps()
    async with (
        answering(limited, limited, ok) as (url, seen),
        Client(url, "token", retry=policy(sleeps), use_events=False) as dr,
    ):
        photo = await dr.photo(PHOTO_ID)
    assert photo.status == "ready"
    assert len(seen) == 3
    assert len(sleeps.delays) == 2
    # Retry-After is honoured, with at most `base` of jitter on top.
    assert all(7 <= d <= 7.5 for d in sleeps.delays), sleeps.delays


async def test_503s_are_retried_with_growing_backoff() -> None:
    sleeps = Sleeps()
    async with (
        answering(unavailable, unavailable, unavailable, ok) as (url, seen),
        Client(url, "token", retry=policy(sleeps), use_events=False) as dr,
    ):
        assert (await dr.photo(PHOTO_ID)).id == PHOTO_ID
    assert len(seen) == 4
    first, second, third = sleeps.delays
    assert 0.25 <= first <= 0.5 and 0.5 <= second <= 1.0 and 1.0 <= third <= 2.0


async def test_retries_spent_raise_the_typed_error_with_the_server_s_retry_after() -> None:
    sleeps = Sleeps()
    async with (
        answering(limited) as (url, seen),
        Client(url, "token", retry=policy(sleeps, attempts=3), use_events=False) as dr,
    ):
        with pytest.raises(RateLimited) as caught:
            await dr.photo(PHOTO_ID)
    assert len(seen) == 3
    assert (caught.value.status, caught.value.code, caught.value.retry_after) == (
        429,
        "rate_limited",
        7,
    )


async def test_the_gateway_s_429_is_waited_out_for_as_long_as_it_says(settings: Settings) -> None:
    """The real gateway's limiter: two requests a minute, then 429 with Retry-After."""
    sleeps = Sleeps()
    async with gateway(settings.model_copy(update={"rate_limit_user": 2})) as gw:
        url, token = str(gw.client.make_url("")), gw.auth()["Authorization"].split()[1]
        async with Client(url, token, retry=policy(sleeps, attempts=3), use_events=False) as dr:
            for _ in range(2):
                with pytest.raises(NotFound):
                    await dr.photo(PHOTO_ID)
            with pytest.raises(RateLimited) as caught:
                await dr.photo(PHOTO_ID)
    told = caught.value.retry_after
    assert told is not None and told > 0
    assert caught.value.code == "rate_limited"
    assert len(sleeps.delays) == 2
    assert all(d >= told for d in sleeps.delays), (sleeps.delays, told)


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    async with gateway(settings) as gw:
        yield gw


def client_of(gw: Gateway, user: str = "alice") -> Client:
    token = gw.auth(user)["Authorization"].split()[1]
    return Client(str(gw.client.make_url("")), token, use_events=False)


async def test_errors_are_typed_and_carry_the_problem_code_and_status(gw: Gateway) -> None:
    async with client_of(gw) as dr:
        with pytest.raises(NotFound) as missing:
            await dr.photo(PHOTO_ID)
        with pytest.raises(UnsupportedType) as unsupported:
            await dr.upload(b"plain text", content_type="text/plain", filename="a.txt")
        photo_id, _ = await ready_photo(gw, "bob")
        with pytest.raises(NotFound):  # someone else's photo is a missing one
            await dr.delete(photo_id)
    async with Client(str(gw.client.make_url("")), "not-a-token", use_events=False) as dr:
        with pytest.raises(Unauthorized) as unauthorized:
            await dr.photo(PHOTO_ID)
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    assert (unsupported.value.status, unsupported.value.code) == (415, "unsupported_type")
    assert "image/jpeg" in unsupported.value.problem["accepted"]
    assert (unauthorized.value.status, unauthorized.value.code) == (401, "unauthorized")


async def test_photos_follow_every_page_and_download_saves_a_rendition(
    gw: Gateway, tmp_path: Path
) -> None:
    made = [(await ready_photo(gw))[0] for _ in range(3)]
    async with client_of(gw) as dr:
        listed = [p.id async for p in dr.photos(limit=2)]
        saved = await dr.download(made[0], "thumb", tmp_path / "thumb.webp")
        await dr.delete(made[0])
        with pytest.raises(NotFound):
            await dr.photo(made[0])
    assert listed == made[::-1]  # newest first, across two pages
    assert saved.read_bytes() == b"abc"


async def test_albums_members_and_links_through_the_sdk(gw: Gateway) -> None:
    photo_id, _ = await ready_photo(gw)
    async with client_of(gw) as olive, client_of(gw, "cora") as cora:
        album = await olive.create_album("party", reveal_at="2099-01-01T00:00:00Z")
        assert album["sealed"] is True and album["role"] == "owner"
        await olive.add_member(album["id"], "cora", "viewer")
        assert [m["user_id"] for m in await olive.members(album["id"])] == ["alice", "cora"]
        assert (await cora.album(album["id"]))["role"] == "viewer"
        with pytest.raises(Forbidden) as viewer:
            await cora.upload(b"\xff\xd8\xff" + b"0" * 64, album["id"], filename="x.jpg")
        assert viewer.value.code == "insufficient_role"
        link = await olive.create_link(photo_id=photo_id, allow_download=True)
        shared = await cora.shared(link["token"])
        assert shared["id"] == photo_id
        assert [x["id"] for x in await olive.links(photo_id=photo_id)] == [link["id"]]
        await olive.revoke_link(link["id"], photo_id=photo_id)
        with pytest.raises(NotFound):
            await cora.shared(link["token"])
        await olive.update_album(album["id"], reveal_at="2000-01-01T00:00:00Z")
        with pytest.raises(Conflict) as not_sealable:
            await olive.update_album(album["id"], reveal_at="2099-01-01T00:00:00Z")
        assert not_sealable.value.code == "already_revealed"
        assert [a["id"] async for a in cora.albums()] == [album["id"]]
        await olive.remove_member(album["id"], "cora")
        await olive.delete_album(album["id"])
        with pytest.raises(NotFound):
            await olive.album(album["id"])


async def test_connections_dropped_every_time_end_in_unavailable() -> None:
    sleeps = Sleeps()
    async with (
        answering(hang_up) as (url, _),
        Client(url, "token", retry=policy(sleeps, attempts=2), use_events=False) as dr,
    ):
        with pytest.raises(Unavailable) as caught:
            await dr.photo(PHOTO_ID)
    assert "network error" in caught.value.detail


async def test_the_event_stream_reconnects_after_a_drop_sending_the_last_event_id() -> None:
    """A stub stream that sends one event per connection and hangs up."""
    asked: list[str | None] = []

    async def stream(request: web.Request) -> web.StreamResponse:
        asked.append(request.headers.get("Last-Event-ID"))
        n = len(asked)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        data = json.dumps({"type": "photo.ready", "timestamp": "t", "data": {"n": n}})
        await response.write(
            f": keep-alive\n\nid: e{n}\nevent: photo.ready\ndata: {data}\n\n".encode()
        )
        if n == 2:
            await response.write(
                b'event: reset\ndata: {"reason": "fell_behind", "detail": "d"}\n\n'
            )
        return response

    app = web.Application()
    app.router.add_get("/v1/events", stream)
    sleeps = Sleeps()
    async with serve_local(app) as url, Client(url, "token", retry=policy(sleeps)) as dr:
        events = dr.events()
        got = [await anext(events) for _ in range(3)]
        await events.aclose()
    assert [(e.id, e.type, e.data) for e in got] == [
        ("e1", "photo.ready", {"n": 1}),
        ("e2", "photo.ready", {"n": 2}),
        (None, "reset", {"reason": "fell_behind", "detail": "d"}),
    ]
    assert asked == [None, "e1"]
    assert len(sleeps.delays) == 1  # one backoff between the two connections


DATA = bytes(range(256)) * 4096  # 1 MiB
HALF = len(DATA) // 2
Storage = Callable[[web.Request], Any]


@asynccontextmanager
async def storing(*answers: Storage) -> AsyncIterator[tuple[str, list[web.Request]]]:
    """An API whose download answer links to /objects/N (N counts the links asked for),
    and a storage whose n-th GET is handled by answers[n]; it records each GET."""
    links, gets = [0], []

    async def download(request: web.Request) -> web.Response:
        links[0] += 1
        raise web.HTTPFound(f"/objects/{links[0]}")

    async def get(request: web.Request) -> Any:
        gets.append(request)
        return await answers[min(len(gets), len(answers)) - 1](request)

    app = web.Application()
    app.router.add_get("/v1/photos/{photo_id}/{rendition}", download)
    app.router.add_get("/objects/{n}", get)
    async with serve_local(app) as url:
        yield url, gets


def whole(data: bytes, etag: str = '"v1"') -> Storage:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=data, headers={"ETag": etag})

    return answer


async def cut_after_half(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"ETag": '"v1"'})
    resp.content_length = len(DATA)
    await resp.prepare(request)
    await resp.write(DATA[:HALF])
    assert request.transport is not None
    request.transport.close()
    return resp


async def rest_if_unchanged(request: web.Request) -> web.Response:
    if request.headers.get("If-Match") != '"v1"':
        return web.Response(status=412)
    start = int(request.headers["Range"].removeprefix("bytes=").rstrip("-"))
    headers = {"ETag": '"v1"', "Content-Range": f"bytes {start}-{len(DATA) - 1}/{len(DATA)}"}
    return web.Response(status=206, body=DATA[start:], headers=headers)


async def changed(_: web.Request) -> web.Response:
    return web.Response(status=412)


async def expired(_: web.Request) -> web.Response:
    return web.Response(status=403, text="<Error><Code>AccessDenied</Code></Error>")


async def missing(_: web.Request) -> web.Response:
    return web.Response(status=404, text="<Error><Code>NoSuchKey</Code></Error>")


def leftovers(directory: Path) -> list[Path]:
    return list(directory.iterdir())


def ranges(gets: list[web.Request]) -> list[str | None]:
    return [g.headers.get("Range") for g in gets]


async def test_a_download_cut_mid_body_resumes_from_the_bytes_already_saved(
    tmp_path: Path,
) -> None:
    sleeps = Sleeps()
    async with (
        storing(cut_after_half, rest_if_unchanged) as (url, gets),
        Client(url, "token", retry=policy(sleeps), use_events=False) as dr,
    ):
        saved = await dr.download(PHOTO_ID, "original", tmp_path / "photo.jpg")
    assert saved.read_bytes() == DATA
    assert ranges(gets) == [None, f"bytes={HALF}-"]
    assert len(sleeps.delays) == 1


async def cut_after_the_last_byte(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"ETag": '"v1"'})
    resp.enable_chunked_encoding()  # the end of the body is its last chunk, never sent
    await resp.prepare(request)
    await resp.write(DATA)
    assert request.transport is not None
    request.transport.close()
    return resp


async def nothing_left(request: web.Request) -> web.Response:
    assert request.headers["Range"] == f"bytes={len(DATA)}-"
    return web.Response(status=416, headers={"Content-Range": f"bytes */{len(DATA)}"})


async def test_a_download_cut_after_its_last_byte_is_complete(tmp_path: Path) -> None:
    async with (
        storing(cut_after_the_last_byte, nothing_left) as (url, gets),
        Client(url, "token", retry=policy(Sleeps()), use_events=False) as dr,
    ):
        saved = await dr.download(PHOTO_ID, "original", tmp_path / "photo.jpg")
    assert saved.read_bytes() == DATA and len(gets) == 2


async def test_an_object_changed_mid_download_is_saved_again_from_the_start(
    tmp_path: Path,
) -> None:
    new = DATA[::-1]
    async with (
        storing(cut_after_half, changed, whole(new, '"v2"')) as (url, gets),
        Client(url, "token", retry=policy(Sleeps()), use_events=False) as dr,
    ):
        saved = await dr.download(PHOTO_ID, "original", tmp_path / "photo.jpg")
    assert saved.read_bytes() == new
    assert ranges(gets) == [None, f"bytes={HALF}-", None]


async def test_a_link_storage_refuses_is_asked_for_again(tmp_path: Path) -> None:
    """Signed links are short-lived: one that lapsed while retrying is replaced."""
    sleeps = Sleeps()
    async with (
        storing(expired, whole(DATA)) as (url, gets),
        Client(url, "token", retry=policy(sleeps), use_events=False) as dr,
    ):
        saved = await dr.download(PHOTO_ID, "thumb", tmp_path / "thumb.webp")
    assert saved.read_bytes() == DATA
    assert [g.path for g in gets] == ["/objects/1", "/objects/2"]
    assert sleeps.delays == []


async def test_a_download_storage_refuses_leaves_nothing_behind(tmp_path: Path) -> None:
    async with (
        storing(missing) as (url, gets),
        Client(url, "token", retry=policy(Sleeps()), use_events=False) as dr,
    ):
        with pytest.raises(StorageError) as refused:
            await dr.download(PHOTO_ID, "thumb", tmp_path / "thumb.webp")
    assert refused.value.status == 404 and len(gets) == 1
    assert leftovers(tmp_path) == []


async def test_a_download_that_failed_for_good_resumes_in_the_next_call(tmp_path: Path) -> None:
    """The network gave out after half the bytes: a later call (another process, say)
    asks only for the rest, if the object is still the same."""
    target = tmp_path / "photo.jpg"
    async with (
        storing(cut_after_half, unavailable) as (url, _),
        Client(url, "token", retry=policy(Sleeps(), attempts=2), use_events=False) as dr,
    ):
        with pytest.raises(Unavailable):
            await dr.download(PHOTO_ID, "original", target)
    assert sorted(p.name for p in leftovers(tmp_path)) == ["photo.jpg.part", "photo.jpg.part.etag"]
    async with (
        storing(rest_if_unchanged) as (url, gets),
        Client(url, "token", retry=policy(Sleeps()), use_events=False) as dr,
    ):
        saved = await dr.download(PHOTO_ID, "original", target)
    assert saved.read_bytes() == DATA
    assert ranges(gets) == [f"bytes={HALF}-"]
    assert leftovers(tmp_path) == [target]


def left_half_of(target: Path) -> Path:
    """`target`, with the first half of DATA (ETag "v1") left by an earlier call."""
    target.with_name(target.name + ".part").write_bytes(DATA[:HALF])
    target.with_name(target.name + ".part.etag").write_text('"v1"')
    return target


async def test_bytes_an_earlier_call_left_are_discarded_once_the_photo_is_gone(
    tmp_path: Path,
) -> None:
    target = left_half_of(tmp_path / "photo.jpg")

    async def deleted(_: web.Request) -> web.Response:
        return problem(404, "not_found")

    app = web.Application()
    app.router.add_get("/v1/photos/{photo_id}/{rendition}", deleted)
    async with (
        serve_local(app) as url,
        Client(url, "token", retry=policy(Sleeps()), use_events=False) as dr,
    ):
        with pytest.raises(NotFound):
            await dr.download(PHOTO_ID, "original", target)
    assert leftovers(tmp_path) == []


async def test_bytes_an_earlier_call_left_of_an_object_since_changed_are_replaced(
    tmp_path: Path,
) -> None:
    target = left_half_of(tmp_path / "photo.jpg")
    new = DATA[::-1]
    async with (
        storing(changed, whole(new, '"v2"')) as (url, gets),
        Client(url, "token", retry=policy(Sleeps()), use_events=False) as dr,
    ):
        saved = await dr.download(PHOTO_ID, "original", target)
    assert saved.read_bytes() == new
    assert ranges(gets) == [f"bytes={HALF}-", None]
    assert leftovers(tmp_path) == [target]


async def test_a_download_busy_storage_keeps_refusing_ends_unavailable(tmp_path: Path) -> None:
    sleeps = Sleeps()
    async with (
        storing(unavailable) as (url, gets),
        Client(url, "token", retry=policy(sleeps, attempts=3), use_events=False) as dr,
    ):
        with pytest.raises(Unavailable):
            await dr.download(PHOTO_ID, "thumb", tmp_path / "thumb.webp")
    assert len(gets) == 3 and len(sleeps.delays) == 2
    assert leftovers(tmp_path) == []
