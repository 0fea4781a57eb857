"""Alembic's entry point, run by every migration command (alembic loads it as a script).

`upgrade` in this package hands over a connection already inside its transaction (and
holding the migration lock); the `__main__` tools give a URL instead.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shared.tables import metadata


def _run(connection: Connection) -> None:
    # Batch mode lets one migration script alter tables on SQLite too (by copying them).
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_on(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        url = context.config.get_main_option("sqlalchemy.url")
        assert url, "give the migration tools a connection or a sqlalchemy.url"
        asyncio.run(_run_on(url))


_main()
