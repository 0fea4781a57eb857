"""The OpenAPI document describes every route, and the running gateway keeps to it:
schemathesis drives it with generated requests (no 5xx, no answer off the schema)."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared.settings import Settings
from tests.gateway_harness import Gateway, gateway

# The upload page, metrics, and the documentation itself (Swagger UI and its assets).
UNDOCUMENTED = {
    "/",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/assets/swagger-init.js",
    "/docs/assets/{name}",
}


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    calm = settings.model_copy(update={"rate_limit_user": 0, "rate_limit_ip": 0})
    async with gateway(calm) as gw:
        yield gw


async def document(gw: Gateway) -> dict[str, Any]:
    resp = await gw.client.get("/openapi.json")
    assert resp.status == 200
    doc: dict[str, Any] = await resp.json()
    return doc


async def test_every_route_is_described(gw: Gateway) -> None:
    doc = await document(gw)
    assert doc["openapi"] == "3.1.0"
    served = {
        (r.resource.canonical, r.method.lower())
        for r in gw.client.app.router.routes()
        if r.resource is not None and r.method not in ("HEAD", "OPTIONS")
    }
    described = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert {s for s in served if s[0] not in UNDOCUMENTED} == described
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["responses"], (path, method)
            if path.startswith("/v1/"):
                assert "401" in op["responses"] and "503" in op["responses"], (path, method)


async def test_docs_page_is_swagger_ui_served_locally(gw: Gateway) -> None:
    page = await (await gw.client.get("/docs")).text()
    assert "/docs/assets/swagger-ui-bundle.js" in page
    init = await (await gw.client.get("/docs/assets/swagger-init.js")).text()
    assert "/openapi.json" in init
    for asset, kind in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "css")):
        resp = await gw.client.get(f"/docs/assets/{asset}")
        assert resp.status == 200 and kind in resp.content_type
        assert len(await resp.read()) > 10_000
    assert (await gw.client.get("/docs/assets/../../settings.py")).status == 404


async def test_schemathesis_finds_no_5xx_and_no_schema_violation(
    gw: Gateway, tmp_path: Path
) -> None:
    runner = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if runner is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    base = str(gw.client.make_url("")).rstrip("/")
    process = await asyncio.create_subprocess_exec(
        runner,
        "run",
        f"{base}/openapi.json",
        "--checks",
        "not_a_server_error,response_schema_conformance,content_type_conformance",
        "--header",
        f"Authorization: {gw.auth()['Authorization']}",
        "--max-examples",
        "25",
        "--seed",
        "1",
        "--phases",
        "examples,coverage,fuzzing",
        "--no-color",
        "--generation-database",
        "none",
        cwd=tmp_path,  # it leaves a cache directory behind
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 110)
    assert process.returncode == 0, output.decode()[-6000:]
