"""Markup hidden in metadata anywhere in the file, far from both ends the first checks
read: every metadata segment is scanned, wherever it sits, and image data is not held."""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest

from services.ingest_worker.segments import MAX_SEGMENTS, find_hidden_content
from services.ingest_worker.verify import FIRST_READ, TAIL_READ, Reason, Rejected, verify
from shared.settings import Settings
from shared.storage import ObjectInfo
from shared.store import PhotoRecord, PhotoStatus
from tests import images
from tests.hostile import (
    SCRIPT,
    encoded,
    gif_with_comment_between_frames,
    jpeg_with_comment_between_scans,
    jpeg_with_second_picture,
    jpeg_with_stray_bytes,
    jpeg_with_trailer,
    mp4,
    noise,
    padding,
    png_with_itxt,
    png_with_trailer,
    webp_with_chunk,
    webp_with_trailer,
)

Build = Callable[[], bytes]
HIDDEN: dict[str, tuple[str, Build]] = {
    "jpeg_com": ("image/jpeg", lambda: jpeg_with_comment_between_scans(SCRIPT)),
    "png_itxt": ("image/png", lambda: png_with_itxt(SCRIPT, compressed=False)),
    "png_itxt_compressed": ("image/png", lambda: png_with_itxt(SCRIPT, compressed=True)),
    "webp_exif": ("image/webp", lambda: webp_with_chunk(b"EXIF", b"Exif\x00\x00" + SCRIPT)),
    "gif_comment": ("image/gif", lambda: gif_with_comment_between_frames(SCRIPT)),
}


class BytesStorage:
    """Storage over one object in memory, counting the bytes handed out."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.bytes_read = 0

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        part = self.data[start : end + 1]
        self.bytes_read += len(part)
        return part

    async def stream(self, key: str, *, chunk_size: int = 1 << 16) -> AsyncIterator[bytes]:
        for at in range(0, len(self.data), chunk_size):
            yield await self.get_range(key, at, at + chunk_size - 1)

    async def open_range(self, key: str, start: int, end: int) -> BytesStream:
        return BytesStream(self, start, end)


class BytesStream:
    """A ranged read of a BytesStorage, counting only the bytes read from it."""

    def __init__(self, storage: BytesStorage, start: int, end: int) -> None:
        self.storage = storage
        self.at = start
        self.end = end

    async def read(self, n: int) -> bytes:
        part = await self.storage.get_range("k", self.at, min(self.end, self.at + n - 1))
        self.at += len(part)
        return part

    def close(self) -> None:
        self.end = -1


def record(data: bytes, content_type: str) -> PhotoRecord:
    now = datetime.now(UTC)
    return PhotoRecord(
        id="0" * 32,
        owner_id="alice",
        status=PhotoStatus.PENDING,
        object_key="k",
        filename="x",
        trace_id="t",
        declared_type=content_type,
        declared_size=len(data),
        content_type=None,
        size=None,
        width=None,
        height=None,
        etag=None,
        reason=None,
        reason_detail=None,
        upload_expires_at=now + timedelta(minutes=5),
        created_at=now,
        updated_at=now,
    )


async def verified(data: bytes, content_type: str) -> BytesStorage:
    storage = BytesStorage(data)
    info = ObjectInfo(size=len(data), content_type=content_type, etag="e")
    await verify(storage, info, record(data, content_type), Settings())  # type: ignore[arg-type]
    return storage


@pytest.mark.parametrize("case", HIDDEN)
async def test_script_hidden_mid_file_in_metadata_is_rejected_as_a_polyglot(case: str) -> None:
    content_type, build = HIDDEN[case]
    data = build()
    at = data.find(SCRIPT) if case != "png_itxt_compressed" else data.find(b"iTXt")
    assert len(data) > FIRST_READ + TAIL_READ and FIRST_READ < at < len(data) - TAIL_READ
    with pytest.raises(Rejected) as rejected:
        await verified(data, content_type)
    assert rejected.value.reason is Reason.POLYGLOT
    assert "<html>" in rejected.value.detail and "at byte" in rejected.value.detail


OUTSIDE: dict[str, tuple[str, Build]] = {
    "jpeg_stray_bytes": ("image/jpeg", lambda: jpeg_with_stray_bytes(SCRIPT)),
    "jpeg_trailer": ("image/jpeg", lambda: jpeg_with_trailer(SCRIPT)),
    "jpeg_second_picture": ("image/jpeg", lambda: jpeg_with_second_picture(SCRIPT)),
    "webp_trailer": ("image/webp", lambda: webp_with_trailer(SCRIPT)),
    "png_trailer": ("image/png", lambda: png_with_trailer(SCRIPT)),
    "gif_trailer": (
        "image/gif",
        lambda: (
            encoded(noise(200, 150).convert("P"), "GIF")
            + padding(100_000)
            + SCRIPT
            + padding(100_000)
        ),
    ),
}


@pytest.mark.parametrize("case", OUTSIDE)
async def test_script_hidden_mid_file_between_or_after_images_is_rejected_as_a_polyglot(
    case: str,
) -> None:
    content_type, build = OUTSIDE[case]
    data = build()
    at = data.find(SCRIPT)
    assert FIRST_READ < at < len(data) - TAIL_READ
    with pytest.raises(Rejected) as rejected:
        await verified(data, content_type)
    assert rejected.value.reason is Reason.POLYGLOT
    assert "<html>" in rejected.value.detail


async def test_a_jpeg_with_a_second_picture_and_a_video_appended_passes_unread() -> None:
    """An MPF picture and a Motion Photo's video: the second picture's segments and the
    video's boxes are walked, the video's media data jumped over."""
    photo = jpeg_with_second_picture(b"a caption") + mp4(random.Random(7).randbytes(3_000_000))
    storage = await verified(photo, "image/jpeg")
    assert storage.bytes_read < FIRST_READ + TAIL_READ + 200_000


async def test_a_samsung_motion_photo_is_walked_to_its_video_boxes() -> None:
    video = mp4(random.Random(7).randbytes(3_000_000))
    photo = encoded(noise(320, 240), "JPEG", quality=95) + b"MotionPhoto_Data" + video
    storage = await verified(photo, "image/jpeg")
    assert storage.bytes_read < FIRST_READ + TAIL_READ + 200_000


@pytest.mark.parametrize(
    ("content_type", "build"),
    [
        (
            "image/jpeg",
            lambda: encoded(
                noise(1200, 800),
                "JPEG",
                quality=95,
                progressive=True,
                exif=images.exif_bytes(),
                icc_profile=images.adobe_rgb_profile(),
            ),
        ),
        ("image/png", lambda: encoded(noise(1000, 700), "PNG")),
        ("image/gif", lambda: gif_with_comment_between_frames(b"made with care", (800, 600))),
        (
            "image/webp",
            lambda: encoded(noise(1200, 800), "WEBP", quality=95, exif=images.exif_bytes()),
        ),
    ],
)
async def test_a_clean_large_photo_with_metadata_passes(content_type: str, build: object) -> None:
    data = build()  # type: ignore[operator]
    assert len(data) > 500_000
    await verified(data, content_type)


async def test_long_image_data_is_jumped_over_not_fetched() -> None:
    """A WebP of several MB: its chunk headers are read, its image data is not."""
    big = encoded(noise(2400, 1800), "WEBP", quality=100)
    assert len(big) > 4_000_000
    storage = BytesStorage(big)

    async def fetch(start: int, end: int) -> bytes:
        return await storage.get_range("k", start, end)

    assert await find_hidden_content("image/webp", fetch, len(big), big[:FIRST_READ]) is None
    assert storage.bytes_read < 64 * 1024


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload) + 8) + kind + payload


def heif_with_exif_item_mid_mdat(exif: bytes) -> bytes:
    """The structure of a HEIF whose EXIF item sits in the middle of a long `mdat`, as
    the `meta` box's item information and locations describe it."""
    filler = random.Random(5).randbytes(80_000)
    ftyp = box(b"ftyp", b"heic\x00\x00\x00\x00mif1heic")
    infe = box(b"infe", b"\x02\x00\x00\x00" + struct.pack(">HH", 1, 0) + b"Exif\x00")
    iinf = box(b"iinf", b"\x00\x00\x00\x00" + struct.pack(">H", 1) + infe)

    def meta_with(offset: int) -> bytes:
        # version 0; offset and length 4 bytes, no base offset; item 1, one extent
        extent = struct.pack(">HHHII", 1, 0, 1, offset, len(exif))
        iloc = box(b"iloc", b"\x00\x00\x00\x00" + bytes([0x44, 0x00]) + b"\x00\x01" + extent)
        hdlr = box(b"hdlr", b"\x00" * 8 + b"pict" + b"\x00" * 13)
        return box(b"meta", b"\x00\x00\x00\x00" + hdlr + iinf + iloc)

    before = len(ftyp) + len(meta_with(0)) + 8 + len(filler)
    mdat = box(b"mdat", filler + exif + filler)
    return ftyp + meta_with(before) + mdat


async def hidden_in(data: bytes, content_type: str) -> str | None:
    storage = BytesStorage(data)

    async def fetch(start: int, end: int) -> bytes:
        return await storage.get_range("k", start, end)

    return await find_hidden_content(content_type, fetch, len(data), data[:FIRST_READ])


async def test_script_in_a_heif_exif_item_inside_mdat_is_found() -> None:
    data = heif_with_exif_item_mid_mdat(b"Exif\x00\x00" + SCRIPT)
    assert FIRST_READ < data.find(SCRIPT) < len(data) - TAIL_READ
    found = await hidden_in(data, "image/heic")
    assert found is not None and "metadata item" in found
    assert (
        await hidden_in(heif_with_exif_item_mid_mdat(b"Exif\x00\x00MM\x00*"), "image/heic") is None
    )


async def test_a_file_cut_into_millions_of_segments_is_refused_not_walked() -> None:
    real = images.png(64, 48)
    at = real.index(b"IDAT") - 4
    empty = struct.pack(">I", 0) + b"prVt" + struct.pack(">I", zlib.crc32(b"prVt"))
    data = real[:at] + empty * (MAX_SEGMENTS + 1) + real[at:]
    with pytest.raises(Rejected) as rejected:
        await verified(data, "image/png")
    assert rejected.value.reason is Reason.CORRUPT and "segments" in rejected.value.detail
