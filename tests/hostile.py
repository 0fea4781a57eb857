"""The hostile-upload corpus, generated here: every file is built from scratch by code.

Each case is what a client declares, what it actually uploads, and the reason code the
ingest worker must reject it with. `ACCEPTED` holds awkward but legitimate files that
must not be rejected.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib
from dataclasses import dataclass

from PIL import Image

from tests import images

MAX_FRAMES = 10
MAX_UPLOAD = 1024 * 1024


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    declared_type: str
    reason: str
    declared_size: int | None = None  # None: the real size


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with one tiny image-data chunk."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def png_with_text(text: bytes) -> bytes:
    """A real PNG carrying `text` in a tEXt chunk before its image data."""
    real = images.png(64, 48)
    at = real.index(b"IDAT") - 4
    return real[:at] + _png_chunk(b"tEXt", b"Comment\x00" + text) + real[at:]


def animation(fmt: str, frames: int) -> bytes:
    shots = [Image.new("RGB", (32, 24), (i * 20 % 256, 80, 160)) for i in range(frames)]
    out = io.BytesIO()
    shots[0].save(out, fmt, save_all=True, append_images=shots[1:], duration=50, loop=0)
    return out.getvalue()


def still(fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    images.upright_with_marker(120, 80).save(out, fmt, **options)
    return out.getvalue()


def zip_archive() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("payload.html", "<script>alert(1)</script>")
    return out.getvalue()


def gif_with_comment(comment: bytes) -> bytes:
    gif = still("GIF")
    # A comment extension right after the logical screen descriptor and colour table.
    table = 3 << ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0
    at = 13 + table
    return gif[:at] + b"!\xfe" + bytes([len(comment)]) + comment + b"\x00" + gif[at:]


# Markup hidden mid-file, far from both ends a verifier might read.
SCRIPT = b"<html><script>alert(document.cookie)</script></html>"


def noise(width: int, height: int, mode: str = "RGB") -> Image.Image:
    bands = len(mode)
    return Image.frombytes(
        mode, (width, height), random.Random(3).randbytes(width * height * bands)
    )


def encoded(img: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def jpeg_with_comment_between_scans(comment: bytes) -> bytes:
    """A progressive JPEG with a COM segment before the scan nearest its middle."""
    data = encoded(noise(520, 360), "JPEG", quality=95, progressive=True)
    scans = [i for i in range(len(data)) if data.startswith(b"\xff\xda", i)]
    at = min(scans, key=lambda i: abs(i - len(data) // 2))
    segment = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
    return data[:at] + segment + data[at:]


def png_with_itxt(text: bytes, *, compressed: bool) -> bytes:
    """A PNG whose iTXt chunk sits 70 KB in, behind a long plain caption."""
    real = encoded(noise(200, 120), "PNG")
    at = real.index(b"IDAT") - 4
    caption = _png_chunk(b"tEXt", b"Description\x00" + b"a long caption. " * 4400)
    body = zlib.compress(text) if compressed else text
    itxt = _png_chunk(b"iTXt", b"Comment\x00" + bytes([compressed, 0]) + b"en\x00\x00" + body)
    return real[:at] + caption + itxt + real[at:]


def webp_chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) & 1)


def webp_with_chunk(kind: bytes, payload: bytes) -> bytes:
    """An extended WebP: image data, then `kind` in the middle, then a long XMP packet."""
    simple = encoded(noise(420, 300), "WEBP", quality=95)
    image = simple[12:]
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">' + b" " * 70_000 + b"</x:xmpmeta>"
    canvas = (419).to_bytes(3, "little") + (299).to_bytes(3, "little")
    vp8x = webp_chunk(b"VP8X", bytes([0x0C, 0, 0, 0]) + canvas)  # EXIF and XMP present
    body = b"WEBP" + vp8x + image + webp_chunk(kind, payload) + webp_chunk(b"XMP ", xmp)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def padding(n: int) -> bytes:
    """n bytes that are neither markup nor a JPEG marker (no 0xFF)."""
    return bytes(b % 255 for b in random.Random(9).randbytes(n))


def jpeg_with_stray_bytes(text: bytes) -> bytes:
    """A JPEG with 140 KB of stray bytes, `text` in their middle, before its quantisation
    tables: decoders skip such bytes ("extraneous bytes before marker")."""
    data = images.jpeg(200, 150)
    at = data.index(b"\xff\xdb")
    return data[:at] + padding(70_000) + text + padding(70_000) + data[at:]


def jpeg_with_trailer(text: bytes) -> bytes:
    """A JPEG followed by 200 KB of no known structure, `text` in their middle. Like any
    real appended data it holds byte pairs no scan data has (here at its end), so it is
    not taken for an image cut short."""
    return images.jpeg(200, 150) + padding(100_000) + text + padding(100_000) + b"\xff\xe1"


def gif_with_comment_between_frames(comment: bytes, size: tuple[int, int] = (400, 300)) -> bytes:
    """An animated GIF of noise with a comment extension between its two frames."""
    frames = [noise(*size).convert("P"), noise(*size).rotate(180).convert("P")]
    gif = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)

    def past_sub_blocks(at: int) -> int:
        while gif[at]:
            at += 1 + gif[at]
        return at + 1

    at = 13 + (3 << ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0)
    while gif[at] == 0x21:  # extensions before the first image
        at = past_sub_blocks(at + 2)
    flags = gif[at + 9]
    at = past_sub_blocks(at + 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1)
    extension = b"!\xfe" + bytes([len(comment)]) + comment + b"\x00"
    return gif[:at] + extension + gif[at:]


def png_with_trailer(text: bytes) -> bytes:
    """A PNG followed by 200 KB with `text` in the middle and a copy of IEND at the end,
    so the end of the file looks like the end of a PNG."""
    real = encoded(noise(200, 150), "PNG")
    return real + padding(100_000) + text + padding(100_000) + real[-12:]


def jpeg_with_second_picture(comment: bytes) -> bytes:
    """Two JPEGs end to end, as MPF files carry a second picture, the second with a COM
    segment holding `comment`."""
    first = encoded(noise(320, 240), "JPEG", quality=95)
    second = encoded(noise(320, 240), "JPEG", quality=95)
    segment = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
    return first + second[:2] + segment + second[2:]


def webp_with_trailer(text: bytes) -> bytes:
    """A WebP followed, past the end its RIFF header declares, by a 200 KB image-data
    chunk with `text` in its middle: decoders ignore what follows the container."""
    simple = encoded(noise(200, 150), "WEBP", quality=80)
    return simple + webp_chunk(b"VP8 ", padding(100_000) + text + padding(100_000))


def mp4(media: bytes) -> bytes:
    """The boxes of an MP4 (a Motion Photo's video): file type, movie header, media."""
    ftyp = struct.pack(">I", 24) + b"ftypmp42" + bytes(4) + b"mp42isom"
    moov = struct.pack(">I", 108) + b"moov" + bytes(100)
    return ftyp + moov + struct.pack(">I", 8 + len(media)) + b"mdat" + media


def build_corpus() -> list[Case]:
    jpeg = images.jpeg(640, 400)
    png = images.png(200, 150)
    webp = still("WEBP", quality=80)
    avif = still("AVIF", quality=60)
    return [
        Case("empty object", b"", "image/jpeg", "empty", declared_size=10),
        Case(
            "larger than the limit",
            jpeg + bytes(MAX_UPLOAD),
            "image/jpeg",
            "too_large",
            declared_size=1000,
        ),
        Case(
            "size differs from declared",
            jpeg,
            "image/jpeg",
            "size_mismatch",
            declared_size=len(jpeg) + 10,
        ),
        Case(
            "svg with script",
            b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"'
            b' onload="alert(1)"><rect width="10" height="10"/></svg>',
            "image/png",
            "svg",
        ),
        Case(
            "html page",
            b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>",
            "image/jpeg",
            "html",
        ),
        Case("linux executable", b"\x7fELF\x02\x01\x01" + bytes(200), "image/jpeg", "executable"),
        Case("windows executable", b"MZ\x90\x00\x03" + bytes(300), "image/gif", "executable"),
        Case("shell script", b"#!/bin/sh\nrm -rf /\n", "image/webp", "executable"),
        Case("bmp", still("BMP"), "image/jpeg", "unsupported_type"),
        Case("tiff", still("TIFF"), "image/png", "unsupported_type"),
        Case(
            "pdf",
            b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n",
            "image/jpeg",
            "unsupported_type",
        ),
        Case("zip", zip_archive(), "image/jpeg", "unsupported_type"),
        Case("plain text", b"just some words, no picture\n" * 10, "image/jpeg", "unsupported_type"),
        Case("png declared as jpeg", png, "image/jpeg", "type_mismatch"),
        Case("jpeg declared as webp", jpeg, "image/webp", "type_mismatch"),
        Case(
            "jpeg magic over garbage",
            b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8,
            "image/jpeg",
            "corrupt",
        ),
        Case(
            "png magic over garbage", b"\x89PNG\r\n\x1a\n" + b"\x13" * 500, "image/png", "corrupt"
        ),
        Case("truncated jpeg", jpeg[: len(jpeg) // 2], "image/jpeg", "truncated"),
        Case("truncated png", png[: len(png) - 30], "image/png", "truncated"),
        Case("truncated gif", animation("GIF", 3)[:-40], "image/gif", "truncated"),
        Case("truncated webp", webp[: len(webp) - 20], "image/webp", "truncated"),
        Case("truncated avif", avif[: len(avif) - 30], "image/avif", "truncated"),
        Case(
            "jpeg with html appended",
            jpeg + b"<html><script>alert(document.cookie)</script>",
            "image/jpeg",
            "polyglot",
        ),
        Case("jpeg with zip appended", jpeg + zip_archive(), "image/jpeg", "polyglot"),
        Case(
            "png with script in a text chunk",
            png_with_text(b"<script>alert(1)</script>"),
            "image/png",
            "polyglot",
        ),
        Case(
            "script in a JPEG comment between scans, mid-file",
            jpeg_with_comment_between_scans(SCRIPT),
            "image/jpeg",
            "polyglot",
        ),
        Case(
            "script in a PNG iTXt chunk, mid-file",
            png_with_itxt(SCRIPT, compressed=False),
            "image/png",
            "polyglot",
        ),
        Case(
            "script in a WebP EXIF chunk, mid-file",
            webp_with_chunk(b"EXIF", b"Exif\x00\x00" + SCRIPT),
            "image/webp",
            "polyglot",
        ),
        Case(
            "gif with php in a comment",
            gif_with_comment(b"<?php system($_GET['c']); ?>"),
            "image/gif",
            "polyglot",
        ),
        Case("90 megapixel header", png_claiming(10_000, 9_000), "image/png", "too_many_pixels"),
        Case("decompression bomb", png_claiming(100_000, 100_000), "image/png", "too_many_pixels"),
        Case("12000 pixels wide", png_claiming(12_000, 100), "image/png", "dimensions_too_large"),
        Case(
            "gif with too many frames",
            animation("GIF", MAX_FRAMES + 2),
            "image/gif",
            "too_many_frames",
        ),
        Case(
            "webp with too many frames",
            animation("WEBP", MAX_FRAMES + 2),
            "image/webp",
            "too_many_frames",
        ),
        Case(
            "apng with too many frames",
            animation("PNG", MAX_FRAMES + 2),
            "image/png",
            "too_many_frames",
        ),
    ]


@dataclass(frozen=True)
class Good:
    name: str
    data: bytes
    declared_type: str


def build_accepted() -> list[Good]:
    fake_video = struct.pack(">I", 24) + b"ftypmp42" + bytes(12) + bytes(range(256)) * 40
    return [
        Good(
            "jpeg with a video appended (motion photo)",
            images.jpeg(640, 400) + fake_video,
            "image/jpeg",
        ),
        Good("animated gif under the frame cap", animation("GIF", MAX_FRAMES), "image/gif"),
        Good("png with alpha", images.png(200, 150, mode="RGBA"), "image/png"),
        Good("webp", still("WEBP", quality=80), "image/webp"),
        Good("avif", still("AVIF", quality=60), "image/avif"),
    ]
