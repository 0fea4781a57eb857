"""Darkroom's own grants and download links against SeaweedFS, an S3 server that checks
what they sign (moto checks none of it): each restriction a grant or link promises is
refused by storage when broken. Expiry tests wait out TTLs of a second or two."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest
from pydantic import SecretStr, ValidationError

from services.dev import run_dev
from services.gateway.auth import issue_token
from services.gateway.downloads import content_disposition
from services.ingest_worker.handlers import Ingest
from services.ingest_worker.sweep import abort_strays
from shared.keys import original_key
from shared.settings import MAX_PRESIGNED_TTL, Settings
from tests import images
from tests.conftest import JWT_SECRET, make_settings
from tests.gateway_harness import Gateway, gateway, grant_body, ready_photo
from tests.harness import (
    WEBHOOK_SECRET,
    Client,
    WebhookReceiver,
    free_port,
    running,
)
from tests.seaweedfs import ACCESS_KEY, SECRET_KEY

JPEG = images.jpeg(64, 48)


@pytest.fixture
def strict(settings: Settings, seaweedfs: str) -> Settings:
    return settings.model_copy(
        update={
            "s3_endpoint_url": seaweedfs,
            "sqs_endpoint_url": "",
            "s3_access_key_id": ACCESS_KEY,
            "s3_secret_access_key": SecretStr(SECRET_KEY),
        }
    )


@pytest.fixture
async def gw(strict: Settings) -> AsyncIterator[Gateway]:
    async with gateway(strict) as gw:
        yield gw


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def grant(gw: Gateway, method: str = "POST", **body: Any) -> dict[str, Any]:
    payload = grant_body(size=len(JPEG), method=method) | body
    resp = await gw.client.post("/v1/uploads", json=payload, headers=gw.auth())
    assert resp.status == 201, await resp.text()
    answer: dict[str, Any] = (await resp.json())["upload"]
    return answer


def s3_code(status: int, text: str) -> tuple[int, str]:
    found = re.search(r"<Code>([^<]+)</Code>", text)
    return status, found[1] if found else ""


async def post_upload(
    http: aiohttp.ClientSession,
    upload: dict[str, Any],
    data: bytes,
    *,
    content_type: str | None = None,
    **fields: str,
) -> tuple[int, str]:
    """The browser's form POST, with any of the granted fields replaced."""
    form = aiohttp.FormData()
    sent = upload["fields"] | fields
    if content_type is not None:
        sent["Content-Type"] = content_type
    for name, value in sent.items():
        form.add_field(name, value)
    form.add_field("file", data, filename="photo.jpg", content_type=sent["Content-Type"])
    async with http.post(upload["url"], data=form) as resp:
        return s3_code(resp.status, await resp.text())


async def put_upload(
    http: aiohttp.ClientSession, url: str, data: bytes, headers: dict[str, str]
) -> tuple[int, str]:
    async with http.put(url, data=data, headers=headers) as resp:
        return s3_code(resp.status, await resp.text())


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, str, dict[str, str]]:
    async with http.get(url) as resp:
        status, code = s3_code(resp.status, await resp.text(errors="replace"))
        return status, code, dict(resp.headers)


def with_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def policy_of(upload: dict[str, Any]) -> dict[str, Any]:
    policy: dict[str, Any] = json.loads(base64.b64decode(upload["fields"]["policy"]))
    return policy


def encoded(policy: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(policy).encode()).decode()


def flipped(signature: str) -> str:
    return ("0" if signature[0] != "0" else "1") + signature[1:]


async def sleep_past(when: float) -> None:
    """Wait until storage's clock, read to the second, is past `when`."""
    await asyncio.sleep(max(0.0, when + 1.1 - time.time()))


def signed_until(url: str) -> float:
    query = dict(parse_qsl(urlsplit(url).query))
    start = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return start.timestamp() + int(query["X-Amz-Expires"])


async def stored_size(gw: Gateway, key: str) -> int | None:
    info = await gw.res.storage.head(key)
    return None if info is None else info.size


async def test_a_post_grant_stores_exactly_the_declared_bytes(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    upload = await grant(gw)
    assert await post_upload(http, upload, JPEG) == (204, "")
    info = await gw.res.storage.head(upload["fields"]["key"])
    assert info is not None and (info.size, info.content_type) == (len(JPEG), "image/jpeg")


def widened(upload: dict[str, Any]) -> dict[str, str]:
    policy = policy_of(upload)
    policy["conditions"] = [
        ["content-length-range", 0, 10**9] if isinstance(c, list) else c
        for c in policy["conditions"]
    ]
    return {"policy": encoded(policy)}


def another_key(key: str) -> str:
    """The key with its last character changed (a key ending in "0" once made this the
    same key, and the test failed 1 run in 16: CI rehearsal, 2026-12-01)."""
    return key[:-1] + ("1" if key.endswith("0") else "0")


REFUSED_POSTS: dict[str, tuple[Any, tuple[int, str]]] = {
    "a-byte-more": (lambda u: (JPEG + b"\0", {}), (400, "EntityTooLarge")),
    "a-byte-less": (lambda u: (JPEG[:-1], {}), (400, "EntityTooSmall")),
    "another-type": (
        lambda u: (JPEG, {"content_type": "text/html"}),
        (403, "AccessDenied"),
    ),
    "another-key": (
        lambda u: (JPEG, {"key": another_key(u["fields"]["key"])}),
        (403, "AccessDenied"),
    ),
    "widened-policy": (lambda u: (JPEG + b"more", widened(u)), (403, "SignatureDoesNotMatch")),
    "tampered-signature": (
        lambda u: (JPEG, {"x-amz-signature": flipped(u["fields"]["x-amz-signature"])}),
        (403, "SignatureDoesNotMatch"),
    ),
}


@pytest.mark.parametrize(("change", "refusal"), REFUSED_POSTS.values(), ids=REFUSED_POSTS.keys())
async def test_storage_refuses_a_post_that_breaks_its_grant(
    gw: Gateway, http: aiohttp.ClientSession, change: Any, refusal: tuple[int, str]
) -> None:
    upload = await grant(gw)
    data, fields = change(upload)
    assert await post_upload(http, upload, data, **fields) == refusal
    assert await stored_size(gw, upload["fields"]["key"]) is None


async def test_a_put_grant_stores_the_declared_bytes(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    upload = await grant(gw, "PUT")
    assert await put_upload(http, upload["url"], JPEG, upload["headers"]) == (200, "")
    key = urlsplit(upload["url"]).path.split("/", 2)[2]
    assert await stored_size(gw, key) == len(JPEG)


REFUSED_PUTS: dict[str, Any] = {
    "another-type": lambda u: (u["url"], JPEG, u["headers"] | {"Content-Type": "text/html"}),
    "a-byte-less": lambda u: (u["url"], JPEG[:-1], {"Content-Type": "image/jpeg"}),
    "tampered-signature": lambda u: (
        with_query(u["url"], **{"X-Amz-Signature": flipped(signature_of(u["url"]))}),
        JPEG,
        u["headers"],
    ),
    "unsigned": lambda u: (u["url"].split("?")[0], JPEG, u["headers"]),
}


def signature_of(url: str) -> str:
    return dict(parse_qsl(urlsplit(url).query))["X-Amz-Signature"]


@pytest.mark.parametrize("change", REFUSED_PUTS.values(), ids=REFUSED_PUTS.keys())
async def test_storage_refuses_a_put_that_breaks_its_grant(
    gw: Gateway, http: aiohttp.ClientSession, change: Any
) -> None:
    upload = await grant(gw, "PUT")
    url, data, headers = change(upload)
    status, code = await put_upload(http, url, data, headers)
    assert (status, code) in ((403, "SignatureDoesNotMatch"), (403, "AccessDenied")), code
    key = urlsplit(upload["url"]).path.split("/", 2)[2]
    assert await stored_size(gw, key) is None


async def test_storage_refuses_uploads_through_expired_grants(
    strict: Settings, http: aiohttp.ClientSession
) -> None:
    async with gateway(strict.model_copy(update={"upload_url_ttl": 1})) as gw:
        post, put = await grant(gw), await grant(gw, "PUT")
        expiry = datetime.fromisoformat(policy_of(post)["expiration"].replace("Z", "+00:00"))
        await sleep_past(max(expiry.timestamp(), signed_until(put["url"])))
        assert await post_upload(http, post, JPEG) == (403, "AccessDenied")
        assert await put_upload(http, put["url"], JPEG, put["headers"]) == (403, "AccessDenied")


async def test_the_longest_url_lifetimes_the_settings_allow_are_accepted_by_storage(
    strict: Settings, http: aiohttp.ClientSession
) -> None:
    week = MAX_PRESIGNED_TTL
    longest = strict.model_copy(update={"upload_url_ttl": week, "download_url_ttl": week})
    async with gateway(longest) as gw:
        post, put = await grant(gw), await grant(gw, "PUT")
        assert await post_upload(http, post, JPEG) == (204, "")
        assert await put_upload(http, put["url"], JPEG, put["headers"]) == (200, "")
        photo_id, _ = await ready_photo(gw)
        view = await (await gw.client.get(f"/v1/photos/{photo_id}", headers=gw.auth())).json()
        assert (await fetch(http, view["original"]["url"]))[0] == 200
    with pytest.raises(ValidationError, match="less than or equal to 604800"):
        make_settings(download_url_ttl=week + 1)
    with pytest.raises(ValidationError, match="less than or equal to 604800"):
        make_settings(upload_url_ttl=week + 1)


async def test_download_links_serve_the_photo_as_they_sign_it(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    photo_id, data = await ready_photo(gw)
    view = await (await gw.client.get(f"/v1/photos/{photo_id}", headers=gw.auth())).json()
    async with http.get(view["original"]["url"]) as resp:
        assert (resp.status, await resp.read()) == (200, data)
        headers = dict(resp.headers)
    assert headers["Content-Type"] == "image/jpeg"
    assert headers["Content-Disposition"] == content_disposition("Zoë.jpg", attachment=True)
    window = gw.res.settings
    assert headers["Cache-Control"] == (
        f"private, max-age={window.download_url_ttl - window.download_url_window}"
    )

    resp = await gw.client.get(
        f"/v1/photos/{photo_id}/original?inline=1", headers=gw.auth(), allow_redirects=False
    )
    status, _, headers = await fetch(http, resp.headers["Location"])
    assert status == 200 and headers["Content-Disposition"].startswith("inline;")


async def test_a_download_link_takes_the_sdk_s_resume_headers(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    """The SDK resumes a cut download with Range and If-Match, which the link does not
    sign: storage that enforces signatures serves the rest, or 412 once it changed."""
    photo_id, data = await ready_photo(gw)
    view = await (await gw.client.get(f"/v1/photos/{photo_id}", headers=gw.auth())).json()
    url = view["original"]["url"]
    async with http.get(url) as resp:
        etag = resp.headers["ETag"]
    resume = {"Range": "bytes=100-", "If-Match": etag}
    async with http.get(url, headers=resume) as resp:
        assert (resp.status, await resp.read()) == (206, data[100:])
    async with http.get(url, headers={**resume, "If-Match": '"0"'}) as resp:
        assert resp.status == 412


async def test_storage_refuses_download_links_that_were_changed(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    photo_id, _ = await ready_photo(gw)
    view = await (await gw.client.get(f"/v1/photos/{photo_id}", headers=gw.auth())).json()
    url = view["original"]["url"]
    shown_inline = with_query(url, **{"response-content-disposition": "inline"})
    uncached = with_query(url, **{"response-cache-control": "public, max-age=31536000"})
    unsigned = url.split("?")[0]
    other_object = url.replace(photo_id, "0" * 32)
    tampered = with_query(url, **{"X-Amz-Signature": flipped(signature_of(url))})
    for changed in (shown_inline, uncached, other_object, tampered):
        assert (await fetch(http, changed))[:2] == (403, "SignatureDoesNotMatch"), changed
    assert (await fetch(http, unsigned))[:2] == (403, "AccessDenied")


async def test_download_links_repeat_within_a_window_and_work_until_they_expire(
    strict: Settings, http: aiohttp.ClientSession
) -> None:
    short = strict.model_copy(update={"download_url_ttl": 3, "download_url_window": 1})
    async with gateway(short) as gw:
        photo_id, data = await ready_photo(gw)

        async def link() -> str:
            view = await (await gw.client.get(f"/v1/photos/{photo_id}", headers=gw.auth())).json()
            url: str = view["original"]["url"]
            return url

        first = await link()
        window_start = signed_until(first) - 3
        again = await link()
        if time.time() < window_start + 1:  # unless the window turned in between
            assert again == first, "the same window signs the same URL"
        await asyncio.sleep(max(0.0, window_start + 1.05 - time.time()))
        later = await link()
        assert later != first, "a new window signs a new URL"
        status, _, _ = await fetch(http, first)
        assert status == 200, "a URL stays valid after its window, until its TTL"
        async with http.get(later) as resp:
            assert (resp.status, await resp.read()) == (200, data)
        await sleep_past(signed_until(first))
        assert (await fetch(http, first))[:2] == (403, "AccessDenied")


async def test_the_pipeline_runs_on_strict_storage_and_deletion_ends_old_links(
    strict: Settings, hooks: WebhookReceiver, unique: str
) -> None:
    """Every service in one process (`darkroom dev` on SeaweedFS rather than moto; with
    no storage notifications there, the completion hint starts verification); after
    DELETE and the purge, a link handed out before it finds nothing."""
    configured = strict.model_copy(
        update={
            "gateway_port": free_port(),
            "webhook_url": hooks.url,
            "webhook_secret": SecretStr(WEBHOOK_SECRET),
        }
    )
    data = images.jpeg(640, 480)
    owner = f"zoë-{unique}"
    async with running(configured, [run_dev]) as base, aiohttp.ClientSession() as http:
        client = Client(http, base, issue_token(JWT_SECRET, owner))
        for method in ("POST", "PUT"):
            grant = await client.grant(data, "image/jpeg", method=method)
            await client.upload(grant, data, "image/jpeg")
            photo_id = grant["photo_id"]
            async with http.post(
                f"{base}/v1/uploads/{photo_id}/complete", headers=client.headers
            ) as resp:
                assert resp.status == 202
            await hooks.wait_for(photo_id, "photo.ready")
            view = await client.photo(photo_id)
            assert await client.download(view["original"]["url"]) == (data, "image/jpeg")
            thumb, kind = await client.download(view["renditions"]["thumb"]["url"])
            assert kind == "image/webp" and thumb[:4] == b"RIFF"

        async with http.delete(f"{base}/v1/photos/{photo_id}", headers=client.headers) as resp:
            assert resp.status == 204
        old_link = view["original"]["url"]

        async def purged() -> bool:
            return (await fetch(http, old_link))[0] == 404

        async with asyncio.timeout(30):
            while not await purged():  # noqa: ASYNC110 - the purge announces nothing outside
                await asyncio.sleep(0.05)
        assert (await fetch(http, old_link))[:2] == (404, "NoSuchKey")


@pytest.fixture
async def in_parts(strict: Settings) -> AsyncIterator[Gateway]:
    async with gateway(strict.model_copy(update={"multipart_part_size": 5 * 1024 * 1024})) as gw:
        yield gw


async def part_urls(gw: Gateway, size: int) -> tuple[str, list[dict[str, Any]]]:
    body = grant_body(size=size, multipart=True)
    granted = await (await gw.client.post("/v1/uploads", json=body, headers=gw.auth())).json()
    photo_id = granted["photo_id"]
    count = granted["upload"]["part_count"]
    resp = await gw.client.post(
        f"/v1/uploads/{photo_id}/parts",
        json={"part_numbers": list(range(1, count + 1))},
        headers=gw.auth(),
    )
    assert resp.status == 200, await resp.text()
    return photo_id, (await resp.json())["parts"]


async def test_parts_sent_at_their_signed_sizes_are_stored_and_completed(
    in_parts: Gateway, http: aiohttp.ClientSession
) -> None:
    data = bytes(5 * 1024 * 1024) + JPEG
    photo_id, parts = await part_urls(in_parts, len(data))
    done = []
    for part, chunk in zip(parts, (data[: 5 * 1024 * 1024], JPEG), strict=True):
        async with http.put(part["url"], data=chunk, headers=part["headers"]) as resp:
            assert resp.status == 200, await resp.text()
            done.append({"part_number": part["part_number"], "etag": resp.headers["ETag"]})
    resp = await in_parts.client.post(
        f"/v1/uploads/{photo_id}/complete", json={"parts": done}, headers=in_parts.auth()
    )
    assert resp.status == 202, await resp.text()
    assert await stored_size(in_parts, original_key("alice", photo_id)) == len(data)


@pytest.mark.parametrize("change", [-1, 1], ids=["a byte less", "a byte more"])
async def test_storage_refuses_a_part_of_another_size_than_its_url_signs(
    in_parts: Gateway, http: aiohttp.ClientSession, change: int
) -> None:
    _, parts = await part_urls(in_parts, 5 * 1024 * 1024 + len(JPEG))
    last = parts[-1]
    body = JPEG[:-1] if change < 0 else JPEG + b"\0"
    # The signed Content-Length left out: aiohttp sends the body's own.
    status, code = await put_upload(http, last["url"], body, {})
    assert (status, code) in ((403, "SignatureDoesNotMatch"), (403, "AccessDenied")), code


async def test_the_sweep_spares_an_upload_begun_too_recently_to_judge(in_parts: Gateway) -> None:
    """A grant begins its upload before recording its intent: an unrecorded upload is
    only aborted once the sweep has seen it unheld for `sweep_after`."""
    stray = original_key("alice", "f" * 32)
    await in_parts.res.storage.multipart.begin(stray, content_type="image/jpeg")
    ingest = Ingest(in_parts.res)
    assert await abort_strays(ingest) == 0
    later = datetime.now(UTC) + timedelta(seconds=in_parts.res.settings.sweep_after + 60)
    assert await abort_strays(ingest, now=later) == 1
    assert [u async for u in in_parts.res.storage.multipart.open_uploads("originals/")] == []
