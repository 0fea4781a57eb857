"""Liveness, readiness and Prometheus metrics over HTTP, for every service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager

from aiohttp import web

from shared.resources import Resources


def add_health_routes(
    app: web.Application,
    resources: Callable[[], Resources],
    needs: Collection[str] = ("broker", "database"),
) -> None:
    """`resources` is called per request: the gateway opens its resources after routing.
    Readiness is 503 when a check in `needs` fails; the others are reported only."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        checks = await resources().readiness()
        status = 200 if all(checks[name] for name in needs) else 503
        return web.json_response({"ready": status == 200, "checks": checks}, status=status)

    async def metrics(_: web.Request) -> web.Response:
        m = resources().metrics
        return web.Response(body=m.render(), headers={"Content-Type": m.content_type})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


@asynccontextmanager
async def serve_health(host: str, port: int, resources: Resources) -> AsyncIterator[int]:
    """Serve the health routes on their own port for a worker; yields the bound port."""
    app = web.Application()
    add_health_routes(app, lambda: resources)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()
