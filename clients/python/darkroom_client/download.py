"""Saving a photo's bytes from storage, through cuts, lapsed links and busy servers.

The API answers a download with a short-lived storage link. A failed attempt (a 429 or
502-504, a network error, a connection cut mid-body) is retried with the client's
backoff, asking storage only for the bytes not yet written (`Range`), and only if the
object is still the one they came from (`If-Match` on its ETag; if not, it starts
over). A link storage refuses (403: it lapsed while retrying) is asked for again.
Nothing appears at the target path until every byte is there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

import aiohttp

from darkroom_client.errors import DarkroomError, StorageError, Unavailable, error_for
from darkroom_client.retry import RETRIED_STATUSES, RetryPolicy, parse_retry_after
from darkroom_client.transport import NETWORK_ERRORS

BLOCK = 1024 * 1024


class _AskAgain(Exception):
    """Try again at once: storage refused the link (403: it lapsed, or was signed for
    other credentials), or the object changed since the bytes saved (412)."""

    def __init__(self, detail: str, status: int) -> None:
        super().__init__(detail)
        self.detail, self.status = detail, status


class _Saving:
    """The bytes written so far and the ETag they belong to."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.etag: str | None = None

    def restart(self) -> None:
        self.file.seek(0)
        self.file.truncate()
        self.etag = None


async def save(
    session: aiohttp.ClientSession,
    retry: RetryPolicy,
    link: Callable[[], Awaitable[str]],
    target: Path,
) -> Path:
    """Write the object `link()` points to at `target`; `link()` is asked again when
    storage refuses the one it gave. Raises `StorageError` for a refusal that retries do
    not cure, `Unavailable` once the network or storage failed every attempt."""
    partial = target.with_name(target.name + ".part")
    try:
        await _save_to(session, retry, link, partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    return target


async def _save_to(
    session: aiohttp.ClientSession,
    retry: RetryPolicy,
    link: Callable[[], Awaitable[str]],
    partial: Path,
) -> None:
    with partial.open("wb") as file:
        saving, url, tries = _Saving(file), await link(), 0
        while True:
            tries += 1
            try:
                await _attempt(session, url, saving)
                break
            except _AskAgain as exc:
                if retry.delay(tries) is None:
                    raise StorageError(exc.detail, status=exc.status) from exc
                if exc.status == 403:
                    url = await link()
                continue
            except DarkroomError as exc:
                if exc.status not in RETRIED_STATUSES:
                    raise
                error: DarkroomError = exc
                wait = retry.delay(tries, exc.retry_after)
            except NETWORK_ERRORS as exc:
                error = Unavailable(f"network error during download: {exc!r}")
                wait = retry.delay(tries)
            if wait is None:
                raise error
            await retry.sleep(wait)


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
                raise _AskAgain("the object changed during the download", 412)
            if resp.status == 403:
                raise _AskAgain(text or "HTTP 403", 403)
            if resp.status in RETRIED_STATUSES:
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                raise error_for(resp.status, text, retry_after)
            raise StorageError(text or f"HTTP {resp.status}", status=resp.status)
        if resp.status != 206:  # the whole object (a server may ignore Range)
            saving.restart()
        saving.etag = resp.headers.get("ETag")
        async for block in resp.content.iter_chunked(BLOCK):
            saving.file.write(block)
