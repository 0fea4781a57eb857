"""Facts: EXIF (taken-at with offset, camera, lens, exposure), GPS kept apart and out of
every rendition, sha256, and the ThumbHash placeholder."""

from __future__ import annotations

import base64
import hashlib
import io
import random
import struct
from datetime import datetime, timedelta, timezone

import pytest
from PIL import Image, ImageDraw, TiffImagePlugin

from services.thumbnail_worker.exif import Exif, read_exif
from services.thumbnail_worker.placeholder import thumbhash
from services.thumbnail_worker.render import DEFAULT_RENDITIONS, RenderResult, render
from shared.facts import Camera, Exposure, Location, PhotoFacts
from shared.imaging import configure_pillow
from tests import images

R = TiffImagePlugin.IFDRational
MAKE, MODEL, ORIENTATION = 0x010F, 0x0110, 0x0112
EXPOSURE, F_NUMBER, ISO, FOCAL = 0x829A, 0x829D, 0x8827, 0x920A
TAKEN, DIGITIZED, OFFSET, SUBSEC, LENS = 0x9003, 0x9004, 0x9011, 0x9291, 0xA434
LAT_REF, LAT, LON_REF, LON = 1, 2, 3, 4

CAMERA = {MAKE: "FUJIFILM", MODEL: "X-T5", ORIENTATION: 6}
SHOT = {
    TAKEN: "2023:07:14 18:32:05",
    OFFSET: "+02:00",
    SUBSEC: "25",
    EXPOSURE: R(1, 250),
    F_NUMBER: R(28, 10),
    ISO: 400,
    FOCAL: R(33, 1),
    LENS: "XF33mmF1.4 R LM WR",
}
# Rio de Janeiro: south and west, so both signs are exercised.
GPS = {
    LAT_REF: "S",
    LAT: (R(22, 1), R(54, 1), R(3015, 100)),
    LON_REF: "W",
    LON: (R(43, 1), R(10, 1), R(21, 1)),
}


@pytest.fixture(autouse=True)
def _heif() -> None:
    configure_pillow()


GEO = Location(latitude=-22.908375, longitude=-43.1725)


def _rendered(exif: bytes, fmt: str = "JPEG") -> tuple[bytes, RenderResult]:
    stored = images.stored_as(images.upright_with_marker(800, 500), 6)
    data = images.encode(stored, fmt, exif=exif, quality=90)
    content_type = "image/heic" if fmt == "HEIF" else f"image/{fmt.lower()}"
    return data, render(data, content_type, DEFAULT_RENDITIONS, max_pixels=10**8)


def _exif_of(exif: bytes) -> Exif:
    data = images.encode(images.flat((90, 90, 90), (40, 30)), "JPEG", exif=exif)
    with Image.open(io.BytesIO(data)) as img:
        return read_exif(img)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "PNG", "AVIF", "HEIF"])
def test_facts_come_from_exif_upright_and_with_the_utc_offset(fmt: str) -> None:
    data, result = _rendered(images.exif_bytes(CAMERA, SHOT, GPS), fmt)
    facts = result.facts
    assert facts.location == GEO
    assert (result.width, result.height) == (800, 500)
    assert facts.taken_at == datetime(2023, 7, 14, 18, 32, 5, 250_000, timezone(timedelta(hours=2)))
    assert facts.taken_at_local == "2023-07-14T18:32:05.250000+02:00"
    assert facts.camera == Camera(make="FUJIFILM", model="X-T5", lens="XF33mmF1.4 R LM WR")
    assert facts.exposure == Exposure(exposure_time=0.004, f_number=2.8, iso=400, focal_length=33)
    assert facts.sha256 == hashlib.sha256(data).hexdigest()
    assert facts.model_dump(mode="json")["taken_at"] == "2023-07-14T18:32:05.250000+02:00"


def test_gps_is_read_and_reaches_no_rendition() -> None:
    _, result = _rendered(images.exif_bytes(CAMERA, SHOT, GPS))
    assert result.facts.location == GEO
    for r in result.renditions:
        assert b"Exif" not in r.data and b"XMP" not in r.data, r.name
        with Image.open(io.BytesIO(r.data)) as img:
            assert not img.getexif(), r.name
            assert not img.getexif().get_ifd(0x8825), r.name


def test_taken_at_without_an_offset_is_naive_wall_clock_time() -> None:
    facts = _exif_of(images.exif_bytes(exif_ifd={TAKEN: "2001:02:03 04:05:06"}))
    assert facts.taken_at == datetime(2001, 2, 3, 4, 5, 6)
    assert facts.taken_at.tzinfo is None


def test_taken_at_falls_back_to_the_digitized_time() -> None:
    facts = _exif_of(images.exif_bytes(exif_ifd={DIGITIZED: "2010:10:10 10:10:10"}))
    assert facts.taken_at == datetime(2010, 10, 10, 10, 10, 10)


def test_no_exif_means_no_facts_but_still_dimensions_and_digest() -> None:
    data = images.png(300, 200)
    result = render(data, "image/png", DEFAULT_RENDITIONS, max_pixels=10**8)
    assert (result.width, result.height) == (300, 200)
    assert result.facts.model_copy(update={"placeholder": "-"}) == PhotoFacts(
        sha256=hashlib.sha256(data).hexdigest(), placeholder="-"
    )


HOSTILE = [
    ({ORIENTATION: 42}, {}, {}),
    ({MAKE: "\x00\x01\x02  ", MODEL: "\x07\x08\t\x1b"}, {}, {}),
    ({}, {TAKEN: "    :  :     :  :  "}, {}),
    ({}, {TAKEN: "0000:00:00 00:00:00"}, {}),
    ({}, {TAKEN: "2023:13:45 99:99:99", OFFSET: "+99:00"}, {}),
    ({}, {EXPOSURE: R(1, 0), F_NUMBER: R(-28, 10), FOCAL: "wide", ISO: 0}, {}),
    ({}, {EXPOSURE: (), F_NUMBER: b"\x00" * 8, LENS: 12345}, {}),
    ({}, {}, {LAT_REF: "X", LAT: (R(1, 1), R(2, 1), R(3, 1)), LON_REF: "E", LON: (R(1, 1),)}),
    (
        {},
        {},
        {
            LAT_REF: "N",
            LAT: (R(95, 1), R(0, 1), R(0, 1)),
            LON_REF: "E",
            LON: (R(200, 1), R(0, 1), R(0, 1)),
        },
    ),
    ({}, {}, {LAT_REF: "N", LAT: (R(1, 0), R(0, 1), R(0, 1)), LON_REF: "E", LON: 7}),
]


@pytest.mark.parametrize(("ifd0", "exif_ifd", "gps_ifd"), HOSTILE)
def test_garbled_exif_values_become_none(
    ifd0: dict[int, object], exif_ifd: dict[int, object], gps_ifd: dict[int, object]
) -> None:
    assert _exif_of(images.exif_bytes(ifd0, exif_ifd, gps_ifd)) == Exif()


def test_out_of_range_offset_keeps_the_time_but_not_the_offset() -> None:
    facts = _exif_of(images.exif_bytes(exif_ifd={TAKEN: "2020:01:01 00:00:00", OFFSET: "+15:00"}))
    assert facts.taken_at == datetime(2020, 1, 1)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mangled_exif_blocks_never_raise_out_of_facts_extraction() -> None:
    block = images.exif_bytes(CAMERA, SHOT, GPS)
    rng = random.Random("darkroom-exif")
    read = 0
    for _ in range(300):
        mangled = bytearray(block)
        for _ in range(rng.randint(1, 6)):
            mangled[rng.randrange(6, len(mangled))] = rng.randrange(256)
        facts = _exif_of(bytes(mangled))
        read += facts != Exif()
    assert read > 0  # some mutations leave facts readable: the parser did run


class _BrokenSubIfds(Image.Exif):
    def get_ifd(self, tag: int) -> dict[int, object]:
        raise struct.error("unpack requires a buffer of 12 bytes")


def test_a_parser_that_raises_costs_only_the_facts_it_was_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pillow parses EXIF lazily and hostile blocks have made it raise anything over the
    years; no such exception may escape, and the readable facts survive."""
    data = images.encode(images.flat((90, 90, 90), (40, 30)), "JPEG")
    broken = _BrokenSubIfds()
    broken.load(images.exif_bytes(CAMERA, SHOT, GPS))
    with Image.open(io.BytesIO(data)) as img:
        monkeypatch.setattr(img, "getexif", lambda: broken)
        assert read_exif(img) == Exif(orientation=6, camera=Camera(make="FUJIFILM", model="X-T5"))

        def explode() -> Image.Exif:
            raise SyntaxError("not a TIFF file")

        monkeypatch.setattr(img, "getexif", explode)
        assert read_exif(img) == Exif()


def _average_rgba(hashed: bytes) -> tuple[float, float, float, float]:
    """The average colour a ThumbHash stores in its header (LPQ DC terms, alpha DC)."""
    header = int.from_bytes(hashed[:3], "little")
    lum = (header & 63) / 63
    p = (header >> 6 & 63) / 31.5 - 1
    q = (header >> 12 & 63) / 31.5 - 1
    alpha = (hashed[5] & 15) / 15 if header >> 23 else 1.0
    b = lum - 2 / 3 * p
    r = (3 * lum - b + q) / 2
    return r, r - q, b, alpha


@pytest.mark.parametrize("colour", [(200, 100, 50), (20, 60, 200), (128, 128, 128), (250, 250, 40)])
def test_placeholder_of_a_flat_image_decodes_to_its_colour(colour: tuple[int, int, int]) -> None:
    hashed = base64.b64decode(thumbhash(images.flat(colour)))
    r, g, b, a = _average_rgba(hashed)
    assert max(abs(r * 255 - colour[0]), abs(g * 255 - colour[1]), abs(b * 255 - colour[2])) < 6
    assert a == 1.0
    assert len(hashed) <= 25


def test_placeholder_records_transparency_and_aspect() -> None:
    img = images.flat((10, 200, 10, 255), (200, 100), mode="RGBA")
    img.paste((0, 0, 0, 0), (100, 0, 200, 100))
    hashed = base64.b64decode(thumbhash(img))
    assert hashed[2] >> 7 == 1  # has alpha
    assert hashed[4] >> 7 == 1  # landscape
    assert abs(_average_rgba(hashed)[3] - 0.5) < 0.07
    portrait = base64.b64decode(thumbhash(images.flat((1, 2, 3), (100, 200))))
    assert portrait[4] >> 7 == 0 and portrait[2] >> 7 == 0


def test_placeholder_matches_the_reference_encoder() -> None:
    """Expected values from the reference implementation (npm thumbhash 0.1.1,
    rgbaToThumbHash) fed the same 32 px downsample."""
    opaque = images.upright_with_marker(160, 100)
    transparent = opaque.convert("RGBA")
    draw = ImageDraw.Draw(transparent)
    draw.ellipse((90, 20, 150, 90), fill=(0, 0, 0, 0))
    draw.rectangle((60, 50, 100, 100), fill=(20, 60, 200, 128))
    assert thumbhash(opaque) == "PQgGDIQQQnUQMmQzQ1Xv7/z+zg=="
    assert thumbhash(transparent) == "uQeGG4QrtiNJUEb6ntn/va+ze4ZMeIg="


def test_render_computes_the_placeholder_from_the_upright_image() -> None:
    _, result = _rendered(images.exif_bytes({ORIENTATION: 6}))  # stored portrait
    hashed = base64.b64decode(result.facts.placeholder)
    assert hashed[4] >> 7 == 1  # landscape, as displayed
    assert min(_average_rgba(hashed)[:3]) > 0.9  # mostly white
