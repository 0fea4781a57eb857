"""Dedupe: a request carrying the sha256 of a ready photo the owner has gets that photo."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from shared.settings import Settings
from tests.gateway_harness import Gateway, gateway, grant_body, ready_photo


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    async with gateway(settings) as gw:
        yield gw


async def test_a_known_hash_answers_the_existing_photo(gw: Gateway) -> None:
    photo_id, data = await ready_photo(gw)
    digest = hashlib.sha256(data).hexdigest()
    resp = await gw.client.post("/v1/uploads", json=grant_body(sha256=digest), headers=gw.auth())
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (body["photo_id"], body["duplicate"], body["photo"]["status"]) == (
        photo_id,
        True,
        "ready",
    )
    assert gw.intents.empty(), "no grant, no intent"


async def test_other_hashes_and_other_owners_get_new_grants(gw: Gateway) -> None:
    _, data = await ready_photo(gw)
    digest = hashlib.sha256(data).hexdigest()
    other = await gw.client.post("/v1/uploads", json=grant_body(sha256="0" * 64), headers=gw.auth())
    assert other.status == 201
    theirs = await gw.client.post(
        "/v1/uploads", json=grant_body(sha256=digest), headers=gw.auth("bob")
    )
    assert theirs.status == 201


async def test_batches_answer_duplicates_in_place(gw: Gateway) -> None:
    photo_id, data = await ready_photo(gw)
    digest = hashlib.sha256(data).hexdigest()
    batch = {"items": [grant_body(), grant_body(sha256=digest), grant_body()]}
    resp = await gw.client.post("/v1/uploads:batch", json=batch, headers=gw.auth())
    assert resp.status == 201
    items = (await resp.json())["items"]
    assert [("upload" in i, i.get("duplicate", False)) for i in items] == [
        (True, False),
        (False, True),
        (True, False),
    ]
    assert items[1]["photo_id"] == photo_id


async def test_a_malformed_hash_is_422(gw: Gateway) -> None:
    resp = await gw.client.post("/v1/uploads", json=grant_body(sha256="XYZ"), headers=gw.auth())
    assert resp.status == 422
