"""Server-to-server API keys: created, listed and revoked by the CLI, stored hashed, scoped,
acting for the user named in X-Darkroom-User, and never logged."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
import sqlalchemy as sa
import structlog.testing

from services.cli import main as darkroom
from shared.logging import merge_context
from shared.settings import Settings
from shared.tables import api_keys
from tests.gateway_harness import Gateway, gateway, grant_body, problem_of

Cli = Callable[..., Coroutine[Any, Any, str]]


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    async with gateway(settings) as gw:
        yield gw


@pytest.fixture
def cli(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> Cli:
    """`darkroom ...` against the test's own database."""
    monkeypatch.setenv("DARKROOM_DATA_DIR", str(settings.data_dir))

    async def run(*argv: str) -> str:
        capfd.readouterr()
        # In a thread: the command runs its own event loop.
        await asyncio.to_thread(darkroom, list(argv))
        return capfd.readouterr().out.strip()

    return run


def key_auth(key: str, user: str | None = "bob") -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    return headers | ({"X-Darkroom-User": user} if user is not None else {})


async def test_a_key_acts_for_the_user_it_names(gw: Gateway, cli: Cli) -> None:
    key = await cli("apikey", "create", "--name", "backend")
    resp = await gw.client.post("/v1/uploads", json=grant_body(), headers=key_auth(key))
    assert resp.status == 201, await resp.text()
    photo_id = (await resp.json())["photo_id"]
    assert (await gw.client.get(f"/v1/photos/{photo_id}", headers=gw.auth("bob"))).status == 200
    await problem_of(await gw.client.get(f"/v1/photos/{photo_id}", headers=gw.auth("carol")), 404)
    resp = await gw.client.get(f"/v1/photos/{photo_id}", headers=key_auth(key, "carol"))
    await problem_of(resp, 404)


async def test_keys_are_stored_only_as_their_hash_and_listed_without_it(
    gw: Gateway, cli: Cli
) -> None:
    key = await cli("apikey", "create", "--name", "backend", "--scope", "photos:read")
    async with gw.res.database.transaction() as conn:
        [row] = [dict(r._mapping) for r in (await conn.execute(sa.select(api_keys))).all()]
    secret = key.split("_", 2)[2]  # the secret itself may contain "_"
    assert row["secret_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert all(secret not in str(value) for value in row.values())
    listing = await cli("apikey", "list")
    assert row["id"] in listing and "backend" in listing and "photos:read" in listing
    assert secret not in listing


async def test_scopes_are_enforced(gw: Gateway, cli: Cli) -> None:
    key = await cli("apikey", "create", "--name", "reader", "--scope", "photos:read")
    assert (await gw.client.get("/v1/photos", headers=key_auth(key))).status == 200
    resp = await gw.client.post("/v1/uploads", json=grant_body(), headers=key_auth(key))
    body = await problem_of(resp, 403)
    assert body["code"] == "insufficient_scope" and "photos:write" in body["detail"]
    assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]
    await problem_of(await gw.client.delete("/v1/me", headers=key_auth(key)), 403)


async def test_a_key_must_name_a_user(gw: Gateway, cli: Cli) -> None:
    key = await cli("apikey", "create", "--name", "backend")
    for user in (None, "", "a\tb", "x" * 256):
        resp = await gw.client.get("/v1/photos", headers=key_auth(key, user))
        assert (await problem_of(resp, 400))["code"] == "user_required"


async def test_revoked_unknown_and_malformed_keys_are_401(gw: Gateway, cli: Cli) -> None:
    key = await cli("apikey", "create", "--name", "old")
    key_id = key.split("_")[1]
    assert (await gw.client.get("/v1/photos", headers=key_auth(key))).status == 200
    assert key_id in await cli("apikey", "revoke", key_id)
    assert "revoked" in await cli("apikey", "list")
    for bad in (key, key[:-4] + "AAAA", "drk_nothing"):
        resp = await gw.client.get("/v1/photos", headers=key_auth(bad))
        assert "API key" in (await problem_of(resp, 401))["detail"]
    with pytest.raises(SystemExit):
        await cli("apikey", "revoke", key_id)


async def test_tokens_and_keys_never_reach_the_logs(
    gw: Gateway, cli: Cli, capfd: pytest.CaptureFixture[str]
) -> None:
    key = await cli("apikey", "create", "--name", "backend")
    token = gw.auth()["Authorization"].split()[1]
    capfd.readouterr()
    await gw.client.post("/v1/uploads", json=grant_body(), headers=key_auth(key))
    await gw.client.get("/v1/photos", headers=gw.auth())
    await gw.client.get("/v1/photos", headers={"Authorization": f"Bearer {token}x"})
    await gw.client.get("/v1/photos", headers=key_auth(key + "x"))
    logged = "".join(capfd.readouterr())
    assert "request" in logged, "the access log was captured"
    for secret in (key.rsplit("_", 1)[1], token.split(".")[2]):
        assert secret not in logged


@pytest.mark.parametrize("user", ["bo\u200bb", "bob\u202e", "b\u2028ob"])
async def test_a_user_named_with_invisible_characters_is_refused(
    gw: Gateway, cli: Cli, user: str
) -> None:
    key = await cli("apikey", "create", "--name", "backend")
    resp = await gw.client.post("/v1/uploads", json=grant_body(), headers=key_auth(key, user))
    body = await problem_of(resp, 400)
    assert body["code"] == "user_required" and "invisible character" in body["detail"]


async def test_a_decomposed_user_name_is_the_composed_user(gw: Gateway, cli: Cli) -> None:
    key = await cli("apikey", "create", "--name", "backend")
    resp = await gw.client.post(
        "/v1/uploads", json=grant_body(), headers=key_auth(key, "zoe\u0308")
    )
    assert resp.status == 201, await resp.text()
    photo_id = (await resp.json())["photo_id"]
    resp = await gw.client.get(f"/v1/photos/{photo_id}", headers=gw.auth("zo\u00eb"))
    assert resp.status == 200


async def test_a_grant_has_one_line_naming_its_owner_and_the_key(gw: Gateway, cli: Cli) -> None:
    key = await cli("apikey", "create", "--name", "backend")
    with structlog.testing.capture_logs([merge_context]) as logged:
        resp = await gw.client.post("/v1/uploads", json=grant_body(), headers=key_auth(key))
    assert resp.status == 201
    [line] = [line for line in logged if line.get("path") == "/v1/uploads"]
    assert line["event"] == "request" and line["status"] == 201
    assert (line["owner_id"], line["granted"], line["api_key"]) == ("bob", 1, key.split("_")[1])
    assert not [line for line in logged if line["event"] == "uploads granted"]
