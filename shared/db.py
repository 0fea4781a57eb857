"""The metadata database: engine, transactions with Darkroom's error classes, opening it.

PostgreSQL in production, SQLite for `darkroom dev` and single-process installs. Every
module that runs SQL does it through a `Database` transaction, so driver errors reach
callers as `PermanentError` or `DatabaseUnavailable` and nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from shared.errors import DatabaseUnavailable, PermanentError
from shared.migrations import upgrade
from shared.settings import Settings


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
    if url.startswith("sqlite"):
        return create_async_engine(url, connect_args={"timeout": timeout})
    return create_async_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        pool_timeout=timeout,
        connect_args={"timeout": timeout, "command_timeout": timeout},
    )


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
