"""The gateway: an aiohttp app built from settings, resources opened in one cleanup_ctx."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import aiohttp
from aiohttp import web

from services.gateway.auth import JwksCache, JwtVerifier, check_auth_settings
from services.gateway.context import (
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
from services.gateway.cors import cors_middleware, parse_origins
from services.gateway.downloads import Downloads, check_window
from services.gateway.inputs import trace_id_of
from services.gateway.known_users import KnownUsers
from services.gateway.live import LiveHub
from services.gateway.openapi import build_document
from services.gateway.pages import plain_server_header
from services.gateway.passwords import Passwords
from services.gateway.problems import Handler, problem_middleware
from services.gateway.routes import all_routes, operations
from services.gateway.security import ip_rate_limit
from shared.health import GATEWAY_NEEDS, add_health_routes
from shared.logging import get_logger, log_context
from shared.ratelimit import open_limiter
from shared.resources import Resources, open_resources
from shared.settings import Settings

log = get_logger(__name__)

MAX_JSON_BODY = 64 * 1024
PROBES = frozenset({"/healthz", "/readyz"})


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Trace id in, X-Request-ID out, one structured access-log line per request."""
    trace_id = trace_id_of(request)
    request[TRACE_ID] = trace_id
    started = time.perf_counter()
    with log_context(trace_id=trace_id):
        response = await handler(request)
        response.headers["X-Request-ID"] = trace_id
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        elapsed = time.perf_counter() - started
        # An event stream the handler sent itself lasts minutes: no latency to measure
        # (darkroom_event_streams counts them).
        if not response.prepared:
            request.app[RESOURCES].metrics.http_seconds.labels(
                request.method, name, str(response.status)
            ).observe(elapsed)
        # Probes come every few seconds from every kubelet: not worth an info line each.
        level = log.debug if name in PROBES else log.info
        level(
            "request",
            method=request.method,
            path=request.path,
            route=name,
            status=response.status,
            ms=round(elapsed * 1000, 1),
        )
        return response


def create_app(
    settings: Settings, *, resources: Resources | None = None, dev_user: str = ""
) -> web.Application:
    """The gateway app. Pass `resources` to share them (dev mode); otherwise it opens its own."""
    check_auth_settings(settings)
    check_window(settings)
    app = web.Application(
        middlewares=[
            request_context,
            cors_middleware(parse_origins(settings.cors_origins)),
            problem_middleware,
            ip_rate_limit,
        ],
        client_max_size=MAX_JSON_BODY,
    )
    app[DEV_USER] = dev_user
    app[PASSWORDS] = Passwords()
    app.on_response_prepare.append(plain_server_header)
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
            app[LIVE] = LiveHub(app[RESOURCES])
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
