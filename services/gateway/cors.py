"""CORS for the origins in DARKROOM_CORS_ORIGINS (comma-separated, or `*`)."""

from __future__ import annotations

from aiohttp import web

from services.gateway.context import CORS_HEADERS

ALLOW_HEADERS = "Authorization, Content-Type, X-Request-ID, X-Darkroom-User, Last-Event-ID"
EXPOSE_HEADERS = "X-Request-ID, Retry-After, Location, WWW-Authenticate"
ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
MAX_AGE_S = "600"


def parse_origins(value: str) -> frozenset[str]:
    return frozenset(o.strip().rstrip("/") for o in value.split(",") if o.strip())


class Cors:
    """What each answer gets, and the preflights answered without a handler; the
    gateway's one middleware (app.py) calls these around every request."""

    def __init__(self, origins: frozenset[str]) -> None:
        self._origins = origins

    def granted(self, request: web.Request) -> dict[str, str]:
        """The headers the request's answer gets (none unless its Origin is allowed)."""
        origin = request.headers.get("Origin")
        # Credentials travel in the Authorization header, never cookies, so the origin
        # is echoed without Allow-Credentials.
        granted = (
            {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": EXPOSE_HEADERS}
            if origin is not None and ("*" in self._origins or origin in self._origins)
            else {}
        )
        # An event stream sends its headers before the middleware sees its answer.
        request[CORS_HEADERS] = granted
        return granted

    @staticmethod
    def preflight(request: web.Request, granted: dict[str, str]) -> web.Response | None:
        """The answer to an allowed origin's preflight; None for every other request."""
        if not (
            granted
            and request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers
        ):
            return None
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": MAX_AGE_S,
            },
        )

    @staticmethod
    def finish(response: web.StreamResponse, granted: dict[str, str]) -> None:
        if response.prepared:
            return
        if granted:
            response.headers.update(granted)
        response.headers.add("Vary", "Origin")
