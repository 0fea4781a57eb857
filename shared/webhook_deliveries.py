"""The delivery log: one row per (endpoint, event), one more per attempt.

`plan` records an event's deliveries and queues one `webhook.delivery` message for each
new one in the same transaction (outbox), so a fan-out handled twice plans nothing
twice. `record` stores an attempt's outcome and keeps the endpoint's failure window:
an endpoint whose deliveries failed without a success in between for longer than the
window is disabled, and `webhook.disabled` is queued with that change.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict

from shared.db import Database, Single
from shared.events import Envelope, Event, WebhookDelivery, WebhookDisabled
from shared.outbox import queued
from shared.records import UtcDatetime
from shared.tables import webhook_attempts, webhook_deliveries, webhooks

# The pseudo-endpoint DARKROOM_WEBHOOK_URL stands for in the log.
OPERATOR = "operator"
_DELIVERY_NAMESPACE = uuid.UUID("0b6f4f7e-8d1c-4a4e-b7f1-3c1d2e9a5f60")


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class DeliveryRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    body: str
    status: DeliveryStatus
    attempts: int
    created_at: UtcDatetime
    updated_at: UtcDatetime


class AttemptRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    delivery_id: str
    number: int
    response_status: int | None
    duration_ms: int
    error: str | None
    response_excerpt: str | None
    at: UtcDatetime

    @property
    def succeeded(self) -> bool:
        return self.response_status is not None and 200 <= self.response_status < 300


@dataclass(frozen=True)
class Planned:
    """An event for endpoints: its id stays the webhook-id of every attempt."""

    event_id: str
    event_type: str
    body: bytes
    trace_id: str


def webhook_body(event: Event, at: datetime) -> bytes:
    """What an endpoint receives: the event's type, when it was planned, its data. Fixed
    when planned, so every attempt sends the same bytes."""
    body = {"type": event.TYPE, "timestamp": at.isoformat(), "data": event.model_dump(mode="json")}
    return json.dumps(body).encode()


def delivery_id(webhook_id: str, event_id: str) -> str:
    return uuid.uuid5(_DELIVERY_NAMESPACE, f"{webhook_id}:{event_id}").hex


def _due(delivery: str, trace_id: str, *, message_id: str | None = None) -> Envelope:
    return Envelope.wrap(
        WebhookDelivery(delivery_id=delivery), trace_id=trace_id, event_id=message_id
    )


class Deliveries:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def plan(self, event: Planned, webhook_ids: Sequence[str]) -> list[Envelope]:
        """Record the deliveries not yet recorded; their messages are queued with them
        and returned, for the caller to publish (the outbox relay sends any it does not)."""
        now = datetime.now(UTC)
        due: list[Envelope] = []
        async with self.db.transaction() as conn:
            for hook in webhook_ids:
                row_id = delivery_id(hook, event.event_id)
                insert = self.db.insert(webhook_deliveries).values(
                    id=row_id,
                    webhook_id=hook,
                    event_id=event.event_id,
                    event_type=event.event_type,
                    body=event.body.decode(),
                    status=DeliveryStatus.PENDING.value,
                    attempts=0,
                    created_at=now,
                    updated_at=now,
                )
                if (await conn.execute(insert.on_conflict_do_nothing())).rowcount:
                    # The first message of a delivery has the delivery's id: a re-run
                    # plan cannot queue a second.
                    envelope = _due(row_id, event.trace_id, message_id=row_id)
                    await conn.execute(queued(envelope))
                    due.append(envelope)
        return due

    async def get(self, delivery: str, webhook_id: str | None = None) -> DeliveryRecord | None:
        """The delivery (only if it is `webhook_id`'s, when given)."""
        rows = await self.db.run(_get(), id=delivery, webhook_id=webhook_id)
        return DeliveryRecord.model_validate(rows[0]) if rows else None

    async def claim(self, delivery: str, *, lease_s: float) -> bool:
        """Take the delivery for one attempt; False while another attempt holds it (or
        it was delivered meanwhile)."""
        now = datetime.now(UTC)
        until = now + timedelta(seconds=lease_s)
        return bool(await self.db.run(_claim(), delivery=delivery, now=now, until=until))

    async def record(
        self,
        delivery: DeliveryRecord,
        attempt: AttemptRecord,
        *,
        final: bool,
        disable_after_s: float,
    ) -> list[Envelope]:
        """Store the attempt; the delivery is delivered, failed (after the `final`
        attempt) or still pending. Returns events queued with it (webhook.disabled)."""
        status = (
            DeliveryStatus.DELIVERED
            if attempt.succeeded
            else DeliveryStatus.FAILED
            if final
            else DeliveryStatus.PENDING
        )
        d = webhook_deliveries.c
        async with self.db.transaction() as conn:
            number = (
                await conn.execute(
                    sa.update(webhook_deliveries)
                    .where(d.id == delivery.id)
                    .values(
                        attempts=d.attempts + 1,
                        status=status.value,
                        updated_at=attempt.at,
                        claimed_until=None,
                    )
                    .returning(d.attempts)
                )
            ).scalar_one_or_none()
            if number is None:
                return []  # the endpoint was deleted meanwhile
            values = attempt.model_dump() | {"number": number}
            await conn.execute(sa.insert(webhook_attempts).values(**values))
            if delivery.webhook_id == OPERATOR:
                return []
            return await _track_failures(conn, delivery, attempt, disable_after_s)

    async def retry(self, delivery: str, webhook_id: str, trace_id: str) -> Envelope | None:
        """Send a delivery again (its user asked): pending once more, a message queued."""
        d = webhook_deliveries.c
        envelope = _due(delivery, trace_id)
        stmt = (
            sa.update(webhook_deliveries)
            .where(d.id == delivery, d.webhook_id == webhook_id)
            .values(status=DeliveryStatus.PENDING.value, updated_at=datetime.now(UTC))
        )
        async with self.db.transaction() as conn:
            if not (await conn.execute(stmt)).rowcount:
                return None
            await conn.execute(queued(envelope))
        return envelope

    async def page(
        self, webhook_id: str, *, limit: int, before: tuple[datetime, str] | None = None
    ) -> list[tuple[DeliveryRecord, list[AttemptRecord]]]:
        """The endpoint's deliveries, newest first, keyset-paged; each with its attempts."""
        d = webhook_deliveries.c
        query = sa.select(webhook_deliveries).where(d.webhook_id == webhook_id)
        if before is not None:
            created, row_id = before
            query = query.where(
                sa.or_(d.created_at < created, sa.and_(d.created_at == created, d.id < row_id))
            )
        query = query.order_by(d.created_at.desc(), d.id.desc()).limit(limit)
        a = webhook_attempts.c
        async with self.db.transaction() as conn:
            rows = [
                DeliveryRecord.model_validate(dict(r._mapping))
                for r in (await conn.execute(query)).all()
            ]
            tried = sa.select(webhook_attempts).where(a.delivery_id.in_([r.id for r in rows]))
            attempts = [
                AttemptRecord.model_validate(dict(r._mapping))
                for r in (await conn.execute(tried.order_by(a.number))).all()
            ]
        return [(row, [t for t in attempts if t.delivery_id == row.id]) for row in rows]


@cache
def _get() -> Single:
    d = webhook_deliveries.c
    hook = sa.bindparam("webhook_id", type_=sa.Text)
    query = sa.select(webhook_deliveries).where(
        d.id == sa.bindparam("id"), sa.or_(hook.is_(None), d.webhook_id == hook)
    )
    return Single(query, "id", "webhook_id")


@cache
def _claim() -> Single:
    d = webhook_deliveries.c
    now = sa.bindparam("now", type_=sa.DateTime(timezone=True))
    stmt = (
        sa.update(webhook_deliveries)
        .where(
            d.id == sa.bindparam("delivery"),
            d.status != DeliveryStatus.DELIVERED.value,
            sa.or_(d.claimed_until.is_(None), d.claimed_until < now),
        )
        .values(claimed_until=sa.bindparam("until", type_=sa.DateTime(timezone=True)))
        .returning(d.id)
    )
    return Single(stmt, "delivery", "now", "until")


async def _track_failures(
    conn: Any, delivery: DeliveryRecord, attempt: AttemptRecord, disable_after_s: float
) -> list[Envelope]:
    w = webhooks.c
    if attempt.succeeded:
        await conn.execute(
            sa.update(webhooks).where(w.id == delivery.webhook_id).values(failing_since=None)
        )
        return []
    await conn.execute(
        sa.update(webhooks)
        .where(w.id == delivery.webhook_id, w.failing_since.is_(None))
        .values(failing_since=attempt.at)
    )
    cutoff = attempt.at - timedelta(seconds=disable_after_s)
    disabled = (
        await conn.execute(
            sa.update(webhooks)
            .where(
                w.id == delivery.webhook_id,
                w.disabled_at.is_(None),
                w.failing_since <= cutoff,
            )
            .values(disabled_at=attempt.at)
            .returning(w.user_id, w.url, w.failing_since)
        )
    ).first()
    if disabled is None:
        return []
    since = disabled.failing_since
    event = WebhookDisabled(
        user_id=disabled.user_id,
        webhook_id=delivery.webhook_id,
        url=disabled.url,
        failing_since=since if since.tzinfo else since.replace(tzinfo=UTC),
    )
    envelope = Envelope.wrap(event, trace_id=uuid.uuid4().hex)
    await conn.execute(queued(envelope))
    return [envelope]
