"""Downloads: presigned GETs with type and disposition, repeated within a window (cacheable),
and stable links that answer 302. Against moto's S3 server over HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from services.gateway.downloads import Downloads, content_disposition
from shared.settings import Settings
from shared.sigv4 import Signer
from shared.storage import Presigner, open_storage
from tests.gateway_harness import Gateway, gateway, grant_body, problem_of, ready_photo


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    async with gateway(settings) as gw:
        yield gw


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def test_urls_repeat_within_a_window_and_change_after_it(settings: Settings) -> None:
    window_start = 1_700_000_100  # a multiple of 900
    now = [window_start + 100.0]
    async with open_storage(settings) as storage:
        downloads = Downloads.from_settings(settings, storage.presigner, clock=lambda: now[0])
        first, fresh_for = await downloads.url("k", "image/webp", "a.webp")
        now[0] += 700
        again, _ = await downloads.url("k", "image/webp", "a.webp")
        now[0] += 200
        later, _ = await downloads.url("k", "image/webp", "a.webp")
    assert first == again != later
    assert fresh_for == 800
    signed = query(first)
    start = datetime.fromtimestamp(window_start, UTC)
    assert signed["X-Amz-Date"] == start.strftime("%Y%m%dT%H%M%SZ")
    assert signed["X-Amz-Expires"] == "3600"
    assert signed["response-content-type"] == "image/webp"
    assert signed["response-content-disposition"] == content_disposition("a.webp")
    assert signed["response-cache-control"] == "private, max-age=2700", "TTL - window"


def test_content_disposition_keeps_unicode_and_escapes_quotes() -> None:
    header = content_disposition('Zoë "best".jpg')
    assert header == (
        "inline; filename=\"Zo_ _best_.jpg\"; filename*=UTF-8''Zo%C3%AB%20%22best%22.jpg"
    )


def test_content_disposition_drops_bidi_controls_and_line_breaks() -> None:
    header = content_disposition("evil\u202egpj.exe\r\nX-Injected: 1", attachment=True)
    assert header == (
        'attachment; filename="evilgpj.exeX-Injected: 1"; '
        "filename*=UTF-8''evilgpj.exeX-Injected%3A%201"
    )


async def follow(url: str) -> tuple[bytes, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read(), dict(resp.headers)


async def test_stable_links_redirect_to_urls_that_name_type_and_file(gw: Gateway) -> None:
    photo_id, data = await ready_photo(gw)
    resp = await gw.client.get(
        f"/v1/photos/{photo_id}/original", headers=gw.auth(), allow_redirects=False
    )
    assert resp.status == 302
    assert resp.headers["Cache-Control"].startswith("private, max-age=")
    body, headers = await follow(resp.headers["Location"])
    assert body == data
    assert headers["Content-Type"] == "image/jpeg"
    assert headers["Content-Disposition"] == content_disposition("Zoë.jpg", attachment=True)
    assert headers["Cache-Control"] == "private, max-age=2700"

    resp = await gw.client.get(
        f"/v1/photos/{photo_id}/thumb", headers=gw.auth(), allow_redirects=False
    )
    body, headers = await follow(resp.headers["Location"])
    assert (body, headers["Content-Type"]) == (b"abc", "image/webp")
    assert headers["Content-Disposition"].startswith("inline;"), "renditions are for display"
    assert "Zo%C3%AB-thumb.webp" in headers["Content-Disposition"]

    missing = await gw.client.get(f"/v1/photos/{photo_id}/huge", headers=gw.auth())
    await problem_of(missing, 404)


async def test_the_photo_view_repeats_its_urls(gw: Gateway) -> None:
    photo_id, _ = await ready_photo(gw)
    window = gw.res.settings.download_url_window
    for _ in range(2):  # a second pair only if the window turned between the two requests
        started = time.time() // window
        views = [
            await (await gw.client.get(f"/v1/photos/{photo_id}", headers=gw.auth())).json()
            for _ in range(2)
        ]
        if time.time() // window == started:
            break
    assert views[0]["original"] == views[1]["original"]
    assert views[0]["renditions"] == views[1]["renditions"]


async def test_links_to_a_photo_not_ready_yet_are_409(gw: Gateway) -> None:
    resp = await gw.client.post("/v1/uploads", json=grant_body(), headers=gw.auth())
    photo_id = (await resp.json())["photo_id"]
    resp = await gw.client.get(f"/v1/photos/{photo_id}/original", headers=gw.auth())
    assert (await problem_of(resp, 409))["code"] == "not_ready"


async def test_original_links_download_unless_inline_is_asked(gw: Gateway) -> None:
    photo_id, _ = await ready_photo(gw, store_objects=False)
    view = await (await gw.client.get(f"/v1/photos/{photo_id}", headers=gw.auth())).json()
    signed = query(view["original"]["url"])
    assert signed["response-content-disposition"].startswith("attachment; filename=")
    assert signed["response-cache-control"].startswith("private, max-age=")
    assert query(view["renditions"]["thumb"]["url"])["response-content-disposition"].startswith(
        "inline;"
    )

    async def location(path: str) -> dict[str, str]:
        resp = await gw.client.get(path, headers=gw.auth(), allow_redirects=False)
        assert resp.status == 302, await resp.text()
        return query(resp.headers["Location"])

    saved = await location(f"/v1/photos/{photo_id}/original")
    shown = await location(f"/v1/photos/{photo_id}/original?inline=1")
    assert saved["response-content-disposition"] == content_disposition("Zoë.jpg", attachment=True)
    assert shown["response-content-disposition"] == content_disposition("Zoë.jpg")
    assert saved["response-cache-control"] == shown["response-cache-control"]
    bad = await gw.client.get(f"/v1/photos/{photo_id}/original?inline=maybe", headers=gw.auth())
    assert (await problem_of(bad, 422))["code"] == "invalid_request"


async def test_a_url_signed_with_rotated_credentials_is_not_handed_out_again() -> None:
    class RotatingRole:
        """Temporary credentials, as botocore refreshes them before they expire."""

        token = "session-1"

        async def get_frozen_credentials(self) -> Any:
            return SimpleNamespace(access_key="ASIA1", secret_key="s", token=self.token)

    role = RotatingRole()
    presigner = Presigner(Signer("http://127.0.0.1:9", "bucket", "us-east-1"), role)
    downloads = Downloads(presigner, ttl_s=3600, window_s=900, clock=lambda: 1_700_000_100.0)
    before, _ = await downloads.url("k", "image/webp", "a.webp")
    assert (await downloads.url("k", "image/webp", "a.webp"))[0] == before
    role.token = "session-2"
    after, _ = await downloads.url("k", "image/webp", "a.webp")
    assert (
        query(after)["X-Amz-Security-Token"] == "session-2" != query(before)["X-Amz-Security-Token"]
    )
