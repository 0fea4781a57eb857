"""The ingest worker process: intents, storage notifications and the SQS bridge."""

from __future__ import annotations

import asyncio

from services.ingest_worker.handlers import Ingest
from shared.imaging import configure_pillow
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
    configure_pillow()
    await run_worker(settings, stop, Ingest, resources=resources, health=health)


async def standalone(settings: Settings, stop: asyncio.Event) -> None:
    require_real_broker(settings, "the ingest worker")
    await serve(settings, stop)


def main() -> None:
    run_process(standalone)
