"""Upload grants: single and batch, quota-checked, each only once its intent is durable.

An intent is recorded with its announcement (`upload.requested`) in the outbox, in one
transaction; the announcement is sent at once, or, if the broker is away, by the outbox
relay a few seconds later. So grants keep working through a broker outage."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from services.gateway.context import RESOURCES, TRACE_ID
from services.gateway.inputs import display_name, field_errors, json_body, parsed_body
from services.gateway.photos import owned_photo, photo_view
from services.gateway.problems import ApiError
from services.gateway.security import authenticate
from shared.events import Envelope, UploadCompleted, UploadRequested
from shared.keys import original_key
from shared.logging import get_logger, log_context
from shared.resources import Resources
from shared.settings import ALLOWED_CONTENT_TYPES, Settings
from shared.store import NewPhoto, PhotoStatus

log = get_logger(__name__)
routes = web.RouteTableDef()

MAX_BATCH = 50


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    filename: str = Field(min_length=1, max_length=1024)
    content_type: str = Field(min_length=1, max_length=100)
    size: StrictInt = Field(gt=0)
    method: Literal["POST", "PUT"] = "POST"
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    keep_location: bool = False


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[UploadRequest] = Field(min_length=1, max_length=MAX_BATCH)


def item_problem(item: UploadRequest, max_bytes: int) -> ApiError | None:
    if item.content_type.lower() not in ALLOWED_CONTENT_TYPES:
        return ApiError(
            415,
            "unsupported_type",
            f"{item.content_type!r} is not an accepted image type",
            accepted=list(ALLOWED_CONTENT_TYPES),
        )
    if item.size > max_bytes:
        return ApiError(
            413,
            "too_large",
            f"{item.size} bytes exceeds the limit of {max_bytes} bytes",
            limit=max_bytes,
        )
    return None


def quota_check(
    res: Resources, items: list[UploadRequest]
) -> Callable[[tuple[int, int, int]], None]:
    """A check of the owner's usage against the quotas, run by Store.reserve while it holds
    the owner's lock, so concurrent requests cannot overrun a quota."""
    return partial(_check_quota, res.settings, items)


def _check_quota(s: Settings, items: list[UploadRequest], usage: tuple[int, int, int]) -> None:
    if not (s.quota_bytes or s.quota_photos or s.max_pending_uploads):
        return
    kept, used, pending = usage
    wanted = sum(i.size for i in items)
    if s.max_pending_uploads and pending + len(items) > s.max_pending_uploads:
        raise ApiError(
            409,
            "too_many_pending",
            f"{pending} uploads are still pending; finish them or let them lapse first",
            limit=s.max_pending_uploads,
        )
    if s.quota_photos and kept + len(items) > s.quota_photos:
        raise ApiError(
            409,
            "photo_quota_exceeded",
            f"the quota of {s.quota_photos} photos would be exceeded ({kept} kept)",
            limit=s.quota_photos,
        )
    if s.quota_bytes and used + wanted > s.quota_bytes:
        raise ApiError(
            413,
            "byte_quota_exceeded",
            f"{wanted} more bytes would exceed the quota of {s.quota_bytes} ({used} used)",
            limit=s.quota_bytes,
        )


@routes.post("/v1/uploads")
async def create_upload(request: web.Request) -> web.Response:
    owner = (await authenticate(request, "photos:write")).user_id
    item = await parsed_body(request, UploadRequest)
    res = request.app[RESOURCES]
    if problem := item_problem(item, res.settings.max_upload_bytes):
        raise problem
    with log_context(owner_id=owner):
        if duplicate := await _duplicate(request, res, owner, item):
            return web.json_response(duplicate)
        [grant] = await grant_all(res, owner, [item], request[TRACE_ID])
    return web.json_response(grant, status=201)


@routes.post("/v1/uploads:batch")
async def create_batch(request: web.Request) -> web.Response:
    owner = (await authenticate(request, "photos:write")).user_id
    batch = _valid_batch(await json_body(request), request.app[RESOURCES].settings.max_upload_bytes)
    res = request.app[RESOURCES]
    with log_context(owner_id=owner):
        answers: list[dict[str, Any] | None] = [
            await _duplicate(request, res, owner, i) for i in batch
        ]
        new = [item for item, answer in zip(batch, answers, strict=True) if answer is None]
        grants = iter(await grant_all(res, owner, new, request[TRACE_ID]))
    items = [answer if answer is not None else next(grants) for answer in answers]
    return web.json_response({"items": items}, status=201)


def _valid_batch(body: Any, max_bytes: int) -> list[UploadRequest]:
    """Every item valid, or a 422 listing each failing item by index."""
    try:
        items = BatchRequest.model_validate(body).items
    except ValidationError as exc:
        located: list[dict[str, Any]] = []
        for error, raw in zip(field_errors(exc), exc.errors(), strict=True):
            loc = raw["loc"]
            index = {"index": loc[1]} if loc[:1] == ("items",) and len(loc) > 1 else {}
            located.append({**error, **index})
        raise ApiError(422, "invalid_request", "the batch is not valid", errors=located) from exc
    errors = [
        {"index": i, "field": f"items.{i}", "code": p.code, "message": p.detail}
        for i, item in enumerate(items)
        if (p := item_problem(item, max_bytes))
    ]
    if errors:
        raise ApiError(422, "invalid_request", "some batch items are not accepted", errors=errors)
    return items


async def _duplicate(
    request: web.Request, res: Resources, owner: str, item: UploadRequest
) -> dict[str, Any] | None:
    """The owner's ready photo with the same bytes, answered instead of a new grant."""
    if item.sha256 is None:
        return None
    photo = await res.store.ready_with_sha256(owner, item.sha256)
    if photo is None:
        return None
    return {"photo_id": photo.id, "duplicate": True, "photo": await photo_view(request, photo)}


def _intent(owner: str, item: UploadRequest, trace_id: str, ttl: int) -> NewPhoto:
    photo_id = uuid.uuid4().hex
    return NewPhoto(
        id=photo_id,
        owner_id=owner,
        object_key=original_key(owner, photo_id),
        filename=display_name(item.filename),
        declared_type=item.content_type.lower(),
        declared_size=item.size,
        upload_expires_at=datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=ttl),
        trace_id=trace_id,
        keep_location=item.keep_location,
    )


async def grant_all(
    res: Resources, owner: str, items: list[UploadRequest], trace_id: str
) -> list[dict[str, Any]]:
    """Sign every upload, then record every intent and its announcement within the
    owner's quotas (all or none), then send the announcements."""
    ttl = res.settings.upload_url_ttl
    intents = [_intent(owner, item, trace_id, ttl) for item in items]
    pairs = list(zip(intents, [item.method for item in items], strict=True))
    uploads = await asyncio.gather(*(_presign(res, i, m) for i, m in pairs))
    # Read-your-writes for the client; the ingest worker records the same intent from
    # the event (insert-if-absent).
    announce = [Envelope.wrap(_requested(res, i, m), trace_id=trace_id) for i, m in pairs]
    await res.store.reserve(owner, intents, quota_check(res, items), announce)
    await res.outbox.try_send(*announce)
    log.info("uploads granted", count=len(intents))
    return [
        {"photo_id": i.id, "upload": u, "expires_at": i.upload_expires_at.isoformat()}
        for i, u in zip(intents, uploads, strict=True)
    ]


def _requested(res: Resources, intent: NewPhoto, method: Literal["POST", "PUT"]) -> UploadRequested:
    return UploadRequested(
        photo_id=intent.id,
        owner_id=intent.owner_id,
        bucket=res.storage.bucket,
        object_key=intent.object_key,
        content_type=intent.declared_type,
        size=intent.declared_size,
        filename=intent.filename,
        method=method,
        expires_at=intent.upload_expires_at,
        keep_location=intent.keep_location,
    )


async def _presign(res: Resources, intent: NewPhoto, method: str) -> dict[str, Any]:
    key, ttl = intent.object_key, res.settings.upload_url_ttl
    content_type, size = intent.declared_type, intent.declared_size
    if method == "POST":
        post = await res.storage.presign_post(
            key, content_type=content_type, size=size, expires_in=ttl
        )
        return {"method": "POST", "url": post.url, "fields": post.fields}
    url, headers = await res.storage.presign_put(
        key, content_type=content_type, size=size, expires_in=ttl
    )
    return {"method": "PUT", "url": url, "headers": headers}


@routes.post("/v1/uploads/{photo_id}/complete")
async def complete_upload(request: web.Request) -> web.Response:
    """The client says its upload finished. Only a hint to verify sooner: the ingest
    worker trusts nothing in it and checks the stored object as always."""
    owner = (await authenticate(request, "photos:write")).user_id
    res = request.app[RESOURCES]
    photo = await owned_photo(res, owner, request.match_info["photo_id"])
    if photo.status is PhotoStatus.PENDING:
        hint = UploadCompleted(photo_id=photo.id, owner_id=owner, object_key=photo.object_key)
        envelope = Envelope.wrap(hint, trace_id=request[TRACE_ID])
        await res.outbox.enqueue(envelope)
        await res.outbox.try_send(envelope)
        return web.json_response({"id": photo.id, "status": photo.status.value}, status=202)
    return web.json_response({"id": photo.id, "status": photo.status.value})
