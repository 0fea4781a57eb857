"""Who may do what: the one place the gateway decides access to albums, photos and links.

Every route asks here first. The rule, in words:

- An album exists only for its owner and members: anyone else gets 404, as for a
  missing one. Inside, the role decides (`ALLOWED`); a role too weak is 403.
- A photo is its uploader's. Members of its album may see and download it too.
- A photo in an album whose `reveal_at` is still ahead is sealed, for everyone: its
  views carry no more than `SealedPhotoView`, and nothing is signed for it (409).
- A share link is its token: unknown or revoked is 404, expired 410, a password is
  checked (wrong ones limited per link), and it sees only what it links to.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType

from aiohttp import web
from pydantic import ValidationError

from services.gateway.album_models import AlbumPath, SharedHeaders, SharedPath
from services.gateway.context import LIMITER, PASSWORDS, RESOURCES
from services.gateway.inputs import validation_problem
from services.gateway.models import PhotoPath
from services.gateway.problems import (
    INSUFFICIENT_ROLE,
    LINK_EXPIRED,
    NOT_FOUND,
    PASSWORD_REQUIRED,
    RATE_LIMITED,
    SEALED,
    WRONG_PASSWORD,
)
from shared.albums import AlbumRecord, Role
from shared.links import LinkRecord
from shared.store import PhotoRecord, PhotoStatus

PASSWORD_HEADER = "X-Darkroom-Link-Password"  # noqa: S105 (a header's name)


class Act(StrEnum):
    READ = "read"  # the album, its members, its photos
    UPLOAD = "upload"  # photos into it
    MANAGE = "manage"  # change or delete it, members, links, take photos out


_R = Role
# The whole of what roles allow. Leaving an album is the one thing a member does to
# someone (themselves) without MANAGE: see members.py.
ALLOWED: Mapping[Act, frozenset[Role]] = MappingProxyType(
    {
        Act.READ: frozenset({_R.OWNER, _R.CONTRIBUTOR, _R.VIEWER}),
        Act.UPLOAD: frozenset({_R.OWNER, _R.CONTRIBUTOR}),
        Act.MANAGE: frozenset({_R.OWNER}),
    }
)


def sealed(reveal_at: datetime | None, now: datetime | None = None) -> bool:
    return reveal_at is not None and reveal_at > (now or datetime.now(UTC))


@dataclass(frozen=True)
class AlbumAccess:
    album: AlbumRecord
    role: Role


@dataclass(frozen=True)
class PhotoAccess:
    photo: PhotoRecord
    album: AlbumRecord | None  # the album it is in, if the album still exists
    uploader: bool  # the caller uploaded it

    @property
    def sealed(self) -> bool:
        return self.album is not None and self.album.sealed()


@dataclass(frozen=True)
class LinkAccess:
    link: LinkRecord
    album: AlbumRecord | None  # an album link's album, or a photo link's photo's album
    photo: PhotoRecord | None  # a photo link's photo


def _valid(model: type[AlbumPath | PhotoPath | SharedPath], **value: str) -> None:
    try:
        model.model_validate(value)
    except ValidationError as exc:
        raise NOT_FOUND("no such album, photo or link") from exc


async def album_access(request: web.Request, user: str, album_id: str, act: Act) -> AlbumAccess:
    """The album and the caller's role in it, if that role may `act`."""
    _valid(AlbumPath, album_id=album_id)
    found = await request.app[RESOURCES].albums.role_of(album_id, user)
    album, role = found if found is not None else (None, None)
    if album is None or role is None:
        # Outsiders cannot tell an album from a missing one.
        raise NOT_FOUND("no such album")
    if role not in ALLOWED[act]:
        raise INSUFFICIENT_ROLE(f"a {role.value} of this album may not {act.value} it")
    return AlbumAccess(album, role)


async def photo_access(
    request: web.Request, user: str, photo_id: str, *, own: bool = False, download: bool = False
) -> PhotoAccess:
    """The photo, if the caller may see it (`own`: act as its uploader; `download`: have
    its bytes signed, which a sealed photo never is)."""
    _valid(PhotoPath, photo_id=photo_id)
    res = request.app[RESOURCES]
    photo = await res.store.get(photo_id)
    if photo is None or photo.status is PhotoStatus.DELETED:
        raise NOT_FOUND("no such photo")
    album: AlbumRecord | None = None
    role: Role | None = None
    if photo.album_id is not None:
        found = await res.albums.role_of(photo.album_id, user)
        if found is not None:
            album, role = found
    uploader = photo.owner_id == user
    if not uploader and (role is None or role not in ALLOWED[Act.READ]):
        # Someone else's photo is indistinguishable from a missing one.
        raise NOT_FOUND("no such photo")
    if own and not uploader:
        raise INSUFFICIENT_ROLE("only the photo's uploader may do this")
    access = PhotoAccess(photo, album, uploader)
    if download and access.sealed:
        raise SEALED("the photo's album is not revealed yet")
    return access


async def link_access(request: web.Request, token: str) -> LinkAccess:
    """What the share link `token` opens, once its expiry and password hold."""
    _valid(SharedPath, token=token)
    password = _password(request)
    res = request.app[RESOURCES]
    link = await res.links.by_token(token)
    if link is None:
        raise NOT_FOUND("no such link")
    if link.expired():
        raise LINK_EXPIRED("the link has expired")
    if link.password_hash is not None:
        await _check_password(request, link, link.password_hash, password)
    photo: PhotoRecord | None = None
    album_id = link.album_id
    if link.photo_id is not None:
        photo = await res.store.get(link.photo_id)
        if photo is None or photo.status is PhotoStatus.DELETED:
            raise NOT_FOUND("no such link")
        album_id = photo.album_id
    album = await res.albums.get(album_id) if album_id is not None else None
    if link.album_id is not None and album is None:
        raise NOT_FOUND("no such link")
    return LinkAccess(link, album, photo)


def _password(request: web.Request) -> str | None:
    """The password header, refused when it cannot be one even if the link has none."""
    given = request.headers.get(PASSWORD_HEADER)
    try:
        return SharedHeaders.model_validate({PASSWORD_HEADER: given}).password
    except ValidationError as exc:
        raise validation_problem(exc, what="headers") from exc


async def _check_password(
    request: web.Request, link: LinkRecord, hashed: str, given: str | None
) -> None:
    if not given:
        raise PASSWORD_REQUIRED(f"send the link's password in {PASSWORD_HEADER}")
    per_minute = request.app[RESOURCES].settings.link_password_attempts
    key, limiter = f"link-password:{link.id}", request.app[LIMITER]
    passwords = request.app[PASSWORDS]
    async with passwords.turn(link.id):
        if per_minute:
            # Checked before the password, so guessing stops while the link is limited.
            decision = await limiter.peek(key, per_minute)
            if not decision.allowed:
                raise _limited(decision.retry_after, per_minute)
        if not await passwords.matches(hashed, given):
            if per_minute:
                await limiter.hit(key, per_minute)
            raise WRONG_PASSWORD("that is not the link's password")


def _limited(retry_after: float, per_minute: int) -> Exception:
    wait = max(1, math.ceil(retry_after))
    return RATE_LIMITED(
        f"too many wrong passwords for this link; retry in {wait} s",
        headers={"Retry-After": str(wait)},
        limit_per_minute=per_minute,
    )
