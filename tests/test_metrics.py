"""The metrics move when the pipeline runs, and are served on the health port only.

Embedded parts (in-process broker, SQLite, moto): each family is read from `/metrics`
before and after the event that should move it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from services.dev import run_dev
from services.gateway.auth import issue_token
from services.thumbnail_worker.memory import MemoryBudget
from shared.broker import Message
from shared.errors import PermanentError
from shared.events import Envelope, UploadCompleted
from shared.health import health_app
from shared.metrics import Metrics, handler_buckets
from shared.outbox import queued
from shared.resources import Resources, open_resources
from shared.runtime import Route, Worker
from shared.settings import Settings
from tests import images
from tests.conftest import JWT_SECRET
from tests.harness import WEBHOOK_SECRET, Client, WebhookReceiver, free_port, running

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(http: aiohttp.ClientSession, base: str) -> Samples:
    async with http.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        return parse(await resp.text())


async def test_the_pipeline_moves_request_handler_webhook_and_rejection_metrics(
    settings: Settings, hooks: WebhookReceiver
) -> None:
    hooks.fail_first = 1  # one refused webhook attempt, then delivered on the retry
    settings = settings.model_copy(
        update={
            "webhook_url": hooks.url,
            "webhook_secret": SecretStr(WEBHOOK_SECRET),
            "gateway_port": free_port(),
            "health_port": free_port(),
        }
    )
    health = f"http://127.0.0.1:{settings.health_port}"
    async with running(settings, [run_dev]) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/metrics") as resp:
            assert resp.status == 404, "the public API port must not serve metrics"
        before = await scrape(http, health)
        client = Client(http, base, issue_token(JWT_SECRET, "alice"))
        photo, fake = images.jpeg(640, 480), b"not an image at all"
        good = await client.grant(photo, "image/jpeg")
        bad = await client.grant(fake, "image/png")
        for grant, data, kind in ((good, photo, "image/jpeg"), (bad, fake, "image/png")):
            await client.upload(grant, data, kind)
            url = f"{base}/v1/uploads/{grant['photo_id']}/complete"
            async with http.post(url, headers=client.headers) as resp:
                assert resp.status == 202
        await hooks.wait_for(good["photo_id"], "photo.ready")
        await hooks.wait_for(bad["photo_id"], "photo.rejected")
        after = await scrape(http, health)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    grants = {"method": "POST", "route": "/v1/uploads", "status": "201"}
    assert moved("darkroom_http_request_duration_seconds_count", **grants) == 2
    thumbnail = f"{settings.topology_prefix}.thumbnail"
    assert moved("darkroom_handler_duration_seconds_count", queue=thumbnail) >= 1
    assert moved("darkroom_webhook_attempts_total", outcome="refused") == 1
    assert moved("darkroom_webhook_attempts_total", outcome="delivered") == 2
    assert (
        moved("darkroom_rejections_total", reason="corrupt")
        + moved("darkroom_rejections_total", reason="unsupported_type")
        + moved("darkroom_rejections_total", reason="type_mismatch")
        == 1
    )
    assert moved("darkroom_photos_total", status="ready") == 1
    assert value(after, "darkroom_build_info", version="0.1.0") == 1
    assert value(after, "process_cpu_seconds_total") > 0
    assert any(name == "python_info" for name, _ in after)


@asynccontextmanager
async def health_client(res: Resources) -> AsyncIterator[TestClient[Any, Any]]:
    client = TestClient(TestServer(health_app(res)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def test_outbox_dead_letter_and_retry_gauges_follow_the_broker_and_database(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"retry_base_ms": 60_000, "retry_cap_ms": 60_000})
    async with open_resources(settings) as res, health_client(res) as health:
        spec = res.topology.thumbnail

        async def gauges() -> Samples:
            return parse(await (await health.get("/metrics")).text())

        empty = await gauges()
        assert value(empty, "darkroom_outbox_pending_events") == 0
        assert value(empty, "darkroom_dead_letter_messages", queue=spec.name) == 0

        # An event the relay has not sent for five minutes (the broker was away, say).
        envelope = Envelope.wrap(UploadCompleted(photo_id="p", owner_id="o"), trace_id="t")
        stored_at = datetime.now(UTC) - timedelta(minutes=5)
        async with res.database.transaction() as conn:
            await conn.execute(queued(envelope).values(created_at=stored_at))
        # A message nobody consumes yet waits in its queue.
        waiting = res.topology.notifier
        await res.broker.publish("", waiting.name, b"{}", message_id="waiting")
        handled: list[str] = []
        both = asyncio.Event()

        async def fail(message: Message) -> None:
            handled.append(message.message_id or "")
            if len(handled) == 2:
                both.set()
            if message.message_id == "park":
                raise PermanentError("cannot ever work")
            raise RuntimeError("try later")

        worker = Worker(res.broker, res.topology, [Route(spec, fail)], metrics=res.metrics)
        await worker.start()
        for key in ("park", "retry"):
            await res.broker.publish("", spec.name, b"{}", message_id=key)
        await both.wait()
        await worker.drain()  # waits for both to be settled: one parked, one retrying
        seen = await gauges()
    assert value(seen, "darkroom_outbox_pending_events") == 1
    assert value(seen, "darkroom_outbox_oldest_age_seconds") >= 300
    assert value(seen, "darkroom_dead_letter_messages", queue=spec.name) == 1
    assert value(seen, "darkroom_retry_messages", queue=spec.name) == 1
    assert value(seen, "darkroom_queue_ready_messages", queue=waiting.name) == 1
    assert value(seen, "darkroom_messages_total", queue=spec.name, outcome="dead_lettered") == 1
    assert value(seen, "darkroom_messages_total", queue=spec.name, outcome="retried") == 1


async def test_messages_in_flight_counts_what_a_replica_holds(settings: Settings) -> None:
    async with open_resources(settings) as res:
        spec = res.topology.thumbnail
        started, release = asyncio.Event(), asyncio.Event()

        async def hold(message: Message) -> None:
            started.set()
            await release.wait()

        def in_flight() -> float:
            return value(parse(res.metrics.render().decode()), "darkroom_messages_in_flight",
                         queue=spec.name)  # fmt: skip

        worker = Worker(res.broker, res.topology, [Route(spec, hold)], metrics=res.metrics)
        await worker.start()
        await res.broker.publish("", spec.name, b"{}", message_id="held")
        await started.wait()
        assert in_flight() == 1
        release.set()
        await worker.drain()
        assert in_flight() == 0


async def test_render_memory_gauges_follow_reservations() -> None:
    metrics = Metrics()
    budget = MemoryBudget(512 * 1024 * 1024, on_change=metrics.render_memory.set_reserved)
    metrics.render_memory.set_budget(budget.total)

    def sample(name: str) -> float:
        return value(parse(metrics.render().decode()), name)

    async with budget.reserve(300_000_000):
        assert sample("darkroom_render_memory_reserved_bytes") == 300_000_000
    assert sample("darkroom_render_memory_reserved_bytes") == 0
    assert sample("darkroom_render_memory_budget_bytes") == 512 * 1024 * 1024


def test_handler_buckets_reach_the_handler_timeout() -> None:
    assert handler_buckets(300)[-1] == 300
    assert handler_buckets(45)[-2:] == (30.0, 45.0)
