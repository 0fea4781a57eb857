"""Liveness, readiness and Prometheus metrics over HTTP, for every service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from shared.resources import Resources


class Liveness(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)
    ready: bool
    checks: dict[str, bool]  # every dependency checked, whether it is required or not


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        body=model.model_dump_json().encode(), status=status, content_type="application/json"
    )


def add_health_routes(
    app: web.Application,
    resources: Callable[[], Resources],
    needs: Collection[str] = ("broker", "database"),
) -> None:
    """`resources` is called per request: the gateway opens its resources after routing.
    Readiness is 503 when a check in `needs` fails; the others are reported only."""

    async def healthz(_: web.Request) -> web.Response:
        return _json(Liveness())

    async def readyz(_: web.Request) -> web.Response:
        checks = await resources().readiness()
        status = 200 if all(checks[name] for name in needs) else 503
        return _json(Readiness(ready=status == 200, checks=checks), status)

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
