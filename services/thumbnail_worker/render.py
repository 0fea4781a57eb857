"""Rendering: one decode, every rendition, upright, sRGB, no metadata. Pure CPU; the worker
runs it in a thread pool (Pillow releases the GIL while decoding and resampling)."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageOps

from shared.imaging import PIL_FORMATS

_EXTENSIONS = {"WEBP": "webp", "JPEG": "jpg", "PNG": "png"}
_CONTENT_TYPES = {"WEBP": "image/webp", "JPEG": "image/jpeg", "PNG": "image/png"}
# EXIF orientations that swap width and height.
_TRANSPOSED = {5, 6, 7, 8}
_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class RenditionSpec:
    name: str
    longest_side: int
    format: str  # Pillow format name: WEBP, JPEG, PNG
    quality: int

    @property
    def extension(self) -> str:
        return _EXTENSIONS[self.format]

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES[self.format]


DEFAULT_RENDITIONS = (
    RenditionSpec("preview", 1280, "JPEG", 85),
    RenditionSpec("thumb", 256, "WEBP", 80),
)


@dataclass(frozen=True)
class Rendered:
    spec: RenditionSpec
    data: bytes
    width: int
    height: int


@dataclass(frozen=True)
class RenderResult:
    width: int  # upright dimensions of the original
    height: int
    renditions: tuple[Rendered, ...]


class RenderError(Exception):
    """The image cannot be decoded (truncated, corrupt, unsupported)."""


def render(
    data: bytes, content_type: str, specs: tuple[RenditionSpec, ...], *, max_pixels: int
) -> RenderResult:
    try:
        return _render(data, content_type, specs, max_pixels)
    except MemoryError:
        raise
    except Exception as exc:
        # Hostile bytes make Pillow raise almost anything (struct.error, TypeError, ...):
        # every one of them means "this image cannot be rendered", never "try again".
        raise RenderError(f"{type(exc).__name__}: {exc}") from exc


def _render(
    data: bytes, content_type: str, specs: tuple[RenditionSpec, ...], max_pixels: int
) -> RenderResult:
    with Image.open(io.BytesIO(data), formats=[PIL_FORMATS[content_type]]) as img:
        if img.width * img.height > max_pixels:
            raise ValueError(f"{img.width}x{img.height} is more than {max_pixels} pixels")
        orientation = img.getexif().get(_ORIENTATION_TAG, 1)
        width, height = img.size
        if orientation in _TRANSPOSED:
            width, height = height, width
        largest = max(spec.longest_side for spec in specs)
        # JPEG: let libjpeg decode at a reduced scale that still covers the largest output.
        img.draft("RGB", (largest, largest))
        upright = _to_srgb(ImageOps.exif_transpose(img))
    made: list[Rendered] = []
    source = upright
    for spec in sorted(specs, key=lambda s: -s.longest_side):
        source = source.copy()
        source.thumbnail((spec.longest_side, spec.longest_side), Image.Resampling.LANCZOS)
        made.append(Rendered(spec, _encode(source, spec), source.width, source.height))
    return RenderResult(width, height, tuple(made))


def _to_srgb(img: Image.Image) -> Image.Image:
    """Convert to RGB(A) in sRGB, honouring an embedded ICC profile."""
    has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    target = "RGBA" if has_alpha else "RGB"
    icc = img.info.get("icc_profile")
    if icc and img.mode in ("RGB", "RGBA", "CMYK", "L"):
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            out_mode = "RGBA" if img.mode == "RGBA" else "RGB"
            converted = ImageCms.profileToProfile(img, src, dst, outputMode=out_mode)
            if converted is not None:
                img = converted
        except (ImageCms.PyCMSError, OSError):
            pass  # A broken profile: fall back to treating the pixels as sRGB.
    if img.mode != target:
        img = img.convert(target)
    img.info.clear()
    return img


def _encode(img: Image.Image, spec: RenditionSpec) -> bytes:
    out = io.BytesIO()
    if spec.format == "JPEG":
        if img.mode == "RGBA":
            background = Image.new("RGB", img.size, (255, 255, 255))
            background.paste(img, mask=img.getchannel("A"))
            img = background
        img.save(out, "JPEG", quality=spec.quality, optimize=True, progressive=True)
    elif spec.format == "WEBP":
        img.save(out, "WEBP", quality=spec.quality, method=4)
    else:
        img.save(out, spec.format, optimize=True)
    return out.getvalue()
