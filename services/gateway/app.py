"""The gateway: an aiohttp app built from settings, resources opened in one cleanup_ctx."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client.metrics import Histogram

from services.gateway.auth import JwksCache, JwtVerifier, check_auth_settings
from services.gateway.context import (
    ACCESS,
    DEV_USER,
    DOWNLOADS,
    KNOWN_USERS,
    LIMITER,
    LIVE,
    OPENAPI,
    PASSWORDS,
    RESOURCES,
    TRACE_ID,
    VERIFIER,
)
from services.gateway.cors import Cors, parse_origins
from services.gateway.downloads import Downloads, check_window
from services.gateway.inputs import trace_id_of
from services.gateway.known_users import KnownUsers
from services.gateway.live import LiveHub
from services.gateway.openapi import build_document
from services.gateway.pages import SERVER
from services.gateway.passwords import Passwords
from services.gateway.problems import Handler, answered
from services.gateway.routes import all_routes, operations
from services.gateway.security import limited
from shared.health import GATEWAY_NEEDS, add_health_routes
from shared.logging import get_logger, log_fields
from shared.ratelimit import open_limiter
from shared.resources import Resources, open_resources
from shared.settings import Settings

log = get_logger(__name__)

MAX_JSON_BODY = 64 * 1024
PROBES = frozenset({"/healthz", "/readyz"})
KEPT_SERIES = 1000  # latency series remembered; clients choose methods, so not all are


def request_middleware(cors: Cors) -> Middleware:
    """The gateway's one middleware: trace id in, X-Request-ID out, CORS, problem+json
    answers for errors, the client IP's rate limit, the latency metric and one
    structured access-log line per request. One layer instead of four: each was another
    coroutine, and aiohttp's partial, around every request."""
    seconds: dict[tuple[str, str, int], Histogram] = {}

    @web.middleware
    async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
        trace_id = trace_id_of(request)
        request[TRACE_ID] = trace_id
        access: dict[str, object] = {"trace_id": trace_id}
        request[ACCESS] = access
        started = time.perf_counter()
        with log_fields(access):
            granted = cors.granted(request)
            preflight = cors.preflight(request, granted)
            response = (
                preflight
                if preflight is not None
                else await answered(request, limited(request, handler))
            )
            cors.finish(response, granted)
            response.headers["X-Request-ID"] = trace_id
            # Here rather than in on_response_prepare, a signal that cost every answer
            # two more coroutines; an event stream names itself (events_stream.py).
            response.headers["Server"] = SERVER
            _record(request, response, time.perf_counter() - started, seconds)
            return response

    return handle


def _record(
    request: web.Request,
    response: web.StreamResponse,
    elapsed: float,
    seconds: dict[tuple[str, str, int], Histogram],
) -> None:
    """The request in `darkroom_http_seconds` and the access log (with the request's log
    fields: its trace id, and what the handler added)."""
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    # An event stream the handler sent itself lasts minutes: no latency to measure
    # (darkroom_event_streams counts them).
    if not response.prepared:
        key = (request.method, name, response.status)
        # The labelled series looked up once, not per request (labels() takes a lock
        # and checks its arguments every time).
        if (histogram := seconds.get(key)) is None:
            histogram = request.app[RESOURCES].metrics.http_seconds.labels(*key[:2], str(key[2]))
            if len(seconds) < KEPT_SERIES:
                seconds[key] = histogram
        histogram.observe(elapsed)
    # Probes come every few seconds from every kubelet: not worth an info line each.
    level = log.debug if name in PROBES else log.info
    level(
        "request",
        method=request.method,
        path=request.path,
        route=name,
        status=response.status,
        # Tenths of a millisecond; round(x, 1) goes through a decimal string (3.8k
        # instructions against 2.1k).
        ms=int(elapsed * 10_000 + 0.5) / 10,
    )


def create_app(
    settings: Settings, *, resources: Resources | None = None, dev_user: str = ""
) -> web.Application:
    """The gateway app. Pass `resources` to share them (dev mode); otherwise it opens its own."""
    check_auth_settings(settings)
    check_window(settings)
    app = web.Application(
        middlewares=[request_middleware(Cors(parse_origins(settings.cors_origins)))],
        client_max_size=MAX_JSON_BODY,
    )
    app[DEV_USER] = dev_user
    app[PASSWORDS] = Passwords()
    app[OPENAPI] = json.dumps(build_document(operations(), settings)).encode()

    async def resources_ctx(app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if resources is None:
                # Events wait in the outbox, so the API starts without the broker too.
                app[RESOURCES] = await stack.enter_async_context(
                    open_resources(settings, wait_for_broker=False)
                )
            else:
                app[RESOURCES] = resources
            app[LIMITER] = await stack.enter_async_context(open_limiter(settings))
            app[KNOWN_USERS] = KnownUsers(app[RESOURCES].users, app[RESOURCES].outbox)
            app[DOWNLOADS] = Downloads.from_settings(settings, app[RESOURCES].storage.presigner)
            app[VERIFIER] = JwtVerifier.from_settings(
                settings, await _jwks(settings, stack) if settings.auth_jwks_url else None
            )
            app[LIVE] = LiveHub(app[RESOURCES], app[KNOWN_USERS])
            await stack.enter_async_context(app[LIVE].running())
            yield

    async def end_streams(app: web.Application) -> None:
        # Before the runner waits for handlers: open event streams end now, and their
        # clients reconnect (with Last-Event-ID) to another replica.
        app[LIVE].close_all()

    app.cleanup_ctx.append(resources_ctx)
    app.on_shutdown.append(end_streams)
    app.add_routes(all_routes(settings))
    # Probes only: `/metrics` is on the health port (shared/health.py). Whether this
    # replica receives live events is reported, not required.
    add_health_routes(
        app,
        lambda: app[RESOURCES],
        needs=GATEWAY_NEEDS,
        extra=lambda: {"events": app[LIVE].listening},
    )
    return app


async def _jwks(settings: Settings, stack: AsyncExitStack) -> JwksCache:
    http = await stack.enter_async_context(aiohttp.ClientSession())
    return JwksCache(
        settings.auth_jwks_url,
        http,
        ttl_s=settings.auth_jwks_ttl,
        refetch_s=settings.auth_jwks_refetch_interval,
    )
