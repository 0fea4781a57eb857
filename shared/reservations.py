"""Recording upload intents within each owner's quotas, many requests per transaction.

A grant must not be answered before its intent is committed, and concurrent grants (on
any replica) must not overrun an owner's quota together. One transaction per grant did
both, at about 15 round trips and four compiled statements per grant: 55-62% of the
gateway's CPU at 230 grants/s. Here the reservations that arrive while one transaction is
being written wait for it, then go together in the next one. Each request's quota check
sees the usage of everything committed and everything accepted before it in its batch.

On PostgreSQL a batch takes at most two round trips and no explicit transaction: its
owners' usage (sums kept by triggers, revision 0007) unless this process remembers it,
then, once the checks ran, one statement that writes every accepted intent of the owners
whose usage is still what the checks saw, and commits. A replica's batch, or any other
change to an owner's photos, in between makes that owner's requests go round again.
Statements are compiled once and run on the asyncpg connection directly (building them
through SQLAlchemy Core on every batch was 34% of the gateway's CPU). SQLite (one
process) serialises reservations with a lock and counts the photos.
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

from shared.db import Compiled, Database, again_if_unsent
from shared.errors import DatabaseUnavailable
from shared.records import NewPhoto, PhotoStatus
from shared.tables import owner_usage, photos

# Batches at once: while one is written, the next is filled and started. Measured
# with bench.gateway (two-transaction design), 64 users: 1 writer 1494-1502 grants/s,
# 2 writers 1659-1871. With one round trip a batch, 2, 3 and 4 writers measured 0.17,
# 0.19 and 0.19 of aiohttp hello, within the machine's noise: two stay.
WRITERS = 2
MAX_BATCH = 500  # intents per transaction; a batch request brings up to 50
MAX_KNOWN = 10_000  # owners whose usage a process remembers


class Usage(NamedTuple):
    kept: int  # photos that count against the quota
    used: int  # their bytes
    pending: int  # uploads granted whose URL has not lapsed

    def plus(self, intents: Sequence[NewPhoto]) -> Usage:
        size = sum(i.declared_size for i in intents)
        return Usage(self.kept + len(intents), self.used + size, self.pending + len(intents))


# Raises to refuse. It may be asked more than once for one request, and must never let
# through at a higher usage what it refused at a lower one: an acceptance may rest on
# usage that still counts uploads lapsed since, a refusal only on a fresh read.
Check = Callable[[Usage], None]


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
        self._writing: set[str] = set()  # owners of the batches being written
        # Each owner's usage as this process last read or wrote it. A batch of owners
        # all known skips the read: one round trip. If an owner's usage changed since
        # (another replica, a verification, a deletion), the write says so and their
        # requests go round again, after a read.
        self._known: dict[str, Usage] = {}

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
        while batch := self._next_batch():
            try:
                # Only reads run before a batch's write: a refused one is written again.
                self._waiting[:0] = await again_if_unsent(lambda: self._write(batch))
            except BaseException as exc:  # every request of the batch gets the failure
                for request in batch:
                    if not request.answer.done():
                        request.answer.set_exception(
                            exc if isinstance(exc, Exception) else DatabaseUnavailable(repr(exc))
                        )
                if not isinstance(exc, Exception):
                    raise
            finally:
                self._writing.difference_update(r.owner_id for r in batch)

    def _next_batch(self) -> list[_Request]:
        """The oldest requests of owners no other batch of ours is writing: two batches
        of one owner would have the later one lose its compare-and-set."""
        batch: list[_Request] = []
        left: list[_Request] = []
        count = 0
        for request in self._waiting:
            fits = not batch or count + len(request.intents) <= MAX_BATCH
            if fits and request.owner_id not in self._writing:
                batch.append(request)
                count += len(request.intents)
            else:
                left.append(request)
        self._waiting = left
        self._writing.update(r.owner_id for r in batch)
        return batch

    async def _write(self, batch: list[_Request]) -> list[_Request]:
        """Write what the batch's checks let through; returns the requests to decide
        again: those of owners whose usage changed between the read and the write, and
        those refused on remembered usage."""
        owners = sorted({r.owner_id for r in batch})
        unread = [owner for owner in owners if owner not in self._known]
        async with self.db.raw_connection() as conn:
            fresh = await _usage_now(conn, unread) if unread else {}
            usage = {o: fresh[o] if o in fresh else self._known.get(o, NOTHING) for o in owners}
            after = dict(usage)
            accepted, refused = _checked(batch, after)
            # A refusal stands on a fresh read only: remembered usage may still count
            # uploads whose URLs lapsed since (reading retires them).
            stale = {r.owner_id for r, _ in refused if r.owner_id not in fresh}
            accepted = [r for r in accepted if r.owner_id not in stale]
            changed = await _write_if_unchanged(conn, accepted, usage) if accepted else {}
        again = stale | changed.keys()
        known: dict[str, Usage | None] = {o: after[o] for o in owners if o not in again}
        self._remember(known | changed | dict.fromkeys(stale))
        _answer(accepted, refused, again)
        return [r for r in batch if r.owner_id in again and not r.answer.done()]

    def _remember(self, usage: dict[str, Usage | None]) -> None:
        """Owners' usage as now known (None: to be read again)."""
        if len(self._known) > MAX_KNOWN:
            self._known.clear()
        for owner, known in usage.items():
            if known is None:
                self._known.pop(owner, None)
            else:
                self._known[owner] = known


def _answer(
    accepted: list[_Request], refused: list[tuple[_Request, Exception]], again: set[str]
) -> None:
    """Answer the requests decided for good: not those of the owners in `again`."""
    for request, refusal in refused:
        if request.owner_id not in again:
            request.answer.set_exception(refusal)
    for request in accepted:
        if request.owner_id not in again and not request.answer.done():
            request.answer.set_result(None)


async def _usage_now(conn: Any, owners: list[str]) -> dict[str, Usage]:
    return {row[0]: Usage(*row[1:]) for row in await conn.fetch(_USAGE_NOW, owners)}


async def _write_if_unchanged(
    conn: Any, accepted: list[_Request], usage: dict[str, Usage]
) -> dict[str, Usage | None]:
    """Record the accepted intents of each owner whose usage is still what their checks
    saw, in one statement and its own transaction; returns the other owners' usage now
    (None: unknown)."""
    owners = sorted({r.owner_id for r in accepted})
    seen = [usage.get(owner, NOTHING) for owner in owners]
    statement = _insert_if_unchanged()
    written = await conn.fetch(
        statement.sql,
        *statement.args(
            owners=owners,
            photos=[u.kept for u in seen],
            bytes=[u.used for u in seen],
            pending=[u.pending for u in seen],
            **_columns([i for r in accepted for i in r.intents]),
        ),
    )
    latest = {row[0]: Usage(*row[1:4]) for row in written if not row[4]}
    # An owner with no sums (none the statement could lock) was not written either.
    gone = set(owners) - {row[0] for row in written}
    return latest | dict.fromkeys(gone)


def _checked(
    batch: list[_Request], usage: dict[str, Usage]
) -> tuple[list[_Request], list[tuple[_Request, Exception]]]:
    """The requests their checks let through, each seeing those accepted before it, and
    the others with what their check raised."""
    accepted: list[_Request] = []
    refused: list[tuple[_Request, Exception]] = []
    for request in batch:
        if request.answer.done():
            continue  # its caller was cancelled (a drain's deadline): nothing to record
        now = usage.get(request.owner_id, NOTHING)
        try:
            request.check(now)
        except Exception as refusal:
            refused.append((request, refusal))
            continue
        usage[request.owner_id] = now.plus(request.intents)
        accepted.append(request)
    return accepted, refused


NOTHING = Usage(0, 0, 0)
# Revision 0007: the owners' sums, their lapsed uploads retired first.
_USAGE_NOW = "SELECT owner_id, photos, bytes, pending FROM owner_usage_now($1::text[])"
_COLUMNS = (*NewPhoto.model_fields, "status", "created_at", "updated_at")
_SUMS = ("photos", "bytes", "pending")


def _array(name: str, column: sa.Column[Any]) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=postgresql.ARRAY(column.type))


@cache
def _insert_if_unchanged() -> Compiled:
    """Lock the owners' sums (one lock order on every replica), insert the intents of
    those whose sums are still what their checks saw (a column array per parameter: one
    statement where executemany ran one per row), and give each owner's sums and whether
    they were written. Without an explicit transaction (no BEGIN, no COMMIT round trip)
    nothing else can change those sums between the check and the write, and the batch
    holds no lock while its checks run. The sums of an owner not written are the latest
    (a row locked after waiting is read again), for the next try."""
    u = owner_usage.c
    latest = (
        sa.select(u.owner_id, *(u[n] for n in _SUMS))
        .where(u.owner_id == sa.any_(_array("owners", u.owner_id)))
        .order_by(u.owner_id)
        .with_for_update()
        .cte("latest")
    )
    seen = (
        sa.func.unnest(_array("owners", u.owner_id), *(_array(n, u[n]) for n in _SUMS))
        .table_valued("owner_id", *_SUMS)
        .render_derived(name="seen")
    )
    unchanged = (
        sa.select(latest.c.owner_id)
        .join(seen, latest.c.owner_id == seen.c.owner_id)
        .where(sa.tuple_(*(latest.c[n] for n in _SUMS)) == sa.tuple_(*(seen.c[n] for n in _SUMS)))
        .cte("unchanged")
    )
    intents = (
        sa.func.unnest(*(_array(c, photos.c[c]) for c in _COLUMNS))
        .table_valued(*_COLUMNS)
        .render_derived(name="intent")
    )
    theirs = sa.select(*intents.c).where(intents.c.owner_id.in_(sa.select(unchanged.c.owner_id)))
    insert = postgresql.insert(photos).from_select(list(_COLUMNS), theirs)
    added = insert.on_conflict_do_nothing(index_elements=["id"]).cte("added")
    written = latest.c.owner_id.in_(sa.select(unchanged.c.owner_id))
    statement = sa.select(*latest.c, written).add_cte(added)
    return Compiled.of(statement, "owners", *_SUMS, *_COLUMNS)


def _columns(intents: list[NewPhoto]) -> dict[str, list[Any]]:
    """The intents as one list per column, read off the records (a dict per row first
    took 28k instructions an intent, this 10k)."""
    columns = {c: [getattr(i, c) for i in intents] for c in NewPhoto.model_fields}
    return columns | {c: [v] * len(intents) for c, v in _pending().items()}


def rows(intents: Any) -> list[dict[str, Any]]:
    pending = _pending()
    return [i.model_dump() | pending for i in intents]


def _pending() -> dict[str, Any]:
    """The columns an intent's row has beyond the intent: it is pending, from now."""
    now = datetime.now(UTC)
    return {"status": PhotoStatus.PENDING.value, "created_at": now, "updated_at": now}


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
