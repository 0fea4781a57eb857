"""Deliveries to users' endpoints against real local receivers: the retry schedule, the
delivery log, signatures during a rotation, a hanging endpoint beside a healthy one,
the user's retry, the check at delivery time, and disabling after the failing window."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from standardwebhooks import Webhook

from services.notifier.delivery import Deliverer
from shared.broker import publish_envelope
from shared.events import Envelope, WebhookDelivery
from shared.runtime import Meta
from shared.settings import Settings
from shared.webhook_deliveries import Deliveries
from tests.gateway_harness import Gateway
from tests.webhook_stack import (
    Receivers,
    deliveries,
    photo_ready,
    receivers,
    register,
    stack,
)

# Compressed: four attempts, the retries 300 ms and 600 ms and 300 ms after a failure.
SCHEDULE = "0,300ms,600ms,300ms"


def fast(settings: Settings, **overrides: Any) -> Settings:
    values = {
        "webhook_allow_private_targets": True,
        "webhook_retry_schedule": SCHEDULE,
        "webhook_timeout": 5.0,
    }
    return settings.model_copy(update=values | overrides)


@pytest.fixture
async def hooks() -> AsyncIterator[Receivers]:
    async with receivers() as found:
        yield found


async def settled(gw: Gateway, hook_id: str, status: str) -> dict[str, Any]:
    """The endpoint's only delivery once the log shows `status` (it is written just
    after the receiver answers)."""
    async with asyncio.timeout(30):
        while True:
            found = await deliveries(gw, hook_id)
            if found and found[0]["status"] == status:
                [delivery] = found
                return delivery
            await asyncio.sleep(0.05)


async def fails_twice_then_succeeds(settings: Settings, hooks: Receivers) -> None:
    url, endpoint = hooks.add(fail_first=2)
    async with stack(fast(settings)) as gw:
        hook = await register(gw, url, events=("photo.ready",))
        event_id = await photo_ready(gw, "alice")
        await endpoint.wait(1, status=204)
        delivery = await settled(gw, hook["id"], "delivered")
    assert [h.status for h in endpoint.hits] == [503, 503, 204]
    assert {h.headers["webhook-id"] for h in endpoint.hits} == {event_id}
    assert len({h.body for h in endpoint.hits}) == 1, "every attempt sends the same body"
    gaps = [b.at - a.at for a, b in zip(endpoint.hits, endpoint.hits[1:], strict=False)]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6, f"the schedule's delays: {gaps}"
    for hit in endpoint.hits:
        payload = Webhook(hook["secret"]).verify(hit.body, hit.headers)
        assert payload["type"] == "photo.ready" and payload["data"]["owner_id"] == "alice"
    assert delivery["event_id"] == event_id and delivery["event_type"] == "photo.ready"
    attempts = delivery["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert [a["response_status"] for a in attempts] == [503, 503, 204]
    assert attempts[0]["error"] == "endpoint answered 503"
    assert (
        attempts[0]["response_excerpt"].startswith("nope")
        and len(attempts[0]["response_excerpt"]) <= 500
    ), "a short excerpt of the body"
    assert all(a["duration_ms"] >= 0 and a["at"] for a in attempts)


async def test_a_failing_endpoint_is_retried_on_the_schedule_and_each_attempt_logged(
    settings: Settings, hooks: Receivers
) -> None:
    await fails_twice_then_succeeds(settings, hooks)


async def test_the_retry_schedule_runs_through_rabbitmq_delay_queues_and_postgresql(
    rabbit_settings: Settings, postgres_url: str, hooks: Receivers
) -> None:
    await fails_twice_then_succeeds(
        rabbit_settings.model_copy(update={"database_url": postgres_url}), hooks
    )


async def test_during_a_rotation_both_secrets_sign_each_delivery(
    settings: Settings, hooks: Receivers
) -> None:
    url, endpoint = hooks.add()
    async with stack(fast(settings)) as gw:
        hook = await register(gw, url)
        async with gw.client.post(f"/v1/webhooks/{hook['id']}/rotate", headers=gw.auth()) as resp:
            new_secret = (await resp.json())["secret"]
        async with gw.client.post(f"/v1/webhooks/{hook['id']}/test", headers=gw.auth()) as resp:
            queued = await resp.json()
        await endpoint.wait(1)
    [hit] = endpoint.hits
    assert len(hit.headers["webhook-signature"].split(" ")) == 2
    for secret in (hook["secret"], new_secret):
        payload = Webhook(secret).verify(hit.body, hit.headers)
        assert payload["type"] == "webhook.test" and payload["data"]["webhook_id"] == hook["id"]
    assert hit.headers["webhook-id"] == queued["event_id"]


async def test_a_hanging_endpoint_does_not_hold_up_another(
    settings: Settings, hooks: Receivers
) -> None:
    """Bob's endpoint never answers (within a long timeout); Alice's still gets hers."""
    slow_url, slow = hooks.add(hang=True)
    url, healthy = hooks.add()
    async with stack(fast(settings, webhook_timeout=60.0)) as gw:
        await register(gw, slow_url, user="bob")
        await register(gw, url, user="alice")
        for _ in range(5):
            await photo_ready(gw, "bob")
        alices = [await photo_ready(gw, "alice") for _ in range(3)]
        await slow.wait_hanging(5)
        await healthy.wait(3, timeout=20)
        assert not slow.hits, "bob's deliveries are all still held"
        hooks.release()
        await slow.wait(5)
    assert sorted(h.headers["webhook-id"] for h in healthy.hits) == sorted(alices)


async def test_a_failed_delivery_is_sent_again_when_its_user_asks(
    settings: Settings, hooks: Receivers
) -> None:
    url, endpoint = hooks.add(fail_always=True)
    async with stack(fast(settings)) as gw:
        hook = await register(gw, url)
        event_id = await photo_ready(gw, "alice")
        failed = await settled(gw, hook["id"], "failed")
        assert len(failed["attempts"]) == 4, "every attempt of the schedule"
        endpoint.fail_always = False
        path = f"/v1/webhooks/{hook['id']}/deliveries/{failed['id']}/retry"
        async with gw.client.post(path, headers=gw.auth()) as resp:
            assert resp.status == 202
        delivered = await settled(gw, hook["id"], "delivered")
    assert [a["response_status"] for a in delivered["attempts"]] == [503] * 4 + [204]
    assert [h.headers["webhook-id"] for h in endpoint.hits] == [event_id] * 5


async def test_an_endpoint_named_by_an_ipv6_literal_is_delivered_to(settings: Settings) -> None:
    async with receivers("::1") as on_v6, stack(fast(settings)) as gw:
        url, endpoint = on_v6.add()
        assert url.startswith("http://[::1]:")
        hook = await register(gw, url)
        event_id = await photo_ready(gw, "alice")
        delivered = await settled(gw, hook["id"], "delivered")
    assert [h.headers["webhook-id"] for h in endpoint.hits] == [event_id]
    assert delivered["attempts"][0]["response_status"] == 204


async def test_deliveries_to_private_addresses_are_refused_at_delivery_time(
    settings: Settings, hooks: Receivers
) -> None:
    """Endpoints created while private targets were allowed, delivered to after that
    was turned off: nothing reaches them, and the log says why."""
    literal, by_literal = hooks.add()
    named, by_name = hooks.add()
    named = named.replace("127.0.0.1", "localhost")
    async with receivers("::1") as on_v6:
        v6_literal, by_v6_literal = on_v6.add()
        async with stack(fast(settings)) as gw:
            made = [await register(gw, url) for url in (literal, named, v6_literal)]
        async with stack(fast(settings, webhook_allow_private_targets=False)) as gw:
            await photo_ready(gw, "alice")
            refused = [await settled(gw, h["id"], "failed") for h in made]
    assert not by_literal.hits and not by_name.hits and not by_v6_literal.hits
    assert refused[0]["attempts"][0]["error"].startswith("refused:")
    assert "loopback" in refused[1]["attempts"][0]["error"]
    assert refused[2]["attempts"][0]["error"].startswith("refused:")
    assert all(a["response_status"] is None for r in refused for a in r["attempts"])


async def test_an_endpoint_failing_past_its_window_is_disabled_and_announced(
    settings: Settings, hooks: Receivers
) -> None:
    url, endpoint = hooks.add(fail_always=True)
    announced: list[str] = []
    async with stack(fast(settings, webhook_disable_after=0.2)) as gw:
        hook = await register(gw, url)
        await photo_ready(gw, "alice")
        view = await _disabled(gw, hook["id"])
        outbox_left, _ = await gw.res.outbox.backlog()
        await photo_ready(gw, "alice")
        announced = [d["event_type"] for d in await deliveries(gw, hook["id"])]
    assert view["failing_since"] is not None and view["disabled_at"] >= view["failing_since"]
    assert outbox_left == 0, "webhook.disabled was published"
    assert len(endpoint.hits) >= 2 and announced == ["photo.ready"], "nothing planned after"


async def _disabled(gw: Gateway, hook_id: str) -> dict[str, Any]:
    """The endpoint's view once it shows disabled."""
    async with asyncio.timeout(30):
        while True:
            async with gw.client.get(f"/v1/webhooks/{hook_id}", headers=gw.auth()) as resp:
                view: dict[str, Any] = await resp.json()
            if view["disabled_at"]:
                return view
            await asyncio.sleep(0.05)


async def test_a_copy_of_a_delivery_in_flight_does_not_send_it_a_second_time(
    settings: Settings, hooks: Receivers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As when a broker connection drops mid-request and the message is handed out
    again: the copy waits for the first attempt, then finds it delivered."""
    refused = asyncio.Event()
    claim = Deliveries.claim

    async def watched(self: Deliveries, delivery: str, *, lease_s: float) -> bool:
        taken = await claim(self, delivery, lease_s=lease_s)
        if not taken:
            refused.set()
        return taken

    monkeypatch.setattr(Deliveries, "claim", watched)
    handled: list[str] = []
    both = asyncio.Event()
    deliver = Deliverer.on_delivery

    async def counted(self: Deliverer, event: WebhookDelivery, meta: Meta) -> None:
        await deliver(self, event, meta)
        handled.append(event.delivery_id)
        if len(handled) == 2:
            both.set()

    monkeypatch.setattr(Deliverer, "on_delivery", counted)
    url, endpoint = hooks.add(hang=True)
    async with stack(fast(settings)) as gw:
        hook = await register(gw, url)
        async with gw.client.post(f"/v1/webhooks/{hook['id']}/test", headers=gw.auth()) as resp:
            queued = await resp.json()
        await endpoint.wait_hanging(1)
        copy = Envelope.wrap(WebhookDelivery(delivery_id=queued["delivery_id"]), trace_id="t")
        await publish_envelope(gw.res.broker, gw.res.topology, copy)
        await asyncio.wait_for(refused.wait(), 10)
        assert endpoint.hanging == 1
        hooks.release()
        await endpoint.wait(1)
        await asyncio.wait_for(both.wait(), 10)
        delivery = await settled(gw, hook["id"], "delivered")
    assert len(endpoint.hits) == 1 and len(delivery["attempts"]) == 1


async def test_album_events_reach_every_members_endpoints_and_only_the_types_they_chose(
    settings: Settings, hooks: Receivers
) -> None:
    owner_url, owner = hooks.add()
    member_url, member = hooks.add()
    outsider_url, outsider = hooks.add()
    async with stack(fast(settings)) as gw:
        await register(gw, owner_url, user="alice")
        await register(gw, member_url, user="bob", events=("album.deleted",))
        await register(gw, outsider_url, user="carol")
        body = {"title": "Saturday"}
        async with gw.client.post("/v1/albums", json=body, headers=gw.auth()) as resp:
            album = (await resp.json())["id"]
        path = f"/v1/albums/{album}/members/bob"
        async with gw.client.put(path, json={"role": "viewer"}, headers=gw.auth()) as resp:
            assert resp.status == 200
        await owner.wait(1)
        async with gw.client.delete(f"/v1/albums/{album}", headers=gw.auth()) as resp:
            assert resp.status == 204
        await owner.wait(2)
        await member.wait(1)
        await photo_ready(gw, "alice")  # a later event: carol's endpoint had its chance
        await owner.wait(3)
    seen = {
        name: [json.loads(h.body)["type"] for h in endpoint.hits]
        for name, endpoint in (("alice", owner), ("bob", member), ("carol", outsider))
    }
    assert seen == {
        "alice": ["album.member_added", "album.deleted", "photo.ready"],
        "bob": ["album.deleted"],
        "carol": [],
    }
    deleted = json.loads(member.hits[0].body)["data"]
    assert deleted["album_id"] == album and deleted["member_ids"] == ["bob"]
