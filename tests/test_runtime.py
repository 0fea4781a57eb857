"""The consumer runtime's outcomes, on the in-process broker and on real RabbitMQ alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import aio_pika
import pytest

from shared.broker import (
    ATTEMPT_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    Broker,
    Delivery,
    Message,
    open_broker,
)
from shared.errors import (
    BrokerUnavailable,
    DatabaseUnavailable,
    PermanentError,
    StorageUnavailable,
    TransientError,
)
from shared.events import Envelope, PhotoRejected
from shared.memory_broker import MemoryBroker
from shared.runtime import Meta, on_events
from shared.settings import Settings
from shared.topology import QueueSpec, Topology
from tests.conftest import delete_topology
from tests.harness import worker


@pytest.fixture
def broker_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    if request.param == "rabbitmq":
        return settings.model_copy(update={"broker_url": request.getfixturevalue("amqp_url")})
    return settings


@pytest.fixture
async def env(broker_settings: Settings) -> AsyncIterator[Any]:
    """(broker, topology, settings) for each broker kind; real topology removed after."""
    topology = Topology.from_settings(broker_settings)
    async with open_broker(broker_settings) as broker:
        yield broker, topology, broker_settings
    if broker_settings.broker_url:
        await delete_topology(broker_settings.broker_url, topology)


both = pytest.mark.parametrize("broker_settings", ["memory", "rabbitmq"], indirect=True)


def rejected_event(photo: str = "p1") -> Envelope:
    event = PhotoRejected(photo_id=photo, owner_id="u", reason="empty", detail="d")
    return Envelope.wrap(event, trace_id="trace-1")


async def dead_letter_probe(broker: Broker, queue: QueueSpec) -> asyncio.Queue[Message]:
    """Consume the queue's dead-letter queue into an asyncio.Queue the test can await."""
    parked: asyncio.Queue[Message] = asyncio.Queue()

    async def take(delivery: Delivery) -> None:
        parked.put_nowait(delivery.message)
        await delivery.ack()

    dlq = replace(queue, name=queue.dead_letter_queue)
    await broker.consume(dlq, take)
    return parked


async def outstanding(broker: Broker, queue: QueueSpec, settings: Settings) -> int:
    """Messages not yet acked. On RabbitMQ, closing the connection first returns unacked
    ones to the queue, where a passive declare counts them."""
    if isinstance(broker, MemoryBroker):
        return broker.outstanding(queue)
    await broker.close()
    async with await aio_pika.connect(settings.broker_url) as connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue.name, passive=True)
        count = declared.declaration_result.message_count
        return int(count or 0)


def recording(
    behaviour: Callable[[int], Exception | None],
) -> tuple[list[Meta], Callable[[PhotoRejected, Meta], Any], asyncio.Event]:
    calls: list[Meta] = []
    done = asyncio.Event()

    async def handler(event: PhotoRejected, meta: Meta) -> None:
        calls.append(meta)
        error = behaviour(len(calls))
        if error is not None:
            raise error
        done.set()

    return calls, handler, done


async def handle_one(
    env: Any, handler: Callable[[PhotoRejected, Meta], Any], done: asyncio.Event, **options: Any
) -> None:
    """A worker on the notifier queue, one event published, run until `done`, drained."""
    broker, topology, _ = env
    w = worker(broker, topology, on_events(topology.notifier, {PhotoRejected: handler}), **options)
    await w.start()
    await broker.publish(topology.events_exchange, "photo.rejected", rejected_event().to_bytes())
    await asyncio.wait_for(done.wait(), 10)
    await w.drain()


@both
async def test_transient_failures_are_retried_with_rising_attempts(env: Any) -> None:
    calls, handler, done = recording(lambda n: TransientError("flaky") if n < 3 else None)
    parked = await dead_letter_probe(env[0], env[1].notifier)
    await handle_one(env, handler, done)
    assert [c.attempt for c in calls] == [1, 2, 3]
    assert {c.trace_id for c in calls} == {"trace-1"}
    assert parked.empty()


@both
@pytest.mark.parametrize("outage", [DatabaseUnavailable, StorageUnavailable])
async def test_an_outage_holds_the_message_without_spending_attempts(
    env: Any, outage: type[TransientError]
) -> None:
    """The server is down for longer than the whole retry budget: the message waits, then
    succeeds on its first attempt, and nothing is parked."""
    probes = 0
    down_for: int = 3 * env[1].retry.max_attempts

    async def server_up() -> bool:
        nonlocal probes
        probes += 1
        return probes > down_for

    calls, handler, done = recording(lambda n: outage("refused") if probes <= down_for else None)
    parked = await dead_letter_probe(env[0], env[1].notifier)
    await handle_one(env, handler, done, outages={outage: server_up}, probe_interval=0.01)
    assert [c.attempt for c in calls] == [1, 1]
    assert parked.empty()


@both
async def test_a_hold_longer_than_max_hold_spends_an_attempt(env: Any) -> None:
    """So a message can still be parked by an outage that never ends, slowly."""

    async def server_up() -> bool:
        return False

    calls, handler, done = recording(lambda n: StorageUnavailable("503") if n < 3 else None)
    options = {"probe_interval": 0.01, "max_hold": 0.05}
    await handle_one(env, handler, done, outages={StorageUnavailable: server_up}, **options)
    assert [c.attempt for c in calls] == [1, 2, 3]


@both
async def test_a_database_error_while_the_database_is_up_costs_an_attempt(env: Any) -> None:
    async def database_up() -> bool:
        return True

    calls, handler, done = recording(lambda n: DatabaseUnavailable("timeout") if n < 2 else None)
    await handle_one(env, handler, done, outages={DatabaseUnavailable: database_up})
    assert [c.attempt for c in calls] == [1, 2]


@both
async def test_a_handler_over_its_time_limit_is_cut_off_and_retried(env: Any) -> None:
    calls: list[Meta] = []
    done, never = asyncio.Event(), asyncio.Event()

    async def handler(event: PhotoRejected, meta: Meta) -> None:
        calls.append(meta)
        if len(calls) == 1:
            await never.wait()  # hangs, as a call with no timeout of its own would
        done.set()

    await handle_one(env, handler, done, handler_timeout=0.3)
    assert [c.attempt for c in calls] == [1, 2]


@both
async def test_permanent_failure_is_parked_once_with_its_reason(env: Any) -> None:
    broker, topology, _ = env
    queue = topology.notifier
    calls, handler, _ = recording(lambda n: PermanentError("cannot ever work"))
    parked = await dead_letter_probe(broker, queue)
    w = worker(broker, topology, on_events(queue, {PhotoRejected: handler}))
    await w.start()
    await broker.publish(topology.events_exchange, "photo.rejected", rejected_event().to_bytes())
    message = await asyncio.wait_for(parked.get(), 10)
    await w.drain()
    assert len(calls) == 1
    assert "cannot ever work" in message.headers[REASON_HEADER]
    assert message.headers[QUEUE_HEADER] == queue.name
    assert Envelope.from_bytes(message.body).data["photo_id"] == "p1"


@both
async def test_retries_run_out_into_the_dead_letter_queue(env: Any) -> None:
    broker, topology, settings = env
    queue = topology.notifier
    calls, handler, _ = recording(lambda n: TransientError(f"down #{n}"))
    parked = await dead_letter_probe(broker, queue)
    w = worker(broker, topology, on_events(queue, {PhotoRejected: handler}))
    await w.start()
    await broker.publish(topology.events_exchange, "photo.rejected", rejected_event().to_bytes())
    message = await asyncio.wait_for(parked.get(), 15)
    await w.drain()
    assert len(calls) == settings.retry_max_attempts
    assert f"gave up after {settings.retry_max_attempts} attempts" in message.headers[REASON_HEADER]
    assert message.headers[ATTEMPT_HEADER] == settings.retry_max_attempts


@both
async def test_malformed_body_is_parked_not_retried(env: Any) -> None:
    broker, topology, _ = env
    queue = topology.notifier
    calls, handler, _ = recording(lambda n: None)
    parked = await dead_letter_probe(broker, queue)
    w = worker(broker, topology, on_events(queue, {PhotoRejected: handler}))
    await w.start()
    await broker.publish(topology.events_exchange, "photo.rejected", b"{not json")
    message = await asyncio.wait_for(parked.get(), 10)
    await w.drain()
    assert calls == []
    assert "InvalidMessage" in message.headers[REASON_HEADER]
    assert message.body == b"{not json"


@both
async def test_unroutable_publish_raises(env: Any) -> None:
    broker, topology, _ = env
    with pytest.raises(BrokerUnavailable):
        await broker.publish(topology.events_exchange, "nobody.listens", b"{}")


@both
async def test_drain_waits_for_in_flight_work_then_acks_it(env: Any) -> None:
    broker, topology, _ = env
    queue = topology.notifier
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def slow(event: PhotoRejected, meta: Meta) -> None:
        started.set()
        await release.wait()
        finished.append(event.photo_id)

    w = worker(broker, topology, on_events(queue, {PhotoRejected: slow}))
    await w.start()
    await broker.publish(topology.events_exchange, "photo.rejected", rejected_event().to_bytes())
    await asyncio.wait_for(started.wait(), 10)
    drain = asyncio.create_task(w.drain())
    await asyncio.sleep(0)  # let drain cancel the subscription before the release
    assert not drain.done()
    release.set()
    await asyncio.wait_for(drain, 10)
    assert finished == ["p1"]

    assert await outstanding(broker, topology.notifier, env[2]) == 0


@both
async def test_work_outliving_the_grace_period_is_requeued(env: Any) -> None:
    broker, topology, _ = env
    queue = topology.notifier
    started = asyncio.Event()

    async def stuck(event: PhotoRejected, meta: Meta) -> None:
        started.set()
        await asyncio.Event().wait()

    w = worker(broker, topology, on_events(queue, {PhotoRejected: stuck}), grace=0.2)
    await w.start()
    await broker.publish(topology.events_exchange, "photo.rejected", rejected_event().to_bytes())
    await asyncio.wait_for(started.wait(), 10)
    await w.drain()

    again: asyncio.Queue[str] = asyncio.Queue()

    async def record(event: PhotoRejected, meta: Meta) -> None:
        again.put_nowait(event.photo_id)

    w2 = worker(broker, topology, on_events(queue, {PhotoRejected: record}))
    await w2.start()
    assert await asyncio.wait_for(again.get(), 10) == "p1"
    await w2.drain()


@both
async def test_a_message_that_keeps_coming_back_is_dead_lettered_at_the_delivery_limit(
    env: Any,
) -> None:
    """A crash loop (delivered, never settled) ends in the DLQ, not in an endless loop."""
    broker, topology, settings = env
    queue = topology.notifier
    deliveries = 0

    async def crash(delivery: Delivery) -> None:
        nonlocal deliveries
        deliveries += 1
        await delivery.requeue()

    parked = await dead_letter_probe(broker, queue)
    await broker.consume(queue, crash)
    await broker.publish(topology.events_exchange, "photo.rejected", rejected_event().to_bytes())
    message = await asyncio.wait_for(parked.get(), 20)
    reason = message.headers.get(REASON_HEADER) or message.headers.get("x-first-death-reason")
    assert reason == "delivery_limit"
    assert deliveries >= settings.delivery_limit
