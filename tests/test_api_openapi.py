"""The OpenAPI document describes every route, and the running stack keeps to it:
schemathesis drives it with generated requests and every check it has."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from pydantic import SecretStr

from services.dev import run_dev
from services.gateway.auth import issue_token
from shared.settings import Settings
from tests import images
from tests.conftest import JWT_SECRET
from tests.gateway_harness import Gateway, gateway
from tests.harness import WEBHOOK_SECRET, Client, WebhookReceiver, free_port, running, with_sqs

# The upload page and the documentation itself (Swagger UI and its assets).
UNDOCUMENTED = {
    "/",
    "/openapi.json",
    "/docs",
    "/docs/assets/swagger-init.js",
    "/docs/assets/{name}",
    "/assets/{name}",
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


async def test_the_document_links_grants_to_their_photo_and_describes_webhooks(
    gw: Gateway,
) -> None:
    doc = await document(gw)
    ops = {op["operationId"]: op for item in doc["paths"].values() for op in item.values()}
    assert all(op["tags"] for op in ops.values())
    links = ops["createUpload"]["responses"]["201"]["links"]
    assert {link["operationId"] for link in links.values()} == {
        "getPhoto",
        "deletePhoto",
        "completeUpload",
        "signParts",
        "listParts",
        "abortUpload",
        "followDownload",
        "createPhotoLink",
        "listPhotoLinks",
    }
    assert {p["photo_id"] for p in (link["parameters"] for link in links.values())} == {
        "$response.body#/photo_id"
    }
    unsupported = ops["createUpload"]["responses"]["415"]["content"]["application/problem+json"]
    assert unsupported["schema"]["properties"]["code"]["enum"] == ["unsupported_type"]
    ready = doc["webhooks"]["photo.ready"]["post"]["requestBody"]["content"]["application/json"]
    payload = doc["components"]["schemas"][ready["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert payload["properties"]["type"]["const"] == "photo.ready"
    assert set(payload["required"]) == {"type", "timestamp", "data"}
    assert set(doc["webhooks"]) == {
        "photo.ready",
        "photo.rejected",
        "photo.deleted",
        "album.revealed",
        "album.member_added",
        "album.deleted",
        "webhook.test",
    }


async def test_the_document_covers_albums_members_and_links(gw: Gateway) -> None:
    doc = await document(gw)
    ops = {op["operationId"]: op for item in doc["paths"].values() for op in item.values()}
    album_links = ops["createAlbum"]["responses"]["201"]["links"]
    assert set(album_links) == {
        "getAlbum",
        "changeAlbum",
        "deleteAlbum",
        "listAlbumPhotos",
        "listAlbumMembers",
        "createAlbumLink",
        "listAlbumLinks",
    }
    for operation, codes in {
        "createUpload": {"insufficient_role"},
        "changeAlbum": {"insufficient_role"},
        "followDownload": {"sealed", "not_ready"},
        "openSharedLink": {"password_required", "wrong_password", "link_expired"},
    }.items():
        found = {
            code
            for answer in ops[operation]["responses"].values()
            for media in answer.get("content", {}).values()
            for code in media["schema"].get("properties", {}).get("code", {}).get("enum", [])
        }
        assert codes <= found, (operation, found)
    shared = ops["openSharedLink"]
    assert shared["security"] == []
    assert {(p["name"], p["in"]) for p in shared["parameters"]} >= {
        ("token", "path"),
        ("X-Darkroom-Link-Password", "header"),
    }


@pytest.mark.slow  # seconds of generated requests
@pytest.mark.timeout(300)  # the run itself is given 240 s: a loaded machine needs them
async def test_schemathesis_with_every_check_finds_nothing_on_a_stack_with_workers(
    settings: Settings, hooks: WebhookReceiver, unique: str, tmp_path: Path
) -> None:
    """Every check, stateful phase included, against gateway and workers; one photo is
    ready first, so a rendered photo's view (facts, links) is checked too."""
    runner = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if runner is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    stack = await with_sqs(
        settings.model_copy(
            update={
                "gateway_port": free_port(),
                "webhook_url": hooks.url,
                "webhook_secret": SecretStr(WEBHOOK_SECRET),
                "rate_limit_user": 0,
                "rate_limit_ip": 0,
                # The earlier phases grant hundreds of uploads: pending ones must not
                # block the grants stateful testing follows to their photos.
                "max_pending_uploads": 0,
            }
        ),
        unique,
    )
    token = issue_token(JWT_SECRET, "alice")
    async with running(stack, [run_dev]) as base, aiohttp.ClientSession() as http:
        client = Client(http, base, token)
        data = images.jpeg(64, 48)
        grant = await client.grant(data, "image/jpeg")
        await client.upload(grant, data, "image/jpeg")
        await hooks.wait_for(grant["photo_id"], "photo.ready")
        output, exchanges = await schemathesis(runner, base, token, tmp_path, grant["photo_id"])
    assert "Stateful" in output, output[-6000:]

    def answered(method: str, path: str, status: int) -> list[dict[str, Any]]:
        return [
            e
            for e in exchanges
            if e["request"]["method"] == method
            and urlsplit(e["request"]["url"]).path == path
            and e["response"]["status"] == status
        ]

    ready_id = grant["photo_id"]
    photo_gets = [
        e
        for e in exchanges
        if e["request"]["method"] == "GET"
        and re.fullmatch(r"/v1/photos/[0-9a-f]{32}", urlsplit(e["request"]["url"]).path)
        and e["response"]["status"] == 200
    ]
    assert photo_gets, "stateful testing follows the grant's links to the photo"
    views = [json.loads(e["response"]["content"]["text"]) for e in photo_gets]
    views += [
        item
        for e in answered("GET", "/v1/photos", 200)
        for item in json.loads(e["response"]["content"]["text"])["items"]
    ]
    [ready] = {json.dumps(v, sort_keys=True) for v in views if v["id"] == ready_id} or [""]
    assert ready and json.loads(ready)["facts"]["sha256"], "the ready photo was checked"
    # Albums: made, then followed through the document's links to their operations.
    assert answered("POST", "/v1/albums", 201), "albums were created"
    album_routes = {
        re.sub(r"[0-9a-f]{32}", "{id}", urlsplit(e["request"]["url"]).path)
        for e in exchanges
        if e["response"]["status"] in (200, 201, 204)
    }
    assert {"/v1/albums/{id}", "/v1/albums/{id}/photos", "/v1/albums/{id}/members"} <= album_routes


async def schemathesis(
    runner: str, base: str, token: str, cwd: Path, ready_id: str
) -> tuple[str, list[dict[str, Any]]]:
    """Run every check, seeded and bounded; the output and every exchange it made."""
    # A declared size over the limit is refused with 413 `too_large` (clients rely on
    # the code), which schemathesis does not count among refusals unless told.
    accepted = ["200", "201", "202", "204", "302", "401", "403", "404", "409", "410", "429"]
    refusals = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
    # Account deletion acts for a user of its own: alice keeps her ready photo all run.
    bob = issue_token(JWT_SECRET, "bob")
    (cwd / "schemathesis.toml").write_text(
        f'headers = {{ Authorization = "Bearer {token}" }}\n'
        + f"[checks.negative_data_rejection]\nexpected-statuses = {json.dumps(refusals)}\n\n"
        # A share link made already expired answers 410 `link_expired`, as documented.
        + f"[checks.positive_data_acceptance]\nexpected-statuses = {json.dumps(accepted)}\n\n"
        # Albums and links add operations for stateful testing to walk: more scenarios.
        + "[phases.stateful.generation]\nmax-examples = 60\n\n"
        f'[[operations]]\ninclude-operation-id = "deleteAccount"\n'
        f'headers = {{ Authorization = "Bearer {bob}" }}\n\n'
        # The event stream never ends by itself: tests/test_live_events.py covers it.
         + '[[operations]]\ninclude-operation-id = "streamEvents"\nenabled = false\n\n'
        # Hundreds of grants bury the ready photo in listings: read it by its id.
        f'[[operations]]\ninclude-operation-id = "getPhoto"\n'
        f'parameters = {{ photo_id = "{ready_id}" }}\n'
    )
    process = await asyncio.create_subprocess_exec(
        runner,
        "run",
        f"{base}/openapi.json",
        "--checks",
        "all",
        # It takes a photo granted at /v1/uploads and deleted at /v1/photos/{id} for one
        # that was never there (schemathesis ties a deletion to the creating path only).
        # A grant's photo being there is covered by test_api_multipart.py, among others.
        "--exclude-checks",
        "ensure_resource_availability",
        "--max-examples",
        "15",
        "--seed",
        "1",
        "--workers",
        "1",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--no-color",
        "--generation-database",
        "none",
        "--report",
        "har",
        "--report-dir",
        str(cwd / "reports"),
        cwd=cwd,  # it leaves a cache directory behind
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    raw, _ = await asyncio.wait_for(process.communicate(), 240)
    output = raw.decode()
    (cwd / "schemathesis.txt").write_text(output)  # the whole report, for reading after
    assert process.returncode == 0, output[-8000:]
    [har] = (cwd / "reports").glob("har-*.json")
    entries: list[dict[str, Any]] = json.loads(har.read_text())["log"]["entries"]
    return output, entries
