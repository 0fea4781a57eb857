"""The faults, each counted in one tally: SIGKILLed workers (while busy) restarted,
broker connections cut, full restarts of the run's own RabbitMQ node and PostgreSQL
cluster, duplicated, delayed (so reordered) and premature storage events. S3 errors and
slowness come from chaos.s3_proxy."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import asyncpg

from chaos.fleet import WORKERS, ServiceProcess, ensure_up, messages_total
from chaos.infra import BrokerAdmin, BrokerAway
from chaos.load import Upload
from chaos.servers import OwnPostgres, OwnRabbit
from chaos.tcp_proxy import TcpProxy
from shared.topology import QueueSpec
from tests import s3events

BUSY_WAIT_S = 6.0
MINIO_ROUTING_KEY = "minio.object-created"


def worker_queues(admin: BrokerAdmin, module: str) -> list[QueueSpec]:
    topology = admin.topology
    return {
        "ingest_worker": [topology.ingest_intents, topology.ingest_storage],
        "thumbnail_worker": [topology.thumbnail],
        "notifier": [topology.notifier, topology.mail],
    }[module]


# Photos in these states are work in hand for the worker (its queue may look empty
# because it holds its whole prefetch).
STAGE_WORK = {"ingest_worker": "pending", "thumbnail_worker": "verified"}


async def stage_work(database_url: str, module: str) -> int:
    """Photos waiting for the worker's stage (0 when the database does not say: it may be
    restarting)."""
    status = STAGE_WORK.get(module)
    if status is None:
        return 0
    try:
        conn = await asyncpg.connect(database_url, timeout=5)
        try:
            count = await conn.fetchval(
                "SELECT count(*) FROM photos WHERE status = $1", status, timeout=5
            )
            return int(count)
        finally:
            await conn.close(timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return 0


async def ready_messages(admin: BrokerAdmin, spec: QueueSpec) -> int:
    """Messages waiting in the queue (0 when the broker does not say: it may be restarting)."""
    try:
        return await admin.ready_messages(spec)
    except BrokerAway:
        return 0


async def is_busy(
    http: aiohttp.ClientSession, admin: BrokerAdmin, service: ServiceProcess, database_url: str
) -> bool:
    """Busy: photos wait for its stage, messages wait in its queue, or it settled messages
    in the last quarter second (so it holds more). What a restarting server cannot say
    counts as not busy."""
    if await stage_work(database_url, service.module) > 0:
        return True
    for spec in worker_queues(admin, service.module):
        if await ready_messages(admin, spec) > 0:
            return True
    before = await messages_total(http, service)
    await asyncio.sleep(0.25)
    return before >= 0 and await messages_total(http, service) != before


async def kill_when_busy(
    http: aiohttp.ClientSession,
    admin: BrokerAdmin,
    service: ServiceProcess,
    tally: Counter[str],
    database_url: str,
) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BUSY_WAIT_S
    while loop.time() < deadline:
        if service.running and await is_busy(http, admin, service, database_url):
            service.expected_down = True
            await service.kill()
            tally[f"sigkill_{service.module}"] += 1
            return True
    tally[f"kill_skipped_idle_{service.module}"] += 1
    return False


async def killer(
    http: aiohttp.ClientSession,
    admin: BrokerAdmin,
    fleet: dict[str, ServiceProcess],
    tally: Counter[str],
    *,
    kills_per_worker: int,
    interval_s: float,
    database_url: str,
    rng: random.Random,
) -> None:
    """Round-robin over the worker types: SIGKILL one while busy, restart it, pause.
    A kill skipped because the worker stayed idle is owed and tried again."""
    owed = dict.fromkeys(WORKERS, kills_per_worker)
    while any(owed.values()):
        for module in (m for m in WORKERS if owed[m]):
            service = fleet[module]
            if await kill_when_busy(http, admin, service, tally, database_url):
                owed[module] -= 1
                await asyncio.sleep(rng.uniform(0.2, 1.0))
                try:
                    await ensure_up(service, http, tally)
                finally:
                    service.expected_down = False
            await asyncio.sleep(interval_s * rng.uniform(0.5, 1.5))


async def broker_cutter(
    proxy: TcpProxy, tally: Counter[str], *, every_s: float, rng: random.Random
) -> None:
    """Cut every broker connection now and then; half the time refuse reconnects awhile."""
    while True:
        await asyncio.sleep(every_s * rng.uniform(0.5, 1.5))
        outage = rng.uniform(0.5, 3.0) if rng.random() < 0.5 else 0.0
        proxy.refusing = outage > 0
        tally["broker_cut"] += 1
        tally["broker_sockets_cut"] += proxy.cut()
        if outage:
            tally["broker_outage"] += 1
            await asyncio.sleep(outage)
            proxy.refusing = False


BROKER_DOWN_S = (0.5, 3.0)  # how long the node stays stopped before it starts again
DATABASE_DOWN_S = (1.0, 4.0)
RESTART_GAP_S = 2.0  # at least this between one restart's end and the next's start


@dataclass(frozen=True)
class Restart:
    server: str  # "broker" or "database"
    crash: bool  # SIGKILL / immediate shutdown rather than SIGTERM / fast shutdown


def plan_restarts(broker: int, database: int, rng: random.Random) -> list[Restart]:
    """Broker and database restarts interleaved (which comes first is drawn); each
    server alternates between a graceful restart and a crash, starting with either."""
    crash_first = {"broker": rng.random() < 0.5, "database": rng.random() < 0.5}
    queues = {
        server: [Restart(server, crash_first[server] != bool(i % 2)) for i in range(count)]
        for server, count in (("broker", broker), ("database", database))
    }
    order = ["broker", "database"] if rng.random() < 0.5 else ["database", "broker"]
    plan: list[Restart] = []
    while any(queues.values()):
        for server in order:
            if queues[server]:
                plan.append(queues[server].pop(0))
    return plan


class Restarter:
    """Restarts the run's own servers on a plan spread over the load. `stop()` lets a
    restart under way finish (a server is never left down) and skips the rest."""

    def __init__(
        self,
        rabbit: OwnRabbit,
        postgres: OwnPostgres,
        plan: list[Restart],
        tally: Counter[str],
        rng: random.Random,
        say: Callable[[str], None],
    ) -> None:
        self._rabbit = rabbit
        self._postgres = postgres
        self.plan = plan
        self._tally = tally
        self._rng = rng
        self._say = say
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, load_s: float) -> None:
        """The i-th of n restarts starts near i/(n+1) of the load (jittered by a quarter
        slot), and never sooner than RESTART_GAP_S after the one before ends."""
        loop = asyncio.get_running_loop()
        begun = loop.time()
        slot = load_s / (len(self.plan) + 1)
        not_before = begun
        for i, restart in enumerate(self.plan):
            at = begun + slot * (i + 1 + self._rng.uniform(-0.25, 0.25))
            delay = max(at, not_before) - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                for skipped in self.plan[i:]:
                    self._tally[f"skipped_{skipped.server}_restart"] += 1
                return
            # Shielded: a cancelled fault phase must not leave the server down halfway.
            await asyncio.shield(self._one(restart))
            not_before = loop.time() + RESTART_GAP_S

    async def _one(self, restart: Restart) -> None:
        if restart.server == "broker":
            low, high = BROKER_DOWN_S
            how = "crash (SIGKILL)" if restart.crash else "graceful (SIGTERM)"
        else:
            low, high = DATABASE_DOWN_S
            how = "immediate (crash)" if restart.crash else "fast"
        down_s = self._rng.uniform(low, high)
        started = time.monotonic()
        self._say(
            f"{restart.server} restart, {how}, down {down_s:.1f}s, at {time.strftime('%H:%M:%S')}"
        )
        self._tally[f"{restart.server}_restart"] += 1
        if restart.crash:
            self._tally[f"{restart.server}_crash"] += 1
        server = self._rabbit if restart.server == "broker" else self._postgres
        await server.restart(crash=restart.crash, down_s=down_s)
        self._say(
            f"{restart.server} back after {time.monotonic() - started:.1f}s,"
            f" at {time.strftime('%H:%M:%S')}"
        )


class StorageEvents:
    """MinIO-format notifications published straight to the storage exchange, beside the
    real ones arriving over SQS: early (before the bytes), and late duplicates."""

    def __init__(
        self,
        admin: BrokerAdmin,
        bucket: str,
        tally: Counter[str],
        rng: random.Random,
        *,
        duplicate_rate: float,
        early_rate: float,
    ) -> None:
        self._admin = admin
        self._bucket = bucket
        self._tally = tally
        self._rng = rng
        self._duplicate_rate = duplicate_rate
        self._early_rate = early_rate
        self._pending: set[asyncio.Task[None]] = set()
        self.enabled = True

    async def _publish(self, upload: Upload, fault: str) -> None:
        body = s3events.minio(self._bucket, upload.key, len(upload.sample.data))
        try:
            await self._admin.publish_storage_event(body, MINIO_ROUTING_KEY)
        except BrokerAway:  # the node is restarting: not a fault injected
            self._tally[f"{fault}_failed_to_publish"] += 1
            return
        self._tally[fault] += 1

    async def before_upload(self, upload: Upload) -> None:
        if self.enabled and self._rng.random() < self._early_rate:
            await self._publish(upload, "storage_event_early")

    async def after_upload(self, upload: Upload) -> None:
        if self.enabled and self._rng.random() < self._duplicate_rate:
            copies = self._rng.choice((1, 1, 2))
            delays = [self._rng.uniform(0.0, 15.0) for _ in range(copies)]
            task = asyncio.create_task(self._later(upload, delays))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _later(self, upload: Upload, delays: list[float]) -> None:
        for delay in sorted(delays):
            await asyncio.sleep(delay)
            # Delays differ per upload, so copies overtake later uploads' events.
            await self._publish(upload, "storage_event_duplicate")

    async def finish(self) -> None:
        """Let the scheduled duplicates go out (at most ~15 s)."""
        await asyncio.gather(*self._pending, return_exceptions=True)
