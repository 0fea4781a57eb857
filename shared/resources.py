"""Everything a service talks to, opened and closed together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from shared.albums import Albums
from shared.broker import Broker, open_broker
from shared.db import Database, open_database
from shared.links import Links
from shared.metrics import Metrics
from shared.outbox import Outbox
from shared.settings import Settings
from shared.storage import Storage, open_storage
from shared.store import Store
from shared.topology import Topology
from shared.users import Mails, Users
from shared.webhook_deliveries import Deliveries
from shared.webhooks import Webhooks


@dataclass(frozen=True)
class Resources:
    settings: Settings
    topology: Topology
    broker: Broker
    storage: Storage
    database: Database
    store: Store
    metrics: Metrics

    @property
    def outbox(self) -> Outbox:
        return Outbox(self.database, self.broker, self.topology)

    @property
    def albums(self) -> Albums:
        return Albums(self.database)

    @property
    def links(self) -> Links:
        return Links(self.database)

    @property
    def webhooks(self) -> Webhooks:
        return Webhooks(self.database, self.settings.webhook_secrets_key.get_secret_value())

    @property
    def deliveries(self) -> Deliveries:
        return Deliveries(self.database)

    @property
    def users(self) -> Users:
        return Users(self.database)

    @property
    def mails(self) -> Mails:
        return Mails(self.database)

    async def readiness(self) -> dict[str, bool]:
        return {"broker": self.broker.is_ready, "database": await self.database.ping()}


@asynccontextmanager
async def open_resources(
    settings: Settings, *, broker: Broker | None = None, wait_for_broker: bool = True
) -> AsyncIterator[Resources]:
    """Open the database (migrated unless the settings say not to), storage and broker
    (topology declared); close them on exit.

    A `broker` passed in is used as is and left open (`darkroom dev` shares one in-process
    broker between all services). `wait_for_broker=False`: see `open_broker`'s `wait`.
    """
    async with AsyncExitStack() as stack:
        database = await stack.enter_async_context(open_database(settings))
        storage = await stack.enter_async_context(open_storage(settings))
        if broker is None:
            broker = await stack.enter_async_context(open_broker(settings, wait=wait_for_broker))
        topology = Topology.from_settings(settings)
        yield Resources(
            settings,
            topology,
            broker,
            storage,
            database,
            Store(database),
            Metrics(handler_timeout=settings.handler_timeout),
        )
