"""The webhook endpoint routes: creation, secrets shown once, and only the owner sees or
changes an endpoint (everyone else gets 404)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from shared.settings import Settings
from shared.tables import webhooks
from tests.gateway_harness import Gateway, gateway, problem_of

HOOK = "https://hooks.example.com/darkroom"


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    # The URLs here never receive anything (no notifier runs): no address check needed.
    allowed = settings.model_copy(update={"webhook_allow_private_targets": True})
    async with gateway(allowed) as gw:
        yield gw


async def create(gw: Gateway, user: str = "alice", **body: Any) -> dict[str, Any]:
    payload = {"url": HOOK, "events": ["photo.ready"], **body}
    async with gw.client.post("/v1/webhooks", json=payload, headers=gw.auth(user)) as resp:
        assert resp.status == 201, await resp.text()
        made: dict[str, Any] = await resp.json()
        return made


async def test_creating_an_endpoint_shows_its_secret_once(gw: Gateway) -> None:
    made = await create(gw, events=["*"], description="my app")
    assert made["secret"].startswith("whsec_")
    assert made["events"] == ["*"] and made["description"] == "my app"
    async with gw.client.get(f"/v1/webhooks/{made['id']}", headers=gw.auth()) as resp:
        shown = await resp.json()
    async with gw.client.get("/v1/webhooks", headers=gw.auth()) as resp:
        listed = await resp.json()
    assert "secret" not in shown and shown["url"] == HOOK
    assert [h["id"] for h in listed["items"]] == [made["id"]]
    assert made["secret"] not in str(listed) + str(shown)


async def test_secrets_are_sealed_at_rest_when_a_key_is_set(settings: Settings) -> None:
    sealed = settings.model_copy(
        update={
            "webhook_allow_private_targets": True,
            "webhook_secrets_key": type(settings.webhook_secret)("k" + "x7Qp2Lz9" * 4),
        }
    )
    async with gateway(sealed) as gw:
        made = await create(gw)
        stored = await gw.res.webhooks.get(made["id"])
        assert stored is not None
        assert stored.secret.startswith("v1:") and made["secret"] not in stored.secret
        assert gw.res.webhooks.signing_secrets(stored) == [made["secret"]]


async def test_rotation_answers_a_new_secret_and_how_long_the_old_one_signs(gw: Gateway) -> None:
    made = await create(gw)
    async with gw.client.post(f"/v1/webhooks/{made['id']}/rotate", headers=gw.auth()) as resp:
        assert resp.status == 200
        rotated = await resp.json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != made["secret"]
    stored = await gw.res.webhooks.get(made["id"])
    assert stored is not None
    assert gw.res.webhooks.signing_secrets(stored) == [rotated["secret"], made["secret"]]
    async with gw.client.get(f"/v1/webhooks/{made['id']}", headers=gw.auth()) as resp:
        assert (await resp.json())["previous_secret_until"] is not None


@pytest.mark.parametrize(
    ("url", "events"),
    [
        ("ftp://hooks.example.com/x", ["photo.ready"]),
        ("https://user@hooks.example.com/x", ["photo.ready"]),
        (HOOK, []),
        (HOOK, ["photo.exploded"]),
    ],
)
async def test_malformed_endpoints_are_refused(gw: Gateway, url: str, events: list[str]) -> None:
    body = {"url": url, "events": events}
    async with gw.client.post("/v1/webhooks", json=body, headers=gw.auth()) as resp:
        await problem_of(resp, 422)


async def test_a_user_has_at_most_twenty_endpoints(gw: Gateway) -> None:
    for _ in range(20):
        await create(gw)
    body = {"url": HOOK, "events": ["*"]}
    async with gw.client.post("/v1/webhooks", json=body, headers=gw.auth()) as resp:
        assert (await problem_of(resp, 409))["code"] == "too_many_webhooks"


async def test_the_listings_page_with_a_cursor(gw: Gateway) -> None:
    made = [await create(gw) for _ in range(3)]
    async with gw.client.get("/v1/webhooks?limit=2", headers=gw.auth()) as resp:
        first = await resp.json()
    cursor = first["next_cursor"]
    async with gw.client.get(f"/v1/webhooks?limit=2&cursor={cursor}", headers=gw.auth()) as resp:
        second = await resp.json()
    seen = [h["id"] for h in first["items"] + second["items"]]
    assert sorted(seen) == sorted(h["id"] for h in made) and second["next_cursor"] is None


# Every route on one endpoint: (method, path template, answer for its owner).
ROUTES = [
    ("GET", "/v1/webhooks/{id}", 200),
    ("GET", "/v1/webhooks/{id}/deliveries", 200),
    ("POST", "/v1/webhooks/{id}/test", 202),
    ("POST", "/v1/webhooks/{id}/deliveries/{delivery}/retry", 202),
    ("POST", "/v1/webhooks/{id}/rotate", 200),
    ("POST", "/v1/webhooks/{id}/enable", 200),
    ("DELETE", "/v1/webhooks/{id}", 204),
]


@pytest.mark.parametrize("caller", ["alice", "bob"])
@pytest.mark.parametrize(("method", "template", "owner_status"), ROUTES)
async def test_only_the_owner_sees_or_changes_an_endpoint(
    gw: Gateway, caller: str, method: str, template: str, owner_status: int
) -> None:
    made = await create(gw, "alice")
    async with gw.client.post(f"/v1/webhooks/{made['id']}/test", headers=gw.auth()) as resp:
        delivery = (await resp.json())["delivery_id"]
    path = template.format(id=made["id"], delivery=delivery)
    async with gw.client.request(method, path, headers=gw.auth(caller)) as resp:
        if caller == "alice":
            assert resp.status == owner_status, await resp.text()
        else:
            assert (await problem_of(resp, 404))["code"] == "not_found"
    async with gw.client.get("/v1/webhooks", headers=gw.auth("bob")) as resp:
        assert (await resp.json())["items"] == []
    gone = method == "DELETE" and caller == "alice"
    assert (await gw.res.webhooks.get(made["id"]) is None) == gone


async def test_the_test_event_is_logged_as_a_pending_delivery(gw: Gateway) -> None:
    made = await create(gw)
    async with gw.client.post(f"/v1/webhooks/{made['id']}/test", headers=gw.auth()) as resp:
        queued = await resp.json()
    async with gw.client.get(f"/v1/webhooks/{made['id']}/deliveries", headers=gw.auth()) as resp:
        [delivery] = (await resp.json())["items"]
    assert delivery["id"] == queued["delivery_id"] and delivery["event_id"] == queued["event_id"]
    assert (delivery["event_type"], delivery["status"]) == ("webhook.test", "pending")


async def test_an_unknown_delivery_cannot_be_retried(gw: Gateway) -> None:
    made = await create(gw)
    path = f"/v1/webhooks/{made['id']}/deliveries/{'0' * 32}/retry"
    async with gw.client.post(path, headers=gw.auth()) as resp:
        await problem_of(resp, 404)


async def test_deleting_an_account_removes_its_endpoints_and_their_log(gw: Gateway) -> None:
    mine, theirs = await create(gw, "alice"), await create(gw, "bob")
    async with gw.client.post(f"/v1/webhooks/{mine['id']}/test", headers=gw.auth()) as resp:
        delivery = (await resp.json())["delivery_id"]
    async with gw.client.delete("/v1/me", headers=gw.auth()) as resp:
        assert resp.status == 202
    assert await gw.res.webhooks.get(mine["id"]) is None
    assert await gw.res.deliveries.get(delivery) is None
    assert await gw.res.webhooks.get(theirs["id"]) is not None


async def test_a_disabled_endpoint_is_enabled_again_by_its_owner(gw: Gateway) -> None:
    made = await create(gw)
    disabled = sa.update(webhooks).where(webhooks.c.id == made["id"])
    async with gw.res.database.transaction() as conn:
        await conn.execute(disabled.values(failing_since=_AGO, disabled_at=_AGO))
    assert await gw.res.webhooks.subscribed(["alice"], "photo.ready") == []
    async with gw.client.post(f"/v1/webhooks/{made['id']}/enable", headers=gw.auth()) as resp:
        view = await resp.json()
    assert resp.status == 200 and view["disabled_at"] is None and view["failing_since"] is None
    [again] = await gw.res.webhooks.subscribed(["alice"], "photo.ready")
    assert again.id == made["id"]


_AGO = datetime(2026, 1, 1, tzinfo=UTC)
