"""RFC 9457 problem details: every error the gateway sends is application/problem+json."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from shared.errors import PermanentError, TransientError
from shared.logging import get_logger

log = get_logger(__name__)

PROBLEM_TYPE_BASE = "https://darkroom.dev/problems/"


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


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    body = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": code.replace("_", " ").capitalize(),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/problem+json",
        headers=headers,
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return problem(exc.status, exc.code, exc.detail, headers=exc.headers, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status, "http_error"
        )
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return problem(exc.status, code, exc.reason, headers=headers)
    except TransientError as exc:
        # Broker, database or storage away: the client may retry; nothing was granted.
        log.warning("dependency unavailable", path=request.path, error=str(exc))
        return problem(
            503,
            "unavailable",
            f"{exc.what} is unavailable; try again shortly",
            headers={"Retry-After": "2"},
        )
    except PermanentError as exc:
        # The request's data can never be stored as given (e.g. the database refused it).
        log.warning("request refused by a backing service", path=request.path, error=str(exc))
        return problem(400, "invalid_request", "the request cannot be processed as given")
    except Exception:
        log.exception("unhandled error", path=request.path)
        return problem(500, "internal_error", "the server failed; the error has been logged")
