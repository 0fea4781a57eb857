"""The reveal loop: announces each album whose reveal time came, exactly once.

Every notifier replica runs it. A round claims due albums by compare-and-set (see
`shared.albums`), each with its album.revealed queued in the same transaction, then
publishes what it claimed; a replica that loses the race for an album claims nothing,
and an event a crash left unpublished is sent by the outbox relay. Photos do not wait
for this: the gateway unseals them by the clock alone.
"""

from __future__ import annotations

import asyncio
import contextlib

from shared.errors import TransientError
from shared.logging import get_logger
from shared.resources import Resources

log = get_logger(__name__)


async def reveal_once(res: Resources) -> int:
    """One round; returns how many albums this call announced."""
    claimed = await res.albums.claim_reveals()
    if claimed:
        await res.outbox.publish_or_defer(*claimed)
        for envelope in claimed:
            log.info("album revealed", album_id=envelope.data["album_id"])
    return len(claimed)


async def reveal_loop(res: Resources, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await reveal_once(res)
        except TransientError as exc:
            # Database away: the albums stay due for the next round.
            log.warning("reveal round failed", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), res.settings.reveal_interval)
