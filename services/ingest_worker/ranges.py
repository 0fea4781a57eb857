"""Ranged reads of one stored object for a verification that mostly moves forward.

A fetch that starts where the last one ended is served from the same ranged GET, read
as it is wanted, rather than a request of its own: a 12 MP JPEG's segment walk took six
ranged GETs (windows of 64 KiB doubling to 1 MiB) after the head, each costing the
ingest worker 2.9 ms of CPU through aiobotocore (0.6-0.9 ms through shared/s3_objects.py)
and the storage server more. With it, ingest CPU per photo fell from 0.55-0.59 to 0.40 of
a render's in bench.pipeline (moto), and moto's from 1.0-1.1 to 0.73. A fetch anywhere
else closes the stream and opens another, so a jump over image data still fetches
nothing in between. At most one request is open at a time, whatever the verification
concurrency.
"""

from __future__ import annotations

from typing import Protocol

# Longest ranged GET opened at once: a jump out of it wastes at most what is in flight.
SPAN = 8 * 1024 * 1024


class Stream(Protocol):
    async def read(self, n: int) -> bytes: ...

    def close(self) -> None: ...


class Source(Protocol):
    async def open_range(self, key: str, start: int, end: int) -> Stream: ...


class Ranges:
    """`fetch(start, end)` (bytes start..end inclusive, fewer past the end) over one
    object of `size` bytes; `close()` when done."""

    def __init__(self, source: Source, key: str, size: int, *, span: int = SPAN) -> None:
        self._source = source
        self._key = key
        self._size = size
        self._span = span
        self._stream: Stream | None = None
        self._at = 0  # object offset of the open stream's next byte
        self._end = -1  # last offset the open stream covers

    async def fetch(self, start: int, end: int) -> bytes:
        if self._stream is None or start != self._at or end > self._end:
            self.close()
            last = max(end, min(self._size - 1, start + self._span - 1))
            self._stream = await self._source.open_range(self._key, start, last)
            self._at, self._end = start, last
        want = end - start + 1
        data = await self._stream.read(want)
        self._at += len(data)
        if len(data) < want:  # the object is shorter than its HEAD said
            self.close()
        return data

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
