"""Users' webhook endpoints: what they subscribe to, and the secrets that sign for them.

Secrets are stored sealed (shared.secrets.seal) and opened only to sign a delivery; no
API answer carries one except the creation's and the rotation's. After a rotation the
previous secret signs too until `previous_until`, so receivers can switch over.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict

from shared.db import Database
from shared.records import UtcDatetime
from shared.secrets import seal, unseal
from shared.tables import webhook_attempts, webhook_deliveries, webhooks

EVERY_EVENT = "*"


class WebhookRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    id: str
    user_id: str
    url: str
    description: str
    events: tuple[str, ...]
    secret: str  # sealed
    previous_secret: str | None = None  # sealed
    previous_until: UtcDatetime | None = None
    failing_since: UtcDatetime | None = None
    disabled_at: UtcDatetime | None = None
    created_at: UtcDatetime

    def wants(self, event_type: str) -> bool:
        return EVERY_EVENT in self.events or event_type in self.events


def _record(row: sa.Row[Any]) -> WebhookRecord:
    return WebhookRecord.model_validate(dict(row._mapping))


class Webhooks:
    def __init__(self, db: Database, sealing_key: str) -> None:
        self.db = db
        self._key = sealing_key

    def seal(self, secret: str) -> str:
        return seal(secret, self._key)

    def signing_secrets(self, hook: WebhookRecord, now: datetime | None = None) -> list[str]:
        """The secrets that sign a delivery now: the current one, and the previous one
        during the overlap after a rotation."""
        opened = [unseal(hook.secret, self._key)]
        until = hook.previous_until
        if hook.previous_secret and until and until > (now or datetime.now(UTC)):
            opened.append(unseal(hook.previous_secret, self._key))
        return opened

    async def create(self, hook: WebhookRecord) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(sa.insert(webhooks).values(**hook.model_dump()))

    async def get(self, webhook_id: str, user_id: str | None = None) -> WebhookRecord | None:
        """The endpoint; with `user_id`, only if it is theirs."""
        query = sa.select(webhooks).where(webhooks.c.id == webhook_id)
        if user_id is not None:
            query = query.where(webhooks.c.user_id == user_id)
        async with self.db.transaction() as conn:
            row = (await conn.execute(query)).first()
        return _record(row) if row else None

    async def count(self, user_id: str) -> int:
        query = sa.select(sa.func.count()).where(webhooks.c.user_id == user_id)
        async with self.db.transaction() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def of_user(
        self, user_id: str, *, limit: int, before: tuple[datetime, str] | None = None
    ) -> list[WebhookRecord]:
        """The user's endpoints, newest first, keyset-paged on (created_at, id)."""
        c = webhooks.c
        query = sa.select(webhooks).where(c.user_id == user_id)
        if before is not None:
            created, hook_id = before
            query = query.where(
                sa.or_(c.created_at < created, sa.and_(c.created_at == created, c.id < hook_id))
            )
        query = query.order_by(c.created_at.desc(), c.id.desc()).limit(limit)
        async with self.db.transaction() as conn:
            return [_record(r) for r in (await conn.execute(query)).all()]

    async def subscribed(self, user_ids: Collection[str], event_type: str) -> list[WebhookRecord]:
        """The enabled endpoints of these users that want `event_type`."""
        if not user_ids:
            return []
        c = webhooks.c
        query = (
            sa.select(webhooks)
            .where(c.user_id.in_(sorted(user_ids)), c.disabled_at.is_(None))
            .order_by(c.id)
        )
        async with self.db.transaction() as conn:
            hooks = [_record(r) for r in (await conn.execute(query)).all()]
        return [h for h in hooks if h.wants(event_type)]

    async def rotate(
        self, webhook_id: str, user_id: str, new_secret: str, *, overlap_s: float
    ) -> WebhookRecord | None:
        """A new secret; the current one keeps signing for `overlap_s` seconds."""
        hook = await self.get(webhook_id, user_id)
        if hook is None:
            return None
        values = {
            "secret": self.seal(new_secret),
            "previous_secret": hook.secret,
            "previous_until": datetime.now(UTC) + timedelta(seconds=overlap_s),
        }
        c = webhooks.c
        stmt = sa.update(webhooks).where(c.id == webhook_id, c.secret == hook.secret)
        async with self.db.transaction() as conn:
            if not (await conn.execute(stmt.values(**values))).rowcount:
                return None  # rotated (or deleted) meanwhile
        return hook.model_copy(update=values)

    async def enable(self, webhook_id: str, user_id: str) -> WebhookRecord | None:
        """Deliveries resume for a disabled endpoint; its failure streak starts afresh."""
        c = webhooks.c
        stmt = (
            sa.update(webhooks)
            .where(c.id == webhook_id, c.user_id == user_id)
            .values(disabled_at=None, failing_since=None)
            .returning(*webhooks.c)
        )
        async with self.db.transaction() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _record(row)

    async def delete(self, webhook_id: str, user_id: str) -> bool:
        """The endpoint and its delivery log; deliveries still queued find it gone."""
        async with self.db.transaction() as conn:
            gone = await conn.execute(
                sa.delete(webhooks).where(
                    webhooks.c.id == webhook_id, webhooks.c.user_id == user_id
                )
            )
            if gone.rowcount:
                await _forget_deliveries(conn, [webhook_id])
        return bool(gone.rowcount)

    async def forget_user(self, user_id: str) -> None:
        """Account deletion: every endpoint of the user and their delivery logs."""
        async with self.db.transaction() as conn:
            ids = [
                r.id
                for r in (
                    await conn.execute(
                        sa.select(webhooks.c.id).where(webhooks.c.user_id == user_id)
                    )
                ).all()
            ]
            if ids:
                await _forget_deliveries(conn, ids)
                await conn.execute(sa.delete(webhooks).where(webhooks.c.id.in_(ids)))


async def _forget_deliveries(conn: Any, webhook_ids: list[str]) -> None:
    d = webhook_deliveries.c
    theirs = sa.select(d.id).where(d.webhook_id.in_(webhook_ids)).scalar_subquery()
    await conn.execute(
        sa.delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(theirs))
    )
    await conn.execute(sa.delete(webhook_deliveries).where(d.webhook_id.in_(webhook_ids)))
