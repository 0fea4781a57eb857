"""RFC 9457 problem details: every error the gateway sends is application/problem+json.

Each kind of problem is a `Fault` (status, code, what it means). Handlers raise them and
the route table lists the ones each operation can answer, so the document's error
responses name the same codes the server sends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from aiohttp import web

from services.gateway.models import Problem
from shared.errors import PermanentError, TransientError
from shared.logging import get_logger

log = get_logger(__name__)

PROBLEM_TYPE_BASE = "https://darkroom.dev/problems/"
PROBLEM_JSON = "application/problem+json"


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


class Fault(NamedTuple):
    status: int
    code: str
    meaning: str

    def __call__(
        self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> ApiError:
        return ApiError(self.status, self.code, detail, headers=headers, **extra)


MALFORMED_JSON = Fault(400, "malformed_json", "the body is not JSON")
REFUSED = Fault(400, "invalid_request", "the data cannot be stored as given")
INVALID_CURSOR = Fault(400, "invalid_cursor", "a cursor this API did not issue")
USER_REQUIRED = Fault(400, "user_required", "an API key without X-Darkroom-User")
UNAUTHORIZED = Fault(401, "unauthorized", "no usable credentials (WWW-Authenticate says why)")
TOKEN_TOO_LONG = Fault(
    401, "token_lifetime_too_long", "the token lives longer than the gateway accepts"
)
INSUFFICIENT_SCOPE = Fault(403, "insufficient_scope", "the API key lacks the scope")
PASSWORD_REQUIRED = Fault(401, "password_required", "the share link has a password")
WRONG_PASSWORD = Fault(401, "wrong_password", "not the share link's password")
INSUFFICIENT_ROLE = Fault(
    403, "insufficient_role", "the caller's role in the album does not allow it"
)
NOT_FOUND = Fault(404, "not_found", "no such photo, album, link or webhook (or not yours to see)")
LINK_EXPIRED = Fault(410, "link_expired", "the share link has expired")
SEALED = Fault(409, "sealed", "the photo's album is not revealed yet")
IS_OWNER = Fault(409, "is_owner", "the album's owner has no member role to change or leave")
ALREADY_REVEALED = Fault(409, "already_revealed", "a revealed album cannot be sealed again")
METHOD_NOT_ALLOWED = Fault(405, "method_not_allowed", "see Allow")
NOT_READY = Fault(409, "not_ready", "the photo is not ready yet")
UPLOAD_CLOSED = Fault(409, "upload_closed", "the upload is no longer open (finished or lapsed)")
NOT_MULTIPART = Fault(409, "not_multipart", "the upload was granted as a single request")
INVALID_PARTS = Fault(409, "invalid_parts", "the parts do not make up the upload (see detail)")
TOO_MANY_PENDING = Fault(409, "too_many_pending", "too many uploads still pending")
PHOTO_QUOTA = Fault(409, "photo_quota_exceeded", "the photo quota would be exceeded")
BODY_TOO_LARGE = Fault(413, "body_too_large", "the request body is too large")
TOO_LARGE = Fault(413, "too_large", "the photo exceeds the size limit")
BYTE_QUOTA = Fault(413, "byte_quota_exceeded", "the byte quota would be exceeded")
UNSUPPORTED_TYPE = Fault(415, "unsupported_type", "not an accepted image type")
INVALID = Fault(422, "invalid_request", "the request does not fit its schema (see errors)")
RATE_LIMITED = Fault(429, "rate_limited", "too many requests (see Retry-After)")
TOO_MANY_STREAMS = Fault(429, "too_many_streams", "too many event streams open for the user")
INTERNAL = Fault(500, "internal_error", "the server failed; the error has been logged")
UNAVAILABLE = Fault(503, "unavailable", "a backing service is away (see Retry-After)")
UNSAFE_TARGET = Fault(
    422, "unsafe_target", "the webhook URL is not https or reaches a private address"
)
TOO_MANY_WEBHOOKS = Fault(409, "too_many_webhooks", "the caller has the most endpoints allowed")
HTTP_ERROR = Fault(400, "http_error", "the request is not HTTP the server can read")

# What any authenticated operation may answer, whatever it does.
EVERY_CALL = (
    REFUSED,
    USER_REQUIRED,
    UNAUTHORIZED,
    TOKEN_TOO_LONG,
    INSUFFICIENT_SCOPE,
    RATE_LIMITED,
    INTERNAL,
    UNAVAILABLE,
)
_FROM_AIOHTTP = {404: NOT_FOUND, 405: METHOD_NOT_ALLOWED, 413: BODY_TOO_LARGE}


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    body = Problem(
        type=PROBLEM_TYPE_BASE + code,
        title=code.replace("_", " ").capitalize(),
        status=status,
        detail=detail,
        code=code,
        **extra,
    )
    return web.Response(
        status=status,
        # Members that do not apply are left out rather than sent as null.
        body=body.model_dump_json(exclude_none=True).encode(),
        content_type=PROBLEM_JSON,
        headers=headers,
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def answered(
    request: web.Request, answer: Awaitable[web.StreamResponse]
) -> web.StreamResponse:
    """The answer, or the problem that it raised as an application/problem+json answer."""
    try:
        return await answer
    except ApiError as exc:
        return problem(exc.status, exc.code, exc.detail, headers=exc.headers, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _FROM_AIOHTTP[exc.status].code if exc.status in _FROM_AIOHTTP else HTTP_ERROR.code
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return problem(exc.status, code, exc.reason, headers=headers)
    except TransientError as exc:
        # Broker, database or storage away: the client may retry; nothing was granted.
        log.warning("dependency unavailable", path=request.path, error=str(exc))
        return problem(
            503,
            UNAVAILABLE.code,
            f"{exc.what} is unavailable; try again shortly",
            headers={"Retry-After": "2"},
        )
    except PermanentError as exc:
        # The request's data can never be stored as given (e.g. the database refused it).
        log.warning("request refused by a backing service", path=request.path, error=str(exc))
        return problem(400, REFUSED.code, "the request cannot be processed as given")
    except Exception:
        log.exception("unhandled error", path=request.path)
        return problem(500, INTERNAL.code, INTERNAL.meaning)
