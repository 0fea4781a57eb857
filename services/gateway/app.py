"""The gateway: an aiohttp app built from settings, resources opened in one cleanup_ctx."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web

from services.gateway.auth import require_secret
from services.gateway.context import DEV_TOKEN, RESOURCES, TRACE_ID
from services.gateway.problems import Handler, problem_middleware
from services.gateway.routes import routes, trace_id_of
from shared.health import add_health_routes
from shared.logging import get_logger, log_context
from shared.resources import Resources, open_resources
from shared.settings import Settings

log = get_logger(__name__)

MAX_JSON_BODY = 64 * 1024


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
        request.app[RESOURCES].metrics.http_requests.labels(name, str(response.status)).inc()
        log.info(
            "request",
            method=request.method,
            path=request.path,
            route=name,
            status=response.status,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return response


def create_app(
    settings: Settings, *, resources: Resources | None = None, dev_token: str = ""
) -> web.Application:
    """The gateway app. Pass `resources` to share them (dev mode); otherwise it opens its own."""
    require_secret(settings.auth_jwt_secret.get_secret_value())
    app = web.Application(
        middlewares=[request_context, problem_middleware], client_max_size=MAX_JSON_BODY
    )
    app[DEV_TOKEN] = dev_token

    async def resources_ctx(app: web.Application) -> AsyncIterator[None]:
        if resources is not None:
            app[RESOURCES] = resources
            yield
            return
        async with open_resources(settings) as opened:
            app[RESOURCES] = opened
            yield

    app.cleanup_ctx.append(resources_ctx)
    app.add_routes(routes)
    add_health_routes(app, lambda: app[RESOURCES])
    return app
