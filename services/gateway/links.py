"""Share links: an album's owner or a photo's uploader opens it to whoever holds a token,
optionally until a time and behind a password; `GET /v1/shared/{token}` needs no
account."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime

from aiohttp import web
from pydantic import RootModel

from services.gateway.access import (
    Act,
    album_access,
    link_access,
    photo_access,
)
from services.gateway.album_models import (
    AlbumLinkPath,
    AlbumPath,
    LinkList,
    LinkRequest,
    LinkView,
    NewLink,
    PageQuery,
    PhotoLinkPath,
    SharedAlbum,
    SharedAlbumSummary,
    SharedHeaders,
    SharedPath,
)
from services.gateway.albums import PAGED, album_photos, page_query
from services.gateway.context import PASSWORDS, RESOURCES
from services.gateway.inputs import parsed_body
from services.gateway.models import PhotoPath, PhotoView, SealedPhotoView, respond
from services.gateway.problems import (
    INSUFFICIENT_ROLE,
    INTERNAL,
    INVALID,
    LINK_EXPIRED,
    MALFORMED_JSON,
    NOT_FOUND,
    PASSWORD_REQUIRED,
    RATE_LIMITED,
    UNAVAILABLE,
    WRONG_PASSWORD,
)
from services.gateway.registry import Answer, Routes
from services.gateway.security import authenticate
from services.gateway.views import link_exposure, view_of
from shared.links import LinkRecord, token_hash
from shared.logging import get_logger

log = get_logger(__name__)
api = Routes("links")
MADE = (MALFORMED_JSON, INVALID, NOT_FOUND, INSUFFICIENT_ROLE)


class Shared(RootModel[SharedAlbum | PhotoView | SealedPhotoView]):
    """An album link's page of photos, or a photo link's photo."""


def _link_view(link: LinkRecord) -> LinkView:
    return LinkView(
        id=link.id,
        expires_at=link.expires_at,
        has_password=link.password_hash is not None,
        allow_download=link.allow_download,
        created_at=link.created_at,
    )


async def _create(
    request: web.Request, user: str, *, album_id: str | None = None, photo_id: str | None = None
) -> web.Response:
    body = await parsed_body(request, LinkRequest)
    token = secrets.token_urlsafe(32)  # 256 random bits
    link = LinkRecord(
        id=uuid.uuid4().hex,
        token_hash=token_hash(token),
        album_id=album_id,
        photo_id=photo_id,
        created_by=user,
        expires_at=body.expires_at,
        password_hash=(await request.app[PASSWORDS].hash(body.password) if body.password else None),
        allow_download=body.allow_download,
        created_at=datetime.now(UTC),
    )
    await request.app[RESOURCES].links.create(link)
    log.info("share link created", link_id=link.id, album_id=album_id, photo_id=photo_id)
    made = NewLink(
        id=link.id,
        token=token,
        url=f"{request.url.origin()}/v1/shared/{token}",
        expires_at=link.expires_at,
        has_password=link.password_hash is not None,
        allow_download=link.allow_download,
    )
    return respond(made, 201)


@api.route(
    "POST",
    "/v1/albums/{album_id}/links",
    "createAlbumLink",
    "Share the album by link (owner)",
    {
        201: Answer(
            "the link; its token is shown this once",
            NewLink,
            ids={
                "album_id": "$request.path.album_id",
                "link_id": "$response.body#/id",
                "token": "$response.body#/token",
            },
        )
    },
    scope="photos:write",
    params=AlbumPath,
    body=LinkRequest,
    faults=MADE,
)
async def create_album_link(request: web.Request) -> web.Response:
    """Visitors see what members see, reveal time included: thumb and preview, and the
    original only with `allow_download`."""
    user = (await authenticate(request, "photos:write")).user_id
    access = await album_access(request, user, request.match_info["album_id"], Act.MANAGE)
    return await _create(request, user, album_id=access.album.id)


@api.route(
    "GET",
    "/v1/albums/{album_id}/links",
    "listAlbumLinks",
    "The album's live links (owner)",
    {200: Answer("the links (never their tokens)", LinkList)},
    scope="photos:read",
    params=AlbumPath,
    faults=(NOT_FOUND, INSUFFICIENT_ROLE),
)
async def list_album_links(request: web.Request) -> web.Response:
    user = (await authenticate(request, "photos:read")).user_id
    access = await album_access(request, user, request.match_info["album_id"], Act.MANAGE)
    links = await request.app[RESOURCES].links.of(album_id=access.album.id)
    return respond(LinkList(items=[_link_view(link) for link in links]))


@api.route(
    "DELETE",
    "/v1/albums/{album_id}/links/{link_id}",
    "revokeAlbumLink",
    "Revoke a link to the album (owner); it is 404 from the next request",
    {204: Answer("revoked")},
    scope="photos:write",
    params=AlbumLinkPath,
    faults=(NOT_FOUND, INSUFFICIENT_ROLE),
)
async def revoke_album_link(request: web.Request) -> web.Response:
    user = (await authenticate(request, "photos:write")).user_id
    access = await album_access(request, user, request.match_info["album_id"], Act.MANAGE)
    links = request.app[RESOURCES].links
    if not await links.revoke(request.match_info["link_id"], album_id=access.album.id):
        raise NOT_FOUND("no such link")
    return web.Response(status=204)


@api.route(
    "POST",
    "/v1/photos/{photo_id}/links",
    "createPhotoLink",
    "Share one photo by link (its uploader)",
    {
        201: Answer(
            "the link; its token is shown this once",
            NewLink,
            ids={
                "photo_id": "$request.path.photo_id",
                "link_id": "$response.body#/id",
                "token": "$response.body#/token",
            },
        )
    },
    scope="photos:write",
    params=PhotoPath,
    body=LinkRequest,
    faults=MADE,
)
async def create_photo_link(request: web.Request) -> web.Response:
    """A photo in a sealed album stays sealed through its link until the reveal."""
    user = (await authenticate(request, "photos:write")).user_id
    access = await photo_access(request, user, request.match_info["photo_id"], own=True)
    return await _create(request, user, photo_id=access.photo.id)


@api.route(
    "GET",
    "/v1/photos/{photo_id}/links",
    "listPhotoLinks",
    "The photo's live links (its uploader)",
    {200: Answer("the links (never their tokens)", LinkList)},
    scope="photos:read",
    params=PhotoPath,
    faults=(NOT_FOUND, INSUFFICIENT_ROLE),
)
async def list_photo_links(request: web.Request) -> web.Response:
    user = (await authenticate(request, "photos:read")).user_id
    access = await photo_access(request, user, request.match_info["photo_id"], own=True)
    links = await request.app[RESOURCES].links.of(photo_id=access.photo.id)
    return respond(LinkList(items=[_link_view(link) for link in links]))


@api.route(
    "DELETE",
    "/v1/photos/{photo_id}/links/{link_id}",
    "revokePhotoLink",
    "Revoke a link to the photo (its uploader)",
    {204: Answer("revoked")},
    scope="photos:write",
    params=PhotoLinkPath,
    faults=(NOT_FOUND, INSUFFICIENT_ROLE),
)
async def revoke_photo_link(request: web.Request) -> web.Response:
    user = (await authenticate(request, "photos:write")).user_id
    access = await photo_access(request, user, request.match_info["photo_id"], own=True)
    links = request.app[RESOURCES].links
    if not await links.revoke(request.match_info["link_id"], photo_id=access.photo.id):
        raise NOT_FOUND("no such link")
    return web.Response(status=204)


@api.route(
    "GET",
    "/v1/shared/{token}",
    "openSharedLink",
    "What a share link opens; no account needed",
    {200: Answer("an album link's photos, or a photo link's photo", Shared)},
    scope=None,
    params=SharedPath,
    query=PageQuery,
    headers=SharedHeaders,
    faults=(
        INVALID,
        PASSWORD_REQUIRED,
        WRONG_PASSWORD,
        NOT_FOUND,
        LINK_EXPIRED,
        *PAGED,
        RATE_LIMITED,
        INTERNAL,
        UNAVAILABLE,
    ),
)
async def open_shared(request: web.Request) -> web.Response:
    """An album link answers what `GET /v1/albums/{album_id}/photos` does, plus the
    album's title, reveal time and count; before the reveal `items` is empty. A photo
    link answers the photo's view (sealed while its album is). Unknown or revoked: 404;
    expired: 410; wrong passwords are limited per link (429)."""
    access = await link_access(request, request.match_info["token"])
    exposure = link_exposure(access.link.allow_download)
    if access.photo is not None:
        return respond(await view_of(request, access.photo, exposure))
    album = access.album
    if album is None:  # link_access answers 404 for an album link without its album
        raise NOT_FOUND("no such link")
    page = await album_photos(request, album, page_query(request), exposure)
    summary = SharedAlbumSummary(
        title=album.title, reveal_at=album.reveal_at, photo_count=page.photo_count
    )
    return respond(SharedAlbum(**dict(page), album=summary))
