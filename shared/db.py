"""The metadata database: engine, transactions with Darkroom's error classes, opening it.

PostgreSQL in production, SQLite for `darkroom dev` and single-process installs. Every
module that runs SQL does it through a `Database` transaction, so driver errors reach
callers as `PermanentError` or `DatabaseUnavailable` and nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import asyncpg
import sqlalchemy as sa
from pydantic_core import from_json
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    OperationalError,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util.concurrency import greenlet_spawn

from shared.errors import DatabaseUnavailable, PermanentError
from shared.migrations import upgrade
from shared.settings import Settings

T = TypeVar("T")


def engine_url(url: str) -> str:
    """Accept plain `postgresql://` / `sqlite:///` URLs and pick the async drivers."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite:///", "sqlite+aiosqlite:///"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


def create_engine(url: str, *, timeout: float = 30.0) -> AsyncEngine:
    """An engine whose connects, statements and pool waits all give up after `timeout`."""
    url = engine_url(url)
    # JSON columns (a photo's facts) parsed by pydantic-core, not the stdlib: 8% of a
    # listing page's CPU went to json.loads.
    if url.startswith("sqlite"):
        return create_async_engine(
            url, connect_args={"timeout": timeout}, json_deserializer=from_json
        )
    # No pre-ping: it cost three round trips (BEGIN, a query, ROLLBACK) per transaction,
    # 9% of a grant's CPU. A connection whose server end closed (a restart, a terminated
    # backend) is refused at checkout without a round trip, below; one that dies during a
    # transaction fails that transaction (503) and is thrown away with every connection
    # opened before it. Recycling bounds how long an idle connection is trusted.
    engine = create_async_engine(
        url,
        json_deserializer=from_json,
        pool_pre_ping=False,
        pool_recycle=1800,
        # 20 kept, none beyond: with 10 + 10 overflow, 32 concurrent listings opened and
        # closed connections all run (TLS attempt, connect, statements prepared again).
        pool_size=20,
        max_overflow=0,
        pool_timeout=timeout,
        connect_args={"timeout": timeout, "command_timeout": timeout},
    )
    sa.event.listen(engine.sync_engine, "checkout", _refuse_closed)
    return engine


def _refuse_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """The pool replaces a connection it is about to hand out if its socket has closed
    (asyncpg sees the server's goodbye as it arrives); no round trip."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


# What a statement run on asyncpg directly raises when the store cannot answer.
_UNAVAILABLE = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OperationalError,
    DBAPIError,
    OSError,
    TimeoutError,
)


class StatementNotSent(DatabaseUnavailable):
    """asyncpg refused to start a statement on a connection still reading a terminated
    backend's goodbye (its state check, before anything is sent): the checkout looks only
    for the hang-up, which may arrive a loop turn later (tests/test_db_pool.py failed this
    way in 3 of 31 runs). Nothing reached the server, so another connection may run the
    statement, or the transaction whose BEGIN it was."""


async def again_if_unsent(attempt: Callable[[], Awaitable[T]]) -> T:
    """`attempt`, and once more if a statement of it was refused before it was sent
    (`StatementNotSent`): the second takes another connection. Only for an attempt
    whose statements before the refused one changed nothing."""
    try:
        return await attempt()
    except StatementNotSent:
        return await attempt()


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed on a clean exit; driver errors become ours."""
        try:
            async with self.engine.begin() as conn:
                yield conn
        except (IntegrityError, DataError) as exc:
            # A constraint or the data itself said no: the same statement never succeeds.
            raise PermanentError(f"metadata store refused the change: {exc.orig}") from exc
        except (OperationalError, DBAPIError, OSError, TimeoutError) as exc:
            raise DatabaseUnavailable(f"metadata store failed: {exc!r}") from exc

    @asynccontextmanager
    async def raw_transaction(self) -> AsyncIterator[Any]:
        """A transaction on the pooled asyncpg connection itself (PostgreSQL only), for
        hot paths: statements compiled once (`Compiled`), prepared once per connection by
        asyncpg, no SQLAlchemy on the way. Errors are mapped as `transaction` maps them."""
        begun = False
        try:
            async with self.raw_connection() as driver, driver.transaction():
                begun = True
                yield driver
        except StatementNotSent:
            if begun:
                raise
            # The BEGIN was refused before it was sent: another connection runs it all.
            async with self.raw_connection() as driver, driver.transaction():
                yield driver

    @asynccontextmanager
    async def raw_connection(self) -> AsyncIterator[Any]:
        """The pooled asyncpg connection itself (PostgreSQL only), outside a transaction:
        each statement commits on its own. Checked out of the pool directly, not through a
        SQLAlchemy connection (60-90 us less per statement, measured). Errors are mapped
        as `transaction` maps them."""
        try:
            pooled = await self.engine.raw_connection()
            driver: Any = pooled.driver_connection
            refused = False
            try:
                yield driver
            except asyncpg.InternalClientError as exc:
                refused = True
                raise StatementNotSent(f"a pooled connection refused a statement: {exc}") from exc
            finally:
                # Refused, lost, or left inside a transaction (a cancellation that cut
                # the ROLLBACK short): not to be handed out again.
                if refused or driver.is_closed() or driver.is_in_transaction():
                    await greenlet_spawn(pooled.invalidate)
                await greenlet_spawn(pooled.close)
        except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
            raise PermanentError(f"metadata store refused the change: {exc}") from exc
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailable(f"metadata store failed: {exc!r}") from exc

    async def fetch(self, statement: Compiled, **values: Any) -> list[Any]:
        """The rows of one statement (PostgreSQL only), outside a transaction: a single
        statement reads one snapshot, so BEGIN and COMMIT would only add two round
        trips."""
        args = statement.args(**values)

        async def attempt() -> list[Any]:
            async with self.raw_connection() as driver:
                rows: list[Any] = await driver.fetch(statement.sql, *args)
            return rows

        return await again_if_unsent(attempt)

    async def run(self, single: Single, **values: Any) -> list[dict[str, Any]]:
        """The rows of one statement run on its own (those of its RETURNING, for a
        change): on PostgreSQL straight on asyncpg, outside a transaction (one statement
        commits by itself); on SQLite through SQLAlchemy. A photo's single-statement
        reads and writes cost 0.6 ms of CPU each through a SQLAlchemy transaction, 0.18
        ms this way (with their BEGIN and COMMIT round trips gone too)."""
        if self.is_sqlite:
            async with self.transaction() as conn:
                result = await conn.execute(single.statement, values)
                return [dict(row) for row in result.mappings()] if result.returns_rows else []
        return [dict(row) for row in await self.fetch(single.compiled, **values)]

    async def ping(self) -> bool:
        try:
            async with self.transaction() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except DatabaseUnavailable:
            return False
        return True

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that knows this dialect's ON CONFLICT clause."""
        return (sqlite if self.is_sqlite else postgresql).insert(table)

    async def close(self) -> None:
        await self.engine.dispose()


@dataclass(frozen=True)
class Compiled:
    """A statement compiled once for asyncpg: its SQL and the order of its parameters,
    those fixed at compile time (literal lists, constants) already filled in."""

    sql: str
    order: tuple[str, ...]
    fixed: dict[str, Any]

    @classmethod
    def of(cls, statement: sa.ClauseElement, *names: str) -> Compiled:
        """`names`: the bind parameters given at run time."""
        dialect = asyncpg_dialect()  # type: ignore[no-untyped-call]
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        state = compiled.construct_expanded_state(dict.fromkeys(names))
        return cls(state.statement, tuple(state.positiontup or ()), dict(state.parameters))

    def args(self, **values: Any) -> list[Any]:
        return [values[n] if n in values else self.fixed[n] for n in self.order]


class Single:
    """A statement for `Database.run`, with the bind parameters given at run time named;
    compiled for asyncpg when first run there. `postgresql`: the same statement in the
    form PostgreSQL takes its parameters in, where they differ (`= ANY(:ids)` for an
    expanding `IN`)."""

    def __init__(
        self, statement: sa.Executable, *names: str, postgresql: sa.Executable | None = None
    ) -> None:
        self.statement = statement
        self._names = names
        self._postgresql = statement if postgresql is None else postgresql
        self._compiled: Compiled | None = None

    @property
    def compiled(self) -> Compiled:
        if self._compiled is None:
            self._compiled = Compiled.of(cast(sa.ClauseElement, self._postgresql), *self._names)
        return self._compiled


@asynccontextmanager
async def open_database(
    settings: Settings, *, migrate: bool | None = None
) -> AsyncIterator[Database]:
    """The database, brought to the newest schema first unless `migrate` (default: the
    `migrate_on_start` setting) says otherwise; disposed of on exit."""
    url = settings.effective_database_url
    if url.startswith("sqlite") and not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(create_engine(url, timeout=settings.database_timeout))
    try:
        if settings.migrate_on_start if migrate is None else migrate:
            try:
                await upgrade(db.engine)
            except (OperationalError, DBAPIError, OSError) as exc:
                raise DatabaseUnavailable(f"cannot migrate the metadata store: {exc}") from exc
        yield db
    finally:
        await db.close()
