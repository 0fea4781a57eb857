"""The gateway process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack

from aiohttp import web

from services.gateway.app import create_app
from services.gateway.context import RESOURCES
from shared.health import GATEWAY_NEEDS, serve_health
from shared.logging import get_logger
from shared.resources import Resources
from shared.service import require_real_broker, run_process
from shared.settings import Settings

log = get_logger(__name__)


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    resources: Resources | None = None,
    dev_user: str = "",
    health: bool = True,
    extend: Callable[[web.Application], None] | None = None,
) -> None:
    """Serve the API; and, unless `health` is off (dev mode serves one for everything),
    the probes and `/metrics` on the health port. `extend` adds to the app before it
    starts (dev mode's own pages)."""
    app = create_app(settings, resources=resources, dev_user=dev_user)
    if extend is not None:
        extend(app)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.shutdown_grace)
    await runner.setup()
    try:
        async with AsyncExitStack() as stack:
            if health:
                # The app opened its resources in setup(); the health port shares them.
                port = await stack.enter_async_context(
                    serve_health(
                        settings.health_host, settings.health_port, app[RESOURCES], GATEWAY_NEEDS
                    )
                )
                log.info("health endpoints up", port=port)
            site = web.TCPSite(runner, settings.gateway_host, settings.gateway_port)
            await site.start()
            url = f"http://{settings.gateway_host}:{settings.gateway_port}"
            log.info("gateway listening", url=url)
            await stop.wait()
    finally:
        await runner.cleanup()


async def standalone(settings: Settings, stop: asyncio.Event) -> None:
    require_real_broker(settings, "the gateway")
    await serve(settings, stop)


def main() -> None:
    run_process(standalone)
