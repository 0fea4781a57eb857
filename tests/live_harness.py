"""Helpers for the live event stream tests on the gateway harness."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.gateway_harness import Gateway, ready_photo
from tests.sse import SseReader


@asynccontextmanager
async def stream(
    gw: Gateway, user: str, resume: str | None = None, **query: str
) -> AsyncIterator[SseReader]:
    """A stream for `user`, resuming after `resume` (sent as the Last-Event-ID header)."""
    headers = gw.auth(user) | ({"Last-Event-ID": resume} if resume else {})
    resp = await gw.client.get("/v1/events", headers=headers, params=query)
    try:
        yield SseReader(resp)
    finally:
        resp.close()


async def delete_photo(gw: Gateway, user: str, photo_id: str) -> None:
    resp = await gw.client.delete(f"/v1/photos/{photo_id}", headers=gw.auth(user))
    assert resp.status == 204, await resp.text()


async def new_album(gw: Gateway, owner: str, **fields: Any) -> str:
    body = {"title": "Trip"} | fields
    resp = await gw.client.post("/v1/albums", json=body, headers=gw.auth(owner))
    assert resp.status == 201, await resp.text()
    album_id: str = (await resp.json())["id"]
    return album_id


async def add_member(gw: Gateway, owner: str, album_id: str, user: str) -> None:
    resp = await gw.client.put(
        f"/v1/albums/{album_id}/members/{user}", json={"role": "viewer"}, headers=gw.auth(owner)
    )
    assert resp.status == 200, await resp.text()


def sample(gw: Gateway, name: str, labels: dict[str, str] | None = None) -> float | None:
    return gw.res.metrics.registry.get_sample_value(name, labels or {})


async def marker(gw: Gateway, user: str) -> str:
    """An event only `user` may see (their photo deleted): what a stream receives next
    once everything before it was delivered. Returns the photo id."""
    photo_id, _ = await ready_photo(gw, user, store_objects=False)
    await delete_photo(gw, user, photo_id)
    return photo_id
