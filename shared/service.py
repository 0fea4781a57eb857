"""Process plumbing shared by the workers: signals, resources, health server, drain."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from functools import partial
from typing import Any, Protocol

import uvloop
from pydantic import ValidationError

from shared.background_broker import BackgroundBroker
from shared.broker import Broker
from shared.errors import ConfigurationError, DatabaseUnavailable, StorageUnavailable
from shared.health import serve_health
from shared.logging import configure_logging, get_logger
from shared.resources import Resources, open_resources
from shared.runtime import Route, Worker
from shared.settings import Settings
from shared.tracing import setup_tracing

log = get_logger(__name__)

Service = Callable[[Settings, asyncio.Event], Awaitable[None]]
Job = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def require_real_broker(settings: Settings, name: str) -> None:
    if not settings.broker_url:
        raise ConfigurationError(
            f"{name} needs DARKROOM_BROKER_URL when it runs on its own; the in-process "
            "broker only connects services inside `darkroom dev`"
        )


class Consumer(Protocol):
    """What a worker service is: routes to consume, and jobs to run beside them."""

    def routes(self) -> Sequence[Route]: ...

    def jobs(self) -> Sequence[Job]: ...


async def run_worker(
    settings: Settings,
    stop: asyncio.Event,
    make: Callable[[Resources], Consumer],
    *,
    resources: Resources | None = None,
    health: bool = True,
    relay: bool = True,
) -> None:
    """Consume `make(resources)`'s routes and run its jobs (and, unless `relay` is off,
    the outbox relay) until `stop` is set, then drain and close.

    Pass `resources` to share them (dev mode, tests); otherwise they are opened here, and
    the broker is connected in the background: the health endpoints answer at once (live,
    and not ready until the broker is reached), and consuming starts once it is.
    """
    async with AsyncExitStack() as stack:
        if resources is None:
            resources = await stack.enter_async_context(
                open_resources(settings, wait_for_broker=False)
            )
        if health:
            port = await stack.enter_async_context(
                serve_health(settings.health_host, settings.health_port, resources)
            )
            log.info("health endpoints up", port=port)
        if not await _broker_connected(resources.broker, stop):
            return
        consumer = make(resources)
        worker = Worker(
            resources.broker,
            resources.topology,
            consumer.routes(),
            metrics=resources.metrics,
            handler_timeout=settings.handler_timeout,
            grace=settings.shutdown_grace,
            outages={
                DatabaseUnavailable: resources.database.ping,
                StorageUnavailable: resources.storage.ping,
            },
            max_hold=settings.outage_hold,
        )
        tasks = [asyncio.create_task(job(stop)) for job in consumer.jobs()]
        if relay:
            relaying = resources.outbox.relay(
                stop,
                interval_s=settings.outbox_relay_interval,
                older_than_s=settings.outbox_relay_after,
            )
            tasks.append(asyncio.create_task(relaying))
        for task in tasks:
            task.add_done_callback(partial(_stop_if_failed, stop))
        try:
            await worker.run(stop)
        finally:
            stop.set()
            await asyncio.gather(*tasks)


async def _broker_connected(broker: Broker, stop: asyncio.Event) -> bool:
    """Wait until the broker is connected, or `stop` is set first (then False)."""
    if not isinstance(broker, BackgroundBroker):
        return True
    connected = asyncio.create_task(broker.wait_connected())
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({connected, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        connected.cancel()
        stopped.cancel()
        await asyncio.gather(connected, stopped, return_exceptions=True)
    return not stop.is_set()


def _stop_if_failed(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    """A dead background job (SQS bridge, outbox relay) must not go unnoticed behind a
    green readiness probe: stop the service so its supervisor restarts it."""
    if not task.cancelled() and task.exception() is not None:
        log.error("background job failed; stopping", error=repr(task.exception()))
        stop.set()


def load_settings() -> Settings:
    """Settings from the environment, or exit 2 with every problem spelled out."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "\n".join(
            f"  DARKROOM_{'_'.join(str(p) for p in e['loc']).upper() or '(settings)'}: {e['msg']}"
            for e in exc.errors()
        )
        print(f"darkroom: invalid configuration:\n{problems}", file=sys.stderr)
        raise SystemExit(2) from exc


def service_name(service: Service) -> str:
    """`ingest-worker` for services.ingest_worker.service, `dev` for services.dev."""
    parts = service.__module__.split(".")
    return (parts[1] if len(parts) > 1 else parts[0]).replace("_", "-")


def run_process(service: Service, settings: Settings | None = None) -> None:
    """Entry point of a service process: SIGTERM/SIGINT start a graceful drain. Traces
    go out when OTEL_EXPORTER_OTLP_ENDPOINT is set (shared/tracing.py)."""
    settings = settings or load_settings()
    name = service_name(service)
    configure_logging(settings, name)
    setup_tracing(name)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await service(settings, stop)

    try:
        # uvloop: 10-20% more grants per second than asyncio's loop in bench.gateway.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except ConfigurationError as exc:
        log.error("configuration error", error=str(exc))
        raise SystemExit(2) from exc
