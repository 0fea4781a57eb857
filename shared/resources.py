"""Everything a service talks to, opened and closed together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from shared.broker import Broker, open_broker
from shared.metrics import Metrics
from shared.outbox import Outbox
from shared.settings import Settings
from shared.storage import Storage, open_storage
from shared.store import Store, open_store
from shared.topology import Topology


@dataclass(frozen=True)
class Resources:
    settings: Settings
    topology: Topology
    broker: Broker
    storage: Storage
    store: Store
    metrics: Metrics

    @property
    def outbox(self) -> Outbox:
        return Outbox(self.store, self.broker, self.topology)

    async def readiness(self) -> dict[str, bool]:
        return {"broker": self.broker.is_ready, "database": await self.store.ping()}


@asynccontextmanager
async def open_resources(
    settings: Settings, *, broker: Broker | None = None, wait_for_broker: bool = True
) -> AsyncIterator[Resources]:
    """Open store (migrated), storage and broker (topology declared); close them on exit.

    A `broker` passed in is used as is and left open (`darkroom dev` shares one in-process
    broker between all services). `wait_for_broker=False`: see `open_broker`'s `wait`.
    """
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store(settings))
        storage = await stack.enter_async_context(open_storage(settings))
        if broker is None:
            broker = await stack.enter_async_context(open_broker(settings, wait=wait_for_broker))
        yield Resources(
            settings, Topology.from_settings(settings), broker, storage, store, Metrics()
        )
