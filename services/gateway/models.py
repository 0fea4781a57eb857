"""Every shape the API speaks: one pydantic model per request and per response.

Handlers build these and `respond` serialises them; the OpenAPI document is generated
from the same classes, so the document cannot drift from what the server sends.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal, get_args

from aiohttp import web
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StrictBool,
)
from pydantic.json_schema import SkipJsonSchema

from shared.facts import PhotoFacts
from shared.settings import ALLOWED_CONTENT_TYPES

MAX_BATCH = 50
# uuid4().hex: anything else cannot name a photo.
PHOTO_ID_PATTERN = r"^[0-9a-f]{32}$"
# A listing position: 24 bytes (creation time and photo id) in unpadded base64url.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{32}$"
Listable = Literal["pending", "verified", "ready", "rejected"]
LISTABLE: tuple[str, ...] = get_args(Listable)
_ONE_STATUS = "|".join(LISTABLE)
STATUS_LIST_PATTERN = rf"^({_ONE_STATUS})(,({_ONE_STATUS}))*$"

PhotoId = Annotated[str, Field(pattern=PHOTO_ID_PATTERN, examples=["0" * 32])]
# Albums and share links are named the same way as photos.
AlbumId = Annotated[str, Field(pattern=PHOTO_ID_PATTERN, examples=["0" * 32])]
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


def _whole_number(value: object) -> object:
    # JSON Schema's integer includes 1.0 and excludes true and "1"; pydantic's lax int
    # takes "1", its strict one refuses 1.0. Hold to what the document says.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a whole number")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("must be a whole number")
    return int(value)


def _date_time(value: object) -> object:
    # The document says RFC 3339 (`format: date-time`); pydantic alone also takes unix
    # times ("0.5") and dates without seconds.
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with an offset")
    return value


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]
# S3 numbers a multipart upload's parts from 1 to 10,000.
PartNumber = Annotated[int, Field(ge=1, le=10_000), BeforeValidator(_whole_number)]
DateTime = Annotated[AwareDatetime, BeforeValidator(_date_time)]


class _Shape(BaseModel):
    # additionalProperties: false in the document, and refused on input; every field
    # of an answer is always sent, so the document marks them all required.
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)


def respond(model: BaseModel, status: int = 200) -> web.Response:
    """A model as the JSON answer, serialised by pydantic straight to bytes."""
    return web.Response(
        body=model.__pydantic_serializer__.to_json(model),
        status=status,
        content_type="application/json",
    )


# --- requests ---


class UploadRequest(_Shape):
    filename: str = Field(min_length=1, max_length=1024, description="for display only")
    # The server accepts exactly these (an unknown one is a 415 `unsupported_type`).
    content_type: str = Field(json_schema_extra={"enum": list(ALLOWED_CONTENT_TYPES)})
    size: WholeNumber = Field(gt=0, description="exact size in bytes; storage enforces it")
    method: Literal["POST", "PUT"] = "POST"
    sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="enables the duplicate answer"
    )
    keep_location: StrictBool = Field(False, description="keep GPS in the recorded facts")
    album_id: AlbumId | None = Field(
        None, description="upload into this album (its owner and contributors may)"
    )
    multipart: StrictBool = Field(
        False,
        description="upload in parts (S3 multipart); any size over the multipart threshold "
        "is granted in parts anyway, and `method` is then ignored",
    )


class BatchRequest(_Shape):
    items: list[UploadRequest] = Field(min_length=1, max_length=MAX_BATCH)


class ListQuery(_Shape):
    limit: int = Field(50, ge=1, le=100)
    cursor: str | None = Field(
        None, pattern=CURSOR_PATTERN, description="`next_cursor` of the previous page"
    )
    status: str | None = Field(
        None, pattern=STATUS_LIST_PATTERN, description="comma-separated statuses"
    )
    taken_after: DateTime | None = Field(None, description="inclusive")
    taken_before: DateTime | None = Field(None, description="exclusive")
    album_id: AlbumId | None = Field(None, description="only the caller's photos in this album")


class ListHeaders(_Shape):
    if_none_match: str | None = Field(
        None,
        alias="If-None-Match",
        description="the `ETag` of a page already held: 304 if it is still the page",
    )


class PhotoPath(_Shape):
    photo_id: PhotoId


class DownloadPath(_Shape):
    photo_id: PhotoId
    rendition: str = Field(
        min_length=1, description="`original` or a rendition name such as `thumb`"
    )


class DownloadQuery(_Shape):
    inline: bool = Field(
        False,
        description="the original with `Content-Disposition: inline` (shown by a browser) "
        "rather than `attachment` (saved); renditions are always inline",
    )


# --- answers ---


class Link(_Shape):
    url: str = Field(description="presigned; the same URL for a whole signing window")


class RenditionLink(Link):
    width: int
    height: int
    content_type: str


class PhotoView(_Shape):
    id: PhotoId
    owner_id: str = Field(description="who uploaded it")
    album_id: AlbumId | None = Field(description="the album it was uploaded into")
    sealed: Literal[False] = False
    status: Listable
    reason: str | None = Field(description="why it was rejected")
    reason_detail: str | None
    filename: str
    content_type: str
    size: int
    width: int | None
    height: int | None
    facts: PhotoFacts | None = Field(description="what rendering learnt; null until ready")
    created_at: datetime
    renditions: dict[str, RenditionLink] = Field(description="by name, once ready")
    original: Link | None = Field(description="once ready")


class SealedPhotoView(_Shape):
    """A photo in an album not revealed yet: this is all anyone, its uploader included,
    is shown until `reveal_at`."""

    id: PhotoId
    album_id: AlbumId
    owner_id: str
    status: Listable
    sealed: Literal[True] = True
    reveal_at: datetime
    created_at: datetime


AnyPhotoView = PhotoView | SealedPhotoView


class AnyPhoto(RootModel[AnyPhotoView]):
    """A photo's view: sealed while its album is, else the full view."""


class PostUpload(_Shape):
    """A browser-style form POST: send `fields`, then the file as the last field."""

    method: Literal["POST"]
    url: str
    fields: dict[str, str]


class PutUpload(_Shape):
    """A PUT of the bytes with exactly these headers."""

    method: Literal["PUT"]
    url: str
    headers: dict[str, str]


class MultipartUpload(_Shape):
    """Upload in parts: URLs from `POST /v1/uploads/{photo_id}/parts`, then `complete`
    with every part's ETag. Every part but the last is exactly `part_size` bytes."""

    method: Literal["MULTIPART"]
    upload_id: str
    part_size: int
    part_count: int


class Grant(_Shape):
    photo_id: PhotoId
    upload: Annotated[PostUpload | PutUpload | MultipartUpload, Field(discriminator="method")]
    expires_at: datetime = Field(description="when the upload URL lapses")


class Duplicate(_Shape):
    """The caller already has a ready photo with these bytes (same sha256)."""

    photo_id: PhotoId
    duplicate: Literal[True] = True
    photo: AnyPhotoView


class BatchResult(_Shape):
    items: list[Grant | Duplicate] = Field(description="in request order")


class PhotoPage(_Shape):
    items: list[AnyPhotoView] = Field(description="newest first")
    next_cursor: Annotated[str, Field(pattern=CURSOR_PATTERN)] | None = Field(
        description="null on the last page"
    )


class Completion(_Shape):
    id: PhotoId
    status: Listable


class AccountDeletion(_Shape):
    status: Literal["deleting"] = "deleting"
    photos: int = Field(description="photos taken out of the API")


class Preferences(_Shape):
    """The caller's preferences: the request and the answer of /v1/me/preferences."""

    email_notifications: StrictBool = Field(
        description="mail from Darkroom (welcome, album invitations and reveals, disabled "
        "webhook endpoints) to the address the user's token claims"
    )


class _Sparse(_Shape):
    # Problems leave out the members that do not apply (they are sent without nulls).
    model_config = ConfigDict(json_schema_serialization_defaults_required=False)


class FieldError(_Sparse):
    field: str
    message: str
    # Batches name the failing item and, for a refused item, its problem code.
    index: int | SkipJsonSchema[None] = None
    code: str | SkipJsonSchema[None] = None


class Problem(_Sparse):
    """RFC 9457 problem details; `code` is the machine-readable part."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[FieldError] | SkipJsonSchema[None] = None
    accepted: list[str] | SkipJsonSchema[None] = Field(None, description="accepted types")
    limit: int | SkipJsonSchema[None] = Field(None, description="the limit exceeded")
    limit_per_minute: int | SkipJsonSchema[None] = None
