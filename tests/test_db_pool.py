"""Pooled PostgreSQL connections without a pre-ping: a connection whose backend went away
is replaced before it is handed out, and one that dies mid-transaction fails only that
transaction."""

from __future__ import annotations

import asyncpg
import pytest
import sqlalchemy as sa

from shared.db import Compiled, Database, create_engine
from shared.errors import DatabaseUnavailable
from shared.settings import Settings
from tests.gateway_harness import gateway, grant_body


async def terminate_backends(postgres_url: str, *, pid: int = 0) -> None:
    """Terminate the database's backends (or only `pid`) and wait until they are gone."""
    name = postgres_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(postgres_url.rsplit("/", 1)[0] + "/postgres")
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid() AND ($2 = 0 OR pid = $2)",
            name,
            pid,
        )
        # Terminating only signals the backend: the pool is to meet it once it has exited.
        while await admin.fetch(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid() AND ($2 = 0 OR pid = $2)",
            name,
            pid,
        ):
            await admin.execute("SELECT pg_stat_clear_snapshot()")
    finally:
        await admin.close()


async def test_the_next_request_succeeds_after_every_pooled_backend_was_terminated(
    settings: Settings, postgres_url: str
) -> None:
    settings = settings.model_copy(update={"database_url": postgres_url})
    async with gateway(settings) as gw:
        first = await gw.client.post("/v1/uploads", json=grant_body(), headers=gw.auth())
        assert first.status == 201
        await terminate_backends(postgres_url)
        granted = await gw.client.post("/v1/uploads", json=grant_body(), headers=gw.auth())
        assert granted.status == 201
        photo_id = (await granted.json())["photo_id"]
        shown = await gw.client.get(f"/v1/photos/{photo_id}", headers=gw.auth())
        assert shown.status == 200


async def test_a_connection_lost_mid_transaction_fails_it_and_is_not_reused(
    postgres_url: str,
) -> None:
    db = Database(create_engine(postgres_url, timeout=10))
    try:
        async with db.raw_transaction() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
        with pytest.raises(DatabaseUnavailable):  # noqa: PT012 (the transaction is the call)
            async with db.raw_transaction() as conn:
                await terminate_backends(postgres_url, pid=pid)
                await conn.fetchval("SELECT 1")
        async with db.raw_transaction() as conn:
            assert await conn.fetchval("SELECT 1") == 1
        assert await db.ping()
    finally:
        await db.close()


async def test_a_listing_succeeds_after_every_pooled_backend_was_terminated(
    settings: Settings, postgres_url: str
) -> None:
    settings = settings.model_copy(update={"database_url": postgres_url})
    async with gateway(settings) as gw:
        assert (await gw.client.get("/v1/photos", headers=gw.auth())).status == 200
        await terminate_backends(postgres_url)
        assert (await gw.client.get("/v1/photos", headers=gw.auth())).status == 200


async def test_a_statement_whose_connection_dies_fails_and_the_connection_is_not_reused(
    postgres_url: str,
) -> None:
    db = Database(create_engine(postgres_url, timeout=10))
    backend = Compiled.of(sa.select(sa.func.pg_backend_pid()))
    try:
        [(pid,)] = await db.fetch(backend)
        with pytest.raises(DatabaseUnavailable):
            await db.fetch(Compiled.of(sa.select(sa.func.pg_terminate_backend(pid))))
        [(replaced,)] = await db.fetch(backend)
        assert replaced != pid
    finally:
        await db.close()
