"""The shapes of albums, members and share links: one pydantic model per request and
answer, like `models.py` (the OpenAPI document is generated from them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StrictBool, model_validator
from pydantic.json_schema import SkipJsonSchema

from services.gateway.models import (
    CURSOR_PATTERN,
    AlbumId,
    AnyPhotoView,
    DateTime,
    PhotoId,
    _Shape,
)
from shared.text import HIDDEN_IN_IDS, MAX_USER_ID, normal_user_id, user_id_problem

Cursor = Annotated[str, Field(pattern=CURSOR_PATTERN)]


def _in_utc(value: datetime) -> datetime:
    # Stored as UTC (SQLite keeps no offset); an offset at the edge of the calendar
    # would overflow it.
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("out of range") from exc


def _text(value: object) -> object:
    # JSON carries a date-time as a string; pydantic alone also takes unix times (0).
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 date-time string")
    return value


Moment = Annotated[DateTime, AfterValidator(_in_utc), BeforeValidator(_text)]


# Whoever the token's `sub` names; what the API keys' X-Darkroom-User accepts.
def _user_id(value: str) -> str:
    """The same user as a token's `sub` names: NFC, nothing invisible."""
    if problem := user_id_problem(value):
        raise ValueError(f"not a user id: {problem}")
    return normal_user_id(value)


# shared.text's rule for user ids, whole: what the pattern lets through, the validator
# does too (it also normalises), so generated requests that keep to the document pass.
# Surrogates are left out: no text decoded from UTF-8 holds one, and regex engines refuse
# them in a pattern.
_HIDDEN = "".join(
    f"{chr(first)}-{chr(last)}" for first, last in HIDDEN_IN_IDS if not 0xD800 <= first <= 0xDFFF
)
UserId = Annotated[
    str,
    Field(min_length=1, max_length=MAX_USER_ID, pattern=f"^[^{_HIDDEN}/]+$"),
    AfterValidator(_user_id),
]
MemberRole = Literal["contributor", "viewer"]
Title = Annotated[str, Field(min_length=1, max_length=200)]

# --- requests ---


class AlbumRequest(_Shape):
    title: Title
    reveal_at: Moment | None = Field(
        None, description="photos stay sealed until then; null: never sealed"
    )


class AlbumChange(_Shape):
    """Only the members sent change; neither may be null."""

    title: Title | SkipJsonSchema[None] = None
    reveal_at: Moment | SkipJsonSchema[None] = Field(
        None, description="a time now or past develops the album at once"
    )

    @model_validator(mode="after")
    def _no_nulls(self) -> AlbumChange:
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} may be left out but not null")
        return self


class MemberRequest(_Shape):
    role: MemberRole


class LinkRequest(_Shape):
    expires_at: Moment | None = None
    password: str | None = Field(None, min_length=1, max_length=1024)
    allow_download: StrictBool = Field(False, description="the original too, not only renditions")


class PageQuery(_Shape):
    limit: int = Field(50, ge=1, le=100)
    cursor: Cursor | None = Field(None, description="`next_cursor` of the previous page")


class AlbumPath(_Shape):
    album_id: AlbumId


class MemberPath(_Shape):
    album_id: AlbumId
    user_id: UserId


class AlbumPhotoPath(_Shape):
    album_id: AlbumId
    photo_id: PhotoId


class AlbumLinkPath(_Shape):
    album_id: AlbumId
    link_id: AlbumId


class PhotoLinkPath(_Shape):
    photo_id: PhotoId
    link_id: AlbumId


class SharedPath(_Shape):
    token: str = Field(pattern=r"^[A-Za-z0-9_-]{43}$", description="the link's token")


class SharedHeaders(_Shape):
    password: str | None = Field(
        None,
        alias="X-Darkroom-Link-Password",
        max_length=1024,
        description="the link's password, when it has one",
    )


# --- answers ---


class Album(_Shape):
    id: AlbumId
    title: str
    owner_id: str
    reveal_at: datetime | None
    sealed: bool = Field(description="true while reveal_at is in the future")
    role: Literal["owner", "contributor", "viewer"] = Field(description="the caller's")
    photo_count: int = Field(description="ready photos in the album")
    created_at: datetime


class AlbumPage(_Shape):
    items: list[Album] = Field(description="newest first")
    next_cursor: Cursor | None = Field(description="null on the last page")


class AlbumPhotos(_Shape):
    sealed: bool
    reveal_at: datetime | None
    photo_count: int
    items: list[AnyPhotoView] = Field(description="newest first; empty while sealed")
    next_cursor: Cursor | None


class SharedAlbumSummary(_Shape):
    title: str
    reveal_at: datetime | None
    photo_count: int


class SharedAlbum(AlbumPhotos):
    album: SharedAlbumSummary


class MemberView(_Shape):
    user_id: str
    role: Literal["owner", "contributor", "viewer"]
    added_at: datetime


class MemberList(_Shape):
    items: list[MemberView] = Field(description="the owner first")


class LinkView(_Shape):
    id: AlbumId
    expires_at: datetime | None
    has_password: bool
    allow_download: bool
    created_at: datetime


class NewLink(_Shape):
    id: AlbumId
    token: str = Field(description="shown once; only its hash is stored")
    url: str = Field(description="GET it without an account")
    expires_at: datetime | None
    has_password: bool
    allow_download: bool


class LinkList(_Shape):
    items: list[LinkView]
