"""Liveness, readiness and Prometheus metrics over HTTP, for every service.

Every service serves all three on its health port (`DARKROOM_HEALTH_PORT`), which is not
published beyond the cluster; the gateway's public port answers the probes too, but
never `/metrics`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from shared.backlog import refresh
from shared.resources import Resources

WORKER_NEEDS = ("broker", "database")
# The API needs the database only: events go out through the outbox, so a broker outage
# must not take every replica out of its load balancer.
GATEWAY_NEEDS = ("database",)


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
    needs: Collection[str] = WORKER_NEEDS,
    extra: Callable[[], dict[str, bool]] | None = None,
) -> None:
    """`resources` is called per request: the gateway opens its resources after routing.
    Readiness is 503 when a check in `needs` fails; the others, and `extra`'s, are
    reported only."""

    async def healthz(_: web.Request) -> web.Response:
        return _json(Liveness())

    async def readyz(_: web.Request) -> web.Response:
        checks = await resources().readiness() | (extra() if extra else {})
        status = 200 if all(checks[name] for name in needs) else 503
        return _json(Readiness(ready=status == 200, checks=checks), status)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def health_app(resources: Resources, needs: Collection[str] = WORKER_NEEDS) -> web.Application:
    """The health port's app: the probes and `/metrics`."""

    async def metrics(_: web.Request) -> web.Response:
        await refresh(resources)
        m = resources.metrics
        return web.Response(body=m.render(), headers={"Content-Type": m.content_type})

    app = web.Application()
    add_health_routes(app, lambda: resources, needs)
    app.router.add_get("/metrics", metrics)
    return app


@asynccontextmanager
async def serve_health(
    host: str, port: int, resources: Resources, needs: Collection[str] = WORKER_NEEDS
) -> AsyncIterator[int]:
    """Serve the health app on its own port; yields the bound port."""
    app = health_app(resources, needs)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()
