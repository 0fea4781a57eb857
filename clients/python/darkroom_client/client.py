"""`Client`: the Darkroom API as async methods."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urljoin

import aiohttp

from darkroom_client import events
from darkroom_client.download import save
from darkroom_client.errors import DarkroomError, error_for
from darkroom_client.models import Event, Photo, UploadState
from darkroom_client.retry import RetryPolicy
from darkroom_client.source import Progress, Source
from darkroom_client.transport import Transport
from darkroom_client.uploads import MULTIPART_THRESHOLD, Options, Outcome, Uploader

Item = str | Path | bytes


class Client:
    """An async client for one Darkroom gateway.

    ```python
    async with Client("https://photos.example.com", token) as dr:
        photo = await dr.upload("holiday.jpg")
        print(photo.status, photo.raw["renditions"]["thumb"]["url"])
    ```

    `token` is a user token (JWT) or an API key, which then acts for `user`. Requests are
    retried on 429 (after `Retry-After`), 502-504 and network errors as `retry` says.
    With `use_events` the client waits for photos through the live stream where the
    server offers it, and polls otherwise."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        user: str | None = None,
        retry: RetryPolicy | None = None,
        use_events: bool = True,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._url, self._token, self._user = url, token, user
        self._retry = retry or RetryPolicy()
        self._use_events = use_events
        self._own_session = session is None
        self._session = session
        self._t: Transport | None = None
        self._waiter: events.Waiter | None = None

    async def __aenter__(self) -> Client:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
            self._session = aiohttp.ClientSession(timeout=timeout)
        self._t = Transport(self._session, self._url, self._token, self._retry, self._user)
        self._waiter = events.Waiter(self._t, use_events=self._use_events)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._waiter is not None:
            await self._waiter.close()
        if self._session is not None and self._own_session:
            await self._session.close()
            self._session = None

    @property
    def transport(self) -> Transport:
        if self._t is None:
            raise RuntimeError("use the client as `async with Client(...) as client:`")
        return self._t

    def _uploader(self) -> Uploader:
        assert self._waiter is not None
        return Uploader(self.transport, self._waiter)

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        return (await self.transport.api(method, path, **kw)).body

    # Uploads

    async def upload(
        self,
        item: Item,
        album_id: str | None = None,
        *,
        progress: Progress | None = None,
        filename: str | None = None,
        content_type: str | None = None,
        resume: UploadState | None = None,
        on_state: Callable[[UploadState], None] | None = None,
        on_sent: Callable[[str], None] | None = None,
        keep_location: bool = False,
        method: str = "POST",
        multipart_threshold: int = MULTIPART_THRESHOLD,
        wait: bool = True,
        timeout: float = 900.0,
    ) -> Photo:
        """Upload a file (path) or bytes and wait until the photo is ready.

        Returns the ready photo (or the one already uploaded with the same bytes);
        raises `Rejected` with the reason when verification refuses it. Files larger
        than `multipart_threshold` go in parts; `on_state` receives the `UploadState`
        after the grant and after each part, and `resume=` that state carries on where
        it stopped, sending only the parts storage does not hold; `on_sent(photo_id)`
        once every byte is stored. `progress(sent, total)` follows the bytes."""
        source = await Source.of(item, filename=filename, content_type=content_type)
        opts = Options(
            album_id=album_id,
            keep_location=keep_location,
            method=method,
            multipart_threshold=multipart_threshold,
            wait=wait,
            timeout=timeout,
        )
        return await self._uploader().upload(
            source, opts, progress=progress, resume=resume, on_state=on_state, on_sent=on_sent
        )

    async def upload_many(
        self,
        items: Sequence[Item | Source],
        album_id: str | None = None,
        *,
        concurrency: int = 4,
        progress: Callable[[int, int, int], None] | None = None,
        on_state: Callable[[int, UploadState], None] | None = None,
        on_sent: Callable[[int, str], None] | None = None,
        on_outcome: Callable[[int, Outcome], None] | None = None,
        timeout: float = 900.0,
    ) -> list[Outcome]:
        """Upload many, granted 50 per `POST /v1/uploads:batch` and sent `concurrency` at
        a time. Never raises for one item: each `Outcome` holds its photo or its error
        (`Rejected` for a refused photo). Callbacks receive the item's index."""
        sources = [i if isinstance(i, Source) else await Source.of(i) for i in items]
        opts = Options(album_id=album_id, timeout=timeout)
        return await self._uploader().many(
            sources,
            opts,
            concurrency=concurrency,
            progress=progress,
            on_state=on_state,
            on_sent=on_sent,
            on_outcome=on_outcome,
        )

    async def wait(self, photo_id: str, timeout: float = 900.0) -> Photo:
        """Wait until an uploaded photo is ready (returned) or rejected (`Rejected`)."""
        return await self._uploader().outcome(photo_id, Options(timeout=timeout))

    async def abort(self, photo_id: str) -> None:
        """Abort a multipart upload (`DELETE /v1/uploads/{id}`)."""
        await self._call("DELETE", f"/v1/uploads/{photo_id}")

    # Photos

    async def photo(self, photo_id: str) -> Photo:
        """One photo (`GET /v1/photos/{id}`): the sealed view while its album is sealed."""
        return Photo.of(await self._call("GET", f"/v1/photos/{_seg(photo_id)}"))

    async def photos(self, *, limit: int = 50, **filters: str) -> AsyncIterator[Photo]:
        """Every photo, newest first, page by page (`status="ready"`, `album_id=...`,
        `taken_after=...` filter as the API does)."""
        params = {"limit": str(limit), **filters}
        while True:
            page = await self._call("GET", "/v1/photos", params=params)
            for raw in page["items"]:
                yield Photo.of(raw)
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]

    async def download(self, photo_id: str, rendition: str, path: str | Path) -> Path:
        """Save the original or a rendition (`thumb`, `preview`...) to `path`; raises
        `Conflict` (`not_ready`, `sealed`) when there is nothing to give yet. Cuts and
        busy storage are retried as API calls are, resuming where the bytes stopped
        (see `darkroom_client.download`)."""
        api_path = f"/v1/photos/{_seg(photo_id)}/{_seg(rendition)}"

        async def link() -> str:
            answer = await self.transport.api("GET", api_path, redirect=False)
            location = answer.headers.get("Location")
            if not location:
                raise DarkroomError(f"no download location for {rendition}", status=answer.status)
            return urljoin(f"{self.transport.base_url}{api_path}", location)

        return await save(self.transport, link, Path(path))

    async def delete(self, photo_id: str) -> None:
        """Delete a photo: gone from the API at once, purged from storage soon after."""
        await self._call("DELETE", f"/v1/photos/{_seg(photo_id)}")

    async def delete_account(self) -> dict[str, Any]:
        """Delete every photo and record of the caller (`DELETE /v1/me`)."""
        result: dict[str, Any] = await self._call("DELETE", "/v1/me")
        return result

    # Live events

    def events(self, last_event_id: str | None = None) -> AsyncGenerator[Event, None]:
        """The live stream: photo and album events as they happen, reconnecting with
        `Last-Event-ID` after a dropped connection. Raises `NotFound` on a server
        without it."""
        return events.stream(self.transport, last_event_id)

    # Albums, members and share links: see docs/api.md for the fields

    async def create_album(self, title: str, reveal_at: str | None = None) -> dict[str, Any]:
        """A new album owned by the caller; sealed until `reveal_at` (RFC 3339) if given."""
        body: dict[str, Any] = {"title": title}
        if reveal_at is not None:
            body["reveal_at"] = reveal_at
        result: dict[str, Any] = await self._call("POST", "/v1/albums", json=body)
        return result

    async def albums(self, *, limit: int = 50) -> AsyncIterator[dict[str, Any]]:
        """Every album the caller owns or belongs to, newest first, page by page."""
        async for album in self._pages("/v1/albums", limit):
            yield album

    async def album(self, album_id: str) -> dict[str, Any]:
        """One album, for its members."""
        result: dict[str, Any] = await self._call("GET", f"/v1/albums/{_seg(album_id)}")
        return result

    async def update_album(self, album_id: str, **changes: Any) -> dict[str, Any]:
        """`title=` and/or `reveal_at=` (an RFC 3339 string)."""
        path = f"/v1/albums/{_seg(album_id)}"
        result: dict[str, Any] = await self._call("PATCH", path, json=changes)
        return result

    async def delete_album(self, album_id: str) -> None:
        """Delete an album (owner): members and links go, photos stay their uploaders'."""
        await self._call("DELETE", f"/v1/albums/{_seg(album_id)}")

    async def album_photos(self, album_id: str, *, limit: int = 50) -> AsyncIterator[Photo]:
        """The album's photos, page by page (none while it is sealed)."""
        async for raw in self._pages(f"/v1/albums/{_seg(album_id)}/photos", limit):
            yield Photo.of(raw)

    async def remove_from_album(self, album_id: str, photo_id: str) -> None:
        """Take a photo out of an album (owner); it stays its uploader's."""
        await self._call("DELETE", f"/v1/albums/{_seg(album_id)}/photos/{_seg(photo_id)}")

    async def add_member(self, album_id: str, user_id: str, role: str) -> dict[str, Any]:
        """`role` is `contributor` or `viewer`; adding again changes the role."""
        path = f"/v1/albums/{_seg(album_id)}/members/{_seg(user_id)}"
        result: dict[str, Any] = await self._call("PUT", path, json={"role": role})
        return result

    async def members(self, album_id: str) -> list[dict[str, Any]]:
        """The album's members, the owner first."""
        page = await self._call("GET", f"/v1/albums/{_seg(album_id)}/members")
        return list(page["items"])

    async def remove_member(self, album_id: str, user_id: str) -> None:
        """Remove a member (owner), or leave (the member themself)."""
        await self._call("DELETE", f"/v1/albums/{_seg(album_id)}/members/{_seg(user_id)}")

    async def create_link(
        self, *, album_id: str | None = None, photo_id: str | None = None, **options: Any
    ) -> dict[str, Any]:
        """A share link to an album or a photo (`expires_at=`, `password=`,
        `allow_download=`); the answer holds the token, shown this once."""
        result: dict[str, Any] = await self._call("POST", _links(album_id, photo_id), json=options)
        return result

    async def links(
        self, *, album_id: str | None = None, photo_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The share links of an album or a photo (without their tokens)."""
        page = await self._call("GET", _links(album_id, photo_id))
        return list(page["items"])

    async def revoke_link(
        self, link_id: str, *, album_id: str | None = None, photo_id: str | None = None
    ) -> None:
        """Revoke a share link: it answers 404 from the next request on."""
        await self._call("DELETE", f"{_links(album_id, photo_id)}/{_seg(link_id)}")

    async def shared(self, token: str, password: str | None = None) -> dict[str, Any]:
        """What a share link shows, as a visitor sees it: sent without this client's
        credential (a link needs none), with the link's password if it has one."""
        headers = {"X-Darkroom-Link-Password": password} if password else {}
        url = f"{self.transport.base_url}/v1/shared/{_seg(token)}"
        async with self.transport.session.get(url, headers=headers) as resp:
            body = await resp.json(content_type=None)
            if resp.status >= 400:
                raise error_for(resp.status, body)
            result: dict[str, Any] = body
            return result

    async def _pages(self, path: str, limit: int) -> AsyncIterator[dict[str, Any]]:
        params = {"limit": str(limit)}
        while True:
            page = await self._call("GET", path, params=params)
            for item in page["items"]:
                yield item
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]


def _seg(value: str) -> str:
    return quote(value, safe="")


def _links(album_id: str | None, photo_id: str | None) -> str:
    if (album_id is None) == (photo_id is None):
        raise ValueError("name exactly one of album_id or photo_id")
    if album_id is not None:
        return f"/v1/albums/{_seg(album_id)}/links"
    return f"/v1/photos/{_seg(photo_id or '')}/links"
