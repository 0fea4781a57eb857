"""Saving a photo's bytes from storage, through cuts, lapsed links and busy servers.

The API answers a download with a short-lived storage link. A failed attempt (a 429 or
502-504, a network error, a connection cut mid-body) is retried with the client's
backoff, asking storage only for the bytes not yet written (`Range`), and only if the
object is still the one they came from (`If-Match` on its ETag; if not, it starts
over). A link storage refuses (403: it lapsed while retrying) is asked for again.
Nothing appears at the target path until every byte is there.

The bytes so far are kept in `<target>.part`, their ETag in `<target>.part.etag` from
the first byte on, so a download that failed for good (the network, busy storage) or
whose process was stopped resumes in the next call for the same target, if the object
is still the one they came from. A refusal, of storage or of the API (404: deleted, say),
discards them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

import aiohttp

from darkroom_client.errors import RateLimited, StorageError, Unavailable, error_for
from darkroom_client.retry import RETRIED_STATUSES, parse_retry_after
from darkroom_client.transport import RetryNow, Transport

BLOCK = 1024 * 1024
# Failures a later call may get past: the bytes saved are kept for it.
_PASSING = (Unavailable, RateLimited, asyncio.CancelledError, KeyboardInterrupt)


class _Saving:
    """The bytes written so far and the ETag they belong to, both kept on disk."""

    def __init__(self, file: BinaryIO, tag: Path, etag: str | None) -> None:
        self.file = file
        self.tag = tag
        self.etag = etag

    def restart(self) -> None:
        self.file.seek(0)
        self.file.truncate()
        self.tag.unlink(missing_ok=True)
        self.etag = None

    def of(self, etag: str | None) -> None:
        """The bytes about to be written are of the object with `etag`."""
        if etag != self.etag:
            if etag is None:
                self.tag.unlink(missing_ok=True)
            else:
                self.tag.write_text(etag)
            self.etag = etag


def _reopen(partial: Path, tag: Path) -> tuple[BinaryIO, str | None]:
    """The partial file of an earlier call, positioned at its end, with its ETag; or a
    new one."""
    if partial.exists() and tag.exists():
        file = partial.open("r+b")
        file.seek(0, 2)
        return file, tag.read_text().strip() or None
    return partial.open("wb"), None


async def save(transport: Transport, link: Callable[[], Awaitable[str]], target: Path) -> Path:
    """Write the object `link()` points to at `target`, retried as `transport` retries;
    `link()` is asked again when storage refuses the one it gave. Raises `StorageError`
    for a refusal that retries do not cure, `Unavailable` once the network or storage
    failed every attempt (the bytes so far stay for the next call)."""
    partial = target.with_name(target.name + ".part")
    tag = target.with_name(target.name + ".part.etag")
    file, etag = _reopen(partial, tag)
    saving, url = _Saving(file, tag, etag), None

    async def attempt() -> None:
        nonlocal url
        url = url or await link()
        try:
            await _attempt(transport.session, url, saving)
        except RetryNow as again:
            if again.error.status == 403:  # lapsed while retrying, say
                url = None
            raise

    try:
        with file:
            await transport.retrying(attempt)
    except BaseException as exc:
        worth_keeping = isinstance(exc, _PASSING) and saving.etag and partial.stat().st_size
        if not worth_keeping:  # refused (404, sealed, ...): of no use to a later call
            partial.unlink(missing_ok=True)
            tag.unlink(missing_ok=True)
        raise
    tag.unlink(missing_ok=True)
    partial.replace(target)
    return target


async def _attempt(session: aiohttp.ClientSession, url: str, saving: _Saving) -> None:
    offset = saving.file.tell()
    headers = {}
    if offset and saving.etag:
        headers = {"Range": f"bytes={offset}-", "If-Match": saving.etag}
    async with session.get(url, headers=headers) as resp:
        if resp.status == 416 and resp.headers.get("Content-Range") == f"bytes */{offset}":
            return  # every byte was saved; the cut came after the last one
        if resp.status >= 400:
            text = await resp.text(errors="replace")
            if resp.status == 412:  # changed since the bytes saved: those are of no use
                saving.restart()
                raise RetryNow(StorageError("the object changed during the download", status=412))
            if resp.status == 403:  # the link is refused: a new one is asked for
                raise RetryNow(StorageError(text or "HTTP 403", status=403))
            if resp.status in RETRIED_STATUSES:
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                raise error_for(resp.status, text, retry_after)
            raise StorageError(text or f"HTTP {resp.status}", status=resp.status)
        if resp.status != 206:  # the whole object (a server may ignore Range)
            saving.restart()
        saving.of(resp.headers.get("ETag"))
        async for block in resp.content.iter_chunked(BLOCK):
            saving.file.write(block)
