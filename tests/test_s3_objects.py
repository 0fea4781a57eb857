"""The workers' object requests: what storage answers maps to what the handlers act on,
and a verification's reads that follow each other share one (billed) GET request."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from services.ingest_worker.ranges import Ranges
from shared.errors import StorageUnavailable
from shared.s3_objects import ObjectChanged, ObjectRequests
from shared.sigv4 import Credentials, Signer

DATA = random.Random(7).randbytes(300_000)


class Server:
    """One object over HTTP, with ranges and If-Match, answering `failures` 503s first."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.requests: list[str] = []
        self.suffixes = True  # answers `bytes=-N`; otherwise sends the whole object

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.method)
        if self.failures:
            self.failures -= 1
            return web.Response(status=503, text="<Error><Code>SlowDown</Code></Error>")
        if not request.path.endswith("/bucket/photo"):
            return web.Response(status=404)
        if request.headers.get("If-Match", '"v1"') != '"v1"':
            return web.Response(status=412)
        if request.method == "PUT":
            await request.read()
            return web.Response(status=200)
        if "Range" not in request.headers:
            return web.Response(body=DATA, headers={"ETag": '"v1"'})
        start, _, end = request.headers["Range"].removeprefix("bytes=").partition("-")
        if not start:
            if not self.suffixes:
                return web.Response(body=DATA, headers={"ETag": '"v1"'})
            at = max(0, len(DATA) - int(end))
            span = f"bytes {at}-{len(DATA) - 1}/{len(DATA)}"
            headers = {"ETag": '"v1"', "Content-Range": span}
            return web.Response(status=206, body=DATA[at:], headers=headers)
        part = DATA[int(start) : int(end) + 1]
        return web.Response(status=206, body=part, headers={"ETag": '"v1"'})


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, ObjectRequests]]:
    state = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as http:
        yield state, requests_to(http, f"http://127.0.0.1:{port}")
    await runner.cleanup()


def requests_to(http: aiohttp.ClientSession, endpoint: str) -> ObjectRequests:
    async def credentials() -> Credentials:
        return Credentials("key", "secret")

    return ObjectRequests(http, Signer(endpoint, "bucket", "us-east-1"), credentials, "bucket")


async def test_reads_that_follow_each_other_are_one_request(
    server: tuple[Server, ObjectRequests],
) -> None:
    state, objects = server
    ranges = Ranges(objects, "photo", len(DATA))
    assert await ranges.fetch(0, 65_535) == DATA[:65_536]
    assert await ranges.fetch(65_536, 199_999) == DATA[65_536:200_000]
    assert await ranges.fetch(200_000, 299_999) == DATA[200_000:]
    ranges.close()
    assert state.requests == ["GET"]


async def test_reads_in_any_order_return_the_bytes_asked_for(
    server: tuple[Server, ObjectRequests],
) -> None:
    _, objects = server
    ranges = Ranges(objects, "photo", len(DATA), span=50_000)
    rng = random.Random(3)
    at = 0
    for _ in range(60):
        if rng.random() < 0.3:
            at = rng.randrange(len(DATA))
        end = min(len(DATA), at + rng.randrange(1, 40_000)) - 1
        assert await ranges.fetch(at, end) == DATA[at : end + 1]
        at = end + 1 if end + 1 < len(DATA) else 0
    ranges.close()


async def test_an_object_replaced_since_verification_is_not_read(
    server: tuple[Server, ObjectRequests],
) -> None:
    _, objects = server
    assert await objects.read("photo", if_match='"v1"') == DATA
    with pytest.raises(ObjectChanged, match="replaced"):
        await objects.read("photo", if_match='"v0"')
    with pytest.raises(ObjectChanged, match="removed"):
        await objects.read("gone", if_match='"v1"')


async def test_an_absent_object_has_no_head(server: tuple[Server, ObjectRequests]) -> None:
    _, objects = server
    assert await objects.head("gone") is None
    info = await objects.head("photo")
    assert info is not None and info.size == len(DATA) and info.etag == '"v1"'


async def test_the_head_and_the_tail_come_in_one_request(
    server: tuple[Server, ObjectRequests],
) -> None:
    state, objects = server
    assert await objects.head_and_tail("gone", 65_536) is None
    state.requests.clear()
    found = await objects.head_and_tail("photo", 65_536)
    assert found is not None
    info, tail = found
    assert (info.size, info.etag, tail) == (len(DATA), '"v1"', DATA[-65_536:])
    assert state.requests == ["GET"]


async def test_an_answer_without_the_size_is_taken_from_a_head(
    server: tuple[Server, ObjectRequests],
) -> None:
    """A server that ignores the range says nothing of the tail's place: HEAD decides."""
    state, objects = server
    state.suffixes = False
    found = await objects.head_and_tail("photo", 65_536)
    assert found is not None
    info, tail = found
    assert (info.size, info.etag, tail) == (len(DATA), '"v1"', None)
    assert state.requests == ["GET", "HEAD"]


async def test_a_storage_error_is_retried_and_then_reported_as_unavailable(
    server: tuple[Server, ObjectRequests],
) -> None:
    state, objects = server
    state.failures = 2
    await objects.put("photo", b"rendition", content_type="image/webp")
    assert state.requests == ["PUT", "PUT", "PUT"]
    state.failures = 3
    with pytest.raises(StorageUnavailable, match="503"):
        await objects.read("photo")


async def test_storage_that_does_not_answer_is_unavailable() -> None:
    async with aiohttp.ClientSession() as http:
        objects = requests_to(http, "http://127.0.0.1:9")
        with pytest.raises(StorageUnavailable):
            await objects.head("photo")
