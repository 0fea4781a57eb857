"""`GET /v1/events` on one gateway with the in-process broker: who receives what,
resumes and resets, and what the replica listens for and documents."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chaos.tcp_proxy import TcpProxy
from services.gateway.auth import issue_token
from services.gateway.context import LIVE
from services.gateway.live import STREAM_BACKLOG, Stream
from shared.broker import publish
from shared.events import USER_EVENTS, AccountDeleted, PhotoReady
from shared.facts import PhotoFacts
from shared.settings import Settings
from shared.topology import Topology
from shared.users import Users
from tests.conftest import JWT_SECRET, delete_topology
from tests.gateway_harness import Gateway, gateway, ready_photo
from tests.live_harness import add_member, delete_photo, marker, new_album, sample, stream
from tests.test_reconnect import through


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    calm = settings.model_copy(update={"rate_limit_user": 0, "rate_limit_ip": 0})
    async with gateway(calm) as gw:
        yield gw


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
    # The query string, not the header (no `resume`): for clients that cannot send one.
    async with stream(gw, "alice", last_event_id=seen.id) as resumed:
        assert "Last-Event-ID" not in resumed.response.request_info.headers
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


async def test_the_replica_listens_for_every_live_event_type_and_deleted_accounts(
    gw: Gateway,
) -> None:
    hub = gw.client.app[LIVE]
    assert hub.listening
    expected = {event.TYPE for event in USER_EVENTS} | {AccountDeleted.TYPE}
    assert set(hub.queue.routing_keys) == expected
    ready = await gw.client.get("/readyz")
    assert (await ready.json())["checks"]["events"] is True


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


async def test_a_replica_cut_off_from_the_broker_records_its_users_again(
    settings: Settings, amqp_url: str, proxy: TcpProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It may have missed an account.deleted meanwhile: a user it remembered as recorded
    may have been deleted through another replica, and must be recorded again."""
    rabbit = settings.model_copy(update={"broker_url": through(amqp_url, proxy)})
    recorded: list[str] = []
    record = Users.record

    async def counted(self: Users, user_id: str, email: str, *, trace_id: str) -> Any:
        recorded.append(user_id)
        return await record(self, user_id, email, trace_id=trace_id)

    monkeypatch.setattr(Users, "record", counted)
    token = issue_token(JWT_SECRET, "zoe", email="zoe@example.com")
    zoe = {"Authorization": f"Bearer {token}"}
    try:
        async with gateway(rabbit) as gw, stream(gw, "zoe") as sse:
            async with asyncio.timeout(30):
                while not gw.client.app[LIVE].listening:  # noqa: ASYNC110 - no event for it
                    await asyncio.sleep(0.02)
            for _ in range(2):
                assert (await gw.client.get("/v1/photos", headers=zoe)).status == 200
            assert recorded == ["zoe"]
            proxy.cut()
            assert (await sse.message()).event == "reset"
            assert (await gw.client.get("/v1/photos", headers=zoe)).status == 200
            assert recorded == ["zoe", "zoe"]
    finally:
        await delete_topology(amqp_url, Topology.from_settings(rabbit))


async def test_the_document_describes_the_stream_its_messages_and_its_faults(
    gw: Gateway,
) -> None:
    doc = await (await gw.client.get("/openapi.json")).json()
    op = doc["paths"]["/v1/events"]["get"]
    assert op["operationId"] == "streamEvents" and op["security"] == [{"bearer": []}]
    content = op["responses"]["200"]["content"]
    assert list(content) == ["text/event-stream"]
    events = content["text/event-stream"]["x-events"]
    assert set(events) == {event.TYPE for event in USER_EVENTS} | {"reset"}
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
