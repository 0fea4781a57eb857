"""Fan-out: which endpoints hear of an event, each getting a delivery of its own.

Photo events go to the photo owner's endpoints; album events to every member's, the
owner's included; DARKROOM_WEBHOOK_URL, when set, hears of every event. Each delivery
is then a message of its own on the webhooks queue (services/notifier/delivery.py), so a
failing endpoint retries on its own schedule and holds up nobody else's.
"""

from __future__ import annotations

from datetime import UTC, datetime

from shared.events import (
    AlbumDeleted,
    AlbumMemberAdded,
    AlbumRevealed,
    PhotoDeleted,
    PhotoReady,
    PhotoRejected,
)
from shared.logging import get_logger
from shared.resources import Resources
from shared.runtime import Meta
from shared.webhook_deliveries import OPERATOR, Planned, webhook_body

log = get_logger(__name__)
PhotoEvent = PhotoReady | PhotoRejected | PhotoDeleted
AlbumEvent = AlbumRevealed | AlbumMemberAdded | AlbumDeleted


class Fanout:
    def __init__(self, res: Resources) -> None:
        self.res = res

    async def recipients(self, event: PhotoEvent | AlbumEvent) -> set[str]:
        """The users whose endpoints hear of `event`."""
        if isinstance(event, PhotoReady | PhotoRejected | PhotoDeleted):
            return {event.owner_id}
        if isinstance(event, AlbumDeleted):
            # The members are gone with the album; the event names them.
            return {event.owner_id, *event.member_ids}
        members = {m.user_id for m in await self.res.albums.members(event.album_id)}
        if isinstance(event, AlbumMemberAdded):
            members.add(event.user_id)
        return {event.owner_id, *members}

    async def on_event(self, event: PhotoEvent | AlbumEvent, meta: Meta) -> None:
        users = await self.recipients(event)
        endpoints = [h.id for h in await self.res.webhooks.subscribed(users, event.TYPE)]
        if self.res.settings.webhook_url:
            endpoints.append(OPERATOR)
        if not endpoints:
            log.info("no endpoint subscribed", event_type=event.TYPE)
            return
        body = webhook_body(event, datetime.now(UTC))
        planned = Planned(meta.event_id, event.TYPE, body, meta.trace_id)
        due = await self.res.deliveries.plan(planned, endpoints)
        await self.res.outbox.publish_or_defer(*due)
        log.info("deliveries planned", event_type=event.TYPE, endpoints=len(endpoints))
