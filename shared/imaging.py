"""Image facts shared by the ingest and thumbnail workers: magic-byte sniffing and a header
parse under pixel limits. Decoding pixels is the thumbnail worker's business."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

# Pillow's format name for each accepted content type.
PIL_FORMATS: dict[str, str] = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/heic": "HEIF",
    "image/heif": "HEIF",
    "image/avif": "AVIF",
}

_HEIC_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis"}
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIF_BRANDS = {b"mif1", b"msf1"}


def configure_pillow() -> None:
    """Worker start-up: teach Pillow HEIC/HEIF, and silence its decompression-bomb
    warning, since Darkroom checks its own, lower pixel limit before decoding anything."""
    from pillow_heif import register_heif_opener

    register_heif_opener()
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def sniff(head: bytes) -> str | None:
    """The image type the leading bytes prove, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return _sniff_isobmff(head)
    return None


def _sniff_isobmff(head: bytes) -> str | None:
    box_size = int.from_bytes(head[0:4], "big")
    major = head[8:12]
    end = min(max(box_size, 16), len(head), 4096)
    compatible = {head[i : i + 4] for i in range(16, end - 3, 4)}
    brands = {major} | compatible
    if brands & _AVIF_BRANDS:
        return "image/avif"
    if brands & _HEIC_BRANDS:
        return "image/heic"
    if brands & _HEIF_BRANDS:
        return "image/heif"
    return None


def same_family(declared: str, actual: str) -> bool:
    """HEIC is a HEIF brand: clients label the same file either way."""
    heif = {"image/heic", "image/heif"}
    return declared == actual or {declared, actual} <= heif


@dataclass(frozen=True)
class Header:
    width: int
    height: int


class HeaderError(Exception):
    """The header does not parse (with `incomplete` True if more bytes might help)."""

    def __init__(self, detail: str, *, incomplete: bool) -> None:
        super().__init__(detail)
        self.incomplete = incomplete


class TooManyPixels(Exception):
    pass


def read_header(data: bytes, content_type: str, *, max_pixels: int) -> Header:
    """Parse only the header of `data` as `content_type`; never decodes pixels."""
    try:
        with Image.open(io.BytesIO(data), formats=[PIL_FORMATS[content_type]]) as img:
            width, height = img.size
    except Image.DecompressionBombError as exc:
        raise TooManyPixels(str(exc)) from exc
    except MemoryError:
        raise
    except Exception as exc:
        # Hostile headers make parsers raise anything; all of it means "does not parse".
        raise HeaderError(f"{type(exc).__name__}: {exc}", incomplete=True) from exc
    if width <= 0 or height <= 0:
        raise HeaderError(f"image claims a size of {width}x{height}", incomplete=False)
    if width * height > max_pixels:
        raise TooManyPixels(f"{width}x{height} is more than {max_pixels} pixels")
    return Header(width, height)
