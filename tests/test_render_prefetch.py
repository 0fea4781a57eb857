"""The thumbnail worker keeps its render threads fed: the next original downloads while
a thread renders."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import cast

import pytest

from services.thumbnail_worker.handlers import Thumbnails
from services.thumbnail_worker.memory import MB, MemoryBudget
from shared.metrics import Metrics
from shared.resources import Resources
from tests.test_render_memory import OneObject, verified_event


class CountedObject(OneObject):
    """Counts downloads, and says when the second one starts."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.downloads = 0
        self.second = asyncio.Event()

    async def get(self, key: str, *, if_match: str | None = None) -> bytes:
        self.downloads += 1
        if self.downloads == 2:
            self.second.set()
        return self.data


async def test_the_next_original_downloads_while_the_only_render_thread_is_busy() -> None:
    storage = CountedObject(b"x" * 10)
    res = SimpleNamespace(
        storage=storage,
        settings=SimpleNamespace(max_image_pixels=10_000_000),
        metrics=Metrics(),
    )
    loop = asyncio.get_running_loop()
    rendering, may_end = asyncio.Event(), threading.Event()

    def busy() -> None:
        loop.call_soon_threadsafe(rendering.set)
        may_end.wait(10)

    with ThreadPoolExecutor(1) as pool, pytest.MonkeyPatch.context() as patch:
        patch.setattr("services.thumbnail_worker.handlers.estimate", lambda *_: MB)
        patch.setattr("services.thumbnail_worker.handlers.render", lambda *_, **__: busy())
        thumbnails = Thumbnails(
            cast(Resources, res), pool, concurrency=1, budget=MemoryBudget(256 * MB)
        )
        first = asyncio.create_task(thumbnails._render(verified_event(10)))
        await rendering.wait()
        second = asyncio.create_task(thumbnails._render(verified_event(10)))
        try:
            # With one slot per thread, the second download waited for the first render.
            await asyncio.wait_for(storage.second.wait(), 10)
        finally:
            may_end.set()
            await asyncio.gather(first, second)
