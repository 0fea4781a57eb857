"""One chaos run, start to finish, bounded in time; the last line printed is the verdict."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from pydantic import SecretStr

from chaos import corpus, faults, fleet, infra, load, servers, verdict
from chaos.config import ChaosConfig, load_config
from chaos.s3_proxy import FaultyS3Proxy, Unreliability
from chaos.tcp_proxy import TcpProxy
from chaos.webhooks import Receiver, Subscribers, endpoints_settled, new_secret, serve, subscribe
from services.gateway.auth import issue_token
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


def plan_uploads(stage: Stage) -> list[load.Upload]:
    users = [f"chaos-user-{i}" for i in range(USERS)]
    samples = corpus.build(stage.config.uploads, stage.config.invalid_fraction, stage.rng)
    return [load.Upload(i, s, users[i % USERS]) for i, s in enumerate(samples)]


async def under_faults(stage: Stage, uploads: list[load.Upload]) -> None:
    """The load, with faults running beside it; the faults stop soon after the load."""
    config = stage.config
    client = load.Client(stage.http, stage.services["gateway"].base_url, tokens(stage))
    events = faults.StorageEvents(
        stage.admin,
        stage.bucket,
        stage.tally,
        stage.rng,
        duplicate_rate=config.duplicate_rate,
        early_rate=config.early_rate,
    )
    load_s = config.load_s
    killing = asyncio.create_task(
        faults.killer(
            stage.http,
            stage.admin,
            stage.services,
            stage.tally,
            kills_per_worker=config.kills_per_worker,
            database_url=stage.database_url,
            interval_s=load_s / (len(fleet.WORKERS) * config.kills_per_worker + 1),
            rng=stage.rng,
        )
    )
    cutting = asyncio.create_task(
        faults.broker_cutter(
            stage.broker_proxy, stage.tally, every_s=config.broker_cut_every_s, rng=stage.rng
        )
    )
    restarter = faults.Restarter(
        stage.rabbit,
        stage.postgres,
        faults.plan_restarts(config.broker_restarts, config.database_restarts, stage.rng),
        stage.tally,
        stage.rng,
        say,
    )
    restarting = asyncio.create_task(restarter.run(load_s))
    try:
        await load.run_load(
            client,
            uploads,
            rate=config.upload_rate,
            concurrency=config.client_concurrency,
            rng=stage.rng,
            before=events.before_upload,
            after=events.after_upload,
        )
        say("load done; faults winding down")
        done, _ = await asyncio.wait({killing, restarting}, timeout=FAULT_TAIL_S)
        for task in done:
            task.result()  # a fault that broke breaks the run
        await events.finish()
    finally:
        restarter.stop()
        for task in (killing, cutting):
            task.cancel()
        await asyncio.gather(killing, cutting, return_exceptions=True)
        stage.broker_proxy.refusing = False
        stage.s3_proxy.faults.calm()
        # A restart under way finishes (never leave a server down); a server that would
        # not come back fails the run here.
        await restarting


def client_of(stage: Stage) -> load.Client:
    return load.Client(stage.http, stage.services["gateway"].base_url, tokens(stage))


def tokens(stage: Stage) -> dict[str, str]:
    users = {f"chaos-user-{i}" for i in range(USERS)}
    return {user: issue_token(stage.jwt_secret, user) for user in users}


async def revive(stage: Stage) -> None:
    """A kill interrupted by the end of the fault phase may leave a worker down."""
    for service in stage.services.values():
        if not service.running:
            await fleet.ensure_up(service, stage.http, stage.tally)
        service.expected_down = False


def fault_count(tally: Counter[str]) -> int:
    counted = (
        "sigkill_",
        "broker_cut",
        "broker_restart",
        "database_restart",
        "s3_",
        "storage_event_",
    )
    return sum(
        n
        for name, n in tally.items()
        if name.startswith(counted) and name != "broker_sockets_cut" and "failed" not in name
    )


def report(
    stage: Stage,
    uploads: list[load.Upload],
    outcomes: list[verdict.Outcome],
    endpoints: tuple[int, int],
) -> verdict.Figures:
    figures = verdict.figures(uploads, outcomes, fault_count(stage.tally))
    figures = dataclasses.replace(
        figures, endpoint_missed=endpoints[0], endpoint_repeated=endpoints[1]
    )
    say("faults: " + ", ".join(f"{k}={v}" for k, v in sorted(stage.tally.items())))
    say("webhooks: " + ", ".join(f"{k}={v}" for k, v in sorted(stage.receiver.tally.items())))
    say(
        "users' endpoints: "
        + ", ".join(f"{k}={v}" for k, v in sorted(stage.subscribers.tally.items()))
    )
    say(
        "invalid uploads: "
        + ", ".join(f"{k}={v}" for k, v in sorted(verdict.reasons(uploads, outcomes).items()))
    )
    restarts = {name: s.starts - 1 for name, s in stage.services.items()}
    say(f"restarts: {restarts}")
    for line in verdict.problems(uploads, outcomes)[:50]:
        say(line)
    return figures


async def chaos(config: ChaosConfig, log_dir: Path) -> verdict.Figures:
    started_at = time.monotonic()
    async with started(config, log_dir) as stage:
        say(f"{config.uploads} uploads at {config.upload_rate:.1f}/s, seed {config.seed}")
        uploads = plan_uploads(stage)
        await subscribe(client_of(stage), stage.subscribers, sorted(tokens(stage)))
        await under_faults(stage, uploads)
        await revive(stage)
        say(
            f"settling (at most {config.settle_timeout_s:.0f}s),"
            f" {time.monotonic() - started_at:.0f}s in"
        )
        client = load.Client(stage.http, stage.services["gateway"].base_url, tokens(stage))
        outcomes = await verdict.settle(client, stage.receiver, uploads, config.settle_timeout_s)
        ready = {
            u.photo_id: u.user
            for u, o in zip(uploads, outcomes, strict=True)
            if u.photo_id and o.status == "ready"
        }
        endpoints = await endpoints_settled(stage.subscribers, ready, ENDPOINTS_SETTLE_S)
        figures = report(stage, uploads, outcomes, endpoints)
    say(f"took {time.monotonic() - started_at:.0f}s")
    return figures


async def bounded(config: ChaosConfig, log_dir: Path) -> verdict.Figures:
    async with asyncio.timeout(config.run_timeout_s):
        return await chaos(config, log_dir)


def main(argv: list[str] | None = None) -> None:
    config = load_config(argv)
    missing = servers.available()
    if missing:
        # The run restarts a RabbitMQ node and a PostgreSQL cluster of its own; without
        # them it would not inject what it is for, so it fails rather than skip them.
        say(
            "cannot run: the broker and database restarts need RabbitMQ and PostgreSQL"
            f" servers of the run's own, and this machine lacks {'; '.join(missing)}"
            " (point DARKROOM_TEST_RABBITMQ_SERVER at the rabbitmq-server script; put"
            " initdb and postgres on PATH)"
        )
        print(_failed_line(config), flush=True)
        sys.exit(1)
    log_dir = Path(tempfile.mkdtemp(prefix="darkroom-chaos-"))
    # The run's own clients (aio-pika's reconnects while the node restarts) log to a file,
    # not over the run's output.
    logging.basicConfig(
        filename=log_dir / "chaos.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    figures: verdict.Figures | None = None
    try:
        figures = asyncio.run(bounded(config, log_dir))
    except Exception as exc:  # the verdict line must still come out
        say(f"run failed: {exc!r}; logs in {log_dir}")
    ok = figures is not None and figures.ok
    if ok and not config.keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    else:
        say(f"logs kept in {log_dir}")
    line = figures.line() if figures else _failed_line(config)
    print(line, flush=True)
    sys.exit(0 if ok else 1)


def _failed_line(config: ChaosConfig) -> str:
    """The run itself broke: everything counts as stuck, so the line still fails CI."""
    return verdict.Figures(config.uploads, 0, 0, 0, config.uploads, 0, 0).line()
