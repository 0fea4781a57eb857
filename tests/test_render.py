"""Renditions: every input format, upright, sRGB, sized, never upscaled, stripped of
metadata, deterministic."""

from __future__ import annotations

import io
import random
from collections.abc import Callable

import pytest
from PIL import Image

from services.thumbnail_worker.render import (
    DEFAULT_RENDITIONS,
    RenderError,
    RenderResult,
    RenditionSpec,
    parse_renditions,
    render,
)
from shared.imaging import HeaderError, TooManyPixels, configure_pillow, read_header
from tests import images

LIMIT = 40_000_000
ADOBE_ORANGE = (200, 100, 50)
# ADOBE_ORANGE in sRGB, derived independently of the profile under test: Adobe RGB
# linearised (gamma 563/256), Adobe RGB -> XYZ (D65) -> linear sRGB, sRGB transfer curve.
SRGB_OF_ADOBE_ORANGE = (227, 100, 42)


@pytest.fixture(autouse=True)
def _heif() -> None:
    configure_pillow()


def _render(
    data: bytes, content_type: str, specs: tuple[RenditionSpec, ...] = DEFAULT_RENDITIONS
) -> RenderResult:
    return render(data, content_type, specs, max_pixels=LIMIT)


def _decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.copy()


def _format(data: bytes) -> str | None:
    with Image.open(io.BytesIO(data)) as img:
        return img.format


def _close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def _centre(data: bytes) -> tuple[int, ...]:
    img = _decoded(data)
    pixel = img.getpixel((img.width // 2, img.height // 2))
    assert isinstance(pixel, tuple)
    return pixel


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_comes_out_upright(orientation: int) -> None:
    data = images.jpeg(1600, 1000, orientation=orientation)
    result = _render(data, "image/jpeg")
    assert (result.width, result.height) == (1600, 1000)
    assert (result.width, result.height) == (1600, 1000)
    sizes = {r.spec.name: (r.width, r.height) for r in result.renditions}
    assert sizes == {"preview": (1280, 800), "thumb": (256, 160)}
    for r in result.renditions:
        assert images.marker_top_left(r.data), f"{r.spec.name} not upright"


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("PNG", "image/png"),
        ("WEBP", "image/webp"),
        ("AVIF", "image/avif"),
        ("HEIF", "image/heic"),
    ],
)
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_orientation_is_honoured_in_every_format_that_carries_exif(
    fmt: str, content_type: str, orientation: int
) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = images.stored_as(images.upright_with_marker(640, 400), orientation)
    data = images.encode(stored, fmt, exif=exif.tobytes(), quality=90)
    result = _render(data, content_type)
    assert (result.width, result.height) == (640, 400)
    for r in result.renditions:
        assert images.marker_top_left(r.data), f"{fmt} {r.spec.name} not upright"


def _marker(mode: str = "RGB") -> Image.Image:
    return images.upright_with_marker(640, 400).convert(mode)


COLOUR_INPUTS: dict[str, tuple[Callable[[], bytes], str]] = {
    "jpeg baseline": (lambda: images.encode(_marker(), "JPEG", quality=90), "image/jpeg"),
    "jpeg progressive": (
        lambda: images.encode(_marker(), "JPEG", quality=90, progressive=True),
        "image/jpeg",
    ),
    "jpeg cmyk": (lambda: images.encode(_marker("CMYK"), "JPEG", quality=95), "image/jpeg"),
    "png rgb": (lambda: images.encode(_marker(), "PNG"), "image/png"),
    "png palette": (lambda: images.encode(_marker("P"), "PNG"), "image/png"),
    "webp lossy": (lambda: images.encode(_marker(), "WEBP", quality=90), "image/webp"),
    "webp lossless": (lambda: images.encode(_marker(), "WEBP", lossless=True), "image/webp"),
    "gif": (lambda: images.encode(_marker("P"), "GIF"), "image/gif"),
    "heic": (lambda: images.encode(_marker(), "HEIF", quality=90), "image/heic"),
    "avif": (lambda: images.encode(_marker(), "AVIF", quality=90), "image/avif"),
}


@pytest.mark.parametrize("kind", COLOUR_INPUTS)
def test_every_colour_format_renders_the_default_set(kind: str) -> None:
    make, content_type = COLOUR_INPUTS[kind]
    result = _render(make(), content_type)
    assert (result.width, result.height) == (640, 400)
    made = {r.spec.name: (r.width, r.height, _format(r.data)) for r in result.renditions}
    assert made == {"preview": (640, 400, "JPEG"), "thumb": (256, 160, "WEBP")}
    for r in result.renditions:
        assert images.marker_top_left(r.data), f"{kind}: {r.spec.name} lost the marker"


def test_grayscale_jpeg_comes_out_as_the_same_greys() -> None:
    data = images.encode(_marker("L"), "JPEG", quality=95)
    marker_grey = Image.new("RGB", (1, 1), images.MARKER).convert("L").getpixel((0, 0))
    assert isinstance(marker_grey, int)
    for r in _render(data, "image/jpeg").renditions:
        img = _decoded(r.data).convert("RGB")
        top_left = img.getpixel((2, 2))
        assert isinstance(top_left, tuple)
        assert _close(top_left, (marker_grey,) * 3, 6), r.spec.name
        assert _close(_centre(r.data)[:3], (255, 255, 255), 3)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animations_render_their_first_frame(fmt: str) -> None:
    data = images.animated(fmt, [(200, 30, 30), (30, 30, 200), (30, 200, 30)])
    result = _render(data, f"image/{fmt.lower()}")
    for r in result.renditions:
        assert _close(_centre(r.data)[:3], (200, 30, 30), 8), r.spec.name


def test_sixteen_bit_rgb_png_keeps_its_colours() -> None:
    data = images.png16_rgb(400, 300, (0x8000, 0x4000, 0xFFFF))
    for r in _render(data, "image/png").renditions:
        assert _close(_centre(r.data)[:3], (128, 64, 255), 4), r.spec.name


def test_sixteen_bit_grey_png_is_scaled_not_clipped_to_white() -> None:
    data = images.encode(Image.new("I;16", (400, 300), 0x8000), "PNG")
    assert _decoded(data).mode == "I;16"
    for r in _render(data, "image/png").renditions:
        assert _close(_centre(r.data)[:3], (128, 128, 128), 3), r.spec.name


def test_adobe_inverted_cmyk_jpeg_is_not_colour_inverted() -> None:
    data = images.encode(images.flat((255, 0, 0, 0), mode="CMYK"), "JPEG", quality=95)
    assert b"Adobe" in data  # Pillow writes CMYK as Adobe does: inverted, APP14 marker
    for r in _render(data, "image/jpeg").renditions:
        assert _close(_centre(r.data)[:3], (0, 255, 255), 6), r.spec.name


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_embedded_icc_profile_is_converted_to_srgb(fmt: str) -> None:
    img = images.flat(ADOBE_ORANGE)
    data = images.encode(img, fmt, icc_profile=images.adobe_rgb_profile(), quality=100)
    for r in _render(data, f"image/{fmt.lower()}").renditions:
        centre = _centre(r.data)[:3]
        assert _close(centre, SRGB_OF_ADOBE_ORANGE, 4), f"{r.spec.name}: {centre}"
        assert "icc_profile" not in _decoded(r.data).info


def test_broken_icc_profile_falls_back_to_treating_pixels_as_srgb() -> None:
    data = images.encode(images.flat(ADOBE_ORANGE), "PNG", icc_profile=b"not a profile" * 20)
    for r in _render(data, "image/png").renditions:
        assert _close(_centre(r.data)[:3], ADOBE_ORANGE, 4), r.spec.name


def test_outputs_match_their_declared_formats_and_carry_no_metadata() -> None:
    data = images.jpeg(orientation=6, exif_extra={0x010F: "SecretCam", 0x010E: "private note"})
    result = _render(data, "image/jpeg")
    formats = {}
    for r in result.renditions:
        with Image.open(io.BytesIO(r.data)) as img:
            formats[r.spec.name] = img.format
            assert img.get_format_mimetype() == r.content_type
            assert not img.getexif(), f"{r.spec.name} kept EXIF"
            assert "icc_profile" not in img.info
            assert "xmp" not in img.info
        assert b"SecretCam" not in r.data and b"private note" not in r.data
    assert formats == {"preview": "JPEG", "thumb": "WEBP"}


def test_same_input_gives_identical_bytes() -> None:
    data = images.encode(_marker("RGBA"), "PNG")
    first, second = _render(data, "image/png"), _render(data, "image/png")
    assert [r.data for r in first.renditions] == [r.data for r in second.renditions]
    assert first.facts == second.facts


def test_small_images_are_never_upscaled() -> None:
    result = _render(images.png(200, 120), "image/png")
    assert {(r.width, r.height) for r in result.renditions} == {(200, 120)}


def test_transparent_source_keeps_alpha_in_webp_thumb_and_preview() -> None:
    result = _render(images.png(400, 300, mode="RGBA"), "image/png")
    by_name = {r.name: r for r in result.renditions}
    assert {n: (r.content_type, r.extension) for n, r in by_name.items()} == {
        "preview": ("image/webp", "webp"),
        "thumb": ("image/webp", "webp"),
    }
    for r in result.renditions:
        img = _decoded(r.data)
        assert _format(r.data) == "WEBP" and img.mode == "RGBA"
        right, left = img.getpixel((img.width - 3, 3)), img.getpixel((2, 2))
        assert isinstance(right, tuple) and isinstance(left, tuple)
        assert right[3] == 0 and left[3] == 255
        assert images.is_marker(left)


@pytest.mark.parametrize(
    ("make", "content_type"),
    [
        (lambda: images.encode(_marker("RGBA"), "PNG"), "image/png"),
        (lambda: images.encode(_marker("RGBA"), "WEBP", lossless=True), "image/webp"),
    ],
)
def test_opaque_alpha_channel_is_dropped_and_preview_stays_jpeg(
    make: Callable[[], bytes], content_type: str
) -> None:
    result = _render(make(), content_type)
    modes = {r.name: (_format(r.data), _decoded(r.data).mode) for r in result.renditions}
    assert modes == {"preview": ("JPEG", "RGB"), "thumb": ("WEBP", "RGB")}


def test_palette_png_with_a_transparent_index_keeps_its_transparency() -> None:
    img = _marker("RGBA")
    img.paste((0, 0, 0, 0), (320, 0, 640, 400))
    data = images.encode(img.quantize(colors=8), "PNG")
    assert "transparency" in _decoded(data).info
    thumb = next(r for r in _render(data, "image/png").renditions if r.name == "thumb")
    pixel = _decoded(thumb.data).getpixel((250, 80))
    assert isinstance(pixel, tuple) and pixel[3] == 0


def test_a_custom_set_is_derived_largest_first_with_exact_sizes() -> None:
    specs = parse_renditions("small:100:png,large:1000:webp:70,mid:500:jpeg:90")
    result = _render(images.jpeg(1600, 1000, orientation=8), "image/jpeg", specs)
    made = [(r.name, r.width, r.height, _format(r.data)) for r in result.renditions]
    assert made == [
        ("large", 1000, 625, "WEBP"),
        ("mid", 500, 312, "JPEG"),
        ("small", 100, 62, "PNG"),
    ]


def test_parse_renditions_reads_the_settings_format() -> None:
    assert parse_renditions("thumb:256:webp:80, preview:1280:JPG") == (
        RenditionSpec("thumb", 256, "WEBP", 80),
        RenditionSpec("preview", 1280, "JPEG", 85),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no renditions"),
        ("thumb", "is not name:longest_side:format"),
        ("thumb:256:webp:80:9", "is not name:longest_side:format"),
        ("thumb:big:webp", "longest side must be a whole number"),
        ("thumb:-5:webp", "longest side must be a whole number"),
        ("thumb:4:webp", "not within 16..8192"),
        ("thumb:256:gif", "format must be one of webp, jpeg, png"),
        ("thumb:256:webp:101", "quality 101 is not within 1..100"),
        ("thumb:256:webp:q", "quality must be a whole number"),
        ("Thumb/../x:256:webp", "must match"),
        ("a:256:webp,,b:512:jpeg", "is not name:longest_side:format"),
        ("a:256:webp,a:512:jpeg", "names must be unique: a repeated"),
    ],
)
def test_parse_renditions_explains_bad_input(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_renditions(text)


def test_truncated_jpeg_is_a_render_error() -> None:
    data = images.jpeg(1600, 1000)
    with pytest.raises(RenderError, match="truncated"):
        _render(data[: len(data) // 2], "image/jpeg")


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
            _render(bytes(data), content_type)
            outcomes["ok"] += 1
        except (HeaderError, TooManyPixels, RenderError):
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0  # the mutations do reach the parsers
