"""Upload intents recorded within quotas when many grants arrive at once: each request is
answered on its own, quotas hold across replicas, and a failed write fails its requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from shared.db import Database, create_engine
from shared.errors import DatabaseUnavailable
from shared.settings import Settings
from shared.store import Check, Store, Usage, open_store
from tests.harness import intent


class OverQuota(Exception):
    pass


def at_most(photos: int) -> Check:
    def check(usage: Usage) -> None:
        if usage.kept + 1 > photos:
            raise OverQuota(f"{usage.kept} kept")

    return check


@pytest.fixture
async def store(on_both: Settings) -> AsyncIterator[Store]:
    async with open_store(on_both) as opened:
        yield opened


async def reserve(store: Store, owner: str, n: int, check: Check) -> str:
    try:
        await store.reserve(owner, [intent(f"{owner[0]}{n:031d}", owner, 100)], check)
    except OverQuota:
        return "refused"
    return "granted"


async def test_concurrent_grants_on_two_replicas_cannot_overrun_a_quota(
    settings: Settings, postgres_url: str
) -> None:
    # SQLite serves one process (one store); the next test covers its lock.
    settings = settings.model_copy(update={"database_url": postgres_url})
    async with open_store(settings) as one, open_store(settings) as other:
        answers = await asyncio.gather(
            *(reserve((one, other)[n % 2], "zoe", n, at_most(5)) for n in range(30))
        )
        recorded = await asyncio.gather(*(one.get(f"z{n:031d}") for n in range(30)))
    assert answers.count("granted") == 5
    assert sum(record is not None for record in recorded) == 5


async def test_a_replica_grants_within_what_another_replica_granted_since_it_last_looked(
    settings: Settings, postgres_url: str
) -> None:
    settings = settings.model_copy(update={"database_url": postgres_url})
    async with open_store(settings) as one, open_store(settings) as other:
        assert await reserve(one, "zoe", 0, at_most(2)) == "granted"
        assert await reserve(other, "zoe", 1, at_most(2)) == "granted"
        assert await reserve(one, "zoe", 2, at_most(2)) == "refused"
        assert await one.get(f"z{2:031d}") is None


async def test_one_owner_over_quota_does_not_refuse_the_others_written_with_it(
    store: Store,
) -> None:
    answers = await asyncio.gather(
        *(reserve(store, "ann", n, at_most(1)) for n in range(4)),
        *(reserve(store, "bob", n, at_most(10)) for n in range(4)),
    )
    assert answers[:4].count("granted") == 1
    assert answers[4:] == ["granted"] * 4


async def test_every_waiting_grant_fails_when_the_database_is_away() -> None:
    store = Store(Database(create_engine("postgresql://postgres@127.0.0.1:1/none", timeout=2)))
    results = await asyncio.gather(
        *(reserve(store, "ann", n, at_most(10)) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, DatabaseUnavailable) for r in results)
    await store.db.close()


async def test_a_grant_cancelled_while_waiting_does_not_fail_the_others_of_its_batch(
    store: Store,
) -> None:
    tasks = [asyncio.create_task(reserve(store, "ann", n, at_most(10))) for n in range(3)]
    await asyncio.sleep(0)  # all three are waiting for the same write
    tasks[1].cancel()
    first, middle, last = await asyncio.gather(*tasks, return_exceptions=True)
    assert (first, last) == ("granted", "granted")
    assert isinstance(middle, asyncio.CancelledError)
    assert await store.get(f"a{2:031d}") is not None
