"""Every metadata segment of an image, wherever it sits, scanned for active content.

A comment or text chunk can sit anywhere: between a JPEG's scans, after a PNG's image
data, in the middle of a WebP. So the file's structure is walked from the start through
ranged reads, and each metadata payload (JPEG APPn and COM, PNG text and other ancillary
chunks, WebP chunks other than image data, HEIF boxes other than `mdat`, and the metadata
items a HEIF keeps inside `mdat`) is scanned for markup. Image data is never scanned: a
long run of it is jumped over without being fetched, a short one is read through (cheaper
than a request per chunk), and a JPEG's entropy-coded data, which has no length, is read
to find the next marker. Reads go a window (64 KiB growing to 1 MiB) at a time and are
never held: memory stays at a window or two, and the cost is at worst linear in the file.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Awaitable, Callable

from services.ingest_worker.heif_items import MAX_META, metadata_extents
from services.ingest_worker.inspect import ACTIVE_CONTENT

FIRST_WINDOW = 64 * 1024
MAX_WINDOW = 1024 * 1024
# Longest match ACTIVE_CONTENT needs to see whole when a payload is scanned in pieces.
_OVERLAP = 64
# Text a compressed PNG chunk may inflate to before the rest of it is left unread.
MAX_INFLATED = 4 * 1024 * 1024
# Segments a file may have. Real ones have thousands at most (a 50 MB PNG in libpng's
# 8 KiB chunks has 6,400); millions of empty ones would only cost CPU.
MAX_SEGMENTS = 100_000


class TooManySegments(Exception):
    """The file is cut into more segments than any real image has."""


Fetch = Callable[[int, int], Awaitable[bytes]]


class Reader:
    """Sequential reads through ranged fetches, a growing window at a time; skips past
    the buffer move the read position without fetching what lies between."""

    def __init__(self, fetch: Fetch, size: int, first: bytes = b"", *, start: int = 0) -> None:
        self._fetch = fetch
        self.size = size
        self._buf = first[: max(0, size - start)]
        self._at = 0  # read position inside _buf
        self._next = start + len(self._buf)  # file offset of the next fetch
        self._window = FIRST_WINDOW
        self._segments = 0

    def step(self) -> None:
        """Count one more segment; raise TooManySegments past MAX_SEGMENTS."""
        self._segments += 1
        if self._segments > MAX_SEGMENTS:
            raise TooManySegments(f"the file has more than {MAX_SEGMENTS} segments")

    @property
    def fetch(self) -> Fetch:
        return self._fetch

    @property
    def pos(self) -> int:
        return self._next - (len(self._buf) - self._at)

    async def _fill(self, n: int) -> None:
        while len(self._buf) - self._at < n and self._next < self.size:
            want = max(self._window, n - (len(self._buf) - self._at))
            end = min(self._next + want, self.size)
            data = await self._fetch(self._next, end - 1)
            if not data:
                self.size = self._next  # shorter than its HEAD said
                return
            self._buf = self._buf[self._at :] + data
            self._at = 0
            self._next += len(data)
            self._window = min(self._window * 2, MAX_WINDOW)

    async def read(self, n: int) -> bytes:
        """Up to n bytes (fewer only at the end); n stays small (a segment, a window)."""
        await self._fill(n)
        data = self._buf[self._at : self._at + n]
        self._at += len(data)
        return data

    async def skip(self, n: int) -> bool:
        """Move n bytes on; False if that passes the end of the object. A short hop is
        read through (cheaper than a request per small chunk); a long one is a jump."""
        if n <= MAX_WINDOW:
            await self._fill(n)
        buffered = len(self._buf) - self._at
        if n <= buffered:
            self._at += n
            return True
        target = self._next + n - buffered
        self._buf, self._at = b"", 0
        self._next = min(target, self.size)
        self._window = FIRST_WINDOW
        return target <= self.size

    async def find(self, pattern: re.Pattern[bytes]) -> bool:
        """Move to the next match of a short pattern; False at the end of the object."""
        while True:
            found = pattern.search(self._buf, self._at)
            if found:
                self._at = found.start()
                return True
            self._at = max(self._at, len(self._buf) - 1)  # a match may straddle windows
            before = self._next
            await self._fill(len(self._buf) - self._at + 1)
            if self._next == before:
                return False

    async def scan(self, n: int) -> re.Match[bytes] | None:
        """Read n bytes in pieces, searching them for active content."""
        carry = b""
        while n > 0:
            piece = await self.read(min(n, MAX_WINDOW))
            if not piece:
                return None
            n -= len(piece)
            found = ACTIVE_CONTENT.search(carry + piece)
            if found:
                return found
            carry = piece[-_OVERLAP:]
        return None


def _report(found: re.Match[bytes], what: str, at: int) -> str:
    return f"{found.group(0)[:16]!r} in {what} at byte {at}"


async def find_hidden_content(
    content_type: str, fetch: Fetch, size: int, head: bytes = b""
) -> str | None:
    """Where markup hides in the image's metadata, else None. `head` is the prefix already
    read, so small files cost no further read. Raises TooManySegments."""
    walk = _WALKS.get(content_type)
    return await walk(Reader(fetch, size, head)) if walk else None


# A marker: 0xFF then anything but stuffing (0x00), a restart marker or fill (0xFF).
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_STANDALONE = {0x01, *range(0xD0, 0xD8)}


async def _jpeg(r: Reader) -> str | None:
    if await r.read(2) != b"\xff\xd8":
        return None
    while await r.find(_MARKER):
        r.step()
        at = r.pos
        marker = (await r.read(2))[1]
        if marker == 0xD9:
            return None  # end of image; what follows is the tail check's business
        if marker in _STANDALONE:
            continue
        length = int.from_bytes(await r.read(2), "big")
        if length < 2:
            return None
        if 0xE0 <= marker <= 0xEF or marker == 0xFE:
            found = await r.scan(length - 2)
            if found:
                name = "COM" if marker == 0xFE else f"APP{marker - 0xE0}"
                return _report(found, f"a JPEG {name} segment", at)
        elif not await r.skip(length - 2):
            return None
    return None


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
            return None
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
            carry = text[-_OVERLAP:]
            if not text:
                break
    except zlib.error:
        return None  # not ours to judge: the decoder ignores a broken text chunk
    return None


_WEBP_PIXELS = {b"VP8 ", b"VP8L", b"ALPH", b"ANMF"}


async def _webp(r: Reader) -> str | None:
    if len(await r.read(12)) < 12:
        return None
    while True:
        r.step()
        at = r.pos
        header = await r.read(8)
        if len(header) < 8:
            return None
        kind, length = header[:4], int.from_bytes(header[4:8], "little")
        padded = length + (length & 1)
        if kind in _WEBP_PIXELS:
            if not await r.skip(padded):
                return None
            continue
        found = await r.scan(length)
        if found:
            return _report(found, f"a WebP {kind.decode('latin-1')!r} chunk", at)
        await r.skip(padded - length)


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


_WALKS: dict[str, Callable[[Reader], Awaitable[str | None]]] = {
    "image/jpeg": _jpeg,
    "image/png": _png,
    "image/webp": _webp,
    "image/heic": _isobmff,
    "image/heif": _isobmff,
    "image/avif": _isobmff,
}
