"""Renditions: upright, sized, never upscaled, stripped of metadata."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from services.thumbnail_worker.render import DEFAULT_RENDITIONS, RenderError, render
from shared.imaging import HeaderError, TooManyPixels, read_header
from tests import images

LIMIT = 40_000_000


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_comes_out_upright(orientation: int) -> None:
    data = images.jpeg(1600, 1000, orientation=orientation)
    result = render(data, "image/jpeg", DEFAULT_RENDITIONS, max_pixels=LIMIT)
    assert (result.width, result.height) == (1600, 1000)
    sizes = {r.spec.name: (r.width, r.height) for r in result.renditions}
    assert sizes == {"preview": (1280, 800), "thumb": (256, 160)}
    for r in result.renditions:
        assert images.marker_top_left(r.data), f"{r.spec.name} not upright"


def test_outputs_match_their_declared_formats_and_carry_no_metadata() -> None:
    data = images.jpeg(orientation=6, exif_extra={0x010F: "SecretCam", 0x010E: "private note"})
    result = render(data, "image/jpeg", DEFAULT_RENDITIONS, max_pixels=LIMIT)
    formats = {}
    for r in result.renditions:
        with Image.open(io.BytesIO(r.data)) as img:
            formats[r.spec.name] = img.format
            assert not img.getexif(), f"{r.spec.name} kept EXIF"
            assert "icc_profile" not in img.info
        assert b"SecretCam" not in r.data and b"private note" not in r.data
    assert formats == {"preview": "JPEG", "thumb": "WEBP"}


def test_small_images_are_never_upscaled() -> None:
    result = render(images.png(200, 120), "image/png", DEFAULT_RENDITIONS, max_pixels=LIMIT)
    assert {(r.width, r.height) for r in result.renditions} == {(200, 120)}


def test_alpha_png_keeps_alpha_in_webp_and_flattens_in_jpeg() -> None:
    data = images.png(400, 300, mode="RGBA")
    result = render(data, "image/png", DEFAULT_RENDITIONS, max_pixels=LIMIT)
    modes = {}
    for r in result.renditions:
        with Image.open(io.BytesIO(r.data)) as img:
            modes[r.spec.name] = img.mode
    assert modes == {"preview": "RGB", "thumb": "RGBA"}


def test_truncated_jpeg_is_a_render_error() -> None:
    data = images.jpeg(1600, 1000)
    with pytest.raises(RenderError, match="truncated"):
        render(data[: len(data) // 2], "image/jpeg", DEFAULT_RENDITIONS, max_pixels=LIMIT)


def test_pixel_limit_applies_before_decoding() -> None:
    with pytest.raises(RenderError, match="more than"):
        render(images.png(400, 300), "image/png", DEFAULT_RENDITIONS, max_pixels=1000)


@pytest.mark.filterwarnings("ignore:.*(EXIF|Tag data).*:UserWarning")
@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_mangled_images_fail_only_with_the_documented_errors(fmt: str) -> None:
    """Seeded byte mutations of a real image: header parsing and rendering may refuse
    them, but only ever with their own error types (which the workers map to reasons)."""
    rng = random.Random(f"darkroom-{fmt}")
    original = images.jpeg(320, 200, orientation=6) if fmt == "jpeg" else images.png(320, 200)
    content_type = f"image/{fmt}"
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(150):
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(2, min(len(data), 600))] = rng.randrange(256)
        try:
            read_header(bytes(data), content_type, max_pixels=LIMIT)
            render(bytes(data), content_type, DEFAULT_RENDITIONS, max_pixels=LIMIT)
            outcomes["ok"] += 1
        except (HeaderError, TooManyPixels, RenderError):
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0  # the mutations do reach the parsers
