"""Every metadata segment of an image, wherever it sits, scanned for active content.

A comment or text chunk can sit anywhere: between a JPEG's scans, after a PNG's image
data, in the middle of a WebP. So the file's structure is walked from the start through
ranged reads, and each metadata payload (JPEG APPn and COM, PNG text and other ancillary
chunks, WebP chunks other than image data, HEIF boxes other than `mdat`, and the
metadata items a HEIF keeps inside `mdat`, GIF extensions) is scanned for markup. Image
data is never scanned: a long run of it is jumped over without being fetched, a short
one is read through (cheaper than a request per chunk), and a JPEG's entropy-coded data,
which has no length, is read to find the next marker. What decoders skip is scanned too:
stray bytes between JPEG segments, and whatever follows the image (after a JPEG's end, a
second picture and an appended video are walked by their own structure; after a PNG's
IEND, a GIF's trailer or a WebP's RIFF, anything). Reads go a window (64 KiB growing to
1 MiB) at a time and are never held: memory stays at a window or two, and the cost is at
worst linear in the file.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Awaitable, Callable

from services.ingest_worker.heif_items import MAX_META, metadata_extents
from services.ingest_worker.inspect import ACTIVE_CONTENT
from services.ingest_worker.reader import (
    FIRST_WINDOW,
    MAX_SEGMENTS,
    MAX_WINDOW,
    OVERLAP,
    Fetch,
    Reader,
    TooManySegments,
)

# Re-exported: verify.py and the tests name them from here.
__all__ = ["MAX_SEGMENTS", "TooManySegments", "find_hidden_content"]

# Text a compressed PNG chunk may inflate to before the rest of it is left unread.
MAX_INFLATED = 4 * 1024 * 1024


def _report(found: re.Match[bytes], what: str, at: int) -> str:
    return f"{found.group(0)[:16]!r} in {what} at byte {at}"


async def find_hidden_content(
    content_type: str, fetch: Fetch, size: int, head: bytes = b""
) -> str | None:
    """Where markup hides in the image's metadata, else None. `head` is the prefix already
    read, so small files cost no further read. Raises TooManySegments."""
    walk = _WALKS.get(content_type)
    return await walk(Reader(fetch, size, head)) if walk else None


async def _rest(r: Reader, what: str) -> str | None:
    """Scan everything from the read position to the end of the object."""
    at = r.pos
    riding = await r.scan(r.size - at) if at < r.size else None
    return _report(riding, what, at) if riding else None


# A marker: 0xFF then anything but stuffing (0x00), a restart marker or fill (0xFF).
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_STANDALONE = {0x01, *range(0xD0, 0xD8)}
_SOI = b"\xff\xd8"
# What Samsung writes between a Motion Photo's JPEG and its MP4.
_SAMSUNG_VIDEO = b"MotionPhoto_Data"


async def _jpeg(r: Reader) -> str | None:
    if await r.read(2) != _SOI:
        return None
    while True:
        found, complete = await _jpeg_image(r)
        if found or not complete or r.pos >= r.size:
            return found
        ahead = await r.peek(len(_SAMSUNG_VIDEO) + 8)
        if ahead[:2] == _SOI:  # another picture: an MPF secondary image, a depth map
            r.step()
            await r.skip(2)
            continue
        if ahead.startswith(_SAMSUNG_VIDEO):
            await r.skip(len(_SAMSUNG_VIDEO))
            ahead = ahead[len(_SAMSUNG_VIDEO) :]
        if ahead[4:8] == b"ftyp":  # a Motion Photo's video: walked as the MP4 it is
            return await _isobmff(r)
        # Anything else appended is no part of the image and has no structure we know.
        return await _rest(r, "the bytes after the JPEG image")


async def _jpeg_image(r: Reader) -> tuple[str | None, bool]:
    """Walk one JPEG image from after its SOI: (where markup hides, whether its EOI came)."""
    in_scan = False
    while True:
        at = r.pos
        if in_scan:  # entropy-coded data: image data, not searched (see docs/ingest.md)
            marked = await r.find(_MARKER)
        else:  # decoders skip stray bytes between segments; markup must not ride there
            marked, riding = await r.find_scanning(_MARKER)
            if riding:
                return _report(riding, "stray bytes between JPEG segments", at), False
        if not marked:
            return None, False
        r.step()
        at = r.pos
        marker = (await r.read(2))[1]
        if marker == 0xD9:
            return None, True
        if marker in _STANDALONE:
            continue
        length = int.from_bytes(await r.read(2), "big")
        if length < 2:
            return None, False
        in_scan = marker == 0xDA
        if 0xE0 <= marker <= 0xEF or marker == 0xFE:
            found = await r.scan(length - 2)
            if found:
                name = "COM" if marker == 0xFE else f"APP{marker - 0xE0}"
                return _report(found, f"a JPEG {name} segment", at), False
        elif not await r.skip(length - 2):
            return None, False


_PNG_PIXELS = {b"IDAT", b"fdAT"}


async def _png(r: Reader) -> str | None:
    if len(await r.read(8)) < 8:
        return None
    while True:
        r.step()
        at = r.pos
        header = await r.read(8)
        if len(header) < 8:
            return None
        length, kind = int.from_bytes(header[:4], "big"), header[4:8]
        if kind == b"IEND":
            # Decoders stop here, so a trailer can hide anything, and end in a copy of
            # IEND to pass for a complete file.
            await r.skip(length + 4)
            return await _rest(r, "the bytes after the PNG image")
        if kind in _PNG_PIXELS:
            if not await r.skip(length + 4):
                return None
            continue
        what = f"a PNG {kind.decode('latin-1')!r} chunk"
        if kind in (b"zTXt", b"iTXt"):
            found = await _png_text(r, kind, length)
        else:
            found = await r.scan(length)
        if found:
            return _report(found, what, at)
        await r.skip(4)  # CRC


async def _png_text(r: Reader, kind: bytes, length: int) -> re.Match[bytes] | None:
    """A zTXt or iTXt chunk: its raw bytes, and its text inflated when compressed."""
    data = await r.read(min(length, MAX_WINDOW))
    found = ACTIVE_CONTENT.search(data)
    if found or len(data) < length:
        return found or await r.scan(length - len(data))
    keyword_end = data.find(b"\x00")
    if keyword_end < 0:
        return None
    if kind == b"zTXt":
        compressed = data[keyword_end + 2 :]
    elif data[keyword_end + 1 : keyword_end + 2] == b"\x01":
        # keyword, flag, method, language tag, translated keyword, then the text
        rest = data[keyword_end + 3 :]
        language_end = rest.find(b"\x00")
        if language_end < 0:
            return None
        translated_end = rest.find(b"\x00", language_end + 1)
        if translated_end < 0:
            return None
        compressed = rest[translated_end + 1 :]
    else:
        return None
    return _inflated_content(compressed)


def _inflated_content(compressed: bytes) -> re.Match[bytes] | None:
    inflate, carry, total = zlib.decompressobj(), b"", 0
    pending = compressed
    try:
        while pending and total < MAX_INFLATED:
            text = inflate.decompress(pending, FIRST_WINDOW)
            pending = inflate.unconsumed_tail
            total += len(text)
            found = ACTIVE_CONTENT.search(carry + text)
            if found:
                return found
            carry = text[-OVERLAP:]
            if not text:
                break
    except zlib.error:
        return None  # not ours to judge: the decoder ignores a broken text chunk
    return None


_WEBP_PIXELS = {b"VP8 ", b"VP8L", b"ALPH", b"ANMF"}


async def _webp(r: Reader) -> str | None:
    head = await r.read(12)
    if len(head) < 12:
        return None
    riff_end = min(r.size, 8 + int.from_bytes(head[4:8], "little"))
    while r.pos < riff_end:
        r.step()
        at = r.pos
        header = await r.read(8)
        if len(header) < 8:
            break
        kind, length = header[:4], int.from_bytes(header[4:8], "little")
        padded = length + (length & 1)
        if kind in _WEBP_PIXELS:
            if not await r.skip(padded):
                break
            continue
        found = await r.scan(length)
        if found:
            return _report(found, f"a WebP {kind.decode('latin-1')!r} chunk", at)
        await r.skip(padded - length)
    if riff_end < r.size:
        # Decoders ignore what follows the RIFF container, chunk-shaped or not.
        rest = Reader(r.fetch, r.size, start=riff_end)
        riding = await rest.scan(r.size - riff_end)
        if riding:
            return _report(riding, "the bytes after the WebP container", riff_end)
    return None


async def _isobmff(r: Reader) -> str | None:
    items: list[tuple[int, int]] = []
    while r.pos < r.size:
        r.step()
        at = r.pos
        header = await r.read(8)
        if len(header) < 8:
            break
        length, kind = int.from_bytes(header[:4], "big"), header[4:8]
        used = 8
        if length == 1:
            length, used = int.from_bytes(await r.read(8), "big"), 16
        elif length == 0:
            length = r.size - at
        if length < used:
            break
        what = f"a {kind.decode('latin-1')!r} box"
        if kind == b"mdat":
            if not await r.skip(length - used):
                break
            continue
        if kind == b"meta" and length <= MAX_META:
            meta = await r.read(length - used)
            found = ACTIVE_CONTENT.search(meta)
            if found:
                return _report(found, what, at)
            items += metadata_extents(meta)
            continue
        found = await r.scan(length - used)
        if found:
            return _report(found, what, at)
    # EXIF and XMP items live inside mdat, where the walk does not look.
    for offset, length in items:
        item = Reader(r.fetch, min(offset + length, r.size), start=offset)
        found = await item.scan(length)
        if found:
            return _report(found, "a metadata item", offset)
    return None


async def _gif(r: Reader) -> str | None:
    header = await r.read(13)
    if len(header) < 13:
        return None
    if header[10] & 0x80 and not await r.skip(3 << ((header[10] & 7) + 1)):
        return None
    while True:
        r.step()
        at = r.pos
        block = await r.peek(1)
        if block == b",":  # an image: its descriptor, colour table, then LZW data
            descriptor = await r.read(10)
            if len(descriptor) < 10:
                return None
            table = 3 << ((descriptor[9] & 7) + 1) if descriptor[9] & 0x80 else 0
            if not await r.skip(table + 1):  # and the LZW minimum code size
                return None
            complete, _ = await r.sub_blocks(scan=False)
        elif block == b"!":  # an extension: comment, application (XMP), text, control
            await r.skip(2)
            complete, riding = await r.sub_blocks(scan=True)
            if riding:
                return _report(riding, "a GIF extension", at)
        else:  # the trailer, or anything else: decoders stop here
            await r.skip(1 if block == b";" else 0)
            return await _rest(r, "the bytes after the GIF image")
        if not complete:
            return None


_WALKS: dict[str, Callable[[Reader], Awaitable[str | None]]] = {
    "image/jpeg": _jpeg,
    "image/png": _png,
    "image/webp": _webp,
    "image/gif": _gif,
    "image/heic": _isobmff,
    "image/heif": _isobmff,
    "image/avif": _isobmff,
}
