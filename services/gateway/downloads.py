"""Presigned download URLs that repeat, so browsers and CDNs can cache what they fetch.

A presigned URL embeds its signing time, so URLs signed "now" never repeat and every page
view fetches the image again. Here every URL is signed as of the start of the current
window of DARKROOM_DOWNLOAD_URL_WINDOW seconds and valid for DARKROOM_DOWNLOAD_URL_TTL
from then: the same photo gets the same URL for the whole window, and each URL handed
out stays valid for at least TTL - WINDOW seconds. The signed URL also asks storage to
answer with the photo's Content-Type, a Content-Disposition naming the file (`attachment`
for originals unless asked otherwise, so a browser saves rather than renders them), and
`Cache-Control: private, max-age=TTL - WINDOW`: no shared cache keeps a copy, and a
browser keeps one no longer than the validity every URL handed out still has (the value
must not change within a window, or the URL would not repeat).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import botocore.auth
from aiobotocore.session import get_session

from shared.errors import ConfigurationError
from shared.settings import Settings
from shared.storage import client_kwargs
from shared.text import visible_text

WINDOWED = "darkroom-s3v4-window-query"
_SIGNED_AT: ContextVar[datetime | None] = ContextVar("darkroom_signed_at", default=None)


class _WindowedQueryAuth(botocore.auth.S3SigV4QueryAuth):  # type: ignore[misc]
    """SigV4 query signing as of the window's start rather than the current second."""

    def _modify_request_before_signing(self, request: Any) -> None:
        signed_at = _SIGNED_AT.get()
        if signed_at is not None:
            request.context["timestamp"] = signed_at.strftime(botocore.auth.SIGV4_TIMESTAMP)
        super()._modify_request_before_signing(request)


def _choose_windowed(**_: Any) -> str | None:
    return WINDOWED if _SIGNED_AT.get() is not None else None


def content_disposition(filename: str, *, attachment: bool = False) -> str:
    """RFC 6266: an ASCII fallback and the exact UTF-8 name (nothing invisible in either)."""
    name = visible_text(filename) or "photo"
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name
    )
    kind = "attachment" if attachment else "inline"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


class Downloads:
    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        ttl_s: int,
        window_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client, self._bucket, self._clock = client, bucket, clock
        self._ttl_s, self._window_s = ttl_s, window_s

    async def url(
        self, key: str, content_type: str | None, filename: str, *, attachment: bool = False
    ) -> tuple[str, int]:
        """The URL, and for how many more seconds this same URL will be handed out."""
        now = self._clock()
        start = int(now - now % self._window_s)
        params: dict[str, Any] = {
            "Bucket": self._bucket,
            "Key": key,
            "ResponseContentDisposition": content_disposition(filename, attachment=attachment),
            "ResponseCacheControl": f"private, max-age={self._ttl_s - self._window_s}",
        }
        if content_type:
            params["ResponseContentType"] = content_type
        token = _SIGNED_AT.set(datetime.fromtimestamp(start, UTC))
        try:
            url: str = await self._client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=self._ttl_s
            )
        finally:
            _SIGNED_AT.reset(token)
        return url, max(1, int(start + self._window_s - now))


def check_window(settings: Settings) -> None:
    if settings.download_url_window >= settings.download_url_ttl:
        raise ConfigurationError(
            "DARKROOM_DOWNLOAD_URL_WINDOW must be shorter than DARKROOM_DOWNLOAD_URL_TTL"
        )


@asynccontextmanager
async def open_downloads(
    settings: Settings, *, clock: Callable[[], float] = time.time
) -> AsyncIterator[Downloads]:
    botocore.auth.AUTH_TYPE_MAPS.setdefault(WINDOWED, _WindowedQueryAuth)
    endpoint = settings.s3_public_endpoint_url or settings.s3_endpoint_url
    async with get_session().create_client("s3", **client_kwargs(settings, endpoint)) as client:
        client.meta.events.register("choose-signer.s3.GetObject", _choose_windowed)
        yield Downloads(
            client,
            settings.s3_bucket,
            ttl_s=settings.download_url_ttl,
            window_s=settings.download_url_window,
            clock=clock,
        )
