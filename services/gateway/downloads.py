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
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import quote

from shared.errors import ConfigurationError
from shared.settings import Settings
from shared.sigv4 import Credentials
from shared.storage import Presigner
from shared.text import visible_text


class Sign(Protocol):
    def __call__(
        self, key: str, content_type: str | None, filename: str, attachment: bool = False
    ) -> tuple[str, int]: ...


def content_disposition(filename: str, *, attachment: bool = False) -> str:
    """RFC 6266: an ASCII fallback and the exact UTF-8 name (nothing invisible in either)."""
    name = visible_text(filename) or "photo"
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name
    )
    kind = "attachment" if attachment else "inline"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


@dataclass(frozen=True)
class Window:
    """A signing window as seen with the current credentials: `sign`, and `derived`, for
    what callers build from its URLs (a listing page's items), kept as long as they are;
    each key names what it derives."""

    sign: Sign
    derived: dict[Hashable, bytes]
    # Names the URLs `sign` hands out: the window's start and the signing access key.
    tag: str


class Downloads:
    """Signs each (object, content type, filename) once per window and hands out that URL
    for the rest of it: a listing page asks for 150 URLs, mostly the same ones as the last
    time it was asked."""

    CACHED = 20_000  # URLs of about 600 bytes: about 12 MB at most
    DERIVED = 5_000  # listing items of about 2.5 KB: about 12 MB at most

    def __init__(
        self,
        presigner: Presigner,
        *,
        ttl_s: int,
        window_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._presigner, self._clock = presigner, clock
        self._ttl_s, self._window_s = ttl_s, window_s
        # The URLs signed in the current window with the current credentials.
        self._signing: tuple[int, Credentials] | None = None
        self._signed: dict[tuple[str, str | None, str, bool], str] = {}
        self._derived: dict[Hashable, bytes] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, presigner: Presigner, clock: Callable[[], float] = time.time
    ) -> Downloads:
        ttl, window = settings.download_url_ttl, settings.download_url_window
        return cls(presigner, ttl_s=ttl, window_s=window, clock=clock)

    async def url(
        self, key: str, content_type: str | None, filename: str, *, attachment: bool = False
    ) -> tuple[str, int]:
        """The URL, and for how many more seconds this same URL will be handed out."""
        return (await self.signer())(key, content_type, filename, attachment)

    async def signer(self) -> Sign:
        """`url` for many objects at once (a listing page)."""
        return (await self.window()).sign

    async def window(self) -> Window:
        """The current window: the credentials, the window and the caches looked up once,
        not once per URL (hashing the credentials for every URL's cache key was a third
        of its cost)."""
        # Temporary credentials (a pod's role) are refreshed before they expire: a URL
        # signed with the old ones stops working with them, so it is not handed out again.
        credentials = await self._presigner.credentials()
        now = self._clock()
        start = int(now - now % self._window_s)
        fresh_for = max(1, int(start + self._window_s - now))
        if self._signing != (start, credentials) or len(self._signed) >= self.CACHED:
            self._signing, self._signed, self._derived = (start, credentials), {}, {}
        if len(self._derived) >= self.DERIVED:
            self._derived = {}
        # This signer's own cache: one handed out before the window turned keeps filling
        # the old one, never the new window's.
        signed = self._signed

        def sign(
            key: str, content_type: str | None, filename: str, attachment: bool = False
        ) -> tuple[str, int]:
            which = (key, content_type, filename, attachment)
            url = signed.get(which)
            if url is None:
                url = signed[which] = self._sign(start, *which, credentials)
            return url, fresh_for

        return Window(sign, self._derived, f"{start}:{credentials.access_key}")

    def _sign(
        self,
        start: int,
        key: str,
        content_type: str | None,
        filename: str,
        attachment: bool,
        credentials: Credentials,
    ) -> str:
        query = {
            "response-content-disposition": content_disposition(filename, attachment=attachment),
            "response-cache-control": f"private, max-age={self._ttl_s - self._window_s}",
        }
        if content_type:
            query["response-content-type"] = content_type
        return self._presigner.signer.presign_url(
            credentials,
            "GET",
            key,
            signed_at=datetime.fromtimestamp(start, UTC),
            expires_in=self._ttl_s,
            query=query,
        )


def check_window(settings: Settings) -> None:
    if settings.download_url_window >= settings.download_url_ttl:
        raise ConfigurationError(
            "DARKROOM_DOWNLOAD_URL_WINDOW must be shorter than DARKROOM_DOWNLOAD_URL_TTL"
        )
