"""The gateway's HTTP routes: upload grants and photo reads."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from services.gateway.auth import Unauthorized, user_from_header
from services.gateway.context import DEV_TOKEN, RESOURCES, TRACE_ID
from services.gateway.problems import ApiError
from shared.broker import publish
from shared.events import UploadCompleted, UploadRequested
from shared.keys import original_key
from shared.logging import get_logger, log_context
from shared.resources import Resources
from shared.settings import ALLOWED_CONTENT_TYPES
from shared.store import NewPhoto, PhotoRecord, PhotoStatus

log = get_logger(__name__)
routes = web.RouteTableDef()

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,128}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    filename: str = Field(min_length=1, max_length=1024)
    content_type: str = Field(min_length=1, max_length=100)
    size: StrictInt = Field(gt=0)
    method: Literal["POST", "PUT"] = "POST"


def trace_id_of(request: web.Request) -> str:
    given = request.headers.get("X-Request-ID", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


def authenticate(request: web.Request) -> str:
    secret = request.app[RESOURCES].settings.auth_jwt_secret.get_secret_value()
    try:
        return user_from_header(secret, request.headers.get("Authorization"))
    except Unauthorized as exc:
        raise ApiError(
            401,
            "unauthorized",
            str(exc),
            headers={"WWW-Authenticate": 'Bearer realm="darkroom"'},
        ) from exc


async def json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for non-UTF-8
        raise ApiError(400, "malformed_json", f"request body is not JSON: {exc}") from exc


def display_name(filename: str) -> str:
    """The client's file name for display only: no path, no control characters."""
    name = _CONTROL.sub("", filename.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return name[:255] or "photo"


def validation_problem(exc: ValidationError) -> ApiError:
    errors = [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
        for e in exc.errors()
    ]
    return ApiError(422, "invalid_request", "the request body is not valid", errors=errors)


@routes.post("/v1/uploads")
async def create_upload(request: web.Request) -> web.Response:
    owner = authenticate(request)
    try:
        body = UploadRequest.model_validate(await json_body(request))
    except ValidationError as exc:
        raise validation_problem(exc) from exc
    settings = request.app[RESOURCES].settings
    content_type = body.content_type.lower()
    if content_type not in ALLOWED_CONTENT_TYPES:
        raise ApiError(
            415,
            "unsupported_type",
            f"{body.content_type!r} is not an accepted image type",
            accepted=list(ALLOWED_CONTENT_TYPES),
        )
    if body.size > settings.max_upload_bytes:
        raise ApiError(
            413,
            "too_large",
            f"{body.size} bytes exceeds the limit of {settings.max_upload_bytes} bytes",
            limit=settings.max_upload_bytes,
        )
    photo_id = uuid.uuid4().hex
    expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(
        seconds=settings.upload_url_ttl
    )
    intent = NewPhoto(
        photo_id,
        owner,
        original_key(owner, photo_id),
        display_name(body.filename),
        content_type,
        body.size,
        expires_at,
        request[TRACE_ID],
    )
    with log_context(photo_id=photo_id, owner_id=owner):
        return await _grant(request.app[RESOURCES], intent, body.method)


async def _grant(res: Resources, intent: NewPhoto, method: Literal["POST", "PUT"]) -> web.Response:
    """Sign the upload, then make the intent durable; answer only once both are done."""
    upload = await _presign(res, intent, method)
    # Read-your-writes for the client; the ingest worker records the same intent from
    # the event (insert-if-absent).
    await res.store.create_pending(intent)
    event = UploadRequested(
        photo_id=intent.id,
        owner_id=intent.owner_id,
        bucket=res.storage.bucket,
        object_key=intent.object_key,
        content_type=intent.declared_type,
        size=intent.declared_size,
        filename=intent.filename,
        method=method,
        expires_at=intent.upload_expires_at,
    )
    await publish(res.broker, res.topology, event, trace_id=intent.trace_id)
    log.info("upload granted", method=method, size=intent.declared_size)
    body = {
        "photo_id": intent.id,
        "upload": upload,
        "expires_at": intent.upload_expires_at.isoformat(),
    }
    return web.json_response(body, status=201)


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
    owner = authenticate(request)
    res = request.app[RESOURCES]
    photo = await _owned_photo(request, owner, request.match_info["photo_id"])
    if photo.status is PhotoStatus.PENDING:
        hint = UploadCompleted(photo_id=photo.id, owner_id=owner, object_key=photo.object_key)
        await publish(res.broker, res.topology, hint, trace_id=request[TRACE_ID])
        return web.json_response({"id": photo.id, "status": photo.status.value}, status=202)
    return web.json_response({"id": photo.id, "status": photo.status.value})


@routes.get("/v1/photos/{photo_id}")
async def get_photo(request: web.Request) -> web.Response:
    owner = authenticate(request)
    photo = await _owned_photo(request, owner, request.match_info["photo_id"])
    return web.json_response(await _photo_view(request.app[RESOURCES], photo))


async def _owned_photo(request: web.Request, owner: str, photo_id: str) -> PhotoRecord:
    photo = await request.app[RESOURCES].store.get(photo_id)
    # Someone else's photo is indistinguishable from a missing one.
    if photo is None or photo.owner_id != owner or photo.status is PhotoStatus.DELETED:
        raise ApiError(404, "not_found", "no such photo")
    return photo


async def _photo_view(res: Resources, photo: PhotoRecord) -> dict[str, Any]:
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
        "created_at": photo.created_at.isoformat(),
        "renditions": {},
        "original": None,
    }
    if photo.status is PhotoStatus.READY:
        storage, ttl = res.storage, res.settings.download_url_ttl
        for r in await res.store.renditions(photo.id):
            view["renditions"][r.name] = {
                "url": await storage.presign_get(
                    r.object_key, expires_in=ttl, content_type=r.content_type
                ),
                "width": r.width,
                "height": r.height,
                "content_type": r.content_type,
            }
        view["original"] = {
            "url": await storage.presign_get(
                photo.object_key, expires_in=ttl, content_type=photo.content_type
            )
        }
    return view


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    page = files("services.gateway").joinpath("static/index.html").read_text()
    page = page.replace("__DEV_TOKEN__", json.dumps(request.app[DEV_TOKEN]))
    return web.Response(text=page, content_type="text/html")
