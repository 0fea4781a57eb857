"""Reading, listing and deleting photos, and the stable download links."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Protocol

from aiohttp import web
from pydantic import ValidationError

from services.gateway.access import photo_access
from services.gateway.context import DOWNLOADS, KNOWN_USERS, RESOURCES, TRACE_ID
from services.gateway.inputs import parsed_query, validation_problem
from services.gateway.models import (
    AccountDeletion,
    AnyPhoto,
    DownloadPath,
    DownloadQuery,
    ListHeaders,
    ListQuery,
    PhotoPage,
    PhotoPath,
    respond,
)
from services.gateway.problems import (
    INSUFFICIENT_ROLE,
    INVALID,
    INVALID_CURSOR,
    NOT_FOUND,
    NOT_READY,
    SEALED,
)
from services.gateway.registry import Answer, Routes
from services.gateway.security import authenticate
from services.gateway.views import (
    download_name,
    listing_body,
    listing_etag,
    page_items,
    view_of,
)
from shared.events import AccountDeleted, Envelope, PhotoDeleted, outcome_envelope
from shared.logging import get_logger, log_context
from shared.store import PhotoStatus

log = get_logger(__name__)
api = Routes("photos")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Every well-formed cursor names some position; positions outside these bounds are
# moved onto them, which lists the same photos (none were created outside them).
_EARLIEST, _LATEST = _EPOCH, datetime(3000, 1, 1, tzinfo=UTC)


def _micros(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(microseconds=1)


class Keyed(Protocol):
    """A row paged on (created_at, id), the id 32 hex digits: photos and albums."""

    @property
    def created_at(self) -> datetime: ...

    @property
    def id(self) -> str: ...


def encode_cursor(row: Keyed) -> str:
    return cursor_at(row.created_at, row.id)


def cursor_at(created_at: datetime, row_id: str) -> str:
    raw = _micros(created_at).to_bytes(8, "big", signed=True) + bytes.fromhex(row_id)
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor names. The pattern has already held: 32 characters of
    base64url are exactly 24 bytes, so any such cursor decodes."""
    raw = base64.urlsafe_b64decode(cursor)
    micros = int.from_bytes(raw[:8], "big", signed=True)
    micros = min(max(micros, _micros(_EARLIEST)), _micros(_LATEST))
    return _EPOCH + timedelta(microseconds=micros), raw[8:].hex()


def list_query(request: web.Request) -> ListQuery:
    try:
        return ListQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        if any(e["loc"][:1] == ("cursor",) for e in exc.errors()):
            raise INVALID_CURSOR("the cursor is not one this API issued") from exc
        raise validation_problem(exc, what="query string") from exc


PAGE_HEADERS = {
    "ETag": "names this page: send it back as `If-None-Match`",
    "Cache-Control": "`private, no-cache`: a client may keep the page, and asks again",
}


@api.route(
    "GET",
    "/v1/photos",
    "listPhotos",
    "The caller's photos, newest first",
    {
        200: Answer(
            "a page", PhotoPage, photo_id="$response.body#/items/0/id", headers=PAGE_HEADERS
        ),
        304: Answer("the page is still the one `If-None-Match` names", headers=PAGE_HEADERS),
    },
    scope="photos:read",
    query=ListQuery,
    headers=ListHeaders,
    faults=(INVALID_CURSOR, INVALID),
)
async def list_photos(request: web.Request) -> web.Response:
    """Keyset-paged on (created_at, id): photos created while a client pages sort
    before its cursor, so a listing never repeats or skips one. A client that polls
    sends the page's `ETag` back as `If-None-Match` and gets 304 while nothing on it
    changed (its links included: they change with each signing window)."""
    owner = (await authenticate(request, "photos:read")).user_id
    query = list_query(request)
    store = request.app[RESOURCES].store
    keys = await store.owner_page(
        owner,
        limit=query.limit + 1,
        before=decode_cursor(query.cursor) if query.cursor else None,
        statuses=[PhotoStatus(s) for s in query.status.split(",")] if query.status else (),
        taken_from=query.taken_after,
        taken_to=query.taken_before,
        album_id=query.album_id,
    )
    more = len(keys) > query.limit
    keys = keys[: query.limit]
    next_cursor = cursor_at(keys[-1]["created_at"], keys[-1]["id"]) if more else None
    window = await request.app[DOWNLOADS].window()
    items = page_items(keys)
    etag = listing_etag(window, items, next_cursor)
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if _held(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    body = await listing_body(window, items, partial(store.page_rows, owner), next_cursor)
    return web.Response(body=body, content_type="application/json", headers=headers)


def _held(if_none_match: str | None, etag: str) -> bool:
    """Whether `If-None-Match` (a list of tags, weak or strong, or `*`) names `etag`."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in tags or "*" in tags


@api.route(
    "GET",
    "/v1/photos/{photo_id}",
    "getPhoto",
    "One photo, with download URLs once ready",
    {200: Answer("the photo; sealed while its album is", AnyPhoto)},
    scope="photos:read",
    params=PhotoPath,
    faults=(NOT_FOUND,),
)
async def get_photo(request: web.Request) -> web.Response:
    """For its uploader and the members of its album."""
    user = (await authenticate(request, "photos:read")).user_id
    access = await photo_access(request, user, request.match_info["photo_id"])
    return respond(await view_of(request, access.photo))


@api.route(
    "GET",
    "/v1/photos/{photo_id}/{rendition}",
    "followDownload",
    "Stable link: 302 to the current download URL",
    {302: Answer("to the presigned URL", headers={"Location": "the presigned URL"})},
    scope="photos:read",
    params=DownloadPath,
    query=DownloadQuery,
    faults=(NOT_FOUND, NOT_READY, SEALED, INVALID),
)
async def follow_download(request: web.Request) -> web.Response:
    """For `<img src>`: cacheable until the signing window turns. 409 `sealed` while the
    photo's album is."""
    user = (await authenticate(request, "photos:read")).user_id
    inline = parsed_query(request.query, DownloadQuery).inline
    photo = (await photo_access(request, user, request.match_info["photo_id"], download=True)).photo
    name = request.match_info["rendition"]
    if photo.status is not PhotoStatus.READY:
        raise NOT_READY(f"the photo is {photo.status.value}, not ready")
    if name == "original":
        key, content_type = photo.object_key, photo.content_type
    else:
        found = [r for r in photo.renditions if r.name == name]
        if not found:
            raise NOT_FOUND(f"the photo has no rendition {name!r}")
        key, content_type = found[0].object_key, found[0].content_type
    downloads = request.app[DOWNLOADS]
    url, fresh_for = await downloads.url(
        key,
        content_type,
        download_name(photo.filename, name, content_type),
        attachment=name == "original" and not inline,
    )
    # Cacheable only until the window turns; the URL it names stays valid longer.
    return web.Response(
        status=302, headers={"Location": url, "Cache-Control": f"private, max-age={fresh_for}"}
    )


@api.route(
    "DELETE",
    "/v1/photos/{photo_id}",
    "deletePhoto",
    "Delete a photo: gone at once, purged from storage soon after",
    {204: Answer("deleted")},
    scope="photos:delete",
    params=PhotoPath,
    faults=(NOT_FOUND, INSUFFICIENT_ROLE),
)
async def delete_photo(request: web.Request) -> web.Response:
    """By its uploader only."""
    owner = (await authenticate(request, "photos:delete")).user_id
    res, photo_id = request.app[RESOURCES], request.match_info["photo_id"]
    await photo_access(request, owner, photo_id, own=True)
    event = PhotoDeleted(photo_id=photo_id, owner_id=owner)
    envelope = outcome_envelope(event, photo_id=photo_id, trace_id=request[TRACE_ID])
    with log_context(photo_id=photo_id, owner_id=owner):
        if not await res.store.mark_deleted(photo_id, owner, envelope):
            raise NOT_FOUND("no such photo")
        await res.outbox.publish_or_defer(envelope)
        log.info("photo deleted")
    return web.Response(status=204)


@api.route(
    "DELETE",
    "/v1/me",
    "deleteAccount",
    "Delete the caller's account and every photo in it",
    {202: Answer("purge under way", AccountDeletion)},
    scope="account:delete",
)
async def delete_account(request: web.Request) -> web.Response:
    """Every photo leaves the API at once; objects and records are purged later. The
    caller's albums, memberships and photo links go at once (photos others put in those
    albums stay theirs)."""
    owner = (await authenticate(request, "account:delete")).user_id
    res, trace_id = request.app[RESOURCES], request[TRACE_ID]
    envelope = Envelope.wrap(AccountDeleted(owner_id=owner), trace_id=trace_id)
    with log_context(owner_id=owner):
        gone = await res.albums.forget_user(owner, trace_id)
        await res.webhooks.forget_user(owner)
        await res.users.forget(owner)
        request.app[KNOWN_USERS].forget(owner)
        photos = await res.store.mark_owner_deleted(owner, envelope)
        await res.outbox.publish_or_defer(envelope, *gone)
        log.info("account deletion accepted", photos=photos)
    return respond(AccountDeletion(photos=photos), 202)
