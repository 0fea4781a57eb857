"""The thumbnail worker process."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from services.thumbnail_worker.handlers import Thumbnails
from services.thumbnail_worker.render import parse_renditions
from shared.errors import ConfigurationError
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
    try:
        specs = parse_renditions(settings.renditions)
    except ValueError as exc:
        raise ConfigurationError(f"DARKROOM_RENDITIONS: {exc}") from exc
    threads = settings.render_concurrency or os.cpu_count() or 1
    with ThreadPoolExecutor(threads, thread_name_prefix="render") as pool:
        await run_worker(
            settings,
            stop,
            lambda res: Thumbnails(res, pool, concurrency=threads, specs=specs),
            resources=resources,
            health=health,
        )


async def standalone(settings: Settings, stop: asyncio.Event) -> None:
    require_real_broker(settings, "the thumbnail worker")
    await serve(settings, stop)


def main() -> None:
    run_process(standalone)
