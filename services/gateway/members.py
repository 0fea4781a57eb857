"""An album's members: the owner adds them with a role; they leave, or the owner removes
them, and their access ends with the next request (every route asks the database)."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from services.gateway.access import Act, album_access
from services.gateway.album_models import (
    AlbumPath,
    MemberList,
    MemberPath,
    MemberRequest,
    MemberView,
)
from services.gateway.context import RESOURCES, TRACE_ID
from services.gateway.inputs import parsed_body, validation_problem
from services.gateway.models import respond
from services.gateway.problems import (
    INSUFFICIENT_ROLE,
    INVALID,
    IS_OWNER,
    MALFORMED_JSON,
    NOT_FOUND,
)
from services.gateway.registry import Answer, Routes
from services.gateway.security import authenticate
from shared.albums import Role
from shared.events import AlbumMemberAdded, Envelope
from shared.logging import get_logger

log = get_logger(__name__)
api = Routes("albums")


@api.route(
    "PUT",
    "/v1/albums/{album_id}/members/{user_id}",
    "putAlbumMember",
    "Add a member with a role, or change their role (owner)",
    {200: Answer("the member", MemberView)},
    scope="photos:write",
    params=MemberPath,
    body=MemberRequest,
    faults=(MALFORMED_JSON, INVALID, NOT_FOUND, INSUFFICIENT_ROLE, IS_OWNER),
)
async def put_member(request: web.Request) -> web.Response:
    """Contributors may upload into the album, viewers only look. A new member is
    announced with album.member_added."""
    user = (await authenticate(request, "photos:write")).user_id
    access = await album_access(request, user, request.match_info["album_id"], Act.MANAGE)
    try:
        target = MemberPath.model_validate(dict(request.match_info)).user_id
    except ValidationError as exc:
        raise validation_problem(exc, what="path") from exc
    role = Role((await parsed_body(request, MemberRequest)).role)
    if target == access.album.owner_id:
        raise IS_OWNER("the owner's role cannot change")
    event = AlbumMemberAdded(
        album_id=access.album.id, owner_id=access.album.owner_id, user_id=target, role=role.value
    )
    envelope = Envelope.wrap(event, trace_id=request[TRACE_ID])
    res = request.app[RESOURCES]
    member, added = await res.albums.put_member(access.album.id, target, role, envelope)
    if added:
        await res.outbox.publish_or_defer(envelope)
    log.info("album member put", album_id=access.album.id, role=role.value)
    return respond(
        MemberView(user_id=member.user_id, role=member.role.value, added_at=member.added_at)
    )


@api.route(
    "GET",
    "/v1/albums/{album_id}/members",
    "listAlbumMembers",
    "The album's owner and members",
    {200: Answer("the members", MemberList)},
    scope="photos:read",
    params=AlbumPath,
    faults=(NOT_FOUND,),
)
async def list_members(request: web.Request) -> web.Response:
    user = (await authenticate(request, "photos:read")).user_id
    access = await album_access(request, user, request.match_info["album_id"], Act.READ)
    album = access.album
    members = await request.app[RESOURCES].albums.members(album.id)
    owner = MemberView(user_id=album.owner_id, role="owner", added_at=album.created_at)
    items = [owner] + [
        MemberView(user_id=m.user_id, role=m.role.value, added_at=m.added_at) for m in members
    ]
    return respond(MemberList(items=items))


@api.route(
    "DELETE",
    "/v1/albums/{album_id}/members/{user_id}",
    "removeAlbumMember",
    "Remove a member (owner), or leave (the member)",
    {204: Answer("removed; their access ended")},
    scope="photos:write",
    params=MemberPath,
    faults=(NOT_FOUND, INSUFFICIENT_ROLE, IS_OWNER),
)
async def remove_member(request: web.Request) -> web.Response:
    """Photos they uploaded stay in the album and stay theirs; uploads granted but not yet
    made leave it."""
    user = (await authenticate(request, "photos:write")).user_id
    try:
        target = MemberPath.model_validate(dict(request.match_info)).user_id
    except ValidationError as exc:  # no user has such an id, so no member does
        raise NOT_FOUND("no such member") from exc
    # Leaving needs only membership; removing someone else needs the owner.
    act = Act.READ if target == user else Act.MANAGE
    access = await album_access(request, user, request.match_info["album_id"], act)
    if target == access.album.owner_id:
        raise IS_OWNER("the owner cannot leave; delete the album instead")
    if not await request.app[RESOURCES].albums.remove_member(access.album.id, target):
        raise NOT_FOUND("no such member")
    log.info("album member removed", album_id=access.album.id, left=target == user)
    return web.Response(status=204)
