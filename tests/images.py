"""Test images, generated here: no binary fixtures."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

# How to store an upright image so that EXIF orientation N turns it upright again.
_STORE_AS = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
MARKER = (220, 20, 20)


def upright_with_marker(width: int, height: int) -> Image.Image:
    """White landscape image with a red square in its top-left corner."""
    img = Image.new("RGB", (width, height), (255, 255, 255))
    side = min(width, height) // 4
    ImageDraw.Draw(img).rectangle((0, 0, side, side), fill=MARKER)
    return img


def jpeg(
    width: int = 1600,
    height: int = 1000,
    *,
    orientation: int = 1,
    quality: int = 90,
    exif_extra: dict[int, object] | None = None,
) -> bytes:
    """A JPEG that displays upright (marker top-left) once its orientation is applied."""
    img = upright_with_marker(width, height)
    op = _STORE_AS[orientation]
    if op is not None:
        img = img.transpose(op)
    exif = Image.Exif()
    exif[0x0112] = orientation
    for tag, value in (exif_extra or {}).items():
        exif[tag] = value
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality, exif=exif.tobytes())
    return out.getvalue()


def png(width: int = 800, height: int = 600, *, mode: str = "RGB") -> bytes:
    """A PNG; in RGBA mode its right half is fully transparent."""
    img = upright_with_marker(width, height).convert(mode)
    if mode == "RGBA":
        img.paste((0, 0, 0, 0), (width // 2, 0, width, height))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def is_marker(pixel: tuple[int, ...]) -> bool:
    r, g, b = pixel[:3]
    return r > 180 and g < 90 and b < 90


def marker_top_left(data: bytes) -> bool:
    """True if the decoded image shows the marker top-left and nowhere else in a corner."""
    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
        w, h = rgb.size
        inset = max(2, min(w, h) // 40)
        corners = [
            (inset, inset),
            (w - 1 - inset, inset),
            (inset, h - 1 - inset),
            (w - 1 - inset, h - 1 - inset),
        ]
        found = [is_marker(rgb.getpixel(c)) for c in corners]  # type: ignore[arg-type]
    return found == [True, False, False, False]
