"""Users and the mails sent to them.

A user is recorded the first time the gateway sees them with an address (their token's
`email` claim); user.created is queued in the same transaction, so however many
requests and replicas race, it is announced once. Mail goes only to a recorded address
whose owner has not turned mail off, both read when the mail is sent.

Each mail to a user about an event is claimed here before the SMTP server is asked, and
marked sent once it accepted (see `Mails`).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict

from shared.db import Database
from shared.events import Envelope, UserCreated
from shared.outbox import queued
from shared.records import UtcDatetime
from shared.tables import mails, users


class UserRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    id: str
    email: str | None
    email_notifications: bool
    created_at: UtcDatetime


class Users:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, user_id: str, email: str, *, trace_id: str) -> Envelope | None:
        """Record the user if new (returning the user.created queued with them), or their
        newly claimed address if not."""
        now = datetime.now(UTC)
        insert = (
            self.db.insert(users)
            .values(id=user_id, email=email, created_at=now)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(users.c.id)
        )
        async with self.db.transaction() as conn:
            if (await conn.execute(insert)).first() is not None:
                # Only the insert that created the row gets here, so one event per
                # account (an account deleted and made again is a new one, welcomed again).
                envelope = Envelope.wrap(
                    UserCreated(user_id=user_id, email=email), trace_id=trace_id
                )
                await conn.execute(queued(envelope))
                return envelope
            c = users.c
            changed = sa.or_(c.email.is_(None), c.email != email)
            await conn.execute(sa.update(users).where(c.id == user_id, changed).values(email=email))
        return None

    async def get(self, user_id: str) -> UserRecord | None:
        async with self.db.transaction() as conn:
            row = (await conn.execute(sa.select(users).where(users.c.id == user_id))).first()
        return UserRecord.model_validate(dict(row._mapping)) if row else None

    async def set_preferences(self, user_id: str, *, email_notifications: bool) -> UserRecord:
        """Set the preference, recording the user first if the gateway had not yet."""
        insert = (
            self.db.insert(users)
            .values(id=user_id, created_at=datetime.now(UTC))
            .on_conflict_do_nothing(index_elements=["id"])
        )
        update = (
            sa.update(users)
            .where(users.c.id == user_id)
            .values(email_notifications=email_notifications)
            .returning(*users.c)
        )
        async with self.db.transaction() as conn:
            await conn.execute(insert)
            row = (await conn.execute(update)).one()
        return UserRecord.model_validate(dict(row._mapping))

    async def reachable(self, user_ids: Collection[str]) -> list[str]:
        """Those of `user_ids` with an address who take mail, in the order given."""
        c = users.c
        query = sa.select(c.id).where(
            c.id.in_(list(user_ids)), c.email.is_not(None), c.email_notifications
        )
        async with self.db.transaction() as conn:
            found = set((await conn.execute(query)).scalars())
        return [u for u in user_ids if u in found]

    async def forget(self, user_id: str) -> None:
        """Account deletion: the address and preference go with the account."""
        async with self.db.transaction() as conn:
            await conn.execute(sa.delete(users).where(users.c.id == user_id))


class Claim(StrEnum):
    CLAIMED = "claimed"  # this caller sends it now
    SENT = "sent"  # the server accepted it before: nothing to do
    BUSY = "busy"  # another sender holds an unexpired claim on it


class Mails:
    """The ledger of mails, one row per (event id, user).

    `claim` inserts the row as `sending` with a lease, or takes over a `sending` row whose
    lease ran out (its sender died or gave up); `mark_sent` records the server's
    acceptance. A message redelivered after the mark finds it and sends nothing. What is
    left: a sender that dies after the server accepted the mail and before the mark
    commits leaves a claim that the next attempt takes over once the lease ends, and that
    attempt sends the mail again (same Message-ID, so mail clients may fold the two).
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(self, event_id: str, user_id: str, message_id: str, lease_s: float) -> Claim:
        now = datetime.now(UTC)
        until = now + timedelta(seconds=lease_s)
        c = mails.c
        mine = sa.and_(c.event_id == event_id, c.user_id == user_id)
        insert = (
            self.db.insert(mails)
            .values(
                event_id=event_id,
                user_id=user_id,
                message_id=message_id,
                state="sending",
                claimed_until=until,
            )
            .on_conflict_do_nothing(index_elements=["event_id", "user_id"])
            .returning(c.event_id)
        )
        take_over = (
            sa.update(mails)
            .where(mine, c.state == "sending", c.claimed_until < now)
            .values(claimed_until=until)
            .returning(c.event_id)
        )
        async with self.db.transaction() as conn:
            if (await conn.execute(insert)).first() is not None:
                return Claim.CLAIMED
            if (await conn.execute(take_over)).first() is not None:
                return Claim.CLAIMED
            state = (await conn.execute(sa.select(c.state).where(mine))).scalar_one()
        return Claim.SENT if state == "sent" else Claim.BUSY

    async def mark_sent(self, event_id: str, user_id: str) -> None:
        c = mails.c
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.update(mails)
                .where(c.event_id == event_id, c.user_id == user_id)
                .values(state="sent", sent_at=datetime.now(UTC))
            )

    async def release(self, event_id: str, user_id: str) -> None:
        """The server did not take the mail: the next attempt need not wait for the lease."""
        c = mails.c
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.update(mails)
                .where(c.event_id == event_id, c.user_id == user_id, c.state == "sending")
                .values(claimed_until=datetime.now(UTC) - timedelta(seconds=1))
            )

    async def sent(self, user_id: str) -> int:
        """How many mails the user was sent (tests, operators)."""
        c = mails.c
        query = sa.select(sa.func.count()).where(c.user_id == user_id, c.state == "sent")
        async with self.db.transaction() as conn:
            return int((await conn.execute(query)).scalar_one())
