"""The notifier process."""

from __future__ import annotations

import asyncio

import aiohttp

from services.notifier.handlers import Notifier
from shared.resources import Resources
from shared.service import require_real_broker, run_process, run_worker
from shared.settings import Settings


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    resources: Resources | None = None,
    health: bool = True,
) -> None:
    async with aiohttp.ClientSession() as session:
        await run_worker(
            settings,
            stop,
            lambda res: Notifier(res, session),
            resources=resources,
            health=health,
            # It publishes no event, and its broker user may not (shared/broker_access.py).
            relay=False,
        )


async def standalone(settings: Settings, stop: asyncio.Event) -> None:
    require_real_broker(settings, "the notifier")
    await serve(settings, stop)


def main() -> None:
    run_process(standalone)
