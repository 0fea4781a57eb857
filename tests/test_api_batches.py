"""POST /v1/uploads:batch: up to 50, all-or-nothing, in order; the intents recorded in one
transaction, and nothing announced, so the broker never holds up a grant."""

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
from shared.settings import Settings
from tests.gateway_harness import Gateway, gateway, grant_body, problem_of


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    async with gateway(settings) as gw:
        yield gw


def items(n: int) -> list[dict[str, Any]]:
    return [grant_body(filename=f"p{i}.jpg", size=1000 + i) for i in range(n)]


async def test_a_batch_of_50_answers_every_grant_in_request_order(gw: Gateway) -> None:
    body = {"items": [*items(49), grant_body(method="PUT", size=7)]}
    resp = await gw.client.post("/v1/uploads:batch", json=body, headers=gw.auth())
    assert resp.status == 201, await resp.text()
    grants = (await resp.json())["items"]
    recorded = [await gw.res.store.get(g["photo_id"]) for g in grants]
    assert [r.declared_size if r else None for r in recorded] == [1000 + i for i in range(49)] + [7]
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
class RefusingBroker:
    """Connected, but refuses every publish."""

    inner: Broker

    @property
    def is_ready(self) -> bool:
        return True

    async def publish(self, exchange: str, routing_key: str, body: bytes, **kw: Any) -> None:
        raise BrokerUnavailable("nacked")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


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


@pytest.mark.parametrize("broker", [RefusingBroker, StalledBroker])
async def test_grants_record_intents_without_the_broker(gw: Gateway, broker: type[Any]) -> None:
    """A grant announces nothing: a broker that refuses or stalls cannot hold it up, and
    nothing is left waiting in the outbox."""
    granted = await asyncio.wait_for(grant_three_through(gw, broker(gw.res.broker)), 10)
    for photo_id in granted:
        assert await gw.res.store.get(photo_id) is not None
    assert await gw.res.outbox.claim_unpublished(older_than_s=0, lease_s=30) == []
    assert gw.intents.empty()


async def test_batch_items_count_against_the_pending_cap(settings: Settings) -> None:
    async with gateway(settings.model_copy(update={"max_pending_uploads": 4})) as gw:
        ok = await gw.client.post("/v1/uploads:batch", json={"items": items(3)}, headers=gw.auth())
        assert ok.status == 201
        resp = await gw.client.post(
            "/v1/uploads:batch", json={"items": items(2)}, headers=gw.auth()
        )
        assert (await problem_of(resp, 409))["code"] == "too_many_pending"
