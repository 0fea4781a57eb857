"""A chaos run's stage: its own servers, service processes and receivers, set up and torn
down in one place (chaos/run.py drives the run on it)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from pydantic import SecretStr

from chaos import fleet, infra, servers
from chaos.config import ChaosConfig
from chaos.s3_proxy import FaultyS3Proxy, Unreliability
from chaos.tcp_proxy import TcpProxy
from chaos.webhooks import Receiver, Subscribers, new_secret, serve
from shared import secrets
from shared.embedded import moto_server, provision_bucket_with_sqs
from shared.settings import Settings
from shared.topology import Topology

USERS = 8
S3_KEY_ID, S3_SECRET = "chaos", "chaos-secret"
FAULT_TAIL_S = 30.0  # after the load: time left for kills still owed
# Users' endpoints retry on this compressed schedule (the default spans a day and more).
WEBHOOK_SCHEDULE = "0,200ms,500ms,1s,2s,2s,2s,2s"
ENDPOINTS_SETTLE_S = 30.0  # after the photos: time for users' endpoints to catch up


@dataclass
class Stage:
    """Everything running for one run, once set up."""

    config: ChaosConfig
    run_id: str
    http: aiohttp.ClientSession
    rabbit: servers.OwnRabbit
    postgres: servers.OwnPostgres
    admin: infra.BrokerAdmin
    broker_proxy: TcpProxy
    s3_proxy: FaultyS3Proxy
    receiver: Receiver
    subscribers: Subscribers
    services: dict[str, fleet.ServiceProcess]
    bucket: str
    database_url: str
    jwt_secret: str
    tally: Counter[str]
    rng: random.Random


def say(message: str) -> None:
    print(f"chaos: {message}" if not message.startswith(" ") else message, flush=True)


def topology_for(prefix: str) -> Topology:
    return Topology.from_settings(
        Settings(
            topology_prefix=prefix,
            retry_base_ms=200,
            retry_cap_ms=200,
            retry_max_attempts=8,
            webhook_retry_schedule=WEBHOOK_SCHEDULE,
        )
    )


def common_env(
    stage_urls: dict[str, str], prefix: str, bucket: str, jwt_secret: str, hook: Receiver
) -> dict[str, str]:
    return {
        "DARKROOM_BROKER_URL": stage_urls["broker"],
        "DARKROOM_DATABASE_URL": stage_urls["database"],
        "DARKROOM_S3_ENDPOINT_URL": stage_urls["s3"],
        "DARKROOM_S3_PUBLIC_ENDPOINT_URL": stage_urls["s3_public"],
        "DARKROOM_SQS_ENDPOINT_URL": stage_urls["s3_public"],
        "DARKROOM_SQS_QUEUE_URL": stage_urls["sqs_queue"],
        "DARKROOM_SQS_WAIT_SECONDS": "2",
        "DARKROOM_S3_BUCKET": bucket,
        "DARKROOM_S3_ACCESS_KEY_ID": S3_KEY_ID,
        "DARKROOM_S3_SECRET_ACCESS_KEY": S3_SECRET,
        "DARKROOM_S3_TIMEOUT": "10",
        "DARKROOM_TOPOLOGY_PREFIX": prefix,
        "DARKROOM_RETRY_BASE_MS": "200",
        "DARKROOM_RETRY_CAP_MS": "200",
        "DARKROOM_RETRY_MAX_ATTEMPTS": "8",
        "DARKROOM_PUBLISH_TIMEOUT": "3",
        "DARKROOM_SHUTDOWN_GRACE": "5",
        "DARKROOM_HANDLER_TIMEOUT": "60",
        "DARKROOM_DATABASE_TIMEOUT": "10",
        "DARKROOM_OUTBOX_RELAY_INTERVAL": "1",
        "DARKROOM_OUTBOX_RELAY_AFTER": "3",
        "DARKROOM_SWEEP_INTERVAL": "3",
        "DARKROOM_SWEEP_AFTER": "10",
        "DARKROOM_RENDER_CONCURRENCY": "2",
        "DARKROOM_AUTH_JWT_SECRET": jwt_secret,
        "DARKROOM_RATE_LIMIT_USER": "0",
        "DARKROOM_RATE_LIMIT_IP": "0",
        "DARKROOM_MAX_PENDING_UPLOADS": "0",
        "DARKROOM_WEBHOOK_URL": hook.url,
        "DARKROOM_WEBHOOK_SECRET": hook.secret,
        "DARKROOM_WEBHOOK_TIMEOUT": "5",
        "DARKROOM_WEBHOOK_RETRY_SCHEDULE": WEBHOOK_SCHEDULE,
        # Users' endpoints are on this machine too.
        "DARKROOM_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
        "DARKROOM_LOG_JSON": "true",
    }


async def provision_storage(moto_url: str, bucket: str, queue: str) -> str:
    settings = Settings(
        s3_endpoint_url=moto_url,
        s3_bucket=bucket,
        s3_access_key_id=S3_KEY_ID,
        s3_secret_access_key=SecretStr(S3_SECRET),
    )
    return await provision_bucket_with_sqs(settings, queue)


def keep_server_logs(
    rabbit: servers.OwnRabbit, postgres: servers.OwnPostgres, log_dir: Path
) -> None:
    """Copy the own servers' logs beside the services' (their directories go at the end)."""
    copies = [
        (rabbit.root / "log", log_dir / "rabbitmq"),
        (rabbit.root / "rabbitmq.out", log_dir / "rabbitmq" / "rabbitmq.out"),
        (postgres.root / "postgres.log", log_dir / "postgres.log"),
    ]
    for source, target in copies:
        with contextlib.suppress(OSError):
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)


@contextlib.asynccontextmanager
async def started(config: ChaosConfig, log_dir: Path) -> AsyncIterator[Stage]:
    """Set everything up; on the way out stop processes and the run's own servers (with
    all the run's queues and data), whatever happened."""
    run_id = uuid.uuid4().hex[:10]
    prefix, bucket = f"chaos-{run_id}", f"chaos-{run_id}"
    rng = random.Random(config.seed)
    tally: Counter[str] = Counter()
    jwt_secret = secrets.jwt_secret()
    async with contextlib.AsyncExitStack() as stack:
        # A RabbitMQ node and a PostgreSQL cluster of the run's own, so they can be
        # restarted: never the shared servers at 127.0.0.1:5672 and :5432.
        rabbit = await stack.enter_async_context(servers.own_rabbit())
        postgres = await stack.enter_async_context(servers.own_postgres())
        stack.callback(keep_server_logs, rabbit, postgres, log_dir)
        say(f"own RabbitMQ on port {rabbit.port}, own PostgreSQL on port {postgres.port}")
        moto_url = stack.enter_context(moto_server())
        queue_url = await provision_storage(moto_url, bucket, f"notify-{run_id}")
        topology = topology_for(prefix)
        admin = await stack.enter_async_context(infra.broker_admin(rabbit.url, topology))
        http = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        )
        broker_proxy = TcpProxy("127.0.0.1", rabbit.port)
        await broker_proxy.start()
        stack.push_async_callback(broker_proxy.close)
        unreliable = Unreliability(config.s3_error_rate, config.s3_slow_rate, config.s3_slow_ms)
        s3_proxy = FaultyS3Proxy(moto_url, unreliable, tally, rng)
        await s3_proxy.start()
        stack.push_async_callback(s3_proxy.close)
        receiver, subscribers = Receiver(new_secret()), Subscribers()
        stack.push_async_callback((await serve(receiver, subscribers)).cleanup)
        urls = {
            "broker": f"amqp://guest:guest@127.0.0.1:{broker_proxy.port}/",
            "database": postgres.url,
            "s3": s3_proxy.url,
            "s3_public": moto_url,
            "sqs_queue": queue_url,
        }
        env = common_env(urls, prefix, bucket, jwt_secret, receiver)
        services = fleet.make_fleet(env, log_dir)
        stack.push_async_callback(fleet.stop_all, services)
        await fleet.start_all(services, http, tally)
        supervisor = asyncio.create_task(fleet.supervise(services, http, tally))
        stack.push_async_callback(_cancel, supervisor)
        say(f"run {run_id}: services up; logs in {log_dir}")
        yield Stage(
            config,
            run_id,
            http,
            rabbit,
            postgres,
            admin,
            broker_proxy,
            s3_proxy,
            receiver,
            subscribers,
            services,
            bucket,
            postgres.url,
            jwt_secret,
            tally,
            rng,
        )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
