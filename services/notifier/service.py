"""The notifier process."""

from __future__ import annotations

import asyncio

from services.notifier.delivery import open_sessions
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
    async with open_sessions(settings) as sessions:
        await run_worker(
            settings,
            stop,
            lambda res: Notifier(res, sessions),
            resources=resources,
            health=health,
            # It publishes only its own few events, and its broker user may publish no
            # other (shared/broker_access.py): the relay of the other services sends
            # what it leaves in the outbox.
            relay=False,
        )


async def standalone(settings: Settings, stop: asyncio.Event) -> None:
    require_real_broker(settings, "the notifier")
    await serve(settings, stop)


def main() -> None:
    run_process(standalone)
