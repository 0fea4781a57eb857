"""Multipart uploads after the grant: part URLs, the parts stored (to resume), completion
(of any upload) and abort.

The grant (services/gateway/uploads.py) began the S3 upload and recorded its id with the
photo. Only its uploader reaches these routes: anyone else gets 404, as for a missing
photo. Each part URL signs the part's exact size, and only the gateway can complete the
upload, so the object is assembled from parts of the declared sizes or not at all
(storage that checks no signatures, moto, is caught by verification: `size_mismatch`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web
from pydantic import ValidationError

from services.gateway.access import photo_access
from services.gateway.context import RESOURCES, TRACE_ID
from services.gateway.inputs import parsed_body
from services.gateway.models import Completion, PhotoPath, respond
from services.gateway.multipart_models import (
    CompleteRequest,
    PartsListing,
    PartsRequest,
    PartUrl,
    PartUrls,
    StoredPartView,
)
from services.gateway.problems import (
    BODY_TOO_LARGE,
    INSUFFICIENT_ROLE,
    INVALID,
    INVALID_PARTS,
    MALFORMED_JSON,
    NOT_FOUND,
    NOT_MULTIPART,
    UPLOAD_CLOSED,
)
from services.gateway.registry import Answer, Routes
from services.gateway.security import authenticate
from services.gateway.views import shown_status
from shared.events import Envelope, PhotoDeleted, UploadCompleted, outcome_envelope
from shared.logging import get_logger, log_context
from shared.multipart import PartsRefused, UploadGone
from shared.resources import Resources
from shared.store import PhotoRecord, PhotoStatus

log = get_logger(__name__)
api = Routes("uploads")
OPEN = (NOT_FOUND, NOT_MULTIPART, UPLOAD_CLOSED)


async def _own_upload(request: web.Request, owner: str) -> PhotoRecord:
    """The caller's own photo named in the path; 404 for anyone else's."""
    photo_id = request.match_info["photo_id"]
    try:
        PhotoPath.model_validate({"photo_id": photo_id})
    except ValidationError as exc:
        raise NOT_FOUND("no such upload") from exc
    photo = await request.app[RESOURCES].store.get(photo_id)
    if photo is None or photo.status is PhotoStatus.DELETED or photo.owner_id != owner:
        raise NOT_FOUND("no such upload")
    return photo


def _open_upload(photo: PhotoRecord) -> str:
    """The photo's multipart upload id, while parts may still be sent."""
    if photo.upload_id is None:
        raise NOT_MULTIPART("this upload was granted as a single request")
    if photo.status is not PhotoStatus.PENDING:
        raise UPLOAD_CLOSED(f"the upload is finished: the photo is {shown_status(photo)}")
    return photo.upload_id


@api.route(
    "POST",
    "/v1/uploads/{photo_id}/parts",
    "signParts",
    "Presigned URLs for parts of a multipart upload",
    {200: Answer("one URL per part asked for", PartUrls)},
    scope="photos:write",
    params=PhotoPath,
    body=PartsRequest,
    faults=(MALFORMED_JSON, BODY_TOO_LARGE, INVALID, INVALID_PARTS, *OPEN),
)
async def sign_parts(request: web.Request) -> web.Response:
    """PUT each part's bytes to its URL with exactly the headers given; storage answers
    with the part's `ETag`, which completion needs. Parts may be signed again (for a
    retry, or once the URLs lapsed) until the upload's grant expires."""
    owner = (await authenticate(request, "photos:write")).user_id
    photo = await _own_upload(request, owner)
    asked = await parsed_body(request, PartsRequest)
    upload_id = _open_upload(photo)
    res, now = request.app[RESOURCES], datetime.now(UTC).replace(microsecond=0)
    left = int((photo.upload_expires_at - now).total_seconds())
    if left <= 0:
        raise UPLOAD_CLOSED("the upload's grant has expired; ask for a new one")
    if beyond := [n for n in asked.part_numbers if n > photo.part_count]:
        raise INVALID_PARTS(f"this upload has {photo.part_count} parts; asked for {beyond[:5]}")
    ttl = min(res.settings.upload_url_ttl, left)
    parts = []
    for number in dict.fromkeys(asked.part_numbers):
        url, headers = await res.storage.multipart.presign_part(
            photo.object_key, upload_id, number, size=photo.part_length(number), expires_in=ttl
        )
        parts.append(PartUrl(part_number=number, url=url, headers=headers))
    return respond(PartUrls(parts=parts, expires_at=now + timedelta(seconds=ttl)))


@api.route(
    "GET",
    "/v1/uploads/{photo_id}/parts",
    "listParts",
    "The parts storage holds of a multipart upload (to resume it)",
    {200: Answer("the parts stored so far", PartsListing)},
    scope="photos:write",
    params=PhotoPath,
    faults=OPEN,
)
async def list_parts(request: web.Request) -> web.Response:
    """Send only the parts missing here (or of another size than their number asks)."""
    owner = (await authenticate(request, "photos:write")).user_id
    photo = await _own_upload(request, owner)
    upload_id = _open_upload(photo)
    try:
        stored = await request.app[RESOURCES].storage.multipart.parts(photo.object_key, upload_id)
    except UploadGone as exc:
        raise UPLOAD_CLOSED("the upload is no longer open in storage") from exc
    assert photo.part_size is not None
    return respond(
        PartsListing(
            upload_id=upload_id,
            part_size=photo.part_size,
            part_count=photo.part_count,
            parts=[StoredPartView(part_number=p.number, etag=p.etag, size=p.size) for p in stored],
        )
    )


@api.route(
    "POST",
    "/v1/uploads/{photo_id}/complete",
    "completeUpload",
    "Complete a multipart upload, or hint that a single one finished",
    {
        202: Answer("verification requested", Completion),
        200: Answer("already past pending", Completion),
    },
    scope="photos:write",
    params=PhotoPath,
    body=CompleteRequest,
    body_required=False,
    faults=(MALFORMED_JSON, BODY_TOO_LARGE, INVALID, INVALID_PARTS, *OPEN, INSUFFICIENT_ROLE),
)
async def complete_upload(request: web.Request) -> web.Response:
    """A multipart upload is completed here, with every part from 1 to `part_count` and
    the ETag storage gave it. For a single upload (no body) this is only a hint to verify
    sooner. Either way the ingest worker trusts nothing in it and checks the stored object
    as always. By the uploader only."""
    owner = (await authenticate(request, "photos:write")).user_id
    res = request.app[RESOURCES]
    photo = (await photo_access(request, owner, request.match_info["photo_id"], own=True)).photo
    body = await parsed_body(request, CompleteRequest) if request.can_read_body else None
    answer = Completion(id=photo.id, status=shown_status(photo))
    if photo.status is not PhotoStatus.PENDING:
        return respond(answer)
    if photo.upload_id is not None:
        await _assemble(res, photo, body)
    elif body is not None and body.parts is not None:
        raise NOT_MULTIPART("this upload was granted as a single request: complete it bare")
    hint = UploadCompleted(photo_id=photo.id, owner_id=owner)
    envelope = Envelope.wrap(hint, trace_id=request[TRACE_ID])
    await res.outbox.queue(envelope)
    await res.outbox.publish_or_defer(envelope)
    return respond(answer, 202)


async def _assemble(res: Resources, photo: PhotoRecord, body: CompleteRequest | None) -> None:
    assert photo.upload_id is not None
    if body is None or body.parts is None:
        raise INVALID_PARTS("a multipart upload is completed with its parts and their ETags")
    numbers = [p.part_number for p in body.parts]
    if numbers != list(range(1, photo.part_count + 1)):
        raise INVALID_PARTS(
            f"name every part from 1 to {photo.part_count} once, in order (got {len(numbers)})"
        )
    multipart = res.storage.multipart
    try:
        await multipart.complete(
            photo.object_key, photo.upload_id, [(p.part_number, p.etag) for p in body.parts]
        )
    except PartsRefused as exc:
        raise INVALID_PARTS(f"storage refused the parts: {exc}"[:300]) from exc
    except UploadGone as exc:
        # Completed by an earlier call whose answer was lost: the object is there.
        if await res.storage.head(photo.object_key) is None:
            raise UPLOAD_CLOSED("the upload is no longer open in storage") from exc
    log.info("multipart upload completed", photo_id=photo.id, parts=len(numbers))


@api.route(
    "DELETE",
    "/v1/uploads/{photo_id}",
    "abortUpload",
    "Abort an upload still pending: its parts are dropped and the photo is gone",
    {204: Answer("aborted")},
    scope="photos:write",
    params=PhotoPath,
    faults=(NOT_FOUND, UPLOAD_CLOSED),
)
async def abort_upload(request: web.Request) -> web.Response:
    """Only while pending (a photo past that is deleted with `DELETE /v1/photos/{id}`).
    An aborted multipart upload stops counting against the quotas at once: no part sent
    later can become an object."""
    owner = (await authenticate(request, "photos:write")).user_id
    photo = await _own_upload(request, owner)
    if photo.status is not PhotoStatus.PENDING:
        raise UPLOAD_CLOSED(f"the upload is finished: the photo is {shown_status(photo)}")
    res = request.app[RESOURCES]
    if photo.upload_id is not None:
        await res.storage.multipart.abort(photo.object_key, photo.upload_id)
    event = PhotoDeleted(photo_id=photo.id, owner_id=owner)
    envelope = outcome_envelope(event, photo_id=photo.id, trace_id=request[TRACE_ID])
    with log_context(photo_id=photo.id, owner_id=owner):
        if not await res.store.mark_deleted(photo.id, owner, envelope):
            raise NOT_FOUND("no such upload")
        await res.outbox.publish_or_defer(envelope)
        log.info("upload aborted", multipart=photo.upload_id is not None)
    return web.Response(status=204)
