"""Upload grants: single and batch, quota-checked, each recorded before it is answered.

A grant records the intent only: the photo's row, pending, with its declared type and
size. Nothing is announced; the storage notification (or the client's completion hint)
is what starts verification. So grants keep working through a broker outage."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from services.gateway.access import Act, album_access
from services.gateway.context import ACCESS, RESOURCES, TRACE_ID
from services.gateway.inputs import display_name, field_errors, json_body, new_id, parsed_body
from services.gateway.models import (
    BatchRequest,
    BatchResult,
    Duplicate,
    Grant,
    MultipartUpload,
    PostUpload,
    PutUpload,
    UploadRequest,
    respond,
)
from services.gateway.problems import (
    BODY_TOO_LARGE,
    BYTE_QUOTA,
    INSUFFICIENT_ROLE,
    INVALID,
    MALFORMED_JSON,
    NOT_FOUND,
    PHOTO_QUOTA,
    TOO_LARGE,
    TOO_MANY_PENDING,
    UNSUPPORTED_TYPE,
    ApiError,
)
from services.gateway.registry import PHOTO_ID_OF_GRANT, Answer, Routes
from services.gateway.security import authenticate
from services.gateway.views import view_of
from shared.errors import DarkroomError
from shared.keys import original_key
from shared.logging import get_logger
from shared.records import part_count
from shared.resources import Resources
from shared.settings import ALLOWED_CONTENT_TYPES, Settings
from shared.store import Check, NewPhoto, Usage
from shared.tracing import anchor

log = get_logger(__name__)
api = Routes("uploads")
Upload = PostUpload | PutUpload | MultipartUpload
QUOTAS = (TOO_MANY_PENDING, PHOTO_QUOTA, BYTE_QUOTA)
INTO_ALBUM = (NOT_FOUND, INSUFFICIENT_ROLE)  # an album the caller may not add photos to


def in_parts(item: UploadRequest, s: Settings) -> bool:
    return item.multipart or item.size > s.multipart_threshold


def item_problem(item: UploadRequest, s: Settings) -> ApiError | None:
    max_bytes = s.max_multipart_bytes if in_parts(item, s) else s.max_upload_bytes
    if item.content_type not in ALLOWED_CONTENT_TYPES:
        return UNSUPPORTED_TYPE(
            f"{item.content_type!r} is not an accepted image type",
            accepted=list(ALLOWED_CONTENT_TYPES),
        )
    if item.size > max_bytes:
        return TOO_LARGE(
            f"{item.size} bytes exceeds the limit of {max_bytes} bytes", limit=max_bytes
        )
    return None


def quota_check(res: Resources, items: list[UploadRequest]) -> Check:
    """A check of the owner's usage against the quotas, run by Store.reserve while it holds
    the owner's lock, so concurrent requests cannot overrun a quota."""
    return partial(_check_quota, res.settings, items)


def _check_quota(s: Settings, items: list[UploadRequest], usage: Usage) -> None:
    if not (s.quota_bytes or s.quota_photos or s.max_pending_uploads):
        return
    kept, used, pending = usage
    wanted = sum(i.size for i in items)
    if s.max_pending_uploads and pending + len(items) > s.max_pending_uploads:
        raise TOO_MANY_PENDING(
            f"{pending} uploads are still pending; finish them or let them lapse first",
            limit=s.max_pending_uploads,
        )
    if s.quota_photos and kept + len(items) > s.quota_photos:
        raise PHOTO_QUOTA(
            f"the quota of {s.quota_photos} photos would be exceeded ({kept} kept)",
            limit=s.quota_photos,
        )
    if s.quota_bytes and used + wanted > s.quota_bytes:
        raise BYTE_QUOTA(
            f"{wanted} more bytes would exceed the quota of {s.quota_bytes} ({used} used)",
            limit=s.quota_bytes,
        )


@api.route(
    "POST",
    "/v1/uploads",
    "createUpload",
    "Grant one upload (or answer the existing photo with that sha256)",
    {
        201: Answer("granted", Grant, photo_id=PHOTO_ID_OF_GRANT),
        200: Answer("already uploaded: the photo with these bytes", Duplicate),
    },
    scope="photos:write",
    body=UploadRequest,
    faults=(
        MALFORMED_JSON,
        BODY_TOO_LARGE,
        INVALID,
        UNSUPPORTED_TYPE,
        TOO_LARGE,
        *QUOTAS,
        *INTO_ALBUM,
    ),
)
async def create_upload(request: web.Request) -> web.Response:
    """Upload the bytes to the URL granted, before `expires_at`; the declared type and
    exact size are signed into it."""
    owner = (await authenticate(request, "photos:write")).user_id
    request[ACCESS]["owner_id"] = owner
    item = await parsed_body(request, UploadRequest)
    res = request.app[RESOURCES]
    if problem := item_problem(item, res.settings):
        raise problem
    # Each check only when it applies: a coroutine each that does nothing is 1.5 us.
    if item.album_id is not None:
        await _may_upload(request, owner, [item])
    if item.sha256 is not None and (duplicate := await _duplicate(request, res, owner, item)):
        return respond(duplicate)
    [grant] = await grant_all(res, owner, [item], request[TRACE_ID])
    request[ACCESS]["granted"] = 1
    return respond(grant, 201)


@api.route(
    "POST",
    "/v1/uploads:batch",
    "createUploads",
    "Grant up to 50 uploads, all or none, in request order",
    {
        201: Answer(
            "every item granted or answered",
            BatchResult,
            photo_id="$response.body#/items/0/photo_id",
        )
    },
    scope="photos:write",
    body=BatchRequest,
    faults=(MALFORMED_JSON, BODY_TOO_LARGE, INVALID, *QUOTAS, *INTO_ALBUM),
)
async def create_batch(request: web.Request) -> web.Response:
    """Each item is answered as the single route would; any refused item refuses the
    batch (422, one error per item)."""
    owner = (await authenticate(request, "photos:write")).user_id
    request[ACCESS]["owner_id"] = owner
    batch = _valid_batch(await json_body(request), request.app[RESOURCES].settings)
    res = request.app[RESOURCES]
    await _may_upload(request, owner, batch)
    answers = [await _duplicate(request, res, owner, i) for i in batch]
    new = [item for item, answer in zip(batch, answers, strict=True) if answer is None]
    grants = iter(await grant_all(res, owner, new, request[TRACE_ID]))
    request[ACCESS]["granted"] = len(new)
    items = [answer if answer is not None else next(grants) for answer in answers]
    return respond(BatchResult(items=items), 201)


async def _may_upload(request: web.Request, owner: str, items: list[UploadRequest]) -> None:
    """Uploads into an album need a role that may add photos to it."""
    for album_id in dict.fromkeys(i.album_id for i in items if i.album_id is not None):
        await album_access(request, owner, album_id, Act.UPLOAD)


def _valid_batch(body: Any, settings: Settings) -> list[UploadRequest]:
    """Every item valid, or a 422 listing each failing item by index."""
    try:
        items = BatchRequest.model_validate(body).items
    except ValidationError as exc:
        located: list[dict[str, Any]] = []
        for error, raw in zip(field_errors(exc), exc.errors(), strict=True):
            loc = raw["loc"]
            index = {"index": loc[1]} if loc[:1] == ("items",) and len(loc) > 1 else {}
            located.append({**error, **index})
        raise INVALID("the batch is not valid", errors=located) from exc
    errors = [
        {"index": i, "field": f"items.{i}", "code": p.code, "message": p.detail}
        for i, item in enumerate(items)
        if (p := item_problem(item, settings))
    ]
    if errors:
        raise INVALID("some batch items are not accepted", errors=errors)
    return items


async def _duplicate(
    request: web.Request, res: Resources, owner: str, item: UploadRequest
) -> Duplicate | None:
    """The owner's ready photo with the same bytes, answered instead of a new grant."""
    if item.sha256 is None:
        return None
    photo = await res.store.ready_with_sha256(owner, item.sha256, item.album_id)
    if photo is None:
        return None
    return Duplicate(photo_id=photo.id, photo=await view_of(request, photo))


def _intent(owner: str, item: UploadRequest, trace_id: str, s: Settings) -> NewPhoto:
    photo_id = new_id()
    parts = in_parts(item, s)
    ttl = s.multipart_upload_ttl if parts else s.upload_url_ttl
    return NewPhoto(
        id=photo_id,
        owner_id=owner,
        object_key=original_key(owner, photo_id),
        filename=display_name(item.filename),
        declared_type=item.content_type,
        declared_size=item.size,
        # Now to the second, plus the lifetime: in one step (half the instructions).
        upload_expires_at=datetime.fromtimestamp(int(time.time()) + ttl, UTC),
        trace_id=trace_id,
        keep_location=item.keep_location,
        album_id=item.album_id,
        part_size=s.multipart_part_size if parts else None,
    )


async def grant_all(
    res: Resources, owner: str, items: list[UploadRequest], trace_id: str
) -> list[Grant]:
    """Sign every upload, then record every intent within the owner's quotas (all or
    none). The ingest worker learns of an upload from storage, not from the grant."""
    intents = [_intent(owner, item, trace_id, res.settings) for item in items]
    signed = await _sign_all(res, intents, [item.method for item in items])
    intents = [
        i.model_copy(update={"upload_id": u.upload_id}) if isinstance(u, MultipartUpload) else i
        for i, u in zip(intents, signed, strict=True)
    ]
    if failed := next((u for u in signed if isinstance(u, BaseException)), None):
        await abort_all(res, intents)  # the uploads begun for the rest of a failed batch
        raise failed
    uploads = [u for u in signed if not isinstance(u, BaseException)]
    try:
        await res.store.reserve(owner, intents, quota_check(res, items))
    except BaseException:
        await abort_all(res, intents)  # begun for a grant refused: nothing may use them
        raise
    for granted in intents:
        anchor(granted.id)  # where the ingest worker picks the photo's trace up
    return [
        Grant(photo_id=i.id, upload=u, expires_at=i.upload_expires_at)
        for i, u in zip(intents, uploads, strict=True)
    ]


async def _sign_all(
    res: Resources, intents: list[NewPhoto], methods: list[str]
) -> list[Upload | BaseException]:
    """Each intent's upload, or what signing it raised."""
    if len(intents) == 1:
        # The single route's one grant is signed in place: gather would make it a task
        # and take another turn of the event loop.
        try:
            return [await _presign(res, intents[0], methods[0])]
        except Exception as exc:
            return [exc]
    pairs = zip(intents, methods, strict=True)
    return await asyncio.gather(*(_presign(res, i, m) for i, m in pairs), return_exceptions=True)


async def abort_all(res: Resources, intents: list[NewPhoto]) -> None:
    for intent in intents:
        if intent.upload_id is not None:
            try:
                await res.storage.multipart.abort(intent.object_key, intent.upload_id)
            except DarkroomError as exc:  # nothing records it, so nothing can complete it
                log.warning("could not abort a refused multipart upload", error=str(exc))


async def _presign(res: Resources, intent: NewPhoto, method: str) -> Upload:
    key, ttl = intent.object_key, res.settings.upload_url_ttl
    content_type, size = intent.declared_type, intent.declared_size
    if intent.part_size is not None:
        upload_id = await res.storage.multipart.begin(key, content_type=content_type)
        return MultipartUpload(
            method="MULTIPART",
            upload_id=upload_id,
            part_size=intent.part_size,
            part_count=part_count(size, intent.part_size),
        )
    if method == "POST":
        post = await res.storage.presign_post(
            key, content_type=content_type, size=size, expires_in=ttl
        )
        return PostUpload(method="POST", url=post.url, fields=post.fields)
    url, headers = await res.storage.presign_put(
        key, content_type=content_type, size=size, expires_in=ttl
    )
    return PutUpload(method="PUT", url=url, headers=headers)
