"""POST /v1/uploads:batch: up to 50, all-or-nothing, in order; intents recorded with their
events in one transaction, the events sent concurrently or left to the outbox relay."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.gateway.app import create_app
from shared.broker import Broker
from shared.errors import BrokerUnavailable
from shared.events import UploadRequested
from shared.settings import Settings
from tests.gateway_harness import Gateway, gateway, grant_body, problem_of


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    async with gateway(settings) as gw:
        yield gw


def items(n: int) -> list[dict[str, Any]]:
    return [grant_body(filename=f"p{i}.jpg", size=1000 + i) for i in range(n)]


async def test_a_batch_of_50_on_rabbitmq_answers_every_grant_in_request_order(
    rabbit_settings: Settings,
) -> None:
    async with gateway(rabbit_settings) as gw:
        body = {"items": [*items(49), grant_body(method="PUT", size=7)]}
        resp = await gw.client.post("/v1/uploads:batch", json=body, headers=gw.auth())
        assert resp.status == 201, await resp.text()
        grants = (await resp.json())["items"]
        intents = [
            (await asyncio.wait_for(gw.intents.get(), 10)).open(UploadRequested) for _ in grants
        ]
    size_of = {i.photo_id: i.size for i in intents}
    assert [size_of[g["photo_id"]] for g in grants] == [1000 + i for i in range(49)] + [7]
    assert [g["upload"]["method"] for g in grants] == ["POST"] * 49 + ["PUT"]
    assert len({g["photo_id"] for g in grants}) == 50


async def test_51_items_are_refused_whole(gw: Gateway) -> None:
    resp = await gw.client.post("/v1/uploads:batch", json={"items": items(51)}, headers=gw.auth())
    body = await problem_of(resp, 422)
    assert body["errors"][0]["field"] == "items" and "50" in body["errors"][0]["message"]
    assert gw.intents.empty()


async def test_one_bad_item_refuses_the_batch_with_per_item_errors(gw: Gateway) -> None:
    batch = items(5)
    batch[1]["content_type"] = "image/svg+xml"
    batch[3]["size"] = 10**12
    del batch[4]["filename"]
    resp = await gw.client.post("/v1/uploads:batch", json={"items": batch}, headers=gw.auth())
    body = await problem_of(resp, 422)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(4, "items.4.filename")]
    del batch[4]
    resp = await gw.client.post("/v1/uploads:batch", json={"items": batch}, headers=gw.auth())
    errors = (await problem_of(resp, 422))["errors"]
    assert [(e["index"], e["code"]) for e in errors] == [(1, "unsupported_type"), (3, "too_large")]
    assert gw.intents.empty()
    assert (await (await gw.client.get("/v1/photos", headers=gw.auth())).json())["items"] == []


@pytest.mark.parametrize("body", [{}, {"items": []}, {"items": {}}, [], {"items": [], "x": 1}])
async def test_malformed_batches_are_422(gw: Gateway, body: Any) -> None:
    resp = await gw.client.post("/v1/uploads:batch", data=json.dumps(body), headers=gw.auth())
    await problem_of(resp, 422)


@dataclasses.dataclass
class GatedBroker:
    """Holds every publish until `width` are in flight together, or fails the `fail_at`th."""

    inner: Broker
    width: int
    fail_at: int = 0
    published: int = 0

    def __post_init__(self) -> None:
        self._barrier = asyncio.Barrier(self.width)

    @property
    def is_ready(self) -> bool:
        return self.inner.is_ready

    async def publish(self, exchange: str, routing_key: str, body: bytes, **kw: Any) -> None:
        self.published += 1
        if self.published == self.fail_at:
            raise BrokerUnavailable("nacked")
        await asyncio.wait_for(self._barrier.wait(), 5)
        await self.inner.publish(exchange, routing_key, body, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def grant_three_through(gw: Gateway, broker: Any) -> set[str]:
    """A batch of three granted by a gateway publishing through `broker`; the photo ids."""
    res = dataclasses.replace(gw.res, broker=broker)
    client = TestClient(TestServer(create_app(gw.res.settings, resources=res)))
    await client.start_server()
    try:
        resp = await client.post("/v1/uploads:batch", json={"items": items(3)}, headers=gw.auth())
        assert resp.status == 201, await resp.text()
        return {item["photo_id"] for item in (await resp.json())["items"]}
    finally:
        await client.close()


async def test_intents_are_published_concurrently(gw: Gateway) -> None:
    await grant_three_through(gw, GatedBroker(gw.res.broker, width=3))


async def test_an_announcement_the_broker_refuses_is_left_to_the_outbox_relay(
    gw: Gateway,
) -> None:
    granted = await grant_three_through(gw, GatedBroker(gw.res.broker, width=1, fail_at=2))
    announced = [(await asyncio.wait_for(gw.intents.get(), 5)).data["photo_id"] for _ in range(2)]
    assert await gw.res.outbox.relay_once(older_than_s=0) == 1
    announced.append((await asyncio.wait_for(gw.intents.get(), 5)).data["photo_id"])
    assert set(announced) == granted


@dataclasses.dataclass
class StalledBroker:
    """Connected, but never confirms a publish (a broker under a memory alarm)."""

    inner: Broker

    @property
    def is_ready(self) -> bool:
        return True

    async def publish(self, exchange: str, routing_key: str, body: bytes, **kw: Any) -> None:
        await asyncio.Event().wait()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_stalled_broker_does_not_hold_up_grants(gw: Gateway) -> None:
    granted = await grant_three_through(gw, StalledBroker(gw.res.broker))
    waiting = await gw.res.outbox.claim_unsent(older_than_s=0, lease_s=30)
    assert {e.data["photo_id"] for e in waiting} == granted


async def test_batch_items_count_against_the_pending_cap(settings: Settings) -> None:
    async with gateway(settings.model_copy(update={"max_pending_uploads": 4})) as gw:
        ok = await gw.client.post("/v1/uploads:batch", json={"items": items(3)}, headers=gw.auth())
        assert ok.status == 201
        resp = await gw.client.post(
            "/v1/uploads:batch", json={"items": items(2)}, headers=gw.auth()
        )
        assert (await problem_of(resp, 409))["code"] == "too_many_pending"
