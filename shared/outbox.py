"""Transactional outbox: an event is stored with the state change it announces, then sent.

A handler that changes state sends its event right after the commit. If it crashes or the
broker is away at that moment, the event waits in the `outbox` table and the relay, which
every worker runs, sends it a little later. So a state change is announced at least once,
a duplicate or replayed message changes nothing and announces nothing, and the rare
resend after a crash between confirm and delete carries the same event id.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from shared.broker import Broker, publish_envelope
from shared.db import Database, Single
from shared.errors import TransientError
from shared.events import Envelope
from shared.logging import get_logger
from shared.tables import outbox
from shared.topology import Topology

log = get_logger(__name__)

# How long a request waits for the broker's confirm before leaving its events to the
# relay; far below the relay's age threshold, so the two rarely both send one event.
PUBLISH_WAIT_S = 2.0


class database_now(FunctionElement[datetime]):
    """The database's clock, which dates and ages outbox rows: every host that queues or
    relays an event then agrees on its age, whatever their own clocks say (a relay whose
    clock ran ahead of the inserting host's took fresh events for left behind)."""

    type = sa.DateTime(timezone=True)
    inherit_cache = True


@compiles(database_now)
def _now(element: database_now, compiler: Any, **kw: Any) -> str:
    # Not now(): that is when the transaction began, and one that waited on a lock
    # would date its event older than it is.
    return "clock_timestamp()"


@compiles(database_now, "sqlite")
def _now_sqlite(element: database_now, compiler: Any, **kw: Any) -> str:
    # UTC to the millisecond, written as SQLAlchemy writes a datetime there.
    return "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


def queued(envelope: Envelope) -> sa.Insert:
    """The row that queues `envelope`; state changes execute it in their own transaction."""
    return sa.insert(outbox).values(
        id=envelope.id,
        routing_key=envelope.type,
        body=envelope.to_bytes().decode(),
        created_at=database_now(),
    )


@cache
def _forget() -> Single:
    ids = outbox.c.id
    return Single(
        sa.delete(outbox).where(ids.in_(sa.bindparam("ids", expanding=True))),
        "ids",
        postgresql=sa.delete(outbox).where(
            ids == sa.any_(sa.bindparam("ids", type_=ARRAY(sa.Text)))
        ),
    )


class Outbox:
    def __init__(self, db: Database, broker: Broker, topology: Topology) -> None:
        self._db = db
        self._broker = broker
        self._topology = topology

    async def queue(self, envelope: Envelope) -> None:
        """Queue an event on its own, when nothing else changes with it."""
        async with self._db.transaction() as conn:
            await conn.execute(queued(envelope))

    async def claim_unpublished(
        self, *, older_than_s: float, lease_s: float, limit: int = 100
    ) -> list[Envelope]:
        """Events nobody sent yet, leased to this caller so other relays skip them."""
        # SQLite does no date arithmetic; its one host's clock is the database's anyway.
        now: Any = datetime.now(UTC) if self._db.is_sqlite else database_now()
        due = (
            sa.select(outbox.c.id)
            .where(
                outbox.c.created_at < now - timedelta(seconds=older_than_s),
                sa.or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now),
            )
            .order_by(outbox.c.created_at)
            .limit(limit)
        )
        stmt = (
            sa.update(outbox)
            .where(outbox.c.id.in_(due.scalar_subquery()))
            .values(claimed_until=now + timedelta(seconds=lease_s))
            .returning(outbox.c.body)
        )
        async with self._db.transaction() as conn:
            rows = (await conn.execute(stmt)).all()
        return [Envelope.from_bytes(row.body.encode()) for row in rows]

    async def backlog(self) -> tuple[int, float]:
        """Events not yet published, and the age in seconds of the oldest (0 if none)."""
        stmt = sa.select(sa.func.count(), sa.func.min(outbox.c.created_at), database_now())
        async with self._db.transaction() as conn:
            count, oldest, now = (await conn.execute(stmt)).one()
        if oldest is None:
            return 0, 0.0
        if oldest.tzinfo is None:  # SQLite hands back naive UTC
            oldest, now = oldest.replace(tzinfo=UTC), now.replace(tzinfo=UTC)
        return int(count), max(0.0, (now - oldest).total_seconds())

    async def forget_published(self, *event_ids: str) -> None:
        await self._db.run(_forget(), ids=list(event_ids))

    async def publish(self, envelope: Envelope) -> None:
        """Publish a committed outbox event (confirmed), then forget it."""
        await publish_envelope(self._broker, self._topology, envelope)
        await self.forget_published(envelope.id)

    async def publish_or_defer(self, *envelopes: Envelope) -> None:
        """Send committed events now, for a request that should not wait on the broker:
        skipped while it is away, and given PUBLISH_WAIT_S. Whatever does not go out
        stays in the table and the relay sends it shortly, so this never fails for the
        broker's sake: it logs, and the caller need not retry."""
        if not self._broker.is_ready:
            log.warning("broker away; events left to the outbox relay", count=len(envelopes))
            return
        results = await asyncio.gather(
            *(self._publish_quickly(e) for e in envelopes), return_exceptions=True
        )
        sent = []
        for envelope, result in zip(envelopes, results, strict=True):
            if isinstance(result, TransientError | TimeoutError):
                log.warning("event left to the outbox relay", event_type=envelope.type)
            elif isinstance(result, BaseException):
                raise result
            else:
                sent.append(envelope.id)
        if sent:
            try:
                await self.forget_published(*sent)
            except TransientError as exc:
                # The relay will send them again: a duplicate with the same event id.
                log.warning("sent events not forgotten", count=len(sent), error=str(exc))

    async def _publish_quickly(self, envelope: Envelope) -> None:
        async with asyncio.timeout(PUBLISH_WAIT_S):
            await publish_envelope(self._broker, self._topology, envelope)

    async def relay_once(self, *, older_than_s: float, lease_s: float = 30.0) -> int:
        """Send events left behind by crashes or outages; returns how many went out."""
        sent = 0
        for envelope in await self.claim_unpublished(older_than_s=older_than_s, lease_s=lease_s):
            await self.publish(envelope)
            sent += 1
        if sent:
            log.info("outbox relay sent left-behind events", count=sent)
        return sent

    async def relay(self, stop: asyncio.Event, *, interval_s: float, older_than_s: float) -> None:
        while not stop.is_set():
            try:
                await self.relay_once(older_than_s=older_than_s)
            except TransientError as exc:
                # Broker or database away: the events stay in the table for the next round.
                log.warning("outbox relay round failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
