"""The gateway process."""

from __future__ import annotations

import asyncio

from aiohttp import web

from services.gateway.app import create_app
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
) -> None:
    app = create_app(settings, resources=resources, dev_user=dev_user)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.shutdown_grace)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.gateway_host, settings.gateway_port)
        await site.start()
        log.info("gateway listening", url=f"http://{settings.gateway_host}:{settings.gateway_port}")
        await stop.wait()
    finally:
        await runner.cleanup()


async def standalone(settings: Settings, stop: asyncio.Event) -> None:
    require_real_broker(settings, "the gateway")
    await serve(settings, stop)


def main() -> None:
    run_process(standalone)
