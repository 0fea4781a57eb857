"""What is uploaded: bytes in memory or a file on disk, read part by part, and the
aiohttp body that reports progress while it is sent."""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from darkroom_client.models import ACCEPTED_TYPES

CHUNK = 256 * 1024
Progress = Callable[[int, int], None]
"""Called with (bytes sent so far, total bytes) of one upload; the count can go down
when a failed part is sent again."""

_MAGIC: list[tuple[int, bytes, str]] = [
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"GIF8", "image/gif"),
    (8, b"WEBP", "image/webp"),
    (8, b"avif", "image/avif"),
    (8, b"avis", "image/avif"),
    (8, b"heic", "image/heic"),
    (8, b"heix", "image/heic"),
    (8, b"mif1", "image/heif"),
]


def type_of(name: str, head: bytes = b"") -> str | None:
    """The accepted type the first bytes show, else the one the file name suggests."""
    for offset, magic, content_type in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return content_type
    suffix = Path(name).suffix.lower()
    for content_type, suffixes in ACCEPTED_TYPES.items():
        if suffix in suffixes:
            return content_type
    guessed = mimetypes.guess_type(name)[0]
    return guessed if guessed in ACCEPTED_TYPES else None


@dataclass(frozen=True)
class Source:
    """One upload's bytes (`data`) or file (`path`), with its name, type, size and
    SHA-256 (which lets the server answer a duplicate instead of a grant)."""

    filename: str
    content_type: str
    size: int
    sha256: str
    path: Path | None = None
    data: bytes | None = None

    @classmethod
    async def of(
        cls,
        item: str | Path | bytes,
        *,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> Source:
        if isinstance(item, bytes):
            name = filename or "photo"
            kind = content_type or type_of(name, item[:16]) or "application/octet-stream"
            digest = hashlib.sha256(item).hexdigest()
            return cls(name, kind, len(item), digest, data=item)
        path = Path(item)
        size, digest, head = await asyncio.to_thread(_digest, path)
        kind = content_type or type_of(path.name, head) or "application/octet-stream"
        return cls(filename or path.name, kind, size, digest, path=path)

    async def read(self, offset: int, length: int) -> bytes:
        if self.data is not None:
            return self.data[offset : offset + length]
        assert self.path is not None
        return await asyncio.to_thread(_read, self.path, offset, length)


def _digest(path: Path) -> tuple[int, str, bytes]:
    sha, size, head = hashlib.sha256(), 0, b""
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            head = head or block[:16]
            sha.update(block)
            size += len(block)
    return size, sha.hexdigest(), head


def _read(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(length)


class ProgressBody(Payload):
    """Bytes sent in chunks, calling `sent(n)` after each, with a known length (storage
    needs Content-Length)."""

    def __init__(self, value: bytes, sent: Callable[[int], None], **kw: Any) -> None:
        super().__init__(value, content_type=kw.pop("content_type", None), **kw)
        self._size = len(value)
        self._sent = sent

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._value).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        value: bytes = self._value
        end = len(value) if content_length is None else min(len(value), content_length)
        for start in range(0, end, CHUNK):
            chunk = value[start : min(end, start + CHUNK)]
            await writer.write(chunk)
            self._sent(len(chunk))
