"""Reading, listing and deleting photos, and the stable download links."""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import re
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from services.gateway.context import DOWNLOADS, RESOURCES, TRACE_ID
from services.gateway.inputs import parsed_query
from services.gateway.problems import ApiError
from services.gateway.security import authenticate
from shared.events import AccountDeleted, Envelope, PhotoDeleted, announcement
from shared.logging import get_logger, log_context
from shared.resources import Resources
from shared.store import PhotoRecord, PhotoStatus

log = get_logger(__name__)
routes = web.RouteTableDef()

LISTABLE = ("pending", "verified", "ready", "rejected")


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(50, ge=1, le=100)
    cursor: str | None = None
    status: str | None = Field(None, description="comma-separated statuses")
    taken_after: AwareDatetime | None = None
    taken_before: AwareDatetime | None = None
    album_id: str | None = Field(None, max_length=64, description="reserved: albums come later")

    @field_validator("status")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is not None and not set(value.split(",")) <= set(LISTABLE):
            raise ValueError(f"each status must be one of {', '.join(LISTABLE)}")
        return value


# Photo ids are 32 hex digits (uuid4().hex); anything else cannot name a photo.
_PHOTO_ID = re.compile(r"[0-9a-f]{32}")


def encode_cursor(photo: PhotoRecord) -> str:
    raw = json.dumps([photo.created_at.isoformat(), photo.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    invalid = ApiError(400, "invalid_cursor", "the cursor is not one this API issued")
    if len(cursor) > 200:
        raise invalid
    try:
        created, photo_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        when = datetime.fromisoformat(created)
    except (ValueError, TypeError, RecursionError, binascii.Error) as exc:
        raise invalid from exc
    if not (
        isinstance(photo_id, str)
        and _PHOTO_ID.fullmatch(photo_id)
        and when.tzinfo
        and 1900 < when.year < 9000
    ):
        raise invalid
    return when, photo_id


@routes.get("/v1/photos")
async def list_photos(request: web.Request) -> web.Response:
    owner = (await authenticate(request, "photos:read")).user_id
    query = parsed_query(request.query, ListQuery)
    res = request.app[RESOURCES]
    if query.album_id is not None:
        # Albums do not exist yet, so no photo is in one.
        return web.json_response({"items": [], "next_cursor": None})
    page = await res.store.owner_photos(
        owner,
        limit=query.limit + 1,
        before=decode_cursor(query.cursor) if query.cursor else None,
        statuses=[PhotoStatus(s) for s in query.status.split(",")] if query.status else (),
        taken_from=query.taken_after,
        taken_to=query.taken_before,
    )
    more = len(page) > query.limit
    page = page[: query.limit]
    return web.json_response(
        {
            "items": [await photo_view(request, p) for p in page],
            "next_cursor": encode_cursor(page[-1]) if more else None,
        }
    )


@routes.get("/v1/photos/{photo_id}")
async def get_photo(request: web.Request) -> web.Response:
    owner = (await authenticate(request, "photos:read")).user_id
    res = request.app[RESOURCES]
    photo = await owned_photo(res, owner, request.match_info["photo_id"])
    return web.json_response(await photo_view(request, photo))


@routes.get("/v1/photos/{photo_id}/{rendition}")
async def follow_download(request: web.Request) -> web.Response:
    """A stable link for clients: 302 to the current presigned URL."""
    owner = (await authenticate(request, "photos:read")).user_id
    res = request.app[RESOURCES]
    photo = await owned_photo(res, owner, request.match_info["photo_id"])
    name = request.match_info["rendition"]
    if photo.status is not PhotoStatus.READY:
        raise ApiError(409, "not_ready", f"the photo is {photo.status.value}, not ready")
    if name == "original":
        key, content_type = photo.object_key, photo.content_type
    else:
        found = [r for r in await res.store.renditions(photo.id) if r.name == name]
        if not found:
            raise ApiError(404, "not_found", f"the photo has no rendition {name!r}")
        key, content_type = found[0].object_key, found[0].content_type
    downloads = request.app[DOWNLOADS]
    url, fresh_for = await downloads.url(
        key, content_type, _download_name(photo, name, content_type)
    )
    # Cacheable only until the window turns; the URL it names stays valid longer.
    return web.Response(
        status=302, headers={"Location": url, "Cache-Control": f"private, max-age={fresh_for}"}
    )


@routes.delete("/v1/photos/{photo_id}")
async def delete_photo(request: web.Request) -> web.Response:
    owner = (await authenticate(request, "photos:delete")).user_id
    res, photo_id = request.app[RESOURCES], request.match_info["photo_id"]
    event = PhotoDeleted(photo_id=photo_id, owner_id=owner)
    envelope = announcement(event, photo_id=photo_id, trace_id=request[TRACE_ID])
    with log_context(photo_id=photo_id, owner_id=owner):
        if not await res.store.mark_deleted(photo_id, owner, envelope):
            raise ApiError(404, "not_found", "no such photo")
        await res.outbox.try_send(envelope)
        log.info("photo deleted")
    return web.Response(status=204)


@routes.delete("/v1/me")
async def delete_account(request: web.Request) -> web.Response:
    owner = (await authenticate(request, "account:delete")).user_id
    res = request.app[RESOURCES]
    envelope = Envelope.wrap(AccountDeleted(owner_id=owner), trace_id=request[TRACE_ID])
    with log_context(owner_id=owner):
        photos = await res.store.mark_owner_deleted(owner, envelope)
        await res.outbox.try_send(envelope)
        log.info("account deletion accepted", photos=photos)
    return web.json_response({"status": "deleting", "photos": photos}, status=202)


async def owned_photo(res: Resources, owner: str, photo_id: str) -> PhotoRecord:
    if not _PHOTO_ID.fullmatch(photo_id):
        raise ApiError(404, "not_found", "no such photo")
    photo = await res.store.get(photo_id)
    # Someone else's photo is indistinguishable from a missing one.
    if photo is None or photo.owner_id != owner or photo.status is PhotoStatus.DELETED:
        raise ApiError(404, "not_found", "no such photo")
    return photo


def _download_name(photo: PhotoRecord, rendition: str, content_type: str | None) -> str:
    if rendition == "original":
        return photo.filename
    stem = photo.filename.rsplit(".", 1)[0] or "photo"
    return f"{stem}-{rendition}{mimetypes.guess_extension(content_type or '') or ''}"


async def photo_view(request: web.Request, photo: PhotoRecord) -> dict[str, Any]:
    res, downloads = request.app[RESOURCES], request.app[DOWNLOADS]
    view: dict[str, Any] = {
        "id": photo.id,
        "status": photo.status.value,
        "reason": photo.reason,
        "reason_detail": photo.reason_detail,
        "filename": photo.filename,
        "content_type": photo.content_type or photo.declared_type,
        "size": photo.size if photo.size is not None else photo.declared_size,
        "width": photo.width,
        "height": photo.height,
        **_facts_view(photo),
        "created_at": photo.created_at.isoformat(),
        "renditions": {},
        "original": None,
    }
    if photo.status is PhotoStatus.READY:
        for r in await res.store.renditions(photo.id):
            name = _download_name(photo, r.name, r.content_type)
            url, _ = await downloads.url(r.object_key, r.content_type, name)
            view["renditions"][r.name] = {
                "url": url,
                "width": r.width,
                "height": r.height,
                "content_type": r.content_type,
            }
        name = _download_name(photo, "original", photo.content_type)
        url, _ = await downloads.url(photo.object_key, photo.content_type, name)
        view["original"] = {"url": url}
    return view


def _facts_view(photo: PhotoRecord) -> dict[str, Any]:
    """What rendering learnt; all null until the photo is rendered."""
    f = photo.facts
    if f is None:
        return {
            "taken_at": None,
            "taken_at_local": None,
            "placeholder": None,
            "sha256": None,
            "camera": {"make": None, "model": None, "lens": None},
            "exposure": dict.fromkeys(("exposure_time", "f_number", "iso", "focal_length")),
            "location": None,
        }
    # The location is recorded only with the owner's opt-in, and shown only to the owner.
    return {
        "taken_at": f.taken_at.isoformat() if f.taken_at else None,
        "taken_at_local": f.taken_at_local,
        "placeholder": f.placeholder,
        "sha256": f.sha256,
        "camera": f.camera.model_dump(),
        "exposure": f.exposure.model_dump(),
        "location": f.location.model_dump() if f.location else None,
    }
