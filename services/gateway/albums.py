"""Albums: creating, listing, changing and deleting them, and the photos in them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from aiohttp import web
from pydantic import ValidationError

from services.gateway.access import Act, AlbumAccess, album_access, sealed
from services.gateway.album_models import (
    Album,
    AlbumChange,
    AlbumPage,
    AlbumPath,
    AlbumPhotoPath,
    AlbumPhotos,
    AlbumRequest,
    PageQuery,
)
from services.gateway.context import RESOURCES, TRACE_ID
from services.gateway.inputs import parsed_body, validation_problem
from services.gateway.models import respond
from services.gateway.photos import decode_cursor, encode_cursor
from services.gateway.problems import (
    ALREADY_REVEALED,
    INSUFFICIENT_ROLE,
    INVALID,
    INVALID_CURSOR,
    MALFORMED_JSON,
    NOT_FOUND,
)
from services.gateway.registry import ALBUM_ID_OF_VIEW, Answer, Routes
from services.gateway.security import authenticate
from services.gateway.views import EVERYTHING, Exposure, views_of
from shared.albums import AlbumRecord, Role
from shared.events import AlbumDeleted, Envelope
from shared.logging import get_logger, log_context

log = get_logger(__name__)
api = Routes("albums")
PAGED = (INVALID_CURSOR, INVALID)


def album_view(album: AlbumRecord, role: Role, photo_count: int) -> Album:
    return Album(
        id=album.id,
        title=album.title,
        owner_id=album.owner_id,
        reveal_at=album.reveal_at,
        sealed=album.sealed(),
        role=role.value,
        photo_count=photo_count,
        created_at=album.created_at,
    )


async def _view(request: web.Request, access: AlbumAccess) -> Album:
    counts = await request.app[RESOURCES].albums.photo_counts([access.album.id])
    return album_view(access.album, access.role, counts[access.album.id])


def page_query(request: web.Request) -> PageQuery:
    try:
        return PageQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        if any(e["loc"][:1] == ("cursor",) for e in exc.errors()):
            raise INVALID_CURSOR("the cursor is not one this API issued") from exc
        raise validation_problem(exc, what="query string") from exc


@api.route(
    "POST",
    "/v1/albums",
    "createAlbum",
    "Create an album, sealed until `reveal_at` if given",
    {201: Answer("created", Album, album_id=ALBUM_ID_OF_VIEW)},
    scope="photos:write",
    body=AlbumRequest,
    faults=(MALFORMED_JSON, INVALID),
)
async def create_album(request: web.Request) -> web.Response:
    """The caller owns it. With `reveal_at` in the future its photos stay sealed, for
    everyone, until then."""
    user = (await authenticate(request, "photos:write")).user_id
    body = await parsed_body(request, AlbumRequest)
    now = datetime.now(UTC)
    album = AlbumRecord(
        id=uuid.uuid4().hex,
        owner_id=user,
        title=body.title,
        reveal_at=body.reveal_at,
        revealed_at=None,
        created_at=now,
        updated_at=now,
    )
    await request.app[RESOURCES].albums.create(album)
    log.info("album created", album_id=album.id, owner_id=user)
    return respond(album_view(album, Role.OWNER, 0), 201)


@api.route(
    "GET",
    "/v1/albums",
    "listAlbums",
    "The caller's albums, owned or joined, newest first",
    {200: Answer("a page", AlbumPage)},
    scope="photos:read",
    query=PageQuery,
    faults=PAGED,
)
async def list_albums(request: web.Request) -> web.Response:
    user = (await authenticate(request, "photos:read")).user_id
    query = page_query(request)
    store = request.app[RESOURCES].albums
    before = decode_cursor(query.cursor) if query.cursor else None
    found = await store.of_user(user, limit=query.limit + 1, before=before)
    more, found = len(found) > query.limit, found[: query.limit]
    counts = await store.photo_counts([album.id for album, _ in found])
    items = [album_view(album, role, counts[album.id]) for album, role in found]
    next_cursor = encode_cursor(found[-1][0]) if more else None
    return respond(AlbumPage(items=items, next_cursor=next_cursor))


@api.route(
    "GET",
    "/v1/albums/{album_id}",
    "getAlbum",
    "One album",
    {200: Answer("the album", Album)},
    scope="photos:read",
    params=AlbumPath,
    faults=(NOT_FOUND,),
)
async def get_album(request: web.Request) -> web.Response:
    """For its owner and members; 404 for anyone else."""
    user = (await authenticate(request, "photos:read")).user_id
    access = await album_access(request, user, request.match_info["album_id"], Act.READ)
    return respond(await _view(request, access))


@api.route(
    "PATCH",
    "/v1/albums/{album_id}",
    "changeAlbum",
    "Change the title or the reveal time (owner)",
    {200: Answer("the album as changed", Album)},
    scope="photos:write",
    params=AlbumPath,
    body=AlbumChange,
    faults=(MALFORMED_JSON, INVALID, NOT_FOUND, INSUFFICIENT_ROLE, ALREADY_REVEALED),
)
async def change_album(request: web.Request) -> web.Response:
    """A `reveal_at` now or past develops the album at once. An album that is not
    sealed (revealed, or never sealed) cannot be sealed: 409 `already_revealed`."""
    user = (await authenticate(request, "photos:write")).user_id
    access = await album_access(request, user, request.match_info["album_id"], Act.MANAGE)
    change = await parsed_body(request, AlbumChange)
    set_reveal = "reveal_at" in change.model_fields_set
    if set_reveal and sealed(change.reveal_at) and not access.album.sealed():
        # Its photos have been seen: sealing them again would pretend otherwise.
        raise ALREADY_REVEALED("the album's photos have been revealed already")
    res = request.app[RESOURCES]
    changed = await res.albums.update(
        access.album.id, title=change.title, reveal_at=change.reveal_at, set_reveal=set_reveal
    )
    if changed is None:
        raise NOT_FOUND("no such album")
    album, revealed = changed
    await res.outbox.publish_or_defer(*revealed)
    log.info("album changed", album_id=album.id, sealed=album.sealed())
    return respond(await _view(request, AlbumAccess(album, access.role)))


@api.route(
    "DELETE",
    "/v1/albums/{album_id}",
    "deleteAlbum",
    "Delete an album (owner); its photos stay with their uploaders",
    {204: Answer("deleted")},
    scope="photos:write",
    params=AlbumPath,
    faults=(NOT_FOUND, INSUFFICIENT_ROLE),
)
async def delete_album(request: web.Request) -> web.Response:
    """Members and links go with it, at once."""
    user = (await authenticate(request, "photos:write")).user_id
    access = await album_access(request, user, request.match_info["album_id"], Act.MANAGE)
    res, album_id = request.app[RESOURCES], access.album.id
    members = tuple(m.user_id for m in await res.albums.members(album_id))
    envelope = Envelope.wrap(
        AlbumDeleted(album_id=album_id, owner_id=user, member_ids=members),
        trace_id=request[TRACE_ID],
    )
    with log_context(album_id=album_id):
        if not await res.albums.delete(album_id, envelope):
            raise NOT_FOUND("no such album")
        await res.outbox.publish_or_defer(envelope)
        log.info("album deleted")
    return web.Response(status=204)


async def album_photos(
    request: web.Request, album: AlbumRecord, query: PageQuery, exposure: Exposure
) -> AlbumPhotos:
    """A page of the album's ready photos: none while it is sealed."""
    store = request.app[RESOURCES].albums
    count = (await store.photo_counts([album.id]))[album.id]
    if album.sealed():
        return AlbumPhotos(
            sealed=True, reveal_at=album.reveal_at, photo_count=count, items=[], next_cursor=None
        )
    before = decode_cursor(query.cursor) if query.cursor else None
    page = await store.photos(album.id, limit=query.limit + 1, before=before)
    more, page = len(page) > query.limit, page[: query.limit]
    return AlbumPhotos(
        sealed=False,
        reveal_at=album.reveal_at,
        photo_count=count,
        items=await views_of(request, page, exposure),
        next_cursor=encode_cursor(page[-1]) if more else None,
    )


@api.route(
    "GET",
    "/v1/albums/{album_id}/photos",
    "listAlbumPhotos",
    "The album's ready photos, newest first; none until the reveal",
    {200: Answer("a page", AlbumPhotos)},
    scope="photos:read",
    params=AlbumPath,
    query=PageQuery,
    faults=(NOT_FOUND, *PAGED),
)
async def list_album_photos(request: web.Request) -> web.Response:
    """After the reveal, `items` are full photo views (with `owner_id`, the uploader).
    Before it, `items` is empty whoever asks: `photo_count` says how many are waiting."""
    user = (await authenticate(request, "photos:read")).user_id
    access = await album_access(request, user, request.match_info["album_id"], Act.READ)
    return respond(await album_photos(request, access.album, page_query(request), EVERYTHING))


@api.route(
    "DELETE",
    "/v1/albums/{album_id}/photos/{photo_id}",
    "removeAlbumPhoto",
    "Take a photo out of the album (owner); it stays its uploader's",
    {204: Answer("removed")},
    scope="photos:write",
    params=AlbumPhotoPath,
    faults=(NOT_FOUND, INSUFFICIENT_ROLE),
)
async def remove_album_photo(request: web.Request) -> web.Response:
    user = (await authenticate(request, "photos:write")).user_id
    access = await album_access(request, user, request.match_info["album_id"], Act.MANAGE)
    photo_id = request.match_info["photo_id"]
    if not await request.app[RESOURCES].albums.remove_photo(access.album.id, photo_id):
        raise NOT_FOUND("no such photo in the album")
    return web.Response(status=204)
