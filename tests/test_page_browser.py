"""Darkroom's upload page in Chromium, against every service on real components: the
progress bars, the gallery filled by live events, a rejection with its reason, and the
ThumbHash placeholders the page paints first."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from services.dev import run_dev
from services.thumbnail_worker.placeholder import thumbhash
from shared.settings import Settings
from tests.browser import artifact, drive, stack, token
from tests.conftest import JWT_SECRET
from tests.gateway_harness import gateway, ready_photo
from tests.harness import WebhookReceiver, dev_settings, running

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

MiB = 1024 * 1024
HTML = b"<html><script>alert(1)</script></html>\n" * 50


def colourful(width: int, height: int, hue: int) -> Image.Image:
    """A smooth two-way gradient, so the thumbnails and placeholders are told apart."""
    x = Image.linear_gradient("L").rotate(90).resize((width, height))
    y = Image.linear_gradient("L").resize((width, height))
    return Image.merge("RGB", (x, y, Image.new("L", (width, height), hue)))


def jpeg_file(path: Path, img: Image.Image) -> str:
    img.save(path, "JPEG", quality=90)
    return str(path)


def noise_png(path: Path, side: int) -> str:
    """Random pixels stored uncompressed: about 3 * side² bytes."""
    Image.frombytes("RGB", (side, side), os.urandom(3 * side * side)).save(
        path, "PNG", compress_level=0
    )
    return str(path)


async def test_the_page_shows_progress_each_outcome_and_a_gallery_of_every_photo(
    real: Settings, hooks: WebhookReceiver, unique: str, tmp_path: Path
) -> None:
    files = [jpeg_file(tmp_path / f"photo-{i}.jpg", colourful(900, 600, 60 * i)) for i in range(3)]
    # Over the multipart threshold (16 MiB): the page sends it in 3 parts, and sends the
    # second again after its first attempt is cut off.
    files.append(noise_png(tmp_path / "large.png", 2600))
    (tmp_path / "not-a-photo.jpg").write_bytes(HTML)
    files.append(str(tmp_path / "not-a-photo.jpg"))
    # The first photo's bytes again, once it is ready: answered as already uploaded.
    again = tmp_path / "photo-0-again.jpg"
    shutil.copyfile(files[0], again)
    async with stack(real, unique, origins=[]) as base:
        seen = await drive(
            "page.mjs",
            {
                "base": base,
                "token": token("pia"),
                "files": files,
                "gallery": len(files),
                "timeout": 180_000,
                "screenshot": artifact("upload-page.png"),
                "thumbhashes": [],
                "cutParts": ["2"],
                "again": [str(again)],
            },
        )
    rows = {row["name"]: row for row in seen["rows"]}
    assert set(rows) == {Path(f).name for f in files} | {again.name}
    duplicate = rows.pop(again.name)
    assert (duplicate["state"], duplicate["status"], duplicate["progress"]) == (
        "ready",
        "ready (already uploaded)",
        100,
    )
    rejected = rows.pop("not-a-photo.jpg")
    assert rejected["state"] == "rejected" and "html" in rejected["status"], rejected
    assert all(r["state"] == "ready" and r["progress"] == 100 for r in rows.values()), rows
    cards = seen["cards"]
    assert [c["status"] for c in cards].count("ready") == 4
    [refused] = [c for c in cards if c["status"] == "rejected"]
    assert refused["caption"].startswith("rejected: html")
    assert all(
        c["placeholder"] == "painted" and c["thumb"] == "loaded"
        for c in cards
        if c["status"] == "ready"
    )
    assert len(hooks.received) == len(files), "one outcome each, all shown"
    large = next(c["id"] for c in cards if c["caption"] == "large.png")
    signed = [r for r in seen["requests"] if r.startswith(f"POST {base}/v1/uploads/{large}/parts")]
    assert len(signed) == 2, "one call signs all three parts, one the part sent again"
    puts = [r for r in seen["requests"] if r.startswith("PUT ") and "partNumber=" in r]
    assert sorted(int(parse_qs(urlsplit(r).query)["partNumber"][0]) for r in puts) == [1, 2, 2, 3]
    assert not [line for line in seen["log"] if "Content Security Policy" in line]
    # Outcomes arrive on the event stream: each photo is read once after its upload and
    # once after its event, never polled.
    assert f"GET {base}/v1/events" in seen["requests"]
    for card in cards:
        reads = seen["requests"].count(f"GET {base}/v1/photos/{card['id']}")
        sent_again = card["caption"] == "photo-0.jpg"  # read once more for the duplicate
        assert 1 <= reads <= 2 + sent_again, (card, reads)


@pytest.mark.parametrize(
    ("size", "colour"), [((64, 32), (200, 30, 30)), ((24, 96), (20, 120, 220))]
)
async def test_the_page_decodes_a_thumbhash_to_the_shape_and_colour_it_encodes(
    settings: Settings, size: tuple[int, int], colour: tuple[int, int, int]
) -> None:
    hashed = thumbhash(Image.new("RGB", size, colour))
    async with gateway(settings) as gw:
        base = str(gw.client.make_url("")).rstrip("/")
        seen = await drive(
            "page.mjs",
            {
                "base": base,
                "token": token("pia"),
                "files": [],
                "gallery": 0,
                "timeout": 30_000,
                "screenshot": artifact("thumbhash.png"),
                "thumbhashes": [hashed],
            },
        )
    [decoded] = seen["thumbhashes"]
    w, h = decoded["w"], decoded["h"]
    # The hash keeps the aspect ratio only roughly (in the count of its cosine terms).
    assert max(w, h) == 32 and abs((w / h) / (size[0] / size[1]) - 1) < 0.2
    assert all(abs(m - c) < 12 for m, c in zip(decoded["mean"], (*colour, 255), strict=True))


async def test_the_gallery_scrolls_on_and_a_sealed_album_counts_down_to_its_reveal(
    settings: Settings,
) -> None:
    async with gateway(settings) as gw:
        for _ in range(30):
            await ready_photo(gw, "pia", store_objects=False)
        reveal = datetime.now(UTC) + timedelta(days=2, hours=3)
        seen = await drive(
            "browse.mjs",
            {
                "base": str(gw.client.make_url("")).rstrip("/"),
                "token": token("pia"),
                "photos": 30,
                "album": {"title": "Wedding", "reveal": reveal.strftime("%Y-%m-%dT%H:%M")},
                "screenshot": artifact("sealed-album.png"),
            },
        )
        albums = await (await gw.client.get("/v1/albums", headers=gw.auth("pia"))).json()
    assert (seen["before"], seen["after"]) == (24, 30), "a page of 24, then the rest"
    assert "file" in seen["tabStops"], seen["tabStops"]
    assert seen["countdown"].startswith("sealed: reveals in 2d 2h") or seen["countdown"].startswith(
        "sealed: reveals in 2d 3h"
    ), seen["countdown"]
    assert seen["picked"] == "Wedding · sealed" and seen["albumCards"] == 0
    [album] = albums["items"]
    assert album["title"] == "Wedding" and album["sealed"]
    assert album["reveal_at"].startswith(reveal.strftime("%Y-%m-%dT%H:%M"))


async def test_darkroom_dev_serves_a_page_that_uploads_in_parts_without_a_pasted_token(
    tmp_path: Path, hooks: WebhookReceiver, unique: str
) -> None:
    """`darkroom dev` as a newcomer opens it: its own moto, whose bucket lets the page
    read part ETags, and the token the page carries."""
    settings = dev_settings(
        tmp_path,
        hooks,
        unique,
        JWT_SECRET,
        multipart_threshold=6 * MiB,
        multipart_part_size=5 * MiB,
    )
    files = [
        jpeg_file(tmp_path / "small.jpg", colourful(640, 480, 200)),
        noise_png(tmp_path / "parts.png", 1700),  # 8.7 MB: two parts
    ]
    async with running(settings, [run_dev]) as base:
        seen = await drive(
            "page.mjs",
            {
                "base": base,
                "token": "",
                "files": files,
                "gallery": 2,
                "timeout": 120_000,
                "screenshot": artifact("dev-page.png"),
            },
        )
    assert [(r["state"], r["progress"]) for r in seen["rows"]] == [("ready", 100)] * 2
    assert {c["status"] for c in seen["cards"]} == {"ready"}
    parts = [r for r in seen["requests"] if r.startswith("PUT ") and "partNumber=" in r]
    assert len(parts) == 2


async def test_the_page_acts_on_stream_events_and_resumes_after_the_last_one(
    settings: Settings,
) -> None:
    async with gateway(settings) as gw:
        photo_id, _ = await ready_photo(gw, "pia", store_objects=False)
        base = str(gw.client.make_url("")).rstrip("/")
        seen = await drive(
            "events.mjs",
            {"base": base, "token": token("pia"), "photoId": photo_id, "timeout": 20_000},
        )
    first, second = seen["streams"][:2]
    assert "last-event-id" not in first
    assert second["last-event-id"] == "e-2" and second["authorization"].startswith("Bearer ")
    gets = [r.removeprefix(f"GET {base}") for r in seen["requests"] if r.startswith("GET ")]
    assert f"/v1/photos/{photo_id}" in gets, "photo.ready: the photo is read again"
    assert gets.count("/v1/photos?limit=24") >= 2, "reset: the gallery is listed again"
