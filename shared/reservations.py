"""Recording upload intents within each owner's quotas, many requests per transaction.

A grant must not be answered before its intent is committed, and concurrent grants (on
any replica) must not overrun an owner's quota together. One transaction per grant did
both, at about 15 round trips and four compiled statements per grant: 55-62% of the
gateway's CPU at 230 grants/s. Here the reservations that arrive while one transaction is
being written wait for it, then go together in the next one. Each request's quota check
sees the usage of everything committed and everything accepted before it in its batch.

On PostgreSQL a batch is BEGIN, one call of `reserve_usage` (its owners' locks, their
lapsed uploads retired, their usage sums, which triggers keep: revision 0007), one
INSERT of every accepted intent, COMMIT; on the asyncpg connection directly, statements
compiled once (building them through SQLAlchemy Core on every batch was 34% of the
gateway's CPU). SQLite (one process) serialises reservations with a lock and counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import Compiled, Database
from shared.errors import DatabaseUnavailable
from shared.records import NewPhoto, PhotoStatus
from shared.tables import photos

# Transactions at once: while one is written, the next is filled and started. Measured
# with bench.gateway, 64 users: 1 writer 1494-1502 grants/s, 2 writers 1659-1871.
WRITERS = 2
MAX_BATCH = 500  # intents per transaction; a batch request brings up to 50


class Usage(NamedTuple):
    kept: int  # photos that count against the quota
    used: int  # their bytes
    pending: int  # uploads granted whose URL has not lapsed

    def plus(self, intents: Sequence[NewPhoto]) -> Usage:
        size = sum(i.declared_size for i in intents)
        return Usage(self.kept + len(intents), self.used + size, self.pending + len(intents))


Check = Callable[[Usage], None]  # raises to refuse


@dataclass
class _Request:
    owner_id: str
    intents: Sequence[NewPhoto]
    check: Check
    answer: asyncio.Future[None]


class Reservations:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = asyncio.Lock()  # SQLite only
        self._waiting: list[_Request] = []
        self._writers: set[asyncio.Task[None]] = set()

    async def reserve(self, owner_id: str, intents: Sequence[NewPhoto], check: Check) -> None:
        """Record `intents` if `check(usage)` lets them through; raises what it raised."""
        if self.db.is_sqlite:
            async with self._lock, self.db.transaction() as conn:
                check((await usage_of(conn, [owner_id])).get(owner_id, NOTHING))
                insert = self.db.insert(photos).on_conflict_do_nothing(index_elements=["id"])
                await conn.execute(insert, rows(intents))
            return
        answer = asyncio.get_running_loop().create_future()
        self._waiting.append(_Request(owner_id, intents, check, answer))
        if len(self._writers) < WRITERS:
            writer = asyncio.create_task(self._write_all())
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        await answer

    async def _write_all(self) -> None:
        while self._waiting:
            batch = self._next_batch()
            try:
                await self._write(batch)
            except BaseException as exc:  # every request of the batch gets the failure
                for request in batch:
                    if not request.answer.done():
                        request.answer.set_exception(
                            exc if isinstance(exc, Exception) else DatabaseUnavailable(repr(exc))
                        )
                if not isinstance(exc, Exception):
                    raise

    def _next_batch(self) -> list[_Request]:
        batch: list[_Request] = []
        count = 0
        while self._waiting and (not batch or count + len(self._waiting[0].intents) <= MAX_BATCH):
            batch.append(self._waiting.pop(0))
            count += len(batch[-1].intents)
        return batch

    async def _write(self, batch: list[_Request]) -> None:
        owners = sorted({r.owner_id for r in batch})  # one lock order on every replica
        async with self.db.raw_transaction() as conn:
            found = await conn.fetch(_RESERVE, owners)
            usage = {row[0]: Usage(row[1], row[2], row[3]) for row in found}
            accepted = _checked(batch, usage)
            if accepted:
                values = rows(i for r in accepted for i in r.intents)
                insert = _insert()
                await conn.execute(insert.sql, *insert.args(**_columns(values)))
        for request in accepted:
            if not request.answer.done():
                request.answer.set_result(None)


def _checked(batch: list[_Request], usage: dict[str, Usage]) -> list[_Request]:
    """The requests their checks let through, each seeing those accepted before it; the
    others are answered with what their check raised."""
    accepted: list[_Request] = []
    for request in batch:
        if request.answer.done():
            continue  # its caller was cancelled (a drain's deadline): nothing to record
        now = usage.get(request.owner_id, NOTHING)
        try:
            request.check(now)
        except Exception as refused:
            request.answer.set_exception(refused)
            continue
        usage[request.owner_id] = now.plus(request.intents)
        accepted.append(request)
    return accepted


NOTHING = Usage(0, 0, 0)
# Locks, lapsed uploads retired and the owners' sums in one round trip (revision 0007).
_RESERVE = "SELECT owner_id, photos, bytes, pending FROM reserve_usage($1::text[])"
_COLUMNS = (*NewPhoto.model_fields, "status", "created_at", "updated_at")


@cache
def _insert() -> Compiled:
    """Every intent of a batch in one statement, a column array per parameter: executed
    once, where executemany executed it once per row."""
    arrays = [sa.bindparam(c, type_=postgresql.ARRAY(photos.c[c].type)) for c in _COLUMNS]
    rows = sa.select(sa.text("*")).select_from(sa.func.unnest(*arrays))
    insert = postgresql.insert(photos).from_select(list(_COLUMNS), rows)
    return Compiled.of(insert.on_conflict_do_nothing(index_elements=["id"]), *_COLUMNS)


def _columns(values: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {c: [v[c] for v in values] for c in _COLUMNS}


def rows(intents: Any) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    status = PhotoStatus.PENDING.value
    return [
        {**i.model_dump(), "status": status, "created_at": now, "updated_at": now} for i in intents
    ]


async def usage_of(conn: AsyncConnection, owners: Sequence[str]) -> dict[str, Usage]:
    """Each owner's usage, for quotas."""
    query = usage_query(photos.c.owner_id.in_(owners))
    result = await conn.execute(query, {"now": datetime.now(UTC)})
    return {row[0]: Usage(int(row[1]), int(row[2]), int(row[3])) for row in result}


def usage_query(owners: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """Usage of the owners `owners` selects, as of the bind parameter `now`. A grant counts
    until its URL lapses, even once its photo is deleted."""
    c = photos.c
    now = sa.bindparam("now", type_=photos.c.upload_expires_at.type)
    # Deleting a photo does not stop its URL from storing bytes, so grant-delete cycles
    # must not mint URLs beyond the quota. A rejected photo frees its place at once (the
    # owner may retry; the worker empties its key whenever bytes appear there).
    # A deleted multipart upload is the exception: only the gateway completes one, never
    # once deleted, so parts sent later cannot become an object.
    pending = sa.and_(
        sa.or_(
            c.status == PhotoStatus.PENDING.value,
            sa.and_(c.status == PhotoStatus.DELETED.value, c.upload_id.is_(None)),
        ),
        c.upload_expires_at > now,
    )
    kept = sa.or_(c.status.in_([PhotoStatus.VERIFIED.value, PhotoStatus.READY.value]), pending)
    return (
        sa.select(
            c.owner_id,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sa.func.coalesce(c.size, c.declared_size)), 0),
            sa.func.coalesce(sa.func.sum(sa.case((pending, 1), else_=0)), 0),
        )
        .where(owners, kept)
        .group_by(c.owner_id)
    )
