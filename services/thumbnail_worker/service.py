"""The thumbnail worker process."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from services.thumbnail_worker import cgroups
from services.thumbnail_worker.cgroups import available_cpus
from services.thumbnail_worker.handlers import Thumbnails
from services.thumbnail_worker.memory import MB, MemoryBudget, worst_case
from services.thumbnail_worker.render import RenditionSpec, parse_renditions
from shared.errors import ConfigurationError
from shared.imaging import configure_pillow
from shared.logging import get_logger
from shared.resources import Resources
from shared.service import require_real_broker, run_process, run_worker
from shared.settings import Settings

log = get_logger(__name__)


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
    budget = render_budget(settings, specs)
    threads = settings.render_concurrency or available_cpus()
    log.info("rendering", threads=threads, memory_mb=budget.total // MB)
    with ThreadPoolExecutor(threads, thread_name_prefix="render") as pool:
        await run_worker(
            settings,
            stop,
            lambda res: Thumbnails(res, pool, concurrency=threads, budget=budget, specs=specs),
            resources=resources,
            health=health,
        )


def render_budget(
    settings: Settings, specs: tuple[RenditionSpec, ...], cgroup: Path = cgroups.ROOT
) -> MemoryBudget:
    """The memory renders share; refused if one image at the pixel limit cannot fit."""
    mb = settings.render_memory_mb or cgroups.default_render_memory_mb(cgroup)
    largest = max(spec.longest_side for spec in specs)
    needed = worst_case(settings.max_image_pixels, settings.max_image_side, largest)
    if needed > mb * MB:
        origin = "DARKROOM_RENDER_MEMORY_MB" if settings.render_memory_mb else "the default"
        raise ConfigurationError(
            f"render memory budget of {mb} MB ({origin}) cannot fit one image at the pixel "
            f"limit, which needs about {-(-needed // MB)} MB: raise DARKROOM_RENDER_MEMORY_MB "
            "(or the container's memory limit), or lower DARKROOM_MAX_IMAGE_PIXELS"
        )
    return MemoryBudget(mb * MB)


async def standalone(settings: Settings, stop: asyncio.Event) -> None:
    require_real_broker(settings, "the thumbnail worker")
    await serve(settings, stop)


def main() -> None:
    run_process(standalone)
