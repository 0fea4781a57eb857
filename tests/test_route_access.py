"""Every operation of the API refuses a caller without credentials (401, with a
challenge) and an API key without the operation's scope (403 `insufficient_scope`),
whatever else the request holds: walked from the route table itself, so a route is
covered the day it is added. Who may do what once authenticated is in the role tables
(tests/test_album_access.py, tests/test_webhook_api.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.gateway.apikeys import SCOPES, create_key
from services.gateway.registry import Operation
from services.gateway.routes import operations
from shared.settings import Settings
from tests.gateway_harness import Gateway, gateway, problem_of

GUARDED = [op for op in operations() if op.scope and op.handler is not None]
PUBLIC = sorted(f"{op.method} {op.path}" for op in operations() if not op.scope)
SOME_ID = "0123456789abcdef0123456789abcdef"


def sample_url(op: Operation) -> str:
    """The operation's path with a value its parameters accept (an enum's first)."""
    schema: dict[str, Any] = op.params.model_json_schema() if op.params else {}
    values = {}
    for name, prop in schema.get("properties", {}).items():
        enum = prop.get("enum") or schema.get("$defs", {}).get(
            prop.get("$ref", "").rsplit("/", 1)[-1], {}
        ).get("enum")
        values[name] = enum[0] if enum else SOME_ID
    return op.path.format(**values)


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    async with gateway(settings) as opened:
        yield opened


def ids(op: Operation) -> str:
    return f"{op.method} {op.path}"


def test_the_public_operations_are_only_these() -> None:
    """A route made public by mistake shows here before anywhere else."""
    assert PUBLIC == [
        "GET /healthz",
        "GET /readyz",
        "GET /v1/shared/{token}",
    ]


async def test_the_routes_outside_the_table_only_serve_pages_and_the_document(
    gw: Gateway,
) -> None:
    """The table is what this file walks: any other route must hold no one's data."""
    described = {(op.method, op.path) for op in operations()}
    others = sorted(
        (route.method, route.resource.canonical)
        for route in gw.client.app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and (route.method, route.resource.canonical) not in described
    )
    assert others == [
        ("GET", "/"),
        ("GET", "/assets/{name}"),
        ("GET", "/docs"),
        ("GET", "/docs/assets/swagger-init.js"),
        ("GET", "/docs/assets/{name}"),
        ("GET", "/openapi.json"),
    ]


@pytest.mark.parametrize("op", GUARDED, ids=ids)
async def test_a_caller_without_credentials_is_refused(gw: Gateway, op: Operation) -> None:
    resp = await gw.client.request(op.method, sample_url(op), json={}, allow_redirects=False)
    await problem_of(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("op", GUARDED, ids=ids)
async def test_a_key_without_the_operation_s_scope_is_refused(gw: Gateway, op: Operation) -> None:
    _, key = await create_key(gw.res.database, "all-but-one", [s for s in SCOPES if s != op.scope])
    headers = {"Authorization": f"Bearer {key}", "X-Darkroom-User": "alice"}
    resp = await gw.client.request(
        op.method, sample_url(op), json={}, headers=headers, allow_redirects=False
    )
    body = await problem_of(resp, 403)
    assert body["code"] == "insufficient_scope" and op.scope in body["detail"]
