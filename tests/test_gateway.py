"""The gateway's HTTP contract, on the embedded defaults over moto's server."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from shared.db import create_engine
from shared.settings import Settings
from tests.conftest import JWT_SECRET
from tests.gateway_harness import Gateway, gateway, grant_body, problem_of


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    async with gateway(settings) as running:
        yield running


def bearer(claims: dict[str, Any], key: str = JWT_SECRET) -> str:
    return f"Bearer {jwt.encode(claims, key)}"


@pytest.mark.parametrize(
    ("make_header", "detail"),
    [
        (lambda now: None, "missing Authorization"),
        (lambda now: "Basic abc", "Bearer"),
        (lambda now: "Bearer not-a-jwt", "invalid token"),
        (lambda now: bearer({"sub": "a", "exp": now - 3600}), "expired"),
        (lambda now: bearer({"sub": "a", "exp": now + 60}, "other" * 10), "invalid token"),
        (lambda now: bearer({"exp": now + 60}), "sub"),
    ],
    ids=["missing", "not-bearer", "garbage", "expired", "wrong-key", "no-sub"],
)
async def test_bad_credentials_get_401_problem(
    gw: Gateway, make_header: Callable[[int], str | None], detail: str
) -> None:
    header = make_header(int(time.time()))
    headers = {"Authorization": header} if header else {}
    resp = await gw.client.post("/v1/uploads", json=grant_body(), headers=headers)
    body = await problem_of(resp, 401)
    assert detail in body["detail"]
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ("{nope", 400, "malformed_json"),
        (b'{"filename": "\xff\xfe"}', 400, "malformed_json"),
        (json.dumps(grant_body(size=True)), 422, "invalid_request"),
        (json.dumps(grant_body(size="12")), 422, "invalid_request"),
        (json.dumps({"filename": "a.jpg"}), 422, "invalid_request"),
        (json.dumps(grant_body(size=0)), 422, "invalid_request"),
        (json.dumps(grant_body(surprise=True)), 422, "invalid_request"),
        (json.dumps(grant_body(method="PATCH")), 422, "invalid_request"),
        (json.dumps(grant_body(content_type="image/svg+xml")), 415, "unsupported_type"),
        (json.dumps(grant_body(size=200 * 1024 * 1024 + 1)), 413, "too_large"),
    ],
)
async def test_bad_requests_get_problems_and_no_grant(
    gw: Gateway, payload: str | bytes, status: int, code: str
) -> None:
    resp = await gw.client.post("/v1/uploads", data=payload, headers=gw.auth())
    assert (await problem_of(resp, status))["code"] == code
    assert gw.intents.empty()


async def test_unknown_routes_and_methods_are_problems(gw: Gateway) -> None:
    await problem_of(await gw.client.get("/v1/nothing"), 404)
    resp = await gw.client.delete("/v1/uploads")
    await problem_of(resp, 405)
    assert "POST" in resp.headers["Allow"]


def decoded_policy(fields: dict[str, str]) -> dict[str, Any]:
    policy: dict[str, Any] = json.loads(base64.b64decode(fields["policy"]))
    return policy


async def test_post_grant_pins_key_type_and_exact_size_and_records_its_intent_only(
    gw: Gateway,
) -> None:
    resp = await gw.client.post("/v1/uploads", json=grant_body(), headers=gw.auth())
    assert resp.status == 201, await resp.text()
    grant = await resp.json()
    upload, fields = grant["upload"], grant["upload"]["fields"]
    assert upload["method"] == "POST"
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    assert fields["key"].endswith(grant["photo_id"]) and "holiday" not in fields["key"]
    conditions = decoded_policy(fields)["conditions"]
    assert ["content-length-range", 123_456, 123_456] in conditions
    assert {"Content-Type": "image/jpeg"} in conditions
    assert {"key": fields["key"]} in conditions
    expiry = datetime.fromisoformat(decoded_policy(fields)["expiration"].replace("Z", "+00:00"))
    assert 0 < (expiry - datetime.now(UTC)).total_seconds() <= gw.res.settings.upload_url_ttl

    intent = await gw.res.store.get(grant["photo_id"])
    assert intent is not None
    assert (intent.object_key, intent.declared_size, intent.owner_id) == (
        fields["key"],
        123_456,
        "alice",
    )
    # The intent is only recorded: nothing is announced and nothing waits to be.
    assert await gw.res.outbox.claim_unpublished(older_than_s=0, lease_s=1) == []
    assert gw.intents.empty()

    photo = await gw.client.get(f"/v1/photos/{grant['photo_id']}", headers=gw.auth())
    view = await photo.json()
    assert (view["status"], view["renditions"], view["original"]) == ("pending", {}, None)


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("photo\u202egpj.exe", "photogpj.exe"),
        ("\u2066holiday\u2069.jpg", "holiday.jpg"),
        ("two\u2028lines\u2029.jpg", "twolines.jpg"),
        ("zero\u200bwidth\ufeff.jpg", "zerowidth.jpg"),
        ("C:\\Users\\me\\caf\u0065\u0301.jpg", "caf\u00e9.jpg"),
        ("tab\there\x7f.jpg", "tabhere.jpg"),
        (" plain name.jpg ", "plain name.jpg"),
    ],
    ids=[
        "rtl-override",
        "bidi-isolates",
        "line-separators",
        "zero-width",
        "path-and-nfd",
        "ascii-controls",
        "plain-ascii",
    ],
)
async def test_file_names_lose_bidi_controls_and_invisible_characters(
    gw: Gateway, sent: str, kept: str
) -> None:
    resp = await gw.client.post("/v1/uploads", json=grant_body(filename=sent), headers=gw.auth())
    assert resp.status == 201, await resp.text()
    photo = await gw.client.get(f"/v1/photos/{(await resp.json())['photo_id']}", headers=gw.auth())
    assert (await photo.json())["filename"] == kept


async def test_a_body_declared_in_another_charset_is_read_in_it(gw: Gateway) -> None:
    # In Latin-1, bytes that UTF-8 would read as "café.jpg".
    body = json.dumps(grant_body(filename="caf\u00c3\u00a9.jpg"), ensure_ascii=False)
    headers = gw.auth() | {"Content-Type": "application/json; charset=latin-1"}
    resp = await gw.client.post("/v1/uploads", data=body.encode("latin-1"), headers=headers)
    assert resp.status == 201, await resp.text()
    photo = await gw.client.get(f"/v1/photos/{(await resp.json())['photo_id']}", headers=gw.auth())
    assert (await photo.json())["filename"] == "caf\u00c3\u00a9.jpg"


async def test_put_grant_signs_the_content_type(gw: Gateway) -> None:
    resp = await gw.client.post("/v1/uploads", json=grant_body(method="PUT"), headers=gw.auth())
    assert resp.status == 201
    upload = (await resp.json())["upload"]
    query = parse_qs(urlsplit(upload["url"]).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert "content-type" in query["X-Amz-SignedHeaders"][0].split(";")
    assert upload["headers"]["Content-Type"] == "image/jpeg"


async def test_other_users_photos_are_not_found(gw: Gateway) -> None:
    resp = await gw.client.post("/v1/uploads", json=grant_body(), headers=gw.auth("alice"))
    photo_id = (await resp.json())["photo_id"]
    await problem_of(await gw.client.get(f"/v1/photos/{photo_id}", headers=gw.auth("bob")), 404)
    await problem_of(await gw.client.get("/v1/photos/0", headers=gw.auth("alice")), 404)


async def test_the_api_stays_up_while_the_broker_is_away(gw: Gateway) -> None:
    """Grants and completion hints wait in the outbox; readiness stays 200 so a broker
    outage does not take the gateway out of its load balancer."""
    await gw.res.broker.close()
    resp = await gw.client.post("/v1/uploads", json=grant_body(), headers=gw.auth())
    assert resp.status == 201, await resp.text()
    photo_id = (await resp.json())["photo_id"]
    hint = await gw.client.post(f"/v1/uploads/{photo_id}/complete", headers=gw.auth())
    assert hint.status == 202
    waiting = await gw.res.outbox.claim_unpublished(older_than_s=0, lease_s=30)
    assert [(e.type, e.data["photo_id"]) for e in waiting] == [("upload.completed", photo_id)]
    ready = await gw.client.get("/readyz")
    assert ready.status == 200
    checks = (await ready.json())["checks"]
    assert checks == {"broker": False, "database": True, "events": False}


async def test_request_id_is_echoed_and_health_endpoints_answer(gw: Gateway) -> None:
    resp = await gw.client.get("/readyz", headers={"X-Request-ID": "req-12345678"})
    assert resp.status == 200 and resp.headers["X-Request-ID"] == "req-12345678"
    assert (await gw.client.get("/healthz")).status == 200


async def test_upload_page_is_served(gw: Gateway) -> None:
    resp = await gw.client.get("/")
    page = await resp.text()
    assert resp.status == 200 and "<input" in page and "/assets/main.js" in page
    script = await (await gw.client.get("/assets/uploads.js")).text()
    assert "/v1/uploads" in script


async def test_database_outage_is_a_503_problem(gw: Gateway) -> None:
    resp = await gw.client.post("/v1/uploads", json=grant_body(), headers=gw.auth())
    photo_id = (await resp.json())["photo_id"]
    await gw.res.database.close()
    gw.res.database.engine = create_engine("postgresql://nobody@127.0.0.1:1/none")
    resp = await gw.client.get(f"/v1/photos/{photo_id}", headers=gw.auth())
    body = await problem_of(resp, 503)
    assert "metadata store" in body["detail"]
