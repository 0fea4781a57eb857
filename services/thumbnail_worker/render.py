"""Rendering: one decode, every rendition, upright, sRGB, no metadata, plus the photo's
facts. Pure CPU; the worker runs it in a thread pool (Pillow releases the GIL while it
decodes, resamples and encodes; docs/thumbnails.md has the measurements)."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, replace

from PIL import Image, ImageCms

from services.thumbnail_worker import webp
from services.thumbnail_worker.exif import Exif, photo_facts, read_exif
from services.thumbnail_worker.memory import (
    BAND_PIXELS,
    REDUCING_GAP,
    fit,
    reduced_size,
    reduction_factor,
)
from services.thumbnail_worker.placeholder import thumbhash
from shared.facts import PhotoFacts
from shared.imaging import PIL_FORMATS

_EXTENSIONS = {"WEBP": "webp", "JPEG": "jpg", "PNG": "png"}
_CONTENT_TYPES = {"WEBP": "image/webp", "JPEG": "image/jpeg", "PNG": "image/png"}
_FORMAT_NAMES = {"webp": "WEBP", "jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}
_DEFAULT_QUALITY = {"WEBP": 80, "JPEG": 85, "PNG": 100}
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_MIN_SIDE, _MAX_SIDE = 16, 8192
# How to turn a stored image upright, by EXIF orientation (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_TRANSPOSED = {5, 6, 7, 8}  # orientations that swap width and height
# BICUBIC, not LANCZOS: after a scaled JPEG decode it is 30% faster (34 vs 48 ms for
# 2000 -> 1280 px) and as close to a full-resolution LANCZOS reference (PSNR 48.9 vs
# 48.4 dB). resize() first box-reduces by an integer factor while the remaining scale
# stays at least _REDUCING_GAP: at Pillow's default of 2.0, a 12 MP PNG to 1280 px gets no
# box step and costs 98 ms; at 1.5 it gets a 2x one and costs 52 ms.
_RESAMPLE = Image.Resampling.BICUBIC
_REDUCING_GAP = REDUCING_GAP
_GREY16 = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# libwebp's effort, 0 (fast) to 6, 4 being its default. Past 512 px the encoder dominates
# the render time: at 1280 px method 2 takes 52 ms against 98 for 4% more bytes.
_WEBP_METHOD_SMALL, _WEBP_METHOD_LARGE, _WEBP_LARGE_SIDE = 4, 2, 512


@dataclass(frozen=True)
class RenditionSpec:
    name: str  # part of the object key: [a-z0-9][a-z0-9_-]*
    longest_side: int
    format: str  # Pillow format name: WEBP, JPEG, PNG
    quality: int  # 1..100; ignored for PNG

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"rendition name {self.name!r} must match {_NAME.pattern}")
        if not _MIN_SIDE <= self.longest_side <= _MAX_SIDE:
            raise ValueError(
                f"rendition {self.name}: longest side {self.longest_side} is not within "
                f"{_MIN_SIDE}..{_MAX_SIDE}"
            )
        if self.format not in _EXTENSIONS:
            raise ValueError(
                f"rendition {self.name}: format {self.format!r} is not one of "
                f"{', '.join(_EXTENSIONS)}"
            )
        if not 1 <= self.quality <= 100:
            raise ValueError(f"rendition {self.name}: quality {self.quality} is not within 1..100")

    @property
    def extension(self) -> str:
        return _EXTENSIONS[self.format]

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES[self.format]


# `preview` is written as WebP instead when the source has transparency (see _effective).
DEFAULT_RENDITIONS = (
    RenditionSpec("thumb", 256, "WEBP", 80),
    RenditionSpec("preview", 1280, "JPEG", 85),
)


def parse_renditions(text: str) -> tuple[RenditionSpec, ...]:
    """Parse `name:longest_side:format[:quality],...`, e.g.
    "thumb:256:webp:80,preview:1280:jpeg:85". Raises ValueError saying what is wrong."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise ValueError("no renditions given; expected name:longest_side:format[:quality]")
    specs = tuple(_parse_one(item) for item in items)
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"rendition names must be unique: {', '.join(duplicates)} repeated")
    return specs


def _parse_one(item: str) -> RenditionSpec:
    parts = item.split(":")
    if len(parts) not in (3, 4):
        raise ValueError(f"rendition {item!r} is not name:longest_side:format[:quality]")
    name, side, fmt = parts[0].strip(), parts[1].strip(), parts[2].strip().lower()
    if fmt not in _FORMAT_NAMES:
        raise ValueError(f"rendition {item!r}: format must be one of webp, jpeg, png")
    pil_format = _FORMAT_NAMES[fmt]
    quality = parts[3].strip() if len(parts) == 4 else str(_DEFAULT_QUALITY[pil_format])
    return RenditionSpec(
        name, _integer(side, "longest side", item), pil_format, _integer(quality, "quality", item)
    )


def _integer(text: str, what: str, item: str) -> int:
    if not text.isdigit():
        raise ValueError(f"rendition {item!r}: {what} must be a whole number, got {text!r}")
    return int(text)


@dataclass(frozen=True)
class Rendered:
    spec: RenditionSpec  # as written: a JPEG spec becomes WebP for a source with alpha
    data: bytes
    width: int
    height: int

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def content_type(self) -> str:
        return self.spec.content_type

    @property
    def extension(self) -> str:
        return self.spec.extension


@dataclass(frozen=True)
class RenderResult:
    width: int  # upright dimensions of the original
    height: int
    renditions: tuple[Rendered, ...]  # largest first
    facts: PhotoFacts  # location included: keep it only if the owner opted in


class RenderError(Exception):
    """The image cannot be decoded (truncated, corrupt, unsupported)."""


def render(
    data: bytes, content_type: str, specs: tuple[RenditionSpec, ...], *, max_pixels: int
) -> RenderResult:
    """Every rendition in `specs` from one decode of `data`, plus the photo's facts.
    Raises RenderError for anything the bytes make the decoders do (MemoryError aside)."""
    if not specs:
        raise ValueError("render needs at least one rendition")
    try:
        return _render(data, content_type, specs, max_pixels)
    except MemoryError:
        raise
    except Exception as exc:
        # Hostile bytes make Pillow raise almost anything (struct.error, TypeError, ...):
        # every one of them means "this image cannot be rendered", never "try again".
        raise RenderError(f"{type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class _Decoded:
    image: Image.Image  # at most the largest rendition's size, still as stored
    stored_size: tuple[int, int]  # the original's, before orientation
    exif: Exif
    icc: bytes | None


def _render(
    data: bytes, content_type: str, specs: tuple[RenditionSpec, ...], max_pixels: int
) -> RenderResult:
    ordered = sorted(specs, key=lambda s: (-s.longest_side, s.name))
    decoded = _decode(data, content_type, ordered[0].longest_side, max_pixels)
    width, height = _upright_size(decoded.stored_size, decoded.exif.orientation)
    image = _to_srgb(_upright(decoded.image, decoded.exif.orientation), decoded.icc)
    has_alpha = image.mode == "RGBA"
    made: list[Rendered] = []
    for spec in ordered:
        image = _resized(image, _fit((width, height), spec.longest_side))
        written = _effective(spec, has_alpha=has_alpha)
        made.append(Rendered(written, _encode(image, written), image.width, image.height))
    facts = photo_facts(data, decoded.exif, placeholder=thumbhash(image))
    return RenderResult(width, height, tuple(made), facts)


def _decode(data: bytes, content_type: str, largest: int, max_pixels: int) -> _Decoded:
    """Decode at the smallest scale that still covers `largest`: for JPEG, libjpeg scales
    while decoding (draft), which saves most of the time and memory."""
    with Image.open(io.BytesIO(data), formats=[PIL_FORMATS[content_type]]) as img:
        if img.width * img.height > max_pixels:
            raise ValueError(f"{img.width}x{img.height} is more than {max_pixels} pixels")
        stored_size = img.size
        target = _fit(stored_size, largest)
        img.draft("RGB", target)
        exif = read_exif(img)
        icc = img.info.get("icc_profile") or None
        scaled = _still_webp(data, img, target) if content_type == "image/webp" else None
        image = _resized(scaled or _reduced(img, target), target)
        if image is img:
            image = img.copy()  # closing the file releases its pixels
    image.info.clear()  # nothing from the original may reach a rendition
    return _Decoded(image, stored_size, exif, icc)


def _still_webp(data: bytes, img: Image.Image, target: tuple[int, int]) -> Image.Image | None:
    """A still WebP decoded by libwebp straight at the largest rendition's size (its
    rescaler averages every source pixel, like a box filter), or None: see webp.py."""
    if getattr(img, "n_frames", 1) > 1:
        return None
    return webp.decode_scaled(data, target, alpha=img.mode == "RGBA")


def _working_mode(img: Image.Image) -> str:
    """L, RGB, RGBA or CMYK: the modes resampling and colour management share."""
    if img.mode in _GREY16:
        return "L"
    if "transparency" in img.info or img.mode in ("LA", "La", "PA", "RGBa", "RGBA"):
        return "RGBA"
    return img.mode if img.mode in ("L", "RGB", "CMYK") else "RGB"  # 1, P, YCbCr, ...


def _reduced(img: Image.Image, target: tuple[int, int]) -> Image.Image:
    """The decoded image in its working mode, box-reduced by an integer factor while the
    remaining scale stays at least REDUCING_GAP. Converting a whole 40 MP image (grey and
    alpha to RGBA, 16-bit grey through 32-bit integers, RGBA to premultiplied) costs a
    full-size copy or three; here only one band at a time is converted, then reduced."""
    working = _working_mode(img)
    factor = reduction_factor(img.size, target)
    img.load()
    if factor == 1 and img.mode == working:
        return img
    # Resampling straight alpha bleeds the colour of invisible pixels into the edges.
    band_mode = "RGBa" if working == "RGBA" else working
    width, height = img.size
    out = Image.new(band_mode, reduced_size(img.size, target))
    rows = max(1, BAND_PIXELS // (width * factor)) * factor
    for top in range(0, height, rows):
        band = _converted(img.crop((0, top, width, min(height, top + rows))), band_mode)
        out.paste(band.reduce(factor) if factor > 1 else band, (0, top // factor))
    return out.convert("RGBA") if band_mode == "RGBa" else out


def _converted(img: Image.Image, mode: str) -> Image.Image:
    if img.mode in _GREY16:
        # 16-bit greys: convert("L") would clip everything above 255 to white.
        return img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if img.mode == mode:
        return img
    if mode == "RGBa" and img.mode != "RGBA":
        img = img.convert("RGBA")
    return img.convert(mode)


def _to_srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """RGB or RGBA in sRGB, through the embedded ICC profile when it is usable."""
    target = "RGBA" if img.mode == "RGBA" and _has_transparency(img) else "RGB"
    if icc:
        img = _icc_to_srgb(img, icc, "RGBA" if img.mode == "RGBA" else "RGB")
    if img.mode != target:
        img = img.convert(target)
    img.info.clear()
    return img


def _has_transparency(img: Image.Image) -> bool:
    low, _ = img.getchannel("A").getextrema()
    return isinstance(low, int) and low < 255


def _icc_to_srgb(img: Image.Image, icc: bytes, mode: str) -> Image.Image:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(
            img, source, ImageCms.createProfile("sRGB"), outputMode=mode
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        # A broken profile, or one for another colour space than the pixels: treating the
        # pixels as sRGB is a better outcome than no thumbnail at all.
        return img
    return converted if converted is not None else img


def _upright(img: Image.Image, orientation: int) -> Image.Image:
    op = _UPRIGHT.get(orientation)
    return img if op is None else img.transpose(op)


def _upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in _TRANSPOSED else size


_fit = fit


def _resized(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    if img.size == size:
        return img
    return img.resize(size, _RESAMPLE, reducing_gap=_REDUCING_GAP)


def _effective(spec: RenditionSpec, *, has_alpha: bool) -> RenditionSpec:
    """JPEG has no alpha channel: a transparent source gets WebP instead of a white matte."""
    return replace(spec, format="WEBP") if has_alpha and spec.format == "JPEG" else spec


def _encode(img: Image.Image, spec: RenditionSpec) -> bytes:
    out = io.BytesIO()
    if spec.format == "JPEG":
        # Baseline, not progressive: progressive costs 2.5x the encode time (18 vs 7 ms at
        # 1280 px) for 4% fewer bytes.
        img.save(out, "JPEG", quality=spec.quality, optimize=True)
    elif spec.format == "WEBP":
        big = max(img.size) > _WEBP_LARGE_SIDE
        method = _WEBP_METHOD_LARGE if big else _WEBP_METHOD_SMALL
        img.save(out, "WEBP", quality=spec.quality, method=method)
    else:
        img.save(out, "PNG")
    return out.getvalue()
