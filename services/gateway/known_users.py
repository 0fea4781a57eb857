"""Users are recorded on their first request that carries an address, cheaply.

Recording must not cost the hot path (a grant is a few milliseconds, docs/performance.md):
each gateway keeps the users it has recorded, with the address it recorded, in memory,
so only a user's first request to a replica, or one whose token claims a new address,
touches the database; a request without one (no `email` claim, an API key) never does.
A user new to the whole system gets user.created (their welcome mail) exactly once: the
insert that records them queues it (shared/users.py).
"""

from __future__ import annotations

import asyncio

from shared.errors import TransientError
from shared.logging import get_logger
from shared.outbox import Outbox
from shared.users import Users

log = get_logger(__name__)
KEPT = 100_000  # users remembered per gateway; forgotten all at once past this


class KnownUsers:
    """Users this gateway recorded, by id, with the address recorded."""

    def __init__(self, users: Users, outbox: Outbox) -> None:
        self._users = users
        self._outbox = outbox
        self._known: dict[str, str] = {}
        self._recording: dict[str, asyncio.Future[None]] = {}

    async def seen(self, user_id: str, email: str | None, *, trace_id: str) -> None:
        """Record the user and their address unless this gateway did already. Requests
        arriving while the user is being recorded wait for that instead of writing too."""
        while email is not None and self._known.get(user_id) != email:
            pending = self._recording.get(user_id)
            if pending is None:
                pending = asyncio.ensure_future(self._record(user_id, email, trace_id))
                self._recording[user_id] = pending
                pending.add_done_callback(lambda _: self._recording.pop(user_id, None))
                await asyncio.shield(pending)
                return
            await asyncio.shield(pending)

    async def _record(self, user_id: str, email: str, trace_id: str) -> None:
        try:
            created = await self._users.record(user_id, email, trace_id=trace_id)
            if created is not None:
                await self._outbox.publish_or_defer(created)
        except TransientError as exc:
            # The request itself need not fail for it: the next one records the user.
            log.warning("user not recorded", error=str(exc))
            return
        if len(self._known) >= KEPT:
            self._known.clear()
        self._known[user_id] = email

    def forget(self, user_id: str) -> None:
        self._known.pop(user_id, None)

    def forget_all(self) -> None:
        """When this replica may have missed an account's deletion: each user's next
        request with an address records them again (one write each)."""
        self._known.clear()
