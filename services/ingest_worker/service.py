"""The ingest worker process: intents, storage notifications and the SQS bridge."""

from __future__ import annotations

import asyncio

from services.ingest_worker.handlers import Ingest
from services.ingest_worker.sqs_bridge import run_sqs_bridge
from shared.imaging import configure_pillow
from shared.resources import Resources
from shared.service import Background, require_real_broker, run_process, run_worker
from shared.settings import Settings


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    resources: Resources | None = None,
    health: bool = True,
) -> None:
    configure_pillow()
    background: list[Background] = []
    if settings.sqs_queue_url:

        async def bridge(res: Resources, stop: asyncio.Event) -> None:
            await run_sqs_bridge(settings, res.broker, res.topology, stop)

        background.append(bridge)
    await run_worker(
        settings,
        stop,
        lambda res: Ingest(res).routes(),
        resources=resources,
        background=background,
        health=health,
    )


async def standalone(settings: Settings, stop: asyncio.Event) -> None:
    require_real_broker(settings, "the ingest worker")
    await serve(settings, stop)


def main() -> None:
    run_process(standalone)
