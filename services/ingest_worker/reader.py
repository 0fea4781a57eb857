"""Sequential reads of a stored object through ranged fetches, for walking its segment
structure: a window (64 KiB growing to 1 MiB) at a time, never holding more than a window
or two, and long skips jump without fetching what lies between."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from services.ingest_worker.inspect import ACTIVE_CONTENT

FIRST_WINDOW = 64 * 1024
MAX_WINDOW = 1024 * 1024
# Longest match ACTIVE_CONTENT needs to see whole when a payload is scanned in pieces.
OVERLAP = 64
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

    async def peek(self, n: int) -> bytes:
        """Up to n bytes from the read position, without moving it."""
        await self._fill(n)
        return self._buf[self._at : self._at + n]

    async def find_scanning(
        self, pattern: re.Pattern[bytes]
    ) -> tuple[bool, re.Match[bytes] | None]:
        """As `find`, also searching the bytes passed over for active content: (whether
        the pattern was found, the active content found on the way, if any)."""
        carry = b""
        while True:
            found = pattern.search(self._buf, self._at)
            # Without a match, the last byte stays: a match may straddle windows.
            stop = found.start() if found else max(self._at, len(self._buf) - 1)
            passed = carry + self._buf[self._at : stop]
            hit = ACTIVE_CONTENT.search(passed)
            self._at = stop
            if hit or found:
                return found is not None, hit
            carry = passed[-OVERLAP:]
            before = self._next
            await self._fill(len(self._buf) - self._at + 1)
            if self._next == before:
                return False, ACTIVE_CONTENT.search(carry + self._buf[self._at :])

    async def sub_blocks(self, *, scan: bool) -> tuple[bool, re.Match[bytes] | None]:
        """Move past a GIF's data sub-blocks (a length byte, that many bytes, ..., a zero
        byte), searching them for active content if `scan`: (whether the terminator came
        before the end of the object, what was found). The blocks held in the buffer are
        walked without awaiting: there can be millions of them."""
        carry = b""
        while True:
            buf, start = self._buf, self._at
            at = start
            while at < len(buf) and buf[at] and at + 1 + buf[at] <= len(buf):
                at += 1 + buf[at]
            self._at = at
            if scan:
                passed = carry + buf[start:at]
                hit = ACTIVE_CONTENT.search(passed)
                if hit:
                    return True, hit
                carry = passed[-OVERLAP:]
            if at < len(buf) and not buf[at]:
                self._at += 1
                return True, None
            need = 1 + (buf[at] if at < len(buf) else 0)
            await self._fill(need)
            if len(self._buf) - self._at < need:
                return False, None

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
            carry = piece[-OVERLAP:]
        return None
