"""Test images, generated here: no binary fixtures."""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Mapping, Sequence

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
    img = stored_as(upright_with_marker(width, height), orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    for tag, value in (exif_extra or {}).items():
        exif[tag] = value
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality, exif=exif.tobytes())
    return out.getvalue()


def stored_as(upright: Image.Image, orientation: int) -> Image.Image:
    """The pixels a camera stores for `upright` when it tags them with `orientation`."""
    op = _STORE_AS[orientation]
    return upright if op is None else upright.transpose(op)


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    """`img` saved as Pillow format `fmt` (HEIF needs shared.imaging.configure_pillow())."""
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def exif_bytes(
    ifd0: Mapping[int, object] | None = None,
    exif_ifd: Mapping[int, object] | None = None,
    gps_ifd: Mapping[int, object] | None = None,
) -> bytes:
    """An EXIF block with the given tags in IFD0, the Exif sub-IFD and the GPS sub-IFD."""
    exif = Image.Exif()
    for tag, value in (ifd0 or {}).items():
        exif[tag] = value
    if exif_ifd:
        exif[0x8769] = dict(exif_ifd)
    if gps_ifd:
        exif[0x8825] = dict(gps_ifd)
    return exif.tobytes()


def flat(
    colour: tuple[int, ...], size: tuple[int, int] = (300, 200), mode: str = "RGB"
) -> Image.Image:
    return Image.new(mode, size, colour)


def animated(
    fmt: str, colours: Sequence[tuple[int, int, int]], size: tuple[int, int] = (120, 80)
) -> bytes:
    """An animation (GIF or WEBP) whose frames are flat `colours`, in order."""
    frames = [Image.new("RGB", size, c) for c in colours]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def png16_rgb(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one), written chunk by chunk."""
    row = b"\0" + struct.pack(">3H", *colour) * width  # filter byte 0: none
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # depth 16, RGB
    idat = zlib.compress(row * height)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body)
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


# Adobe RGB (1998) as ICC stores it: colorants adapted to the D50 connection space, and a
# single gamma of 563/256 for all three channels.
ADOBE_RGB_COLORANTS = (
    (0.6097, 0.3111, 0.0195),
    (0.2053, 0.6257, 0.0609),
    (0.1492, 0.0632, 0.7446),
)
ADOBE_RGB_GAMMA = 563 / 256
_D50 = (0.9642, 1.0, 0.8249)


def adobe_rgb_profile() -> bytes:
    """A minimal ICC v2 matrix/TRC display profile for Adobe RGB (1998), built by hand
    (ImageCms can only create sRGB, LAB and XYZ profiles)."""
    r, g, b = ADOBE_RGB_COLORANTS
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(ADOBE_RGB_GAMMA * 256))
    tags = [
        (b"desc", _icc_desc("Adobe RGB-like test profile")),
        (b"cprt", b"text" + bytes(4) + b"No copyright, test data\0"),
        (b"wtpt", _icc_xyz(_D50)),
        (b"rXYZ", _icc_xyz(r)),
        (b"gXYZ", _icc_xyz(g)),
        (b"bXYZ", _icc_xyz(b)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    return _icc_assemble(tags)


def _icc_assemble(tags: list[tuple[bytes, bytes]]) -> bytes:
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for sig, data in tags:
        padded = data + bytes(-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += padded
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + bytes(4)  # preferred CMM
        + struct.pack(">I", 0x02100000)  # version 2.1
        + b"mntrRGB XYZ "
        + bytes(12)  # creation date
        + b"acsp"
        + bytes(24)  # platform, flags, manufacturer, model, attributes
        + struct.pack(">I", 0)  # perceptual intent
        + _s15(_D50)
        + bytes(4 + 16 + 28)  # creator, profile id, reserved
    )
    assert len(header) == 128
    return header + table + body


def _icc_xyz(xyz: tuple[float, float, float]) -> bytes:
    return b"XYZ " + bytes(4) + _s15(xyz)


def _s15(values: tuple[float, ...]) -> bytes:
    return b"".join(struct.pack(">i", round(v * 65536)) for v in values)


def _icc_desc(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    unicode_and_script = struct.pack(">II", 0, 0) + struct.pack(">HB", 0, 0) + bytes(67)
    return b"desc" + bytes(4) + struct.pack(">I", len(ascii_text)) + ascii_text + unicode_and_script


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


def noise_png(width: int, height: int, seed: int = 7) -> bytes:
    """A valid PNG of random pixels: it compresses to no less than width*height*3 bytes,
    so tests get large files of a known least size from small dimensions."""
    pixels = random.Random(seed).randbytes(width * height * 3)
    return encode(Image.frombytes("RGB", (width, height), pixels), "PNG", compress_level=1)
