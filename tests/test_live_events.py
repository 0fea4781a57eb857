"""`GET /v1/events` on one gateway with the in-process broker: who receives what, resumes,
resets, the per-user cap, keep-alive comments, and a prompt end at shutdown."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from chaos.tcp_proxy import TcpProxy
from services.gateway.apikeys import create_key, revoke_key
from services.gateway.auth import issue_token
from services.gateway.context import LIVE
from services.gateway.live import LIVE_EVENTS, STREAM_BACKLOG, Stream
from services.gateway.service import serve
from shared.broker import publish
from shared.events import PhotoReady
from shared.facts import PhotoFacts
from shared.resources import open_resources
from shared.settings import Settings
from shared.topology import Topology
from tests.conftest import JWT_SECRET, delete_topology
from tests.gateway_harness import Gateway, gateway, problem_of, ready_photo
from tests.harness import free_port
from tests.sse import SseReader
from tests.test_reconnect import through


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    calm = settings.model_copy(update={"rate_limit_user": 0, "rate_limit_ip": 0})
    async with gateway(calm) as gw:
        yield gw


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


async def test_the_owner_receives_a_deleted_photo_as_an_sse_message_with_the_webhook_payload(
    gw: Gateway,
) -> None:
    photo_id, _ = await ready_photo(gw, "alice", store_objects=False)
    async with stream(gw, "alice") as sse:
        assert sse.response.headers["Cache-Control"] == "no-store"
        await delete_photo(gw, "alice", photo_id)
        message = await sse.message()
    assert message.event == "photo.deleted"
    body = message.json()
    assert set(body) == {"type", "timestamp", "data"}
    assert body["type"] == "photo.deleted"
    assert body["data"] == {"photo_id": photo_id, "owner_id": "alice"}
    deleted = await gw.intents.get()
    while deleted.type != "photo.deleted":
        deleted = await gw.intents.get()
    assert message.id == deleted.id
    assert datetime.fromisoformat(body["timestamp"]) == deleted.time


async def test_photo_events_reach_their_owner_only_even_inside_a_shared_album(
    gw: Gateway,
) -> None:
    """Matrix: the owner, a member of the photo's (sealed) album, an outsider."""
    async with (
        stream(gw, "bob") as owner,
        stream(gw, "carol") as member,
        stream(gw, "dave") as outsider,
    ):
        tomorrow = datetime.now(UTC) + timedelta(days=1)
        album_id = await new_album(gw, "bob", reveal_at=tomorrow.isoformat())
        await add_member(gw, "bob", album_id, "carol")
        for sse in (owner, member):
            assert (await sse.message()).event == "album.member_added"
        photo_id, _ = await ready_photo(gw, "bob", store_objects=False, album_id=album_id)
        facts = PhotoFacts(sha256="0" * 64, placeholder="p")
        ready = PhotoReady(
            photo_id=photo_id, owner_id="bob", width=1, height=1, renditions=(), facts=facts
        )
        await publish(gw.res.broker, gw.res.topology, ready, trace_id="t")
        assert (await owner.message()).json()["data"]["photo_id"] == photo_id
        for user, sse in (("carol", member), ("dave", outsider)):
            mark = await marker(gw, user)
            assert (await sse.message()).json()["data"]["photo_id"] == mark, user


async def test_album_events_reach_the_owner_and_every_member_but_no_outsider(
    gw: Gateway,
) -> None:
    """Matrix: the owner, a member, one who joins later, an outsider."""
    async with (
        stream(gw, "bob") as owner,
        stream(gw, "carol") as member,
        stream(gw, "dave") as outsider,
        stream(gw, "erin") as newcomer,
    ):
        album_id = await new_album(gw, "bob")
        await add_member(gw, "bob", album_id, "carol")
        # Members are looked up as the event arrives: erin joins only once it has.
        assert (await owner.message()).json()["data"]["user_id"] == "carol"
        await add_member(gw, "bob", album_id, "erin")
        resp = await gw.client.delete(f"/v1/albums/{album_id}", headers=gw.auth("bob"))
        assert resp.status == 204
        expected = {
            owner: ["erin", "deleted"],
            member: ["carol", "erin", "deleted"],
            newcomer: ["erin", "deleted"],
        }
        for sse, kinds in expected.items():
            got = [await sse.message() for _ in kinds]
            assert [
                m.json()["data"]["user_id"] if m.event == "album.member_added" else "deleted"
                for m in got
            ] == kinds
            assert {m.json()["data"]["album_id"] for m in got} == {album_id}
            assert sorted(got[-1].json()["data"]["member_ids"]) == ["carol", "erin"]
        mark = await marker(gw, "dave")
        assert (await outsider.message()).json()["data"]["photo_id"] == mark


async def test_last_event_id_resumes_with_exactly_the_events_missed(gw: Gateway) -> None:
    photos = [(await ready_photo(gw, "alice", store_objects=False))[0] for _ in range(3)]
    async with stream(gw, "alice") as sse:
        await delete_photo(gw, "alice", photos[0])
        seen = await sse.message()
    await delete_photo(gw, "alice", photos[1])
    await delete_photo(gw, "bob", (await ready_photo(gw, "bob", store_objects=False))[0])
    await delete_photo(gw, "alice", photos[2])
    async with stream(gw, "alice", seen.id) as resumed:
        missed = [await resumed.message(), await resumed.message()]
        mark = await marker(gw, "alice")
        after = await resumed.message()
    assert [m.json()["data"]["photo_id"] for m in missed] == photos[1:]
    assert after.json()["data"]["photo_id"] == mark


async def test_the_query_parameter_resumes_as_the_header_does(gw: Gateway) -> None:
    first, second = [(await ready_photo(gw, "alice", store_objects=False))[0] for _ in range(2)]
    async with stream(gw, "alice") as sse:
        await delete_photo(gw, "alice", first)
        seen = await sse.message()
    await delete_photo(gw, "alice", second)
    assert seen.id is not None
    async with stream(gw, "alice", last_event_id=seen.id) as resumed:
        assert (await resumed.message()).json()["data"]["photo_id"] == second


async def test_an_unknown_last_event_id_answers_reset_then_carries_on(gw: Gateway) -> None:
    photo_id, _ = await ready_photo(gw, "alice", store_objects=False)
    await delete_photo(gw, "alice", photo_id)
    async with stream(gw, "alice", str(uuid.uuid4())) as sse:
        reset = await sse.message()
        mark = await marker(gw, "alice")
        after = await sse.message()
    assert reset.event == "reset"
    assert reset.json()["reason"] == "unknown_last_event_id"
    resets = {"reason": "unknown_last_event_id"}
    assert sample(gw, "darkroom_event_stream_resets_total", resets) == 1
    assert reset.id is not None, "a reset names the newest event, to resume from after listing"
    assert after.json()["data"]["photo_id"] == mark


async def test_events_older_than_the_window_are_not_replayed(settings: Settings) -> None:
    short = settings.model_copy(update={"events_replay_events": 2, "rate_limit_user": 0})
    async with gateway(short) as gw:
        photos = [(await ready_photo(gw, "alice", store_objects=False))[0] for _ in range(3)]
        async with stream(gw, "alice") as sse:
            await delete_photo(gw, "alice", photos[0])
            first = await sse.message()
        for photo_id in photos[1:]:
            await delete_photo(gw, "alice", photo_id)
        async with stream(gw, "alice", first.id) as resumed:
            assert (await resumed.message()).event == "reset"


async def test_a_user_over_the_stream_cap_gets_429_too_many_streams(settings: Settings) -> None:
    capped = settings.model_copy(update={"events_max_streams_per_user": 2, "rate_limit_user": 0})
    async with gateway(capped) as gw, stream(gw, "alice"), stream(gw, "alice"):
        resp = await gw.client.get("/v1/events", headers=gw.auth("alice"))
        body = await problem_of(resp, 429)
        assert body["code"] == "too_many_streams"
        assert sample(gw, "darkroom_event_streams") == 2
        async with stream(gw, "bob") as other:
            assert other.response.status == 200
    async with gateway(capped) as gw:
        async with stream(gw, "alice"), stream(gw, "alice"):
            pass
        async with stream(gw, "alice") as again:
            assert again.response.status == 200, "closed streams free their slots"


async def test_keep_alive_comments_arrive_while_nothing_happens(settings: Settings) -> None:
    chatty = settings.model_copy(update={"events_keepalive": 0.05, "rate_limit_user": 0})
    async with gateway(chatty) as gw, stream(gw, "alice") as sse:
        assert await sse.comment() == "keep-alive"


async def test_the_stream_needs_credentials_like_every_route(gw: Gateway) -> None:
    resp = await gw.client.get("/v1/events")
    assert (await problem_of(resp, 401))["code"] == "unauthorized"
    resp = await gw.client.get("/v1/events", headers=gw.auth() | {"Last-Event-ID": "a b"})
    assert (await problem_of(resp, 422))["code"] == "invalid_request"


async def test_the_replica_listens_for_every_live_event_type(gw: Gateway) -> None:
    hub = gw.client.app[LIVE]
    assert hub.listening
    assert set(hub.queue.routing_keys) == {event.TYPE for event in LIVE_EVENTS}
    ready = await gw.client.get("/readyz")
    assert (await ready.json())["checks"]["events"] is True


async def test_gateway_shutdown_ends_open_streams_without_waiting_out_the_grace(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"gateway_port": free_port(), "shutdown_grace": 60.0})
    async with open_resources(settings) as res:
        await res.storage.ensure_bucket()
        stop = asyncio.Event()
        server = asyncio.create_task(serve(settings, stop, resources=res, health=False))
        base = f"http://127.0.0.1:{settings.gateway_port}"
        token = {"Authorization": f"Bearer {issue_token(JWT_SECRET, 'alice')}"}
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    resp = await http.get(f"{base}/v1/events", headers=token)
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            sse = SseReader(resp)
            stop.set()
            # Far below the 60 s grace: a stream that held the drain would fail here.
            assert await sse.ended(timeout=20)
            await asyncio.wait_for(server, 20)


async def test_a_broker_reconnect_tells_open_streams_to_list_again(
    settings: Settings, amqp_url: str, proxy: TcpProxy
) -> None:
    """Events sent while the replica's connection was down never reached its queue."""
    rabbit = settings.model_copy(
        update={"broker_url": through(amqp_url, proxy), "rate_limit_user": 0}
    )
    try:
        async with gateway(rabbit) as gw, stream(gw, "alice") as sse:
            first = await marker(gw, "alice")
            assert (await sse.message()).json()["data"]["photo_id"] == first
            proxy.cut()
            reset = await sse.message()
            assert (reset.event, reset.json()["reason"]) == ("reset", "events_interrupted")
            mark = await marker(gw, "alice")
            assert (await sse.message()).json()["data"]["photo_id"] == mark
            # The window before the gap has holes: resuming from inside it is a reset.
            async with stream(gw, "alice", first) as resumed:
                assert (await resumed.message()).event == "reset"
    finally:
        await delete_topology(amqp_url, Topology.from_settings(rabbit))


async def test_a_stream_ends_when_its_token_expires_or_its_api_key_is_revoked(
    settings: Settings,
) -> None:
    strict = settings.model_copy(
        update={"auth_leeway": 0.0, "events_recheck_seconds": 0.05, "rate_limit_user": 0}
    )
    async with gateway(strict) as gw:
        short = issue_token(JWT_SECRET, "alice", ttl_s=1)
        resp = await gw.client.get("/v1/events", headers={"Authorization": f"Bearer {short}"})
        assert await SseReader(resp).ended(timeout=20)
        key, secret = await create_key(gw.res.database, "app", ["photos:read"])
        headers = {"Authorization": f"Bearer {secret}", "X-Darkroom-User": "alice"}
        resp = await gw.client.get("/v1/events", headers=headers)
        sse = SseReader(resp)
        mark = await marker(gw, "alice")
        assert (await sse.message()).json()["data"]["photo_id"] == mark
        assert await revoke_key(gw.res.database, key.id)
        assert await sse.ended(timeout=20)


async def test_the_document_describes_the_stream_its_messages_and_its_faults(
    gw: Gateway,
) -> None:
    doc = await (await gw.client.get("/openapi.json")).json()
    op = doc["paths"]["/v1/events"]["get"]
    assert op["operationId"] == "streamEvents" and op["security"] == [{"bearer": []}]
    content = op["responses"]["200"]["content"]
    assert list(content) == ["text/event-stream"]
    events = content["text/event-stream"]["x-events"]
    assert set(events) == {event.TYPE for event in LIVE_EVENTS} | {"reset"}
    for ref in events.values():
        name = ref["$ref"].rsplit("/", 1)[-1]
        assert name in doc["components"]["schemas"], name
    assert "too_many_streams" in op["responses"]["429"]["description"]
    params = {(p["name"], p["in"]) for p in op["parameters"]}
    assert params == {("last_event_id", "query"), ("Last-Event-ID", "header")}


async def test_a_stream_that_falls_behind_gets_a_reset_instead_of_a_growing_backlog() -> None:
    stream = Stream("alice")
    kept = [stream.push(b"event %d" % n, f"id-{n}") for n in range(STREAM_BACKLOG + 1)]
    assert kept == [True] * STREAM_BACKLOG + [False]
    [frame] = await stream.wait(1)
    assert frame.startswith(f"id: id-{STREAM_BACKLOG}\nevent: reset\n".encode())
    assert b"fell_behind" in frame


async def test_a_browser_on_an_allowed_origin_may_read_the_stream(settings: Settings) -> None:
    cors = settings.model_copy(update={"cors_origins": "https://app.example"})
    async with gateway(cors) as gw:
        preflight = await gw.client.options(
            "/v1/events",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization, last-event-id",
            },
        )
        assert "Last-Event-ID" in preflight.headers["Access-Control-Allow-Headers"]
        headers = gw.auth() | {"Origin": "https://app.example"}
        async with gw.client.get("/v1/events", headers=headers) as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
            assert "X-Request-ID" in resp.headers["Access-Control-Expose-Headers"]
            assert resp.headers["Vary"] == "Origin"
