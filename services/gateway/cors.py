"""CORS for the origins in DARKROOM_CORS_ORIGINS (comma-separated, or `*`)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from services.gateway.context import CORS_HEADERS
from services.gateway.problems import Handler

ALLOW_HEADERS = "Authorization, Content-Type, X-Request-ID, X-Darkroom-User, Last-Event-ID"
EXPOSE_HEADERS = "X-Request-ID, Retry-After, Location, WWW-Authenticate"
ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
MAX_AGE_S = "600"


def parse_origins(value: str) -> frozenset[str]:
    return frozenset(o.strip().rstrip("/") for o in value.split(",") if o.strip())


def cors_middleware(origins: frozenset[str]) -> Middleware:
    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin is not None and ("*" in origins or origin in origins)
        preflight = (
            request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        )
        # Credentials travel in the Authorization header, never cookies, so the origin
        # is echoed without Allow-Credentials.
        granted = (
            {
                "Access-Control-Allow-Origin": origin or "",
                "Access-Control-Expose-Headers": EXPOSE_HEADERS,
            }
            if allowed
            else {}
        )
        # An event stream sends its headers before this middleware sees its answer.
        request[CORS_HEADERS] = {**granted, "Vary": "Origin"}
        if preflight and allowed:
            response: web.StreamResponse = web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Methods": ALLOW_METHODS,
                    "Access-Control-Allow-Headers": ALLOW_HEADERS,
                    "Access-Control-Max-Age": MAX_AGE_S,
                },
            )
        else:
            response = await handler(request)
        if response.prepared:
            return response
        response.headers.update(granted)
        response.headers.add("Vary", "Origin")
        return response

    return cors
