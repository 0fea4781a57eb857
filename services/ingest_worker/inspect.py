"""Byte-level checks on an upload's head and tail: what non-image it is, whether active
content rides along (a polyglot), whether its container is complete, how many frames an
animation has. Pure functions over bytes, except the two walkers, which read the object
through bounded ranged or streamed reads and never hold it whole."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable

# A non-image, recognised from its first bytes: (reason code, what it is).
_EXECUTABLES = (
    b"\x7fELF",  # Linux
    b"MZ",  # Windows PE
    b"\xfe\xed\xfa\xce",
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",  # Mach-O
    b"\xca\xfe\xba\xbe",  # Mach-O universal / Java class
    b"#!",  # script with an interpreter line
)
_HTML_START = re.compile(rb"^\s*<(!doctype\s+html|html|head|body|script|iframe|meta)\b", re.I)
_SVG_START = re.compile(
    rb"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*(<!doctype\s+svg[^>]*>\s*)?<svg\b", re.I | re.S
)

# Markup or archives inside an image: what makes it a polyglot.
ACTIVE_CONTENT = re.compile(
    rb"<(script|html|iframe|body|object|embed|svg|\?php)[\s>/]|<!doctype\s+html|%PDF-",
    re.I,
)
_ZIP_END = b"PK\x05\x06"


def identify_non_image(head: bytes) -> tuple[str, str] | None:
    """(reason, description) for bytes that are plainly not an image, else None."""
    start = head.lstrip(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
    if any(start.startswith(magic) for magic in _EXECUTABLES):
        return "executable", "the bytes are an executable program"
    if _SVG_START.match(start[:4096]):
        return "svg", "SVG documents are not accepted (they can carry scripts)"
    if _HTML_START.match(start[:4096]):
        return "html", "the bytes are an HTML document"
    return None


def find_active_content(head: bytes, tail: bytes) -> str | None:
    """A description of markup or an archive riding in the image, else None."""
    for part, where in ((head, "start"), (tail, "end")):
        found = ACTIVE_CONTENT.search(part)
        if found:
            return f"{found.group(0)[:16]!r} near the {where} of the image"
    eocd = tail.rfind(_ZIP_END)
    if eocd >= 0 and len(tail) - eocd >= 22:
        comment = int.from_bytes(tail[eocd + 20 : eocd + 22], "little")
        if eocd + 22 + comment == len(tail):
            return "a ZIP archive appended to the image"
    return None


def missing_end_marker(content_type: str, tail: bytes) -> str | None:
    """Why a JPEG or PNG looks cut short, else None. Trailing bytes after a complete image
    (Motion Photos append a video) are fine; a missing end marker is not."""
    if content_type == "image/jpeg" and b"\xff\xd9" not in tail and _looks_like_scan(tail):
        return "the JPEG ends inside its image data (no end-of-image marker)"
    if content_type == "image/png" and b"IEND\xaeB`\x82" not in tail:
        return "the PNG has no IEND chunk"
    return None


_FOREIGN_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _looks_like_scan(tail: bytes) -> bool:
    """JPEG entropy-coded data only has 0xFF before 0x00 (stuffing) or a restart marker.
    Anything else means the tail is something appended after the image (a Motion Photo's
    video, say), so the image itself ended earlier, outside what was read."""
    scan = tail.rfind(b"\xff\xda")  # the last start-of-scan header, if the tail has it
    if scan >= 0:
        tail = tail[scan + 2 + int.from_bytes(tail[scan + 2 : scan + 4], "big") :]
    return _FOREIGN_MARKER.search(tail) is None


def webp_truncation(head: bytes, size: int) -> str | None:
    declared = int.from_bytes(head[4:8], "little") + 8
    if declared > size:
        return f"the WebP container declares {declared} bytes but {size} were stored"
    return None


class ByteStream:
    """Sequential reads over an async iterator of chunks, holding one chunk at a time."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    async def read(self, n: int) -> bytes:
        """Exactly n bytes, or fewer only at the end of the stream."""
        while len(self._buffer) < n:
            chunk = await anext(self._chunks, b"")
            if not chunk:
                break
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    async def skip(self, n: int) -> bool:
        """Skip n bytes; False if the stream ended first."""
        while n > 0:
            step = await self.read(min(n, 1 << 16))
            if not step:
                return False
            n -= len(step)
        return True


class Truncated(Exception):
    pass


async def count_gif_frames(stream: ByteStream, limit: int) -> int:
    """Image descriptors in a GIF, counted up to limit + 1 (then it stops reading)."""
    header = await stream.read(13)
    if len(header) < 13:
        raise Truncated("the GIF ends inside its header")
    if header[10] & 0x80:
        await _skip(stream, 3 << ((header[10] & 7) + 1))
    frames = 0
    while frames <= limit:
        block = await stream.read(1)
        if block in (b";", b""):
            if not block:
                raise Truncated("the GIF has no trailer")
            return frames
        if block == b",":
            frames += 1
            descriptor = await stream.read(9)
            if len(descriptor) < 9:
                raise Truncated("the GIF ends inside an image descriptor")
            if descriptor[8] & 0x80:
                await _skip(stream, 3 << ((descriptor[8] & 7) + 1))
            await _skip(stream, 1)  # LZW minimum code size
        elif block == b"!":
            await _skip(stream, 1)  # extension label
        else:
            return frames  # garbage after the last frame: the decoder stops here too
        await _skip_sub_blocks(stream)
    return frames


async def _skip(stream: ByteStream, n: int) -> None:
    if not await stream.skip(n):
        raise Truncated("the GIF ends early")


async def _skip_sub_blocks(stream: ByteStream) -> None:
    while True:
        size = await stream.read(1)
        if not size:
            raise Truncated("the GIF ends inside a data block")
        if size == b"\x00":
            return
        await _skip(stream, size[0])


async def count_webp_frames(stream: ByteStream, limit: int) -> int:
    """ANMF chunks in an animated WebP, counted up to limit + 1."""
    if len(await stream.read(12)) < 12:
        raise Truncated("the WebP ends inside its header")
    frames = 0
    while frames <= limit:
        chunk = await stream.read(8)
        if not chunk:
            return frames
        if len(chunk) < 8:
            raise Truncated("the WebP ends inside a chunk header")
        size = int.from_bytes(chunk[4:8], "little")
        frames += chunk[:4] == b"ANMF"
        if not await stream.skip(size + (size & 1)):
            raise Truncated("the WebP ends inside a chunk")
    return frames


def apng_frames(head: bytes) -> int:
    """num_frames of an APNG's acTL chunk (which precedes the image data), else 1."""
    at = head.find(b"acTL")
    if at < 0 or len(head) < at + 8:
        return 1
    return int.from_bytes(head[at + 4 : at + 8], "big")


def is_animated_webp(head: bytes) -> bool:
    return head[12:16] == b"VP8X" and bool(head[20] & 0x02)


async def isobmff_truncation(
    read_range: Callable[[int, int], Awaitable[bytes]], size: int, max_boxes: int = 64
) -> str | None:
    """Walk HEIF/AVIF top-level boxes by their headers (16 bytes each); a box reaching
    past the end of the object means the file was cut short."""
    offset = 0
    for _ in range(max_boxes):
        if offset >= size:
            return None if offset == size else "the last box runs past the end of the file"
        header = await read_range(offset, min(offset + 15, size - 1))
        if len(header) < 8:
            return "the file ends inside a box header"
        box = int.from_bytes(header[:4], "big")
        if box == 1 and len(header) >= 16:
            box = int.from_bytes(header[8:16], "big")
        if box == 0:
            return None  # the last box runs to the end of the file by definition
        if box < 8:
            return f"a box claims an impossible size of {box} bytes"
        offset += box
    return None
